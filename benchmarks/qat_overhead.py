"""Train-step time of the MNIST CNN: float vs tfxbar presets vs tfmot's default 8-bit QAT.

    python benchmarks/qat_overhead.py --repeats 7 --steps 20

All variants are built first, then timed in interleaved rounds (float, w4a3, binary-dense,
tfmot-8bit, float, …) so that load from other processes hits every variant alike; the
median step time of each variant is reported as a ratio to float. Inputs are random images
(the step time does not depend on the pixel values).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

import tfxbar


def _variants(x: np.ndarray) -> dict[str, keras.Model]:
    def float_model() -> keras.Model:
        keras.utils.set_random_seed(0)
        return tfxbar.models.mnist_cnn()

    return {
        "float": float_model(),
        "tfxbar w4a3": tfxbar.quantize_model(float_model(), "w4a3", calibration_data=x[:256]),
        "tfxbar binary-dense": tfxbar.quantize_model(float_model(), "binary-dense",
                                                     calibration_data=x[:256]),
        "tfmot default 8-bit": tfmot.quantization.keras.quantize_model(float_model()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="train steps per timed round")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (args.batch_size * args.steps, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    models = _variants(x)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).cache()
    for model in models.values():
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(data, epochs=1, verbose=0)  # trace and warm up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            times[name].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times["float"])
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}; "
          f"batch {args.batch_size}, {args.steps} steps × {args.repeats} interleaved rounds")
    print(f"{'variant':<22} {'ms/step (median)':>17} {'ratio to float':>15}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<22} {1000 * median:>17.1f} {median / base:>15.2f}")


if __name__ == "__main__":
    main()
