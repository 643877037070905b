"""Graph programs: export time and interpreter img/s of ResNet-20 and MobileNet on CIFAR-10,
against TFLite int8, side by side in one run.

    TFXBAR_DATA_DIR=/work/shared/data python benchmarks/graph_export.py

- Models: `tfxbar.models.resnet20()` (ResNet v1, 274 k parameters, residual Adds with identity
  and projection shortcuts) and `tfxbar.models.mobilenet_small()` (depthwise-separable blocks),
  quantized with the ``w4a3`` preset and calibrated on 512 CIFAR-10 training images (not trained:
  speed does not depend on the weights' values, only on activation sparsity, which calibration
  makes realistic). `--model PATH` benchmarks a saved quantized model instead (e.g. the one
  examples/cifar10_resnet20.py trains).
- Export: `CrossbarConverter.convert` with the default options (128 × 128 tiles, lossless ADCs),
  median of `--rounds`.
- Interpreter: `tfxbar.Interpreter` ideal and hardware mode (lossless: provably the ideal path),
  and "hardware, modelled" (1-bit DAC, 6-bit calibrated ADCs: every DAC cycle, ADC conversion
  and accumulator step modelled) on `--hardware-limit` images.
- TFLite: the same float model quantized with tfmot's default 8-bit QAT, converted with
  ``optimizations=[tf.lite.Optimize.DEFAULT]``, 2 threads, batch `--batch`.

Runs are interleaved over `--rounds` in a rotated order (the machine is shared); medians are
printed with the load average and the CPU's flags (AVX512-VNNI matters to TFLite int8).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import sys
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

import tfxbar
from tfxbar import datasets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interpreter_throughput import _run_tflite, _tflite, _tflite_model, cpu_flags, rotated_rounds  # noqa: E402


def _models(args: argparse.Namespace,
            calibration: np.ndarray) -> dict[str, tuple[keras.Model, keras.Model | None]]:
    if args.model:
        qmodel = keras.models.load_model(args.model)
        return {os.path.basename(args.model): (qmodel, None)}
    found = {}
    for name in ("resnet20", "mobilenet_small"):
        build = getattr(tfxbar.models, name)
        keras.utils.set_random_seed(0)
        float_model = build()
        found[name] = (tfxbar.quantize_model(float_model, "w4a3", calibration_data=calibration), float_model)
    return found


def _benchmark(name: str, qmodel: keras.Model, float_model: keras.Model | None, args: argparse.Namespace,
               x_float: np.ndarray, representative: np.ndarray) -> None:
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
        times.append(time.perf_counter() - start)
    modelled_program = tfxbar.CrossbarConverter.from_keras_model(
        qmodel, dac_bits=1, adc_bits=6, adc_range="calibrated", representative_data=representative).convert()
    codes = program.quantize_input(x_float)
    ideal, hardware = tfxbar.Interpreter(program), tfxbar.Interpreter(program, "hardware")
    modelled = tfxbar.Interpreter(modelled_program, "hardware")
    x_hw = codes[:args.hardware_limit]
    keras_pred = np.argmax(qmodel.predict(x_float, batch_size=250, verbose=0), -1)
    agree = float(np.mean(ideal.predict(codes) == keras_pred))
    runs = {"tfxbar ideal": (lambda: ideal.run(codes), len(codes)),
            "tfxbar hardware (lossless)": (lambda: hardware.run(codes), len(codes)),
            "tfxbar hardware, modelled": (lambda: modelled.run(x_hw), len(x_hw))}
    if float_model is not None:
        n = len(x_float) - len(x_float) % args.batch
        lite = _tflite(_tflite_model(float_model), args.batch, 2)
        runs["TFLite int8"] = (lambda: _run_tflite(lite, x_float[:n], args.batch), n)
    rates, load = rotated_rounds(runs, args.rounds)
    median = {k: statistics.median(v) for k, v in rates.items()}
    crossbars = [op for op in program.ops if op["kind"] == "crossbar"]
    tiles = sum(len(op["attrs"]["tiles"]) for op in crossbars)
    print(f"\n## {name}: {qmodel.count_params():,} parameters, {len(program.ops)} ops "
          f"({len(crossbars)} crossbars, {sum(op['kind'] == 'add' for op in program.ops)} adds), "
          f"{tiles} tiles of 128×128")
    print(f"export: {statistics.median(times):.2f} s (median of {args.rounds}); program top-1 = Keras "
          f"top-1 on {agree:.2%} of {len(codes)} test images; load {min(load):.1f}–{max(load):.1f}")
    print(f"| interpreter | img/s (median of {args.rounds}) | vs TFLite int8 |")
    print("|---|---|---|")
    for key, rate in median.items():
        ratio = f"{rate / median['TFLite int8']:.2f}×" if "TFLite int8" in median else "–"
        print(f"| {key} | {rate:,.1f} | {ratio} |")
    if args.profile:   # where ideal mode's time goes: share of each function's own time
        profiler = cProfile.Profile()
        one = tfxbar.Interpreter(program, workers=1)
        profiler.enable()
        one.run(codes)
        profiler.disable()
        stats = pstats.Stats(profiler)
        total = sum(row[2] for row in stats.stats.values())
        top = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:6]
        print("ideal-mode profile (one worker): " + "; ".join(
            f"{name} {row[2] / total:.0%}" for (_, _, name), row in top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=2000, help="test images for ideal mode and TFLite")
    parser.add_argument("--hardware-limit", type=int, default=200, help="test images for modelled hardware")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100, help="TFLite batch")
    parser.add_argument("--model", default=None, help="a saved tfxbar-quantized model (.keras) instead")
    parser.add_argument("--profile", action="store_true",
                        help="also profile ideal mode (one worker) and print the top functions")
    args = parser.parse_args()

    x_train, _ = datasets.load("cifar10", "train[:512]")
    x_test, _ = datasets.load("cifar10", "test")
    x_float = datasets.normalize(x_test[:args.limit]).astype(np.float32)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs visible, {cpu_flags()}")
    print(f"TF {tf.__version__}, numpy {np.__version__}, tfxbar {tfxbar.__version__}")
    for name, (qmodel, float_model) in _models(args, datasets.normalize(x_train)).items():
        _benchmark(name, qmodel, float_model, args, x_float, x_train[:64])


if __name__ == "__main__":
    main()
