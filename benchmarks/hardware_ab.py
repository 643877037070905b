"""Two builds of the native crossbar kernel side by side in one process: the whole hardware mode.

`benchmarks/kernel_ab.py` times the crossbar products alone; this times what a change is worth
to the model: two copies of the MNIST CNN in hardware mode (the model from
`examples/mnist_w4a3.py --save`, converted as benchmarks/hardware_throughput.py converts it),
each crossbar running one build of the kernel (git revisions, or ``worktree``, compiled with
their op renamed as kernel_ab.py does), each model called in a `tf.function` per batch of 250 —
how `evaluate_under_variation` steps it — over the same test images, alternating for
`--rounds` in a rotated order. Their logits must be identical (checked). A build whose op does
not take the layer's input step gets the codes from TF, as the Python side did before the
kernel formed them. `--base-layers` / `--head-layers` choose, per side, the in-place native ops
(`tfxbar.hardware.native_layers`, of this checkout) or TensorFlow's own for the
BatchNormalization layers and output quantizers: with ``--base HEAD --head HEAD --base-layers
tf`` the run measures what those ops are worth.

    TFXBAR_DATA_DIR=/work/shared/data PYTHONPATH=. python benchmarks/hardware_ab.py \\
        --model out/bench/mnist_w4a3.keras --base HEAD~1 --head worktree

Prints the CPU, the load, each build's median and best images/s, and head / base for the
medians, the best rounds and the median of the rounds' paired ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from interpreter_throughput import cpu_flags  # noqa: E402
from kernel_ab import _build  # noqa: E402

import tfxbar  # noqa: E402
from tfxbar import datasets  # noqa: E402
from tfxbar.hardware import HardwareMode, native  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained tfxbar-quantized mnist_cnn() (.keras)")
    parser.add_argument("--base", default="HEAD", help="git revision (or 'worktree')")
    parser.add_argument("--head", default="worktree", help="git revision (or 'worktree')")
    parser.add_argument("--method", default=os.environ.get("TFXBAR_KERNEL_METHOD", "auto"),
                        choices=native.KERNEL_METHODS, help="the kernel method both run")
    for side in ("base", "head"):
        parser.add_argument(f"--{side}-layers", default="native", choices=("native", "tf"),
                            help=f"{side}'s BatchNormalization and output quantizers at inference")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args()

    x_test, _ = datasets.load("mnist", "test")
    x_train, _ = datasets.load("mnist", "train[:512]")
    tfxbar.register_keras_objects()
    models = {side: keras.models.load_model(args.model, compile=False) for side in ("base", "head")}
    program = tfxbar.CrossbarConverter.from_keras_model(
        models["base"], dac_bits=1, adc_bits=6, adc_range="calibrated",
        representative_data=x_train[:256]).convert()
    with tempfile.TemporaryDirectory() as tmp:
        builds = {"base": _build(args.base, "Base", Path(tmp)), "head": _build(args.head, "Head", Path(tmp))}
    os.environ["TFXBAR_KERNEL_METHOD"] = args.method   # read when the mode is built
    for side, model in models.items():
        layers = getattr(args, f"{side}_layers") == "native"
        mode = HardwareMode(model, program=program, engine="native", native_layers=layers).install()
        for crossbar in mode.crossbars.values():
            if crossbar.simulation.uses_native:
                crossbar.simulation.native = builds[side]
    n = args.images - args.images % 250
    x = tf.constant((x_test[:n] / 255.0).astype(np.float32))
    batches = [x[start:start + 250] for start in range(0, n, 250)]
    steps = {side: tf.function(lambda images, m=model: m(images, training=False))
             for side, model in models.items()}
    logits = {side: np.concatenate([step(b).numpy() for b in batches]) for side, step in steps.items()}
    if not np.array_equal(logits["base"], logits["head"]):
        raise SystemExit("hardware_ab: the two builds' logits differ")
    rates: dict[str, list[float]] = {"base": [], "head": []}
    loads = []
    for r in range(args.rounds):
        for side in (("base", "head") if r % 2 == 0 else ("head", "base")):
            start = time.perf_counter()
            for images in batches:
                steps[side](images).numpy()
            rates[side].append(n / (time.perf_counter() - start))
        loads.append(os.getloadavg()[0])

    print(f"CPU: {cpu_flags()}; {os.cpu_count()} CPUs visible; TF {tf.__version__}; method {args.method}; "
          f"base {args.base} ({args.base_layers} layers), head {args.head} ({args.head_layers} layers); "
          f"{n} images per round, {args.rounds} rounds; "
          f"logits identical; load average (1 min) {min(loads):.1f}–{max(loads):.1f}")
    print("| build | median img/s | best img/s |")
    print("|---|---|---|")
    for side in ("base", "head"):
        median, best = statistics.median(rates[side]), max(rates[side])
        print(f"| {side} ({getattr(args, side)}, {getattr(args, side + '_layers')} layers) | {median:,.0f} | "
              f"{best:,.0f} |")
    paired = statistics.median(h / b for h, b in zip(rates["head"], rates["base"], strict=True))
    print(f"head / base: medians {statistics.median(rates['head']) / statistics.median(rates['base']):.3f}, "
          f"best rounds {max(rates['head']) / max(rates['base']):.3f}, median of paired rounds {paired:.3f}")


if __name__ == "__main__":
    main()
