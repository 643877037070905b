"""Why `predict` had slow rounds on 2 CPUs: tf.data's autotuner (docs/benchmarks.md, "Keras
hardware mode throughput", fifth and sixth runs; `tfxbar.inference_batches`).

    TFXBAR_DATA_DIR=/work/shared/data PYTHONPATH=. python benchmarks/tfdata_autotune.py \
        --model out/bench/mnist_w4a3.keras --rounds 8
    ... the same with --intra-threads 1     # the one-thread speed, for comparison

The quantized MNIST CNN (no hardware mode) over 2,000 test images in batches of 250, called in a
`tf.function` per batch while iterating a `tf.data` pipeline of the images: once with tf.data's
default options (autotuner on, as `model.predict(x)` on arrays builds it) and once from
`tfxbar.inference_batches` (autotuner off), alternating round by round. Prints every round's
images/s, the load average and the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from interpreter_throughput import cpu_flags  # noqa: E402

import tfxbar  # noqa: E402
from tfxbar import datasets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained tfxbar-quantized mnist_cnn() (.keras)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--intra-threads", type=int, default=0, help="TF intra-op threads (0: TF's default)")
    args = parser.parse_args()
    if args.intra_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_threads)
    tfxbar.register_keras_objects()
    model = keras.models.load_model(args.model, compile=False)
    x = datasets.normalize(datasets.load("mnist", "test")[0][:args.images])
    pipelines = {
        "tf.data defaults (autotuner on)": tf.data.Dataset.from_tensor_slices(x).batch(args.batch),
        "tfxbar.inference_batches (autotuner off)": tfxbar.inference_batches(x, batch_size=args.batch)}
    step = tf.function(lambda images: model(images, training=False))

    def rate(data: tf.data.Dataset) -> float:
        start = time.perf_counter()
        for images in data:
            step(images).numpy()
        return len(x) / (time.perf_counter() - start)

    for data in pipelines.values():
        rate(data)   # traces, warms up
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for name, data in pipelines.items():
            rates[name].append(rate(data))
        load.append(os.getloadavg()[0])
    print(f"CPU: {cpu_flags()}; {os.cpu_count()} CPUs visible; TF {tf.__version__}; "
          f"intra-op threads: {args.intra_threads or 'default'}; load {min(load):.1f}–{max(load):.1f}")
    for name, values in rates.items():
        rounds = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{name}: median {np.median(values):,.0f} img/s; rounds {rounds}")


if __name__ == "__main__":
    main()
