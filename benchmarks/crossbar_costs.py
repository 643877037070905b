"""Where the native crossbar kernel's time goes: the same op on real, zero, one and largest codes.

Each native crossbar of the MNIST CNN's hardware mode is called (its op alone, codes and cells
prepared outside the timed loop) on four inputs of the same shape, alternating, best of
`--reps`:

- ``real``: the codes the hardware mode's layer sees for the test images;
- ``zero``: all codes 0. Every patch's planes are 0, so the dense method multiplies nothing:
  what remains is the per-call and per-patch work — bit-plane fill, the zero tests, the output
  rows (and TF allocating the output);
- ``one``: all codes 1 (1-bit DAC: only the first DAC cycle's plane is set; with paired cycles
  its slot is multiplied, the other skipped);
- ``max``: every code at the layer's largest (every plane set, nothing skipped).

``real − zero`` is what the multiplies and ADCs of the real codes cost; ``max − zero`` what they
cost with nothing skipped.

Usage (the model from `examples/mnist_w4a3.py --save`, as for hardware_throughput.py):

    TFXBAR_DATA_DIR=/work/shared/data PYTHONPATH=. python benchmarks/crossbar_costs.py \\
        --model out/bench/mnist_w4a3.keras
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from interpreter_throughput import cpu_flags  # noqa: E402
from native_crossbars import native_crossbars  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained tfxbar-quantized mnist_cnn() (.keras)")
    parser.add_argument("--images", type=int, default=250)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()

    mode, crossbars, layer_inputs = native_crossbars(args.model, args.images)
    rows = []
    for name, crossbar in crossbars.items():
        inputs = layer_inputs[name]
        step = tf.cast(crossbar.input_step(), tf.float32)
        codes = tf.round(inputs / step)
        w, scale, offset = crossbar.parts()
        cells, offset_num = crossbar._native_cells(w, offset)  # noqa: SLF001
        unit = tf.cast(step * scale, tf.float64) * 2.0 ** -crossbar.layout.offset_shift
        simulation = crossbar.simulation
        op = tf.function(lambda c, s=simulation, k=cells, b=offset_num, u=unit: s.from_codes(c, k, b, u)[0])
        largest = float(tf.reduce_max(codes))
        inputs_of = {"real": codes, "zero": tf.zeros_like(codes), "one": tf.ones_like(codes),
                     "max": tf.fill(tf.shape(codes), largest)}
        best = dict.fromkeys(inputs_of, float("inf"))
        for value in inputs_of.values():
            op(value).numpy()   # traces, fills the plane buffer
        for _ in range(args.reps):
            for kind, value in inputs_of.items():
                start = time.perf_counter()
                op(value).numpy()
                best[kind] = min(best[kind], time.perf_counter() - start)
        rows.append((name, int(largest), {k: v / args.images * 1e6 for k, v in best.items()}))
    mode.remove()

    print(f"CPU: {cpu_flags()}; {os.cpu_count()} CPUs visible; TF {tf.__version__}; "
          f"method {os.environ.get('TFXBAR_KERNEL_METHOD', 'auto')}; {args.images} images, "
          f"best of {args.reps}; load average {os.getloadavg()[0]:.1f}")
    print("| crossbar | largest code | real µs/img | zero codes | codes 1 | all codes largest | "
          "real − zero |")
    print("|---|---|---|---|---|---|---|")
    total = dict.fromkeys(("real", "zero", "one", "max"), 0.0)
    for name, largest, us in rows:
        for kind in total:
            total[kind] += us[kind]
        print(f"| {name} | {largest} | {us['real']:.0f} | {us['zero']:.0f} | {us['one']:.0f} | "
              f"{us['max']:.0f} | {us['real'] - us['zero']:.0f} |")
    print(f"| all | | {total['real']:.0f} | {total['zero']:.0f} | {total['one']:.0f} | {total['max']:.0f} | "
          f"{total['real'] - total['zero']:.0f} |")


if __name__ == "__main__":
    main()
