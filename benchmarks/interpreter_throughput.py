"""Throughput of the tfxbar interpreter vs the TFLite int8 interpreter on the MNIST CNN, and export time.

    TFXBAR_DATA_DIR=/work/shared/data python benchmarks/interpreter_throughput.py

- tfxbar: `tfxbar.models.mnist_cnn()` quantized with the ``w4a3`` preset (briefly trained,
  `--train-steps`), exported with the default converter options (128 × 128 tiles, lossless
  ADCs), run by `tfxbar.Interpreter` in ideal and hardware mode. With lossless ADCs and a
  32-bit accumulator the hardware mode provably equals the ideal one, so it takes the ideal
  path; a third row therefore exports the same model with a 1-bit DAC and 6-bit calibrated ADCs
  ("hardware, modelled"), where every DAC cycle, ADC conversion and accumulator step is modelled.
  A row "ideal, lanes=1" runs the ideal mode without packing images into float64 lanes.
- Per core: "tfxbar ideal, 1 worker" (numpy's BLAS on one thread) against "TFLite int8,
  1 thread"; their ratio is printed against each other.
- TFLite: the same float CNN quantized with tfmot's default 8-bit QAT
  (`tfmot.quantization.keras.quantize_model`), converted with `tf.lite.TFLiteConverter`
  (``optimizations=[tf.lite.Optimize.DEFAULT]``), run by `tf.lite.Interpreter` (batched with
  `resize_tensor_input`; 2 threads).

Measurements are interleaved over `--rounds` in an order rotated every round, so that each
variant takes each position once in 7 rounds (a fixed order favoured one variant by ≈ 10 %), and
the median images/s of each is reported with the ratios to TFLite, with the load average
(the machine is shared). Then the export time
(`CrossbarConverter.convert`) for several widths of the CNN.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

import tfxbar
from tfxbar import datasets
from tfxbar.export.blas import single_threaded_blas


def _tflite_model(float_model: keras.Model) -> bytes:
    qat = tfmot.quantization.keras.quantize_model(float_model)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _tflite(content: bytes, batch: int, threads: int) -> tf.lite.Interpreter:
    interpreter = tf.lite.Interpreter(model_content=content, num_threads=threads)
    details = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(details["index"], [batch, *details["shape"][1:]])
    interpreter.allocate_tensors()
    return interpreter


def _run_tflite(interpreter: tf.lite.Interpreter, x: np.ndarray, batch: int) -> np.ndarray:
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    results = []
    for start in range(0, len(x) - batch + 1, batch):
        interpreter.set_tensor(inp, x[start:start + batch])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out))
    return np.concatenate(results)


def _single_threaded(fn):  # noqa: ANN001, ANN202
    with single_threaded_blas():
        return fn()


def _timed(fn, n: int) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def rotated_rounds(runs: dict, rounds: int) -> tuple[dict[str, list[float]], list[float]]:
    """Images/s of every ``name: (fn, images)`` over `rounds`, in an order rotated every round
    (in a fixed order one slot ran ≈ 10 % slower than another), and the 1-min load averages."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names, load = list(runs), [os.getloadavg()[0]]
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rates[name].append(_timed(*runs[name]))
        load.append(os.getloadavg()[0])
    return rates, load


