"""Train-step time with and without `tfxbar.DeviceVariation`, measured side by side.

For each model, a plain and a variation-aware copy train on the same random MNIST-shaped data;
`fit` calls of `--steps` steps alternate between the copies for `--repeats` rounds, every
step is timed by a callback (the first `--warmup` steps of a call, which include tracing, are
dropped). Each round gives a median step time per copy; the ratio reported is the median over
rounds of the per-round ratio (a paired statistic: a slow spell of a shared machine hits the
copies of one round alike), with its interquartile range over rounds. The device is
`DeviceModel.typical_reram()` (lognormal programming variation, read noise, stuck-at-0/1
faults: every draw per step).

    python benchmarks/variation_overhead.py            # about 6 min on 2 idle cores
    python benchmarks/variation_overhead.py --compare-no-xla   # + DeviceVariation(jit_compile=False)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

import tfxbar  # noqa: E402
from tfxbar.variation import DeviceModel, DeviceVariation, ramp  # noqa: E402


class _StepTimer(keras.callbacks.Callback):
    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup, self.times, self._last = warmup, [], 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.warmup:
            self.times.append(time.perf_counter() - self._last)


def mlp() -> keras.Model:
    return keras.Sequential([keras.layers.Flatten(input_shape=(28, 28, 1)),
                             keras.layers.Dense(512), keras.layers.BatchNormalization(),
                             keras.layers.ReLU(), keras.layers.Dense(10)])


def cnn() -> keras.Model:
    return keras.Sequential([
        keras.layers.Conv2D(16, 3, input_shape=(28, 28, 1)), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(),
        keras.layers.Dense(64), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Dense(10)])


def _compiled(builder, preset: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = tfxbar.quantize_model(builder(), preset)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def measure(builder, preset: str, args: argparse.Namespace) -> dict[str, float]:
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    x = rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, n)
    device = DeviceModel.typical_reram()
    configs = {"plain": [], "DeviceVariation": [DeviceVariation(device)],
               "DeviceVariation, per-batch ramp": [DeviceVariation(device, schedule=ramp(100))],
               "DeviceVariation, no XLA": [DeviceVariation(device, jit_compile=False)]}
    configs = {name: cbs for name, cbs in configs.items() if name in args.configs}
    models = {name: _compiled(builder, preset) for name in configs}
    rounds: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, callbacks in configs.items():  # interleaved: load changes hit all alike
            timer = _StepTimer(args.warmup)
            models[name].fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0,
                             callbacks=[*callbacks, timer])
            rounds[name].append(float(np.median(timer.times)))
    plain = np.asarray(rounds["plain"])
    result = {}
    for name, per_round in rounds.items():
        ratios = np.asarray(per_round) / plain
        result[name] = {"ms": 1e3 * float(np.median(per_round)), "ratio": float(np.median(ratios)),
                        "q1": float(np.percentile(ratios, 25)), "q3": float(np.percentile(ratios, 75))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per fit call")
    parser.add_argument("--warmup", type=int, default=5, help="steps dropped per fit call")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument("--compare-no-xla", action="store_true",
                        help="also time DeviceVariation(jit_compile=False)")
    parser.add_argument("--no-ramp-column", action="store_true",
                        help="skip the per-batch ramp configuration")
    args = parser.parse_args()
    args.configs = ["plain", "DeviceVariation"]
    if not args.no_ramp_column:
        args.configs.append("DeviceVariation, per-batch ramp")
    if args.compare_no_xla:
        args.configs.append("DeviceVariation, no XLA")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, load average {load:.2f}, batch "
          f"{args.batch_size}, {args.repeats}×{args.steps - args.warmup} timed steps per "
          f"configuration; ratio = median of per-round ratios [interquartile range]\n")
    headers = {"DeviceVariation": "DeviceVariation", "DeviceVariation, per-batch ramp":
               "per-batch ramp", "DeviceVariation, no XLA": "`jit_compile=False`"}
    others = args.configs[1:]
    print("| model | plain (ms/step) | " + " | ".join(f"{headers[n]} (ms/step) | ratio"
                                                     for n in others) + " |")
    print("|---|---|" + "---|---|" * len(others))
    models = {"mlp": ("P3 binary MLP (binary-mlp)", mlp, "binary-mlp"),
              "cnn": ("W4A3 CNN (w4a3)", cnn, "w4a3")}
    for key in args.models.split(","):
        label, builder, preset = models[key.strip()]
        m = measure(builder, preset, args)
        cells = " | ".join(f"{m[n]['ms']:.2f} | {m[n]['ratio']:.3f} [{m[n]['q1']:.3f}–{m[n]['q3']:.3f}]"
                           for n in others)
        print(f"| {label} | {m['plain']['ms']:.2f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
