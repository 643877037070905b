"""Where the ideal-mode interpreter spends its time, and how batch and block size move it.

    TFXBAR_DATA_DIR=/work/shared/data PYTHONPATH=. python benchmarks/interpreter_profile.py

The MNIST CNN of `interpreter_throughput.py` (``w4a3``, `--train-steps` Adam steps, seed 0)
runs on `--limit` test images:

1. one worker with numpy's BLAS on one thread, timing every crossbar op (with its fused
   threshold) and the numpy BLAS GEMMs inside them (`np.matmul` is wrapped for the run);
2. two workers for each `--batches` size;
3. one and two workers for each `--blocks` size (`crossbar._BLOCK_ROWS`), with the scaling;
4. the "hardware, modelled" export of `interpreter_throughput.py` (1-bit DAC, 6-bit calibrated
   ADCs) on two workers and `--hardware-limit` images for each `--hardware-blocks` bit-plane
   patch budget (`tfxbar.export.interpreter._HARDWARE_BLOCK`; 2^40: one call per batch, unblocked).

Times are medians of `--repeats` runs; the machine is shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import numpy as np
import tf_keras as keras

import tfxbar
from tfxbar import datasets
from tfxbar.export import crossbar
from tfxbar.export import interpreter as interpreter_module
from tfxbar.export.blas import single_threaded_blas


def _rate(interpreter: tfxbar.Interpreter, x: np.ndarray, batch: int, repeats: int) -> float:
    interpreter.run(x[:batch * 2], batch)   # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.run(x, batch)
        times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=2400)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="*", default=[24, 48, 96, 144, 240])
    parser.add_argument("--blocks", type=int, nargs="*", default=[384, 1536, 3072, 6144])
    parser.add_argument("--hardware-limit", type=int, default=960)
    parser.add_argument("--hardware-blocks", type=int, nargs="*", default=[40, 20, 22],
                        help="log2 of the bit-plane patch values per modelled-hardware call")
    args = parser.parse_args()

    x_test, _ = datasets.load("mnist", "test")
    x_train, y_train = datasets.load("mnist", "train[:6400]")
    x = x_test[:args.limit]
    keras.utils.set_random_seed(0)
    qmodel = tfxbar.quantize_model(tfxbar.models.mnist_cnn(), "w4a3", calibration_data=x_train[:512] / 255.0)
    qmodel.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = min(args.train_steps, len(x_train) // 64)
    qmodel.fit(x_train[:64 * steps] / 255.0, y_train[:64 * steps], batch_size=64, epochs=1, verbose=0)
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()

    # 1. Per-op breakdown on one worker.
    interpreter = tfxbar.Interpreter(program, workers=1)
    spent: dict[str, float] = collections.defaultdict(float)
    op_call, matmul = tfxbar.Interpreter._crossbar, np.matmul

    def timed_op(self, index, inputs, codes=None):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        out = op_call(self, index, inputs, codes)
        spent[self.crossbars[index].name + (" + threshold" if codes is not None else "")] += \
            time.perf_counter() - start
        return out

    def timed_matmul(*a, **k):  # noqa: ANN002, ANN003, ANN202
        start = time.perf_counter()
        out = matmul(*a, **k)
        spent["  of which BLAS GEMMs"] += time.perf_counter() - start
        return out

    with single_threaded_blas():
        interpreter.run(x[:192])
        tfxbar.Interpreter._crossbar, crossbar.np.matmul = timed_op, timed_matmul
        try:
            start = time.perf_counter()
            interpreter.run(x)
            total = time.perf_counter() - start
        finally:
            tfxbar.Interpreter._crossbar, crossbar.np.matmul = op_call, matmul
    print(f"one worker, {len(x)} images: {total:.2f} s ({len(x) / total:,.0f} img/s, "
          f"{1e3 * total / len(x):.3f} ms per image)")
    print("| part | s | share |\n|---|---|---|")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.3f} | {seconds / total:.0%} |")
    print(f"| other ops and Python | {total - sum(v for k, v in spent.items() if 'GEMM' not in k):.3f} | |")

    # 2. Batch size on two workers.
    print("\n| batch | img/s, 2 workers |\n|---|---|")
    for batch in args.batches:
        print(f"| {batch} | {_rate(tfxbar.Interpreter(program, workers=2), x, batch, args.repeats):,.0f} |")

    # 3. Block size: one vs two workers.
    print("\n| block rows | img/s, 1 worker | img/s, 2 workers | scaling |\n|---|---|---|---|")
    default = crossbar._BLOCK_ROWS
    try:
        for rows in args.blocks:
            crossbar._BLOCK_ROWS = rows
            with single_threaded_blas():
                one = _rate(tfxbar.Interpreter(program, workers=1), x, 96, args.repeats)
            two = _rate(tfxbar.Interpreter(program, workers=2), x, 96, args.repeats)
            print(f"| {rows} | {one:,.0f} | {two:,.0f} | {two / one:.2f}× |")
    finally:
        crossbar._BLOCK_ROWS = default

    # 4. Modelled hardware: image blocks per crossbar call.
    serial = tfxbar.CrossbarConverter.from_keras_model(
        qmodel, dac_bits=1, adc_bits=6, adc_range="calibrated", representative_data=x_train[:256]).convert()
    x_hw = x_test[:args.hardware_limit]
    print("\n| modelled-hardware block (values per call) | img/s, 2 workers |\n|---|---|")
    default = interpreter_module._HARDWARE_BLOCK
    try:
        for bits in args.hardware_blocks:
            interpreter_module._HARDWARE_BLOCK = 1 << bits
            rate = _rate(tfxbar.Interpreter(serial, "hardware", workers=2), x_hw, 96, args.repeats)
            print(f"| 2^{bits} | {rate:,.0f} |")
    finally:
        interpreter_module._HARDWARE_BLOCK = default


if __name__ == "__main__":
    main()