def cpu_flags() -> str:
    """The CPU model and the flags that matter to int8 and float kernels, from `lscpu`."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu unavailable"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{fields.get('Model name', '?').strip()}, flags: {' '.join(wanted) or '-'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10000, help="test images for ideal mode and TFLite")
    parser.add_argument("--hardware-limit", type=int, default=1000, help="test images for hardware mode")
    parser.add_argument("--rounds", type=int, default=7, help="7: every variant once in every position")
    parser.add_argument("--batch", type=int, default=250, help="TFLite batch")
    parser.add_argument("--tfxbar-batch", type=int, default=96,
                        help="tfxbar batch (the interpreter's default)")
    parser.add_argument("--train-steps", type=int, default=100)
    args = parser.parse_args()

    x_test, y_test = datasets.load("mnist", "test")
    x_train, y_train = datasets.load("mnist", "train[:6400]")
    x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    keras.utils.set_random_seed(0)
    float_model = tfxbar.models.mnist_cnn()
    qmodel = tfxbar.quantize_model(float_model, "w4a3", calibration_data=x_train[:512] / 255.0)
    qmodel.compile(keras.optimizers.Adam(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = min(args.train_steps, len(x_train) // 64)
    qmodel.fit(x_train[:64 * steps] / 255.0, y_train[:64 * steps], batch_size=64, epochs=1, verbose=0)
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    ideal, hardware = tfxbar.Interpreter(program), tfxbar.Interpreter(program, "hardware")
    unpacked = tfxbar.Interpreter(program, lanes=1)
    serial = tfxbar.CrossbarConverter.from_keras_model(
        qmodel, dac_bits=1, adc_bits=6, adc_range="calibrated", representative_data=x_train[:256]).convert()
    modelled = tfxbar.Interpreter(serial, "hardware")
    content = _tflite_model(float_model)
    lite, lite_one = _tflite(content, args.batch, 2), _tflite(content, args.batch, 1)
    one_worker = tfxbar.Interpreter(program, workers=1)
    x_float = (x_test / 255.0).astype(np.float32)
    n = len(x_test) - len(x_test) % args.batch
    x_hw = x_test[:args.hardware_limit]

    b = args.tfxbar_batch
    acc = {"ideal": float(np.mean(ideal.predict(x_test, b) == y_test)),
           "hardware": float(np.mean(hardware.predict(x_hw, b) == y_test[:len(x_hw)])),
           "modelled": float(np.mean(modelled.predict(x_hw, b) == y_test[:len(x_hw)]))}
    load = [os.getloadavg()[0]]
    runs = {"tfxbar ideal": (lambda: ideal.run(x_test, b), len(x_test)),
            "tfxbar ideal, lanes=1": (lambda: unpacked.run(x_test, b), len(x_test)),
            "TFLite int8": (lambda: _run_tflite(lite, x_float[:n], args.batch), n),
            "tfxbar hardware": (lambda: hardware.run(x_hw, b), len(x_hw)),
            "tfxbar hardware, modelled": (lambda: modelled.run(x_hw, b), len(x_hw)),
            # One core each (numpy's BLAS pinned to one thread for the whole run of one worker).
            "tfxbar ideal, 1 worker": (lambda: _single_threaded(lambda: one_worker.run(x_test, b)),
                                       len(x_test)),
            "TFLite int8, 1 thread": (lambda: _run_tflite(lite_one, x_float[:n], args.batch), n)}
    rates, rounds_load = rotated_rounds(runs, args.rounds)
    load += rounds_load
    median = {k: statistics.median(v) for k, v in rates.items()}

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"TF {tf.__version__}, numpy {np.__version__}")
    print(f"MNIST test: ideal accuracy {acc['ideal']:.4f} ({len(x_test)}), hardware {acc['hardware']:.4f}, "
          f"modelled {acc['modelled']:.4f} ({len(x_hw)}) after {steps} training steps")
    print(f"load average (1 min) during the rounds: {min(load):.1f}–{max(load):.1f}; "
          f"batch: tfxbar {b}, TFLite {args.batch}")
    print(f"| interpreter | img/s (median of {args.rounds}) | vs TFLite (same threads) |")
    print("|---|---|---|")
    for name, rate in median.items():
        per_core = name.endswith(("1 worker", "1 thread"))
        reference = median["TFLite int8, 1 thread" if per_core else "TFLite int8"]
        print(f"| {name} | {rate:,.0f} | {rate / reference:.2f}× |")
    print("rounds (img/s): " + "; ".join(f"{k} " + ", ".join(f"{r:,.0f}" for r in v)
                                         for k, v in rates.items()))

    print("\n| widths | hidden | weights | export time (s) |")
    print("|---|---|---|---|")
    for widths, hidden in (((8, 16), 32), ((16, 32), 64), ((32, 64), 128), ((64, 128), 256)):
        keras.utils.set_random_seed(0)
        model = tfxbar.quantize_model(tfxbar.models.mnist_cnn(widths, hidden), "w4a3",
                                      calibration_data=x_train[:256] / 255.0)
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            tfxbar.CrossbarConverter.from_keras_model(model).convert()
            times.append(time.perf_counter() - start)
        print(f"| {widths} | {hidden} | {model.count_params():,} | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
