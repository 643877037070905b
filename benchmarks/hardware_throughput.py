"""Throughput of the Keras hardware mode vs the interpreter's modelled hardware mode vs TFLite int8.

    TFXBAR_DATA_DIR=/work/shared/data python benchmarks/hardware_throughput.py

`tfxbar.models.mnist_cnn()` quantized with ``w4a3`` — trained, from `--model` (e.g. written by
``examples/mnist_w4a3.py --save``), or else briefly trained here (`--train-steps`; a few steps
leave BatchNorm's moving statistics unsettled, so that model's accuracy is near chance) — converted
with 128 × 128 tiles, a 1-bit DAC and 6-bit calibrated ADCs — the "hardware, modelled" row of
benchmarks/interpreter_throughput.py, where every DAC cycle, ADC conversion and accumulator step
is modelled. Side by side in one run, interleaved over `--rounds` in a rotated order:

- Keras hardware mode, native engine: `tfxbar.hardware.HardwareMode(engine="native")` installed,
  ``model.predict`` (the fused C++ kernel, tfxbar/hardware/crossbar_kernel.cc), once with each
  ``TFXBAR_KERNEL_METHOD``: ``lut`` (4-row table lookups, AVX2, 1-bit DACs), ``dense`` (int8
  dot products of every row: AMX tiles, else AVX2) — each skipped where the machine cannot run
  it — and ``sparse`` (vector adds of the live rows; any CPU); ``auto`` is lut where it
  applies, else dense, on AVX2-only CPUs, sparse elsewhere;
- Keras hardware mode, TF engine: ``engine="tf"`` (XLA-compiled crossbars);
- the numpy interpreter, ``Interpreter(program, "hardware")`` (default workers);
- the same quantized Keras model without the hardware mode (fake-quantized ideal layers, all on
  TensorFlow's own ops): the "ceiling" of earlier runs — the hardware mode's in-place layer ops
  make its layers around the crossbars cheaper than this model's;
- TFLite int8 of the same float CNN (tfmot 8-bit QAT, 2 threads), for scale: it computes ideal
  8-bit layers, without DAC cycles, ADCs or tiles;
- the first native method's model with TensorFlow's own BatchNormalization and quantizer ops
  (``native_layers=False``) in the `tf.function` loop: what the in-place layer ops
  (`tfxbar.hardware.native_layers`) are worth, side by side;
- the first native method's model and the ceiling's again, each under ``predict`` on
  `tfxbar.inference_batches` (tf.data's autotuner off) and called in a `tf.function` per batch
  instead of ``predict`` (how `evaluate_under_variation` steps a model);
- the crossbar products alone (`HardwareCrossbar.product` of the first native method: the
  native ops, XLA for a crossbar the kernel leaves out) on the inputs the hardware mode's layers
  see for the same images: their rate over the hardware mode's is the share of its time spent in
  them.

After the rounds it times each crossbar's product alone (µs per image): where the time goes.

Each Keras row runs its own copy of the model (loaded from one file), so no mode is installed or
removed between rounds. Prints the median images/s, the ratios, the top-1 agreement of the
hardware modes, the load average and the CPU flags (`lscpu`) that matter for int8 GEMMs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from interpreter_throughput import _run_tflite, _tflite, _tflite_model, cpu_flags, rotated_rounds  # noqa: E402

import tfxbar  # noqa: E402
from tfxbar import datasets  # noqa: E402
from tfxbar.hardware import HardwareMode, native  # noqa: E402


def _crossbar_inputs(mode: HardwareMode, model: keras.Model, x: np.ndarray,
                     batch: int) -> tuple[list[str], list[list[tf.Tensor]]]:
    """The crossbars of `mode` and, per batch of `x`, the input each of their layers sees."""
    names = list(mode.crossbars)
    taps = keras.Model(model.inputs, [mode.crossbars[n].kernel.wrapper.input for n in names])
    return names, [list(taps(x[start:start + batch])) for start in range(0, len(x), batch)]


def _kernels_alone(mode: HardwareMode, model: keras.Model, x: np.ndarray, batch: int):  # noqa: ANN202
    """A run of only the crossbar products of `mode` (`HardwareCrossbar.product`: the native ops,
    or XLA where the kernel does not apply) on the inputs its layers see, computed beforehand for
    every batch of `x`: the rest of the hardware mode's time is the model's own layers around the
    crossbars."""
    names, inputs = _crossbar_inputs(mode, model, x, batch)
    products = [tf.function(mode.crossbars[n].product) for n in names]
    calls = [call for batch_inputs in inputs for call in zip(products, batch_inputs, strict=True)]

    def run() -> None:
        for product, layer_inputs in calls:
            product(layer_inputs, False)
    run()   # traces
    return run


def _per_crossbar(mode: HardwareMode, model: keras.Model, x: np.ndarray, batch: int) -> dict[str, float]:
    """µs per image of each crossbar's product alone (`HardwareCrossbar.product`, best of 3 passes
    over the batches of `x`): which layers the hardware mode's time goes to."""
    names, inputs = _crossbar_inputs(mode, model, x, batch)
    times = {}
    for i, name in enumerate(names):
        product = tf.function(mode.crossbars[name].product)
        product(inputs[0][i], False)   # traces
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for batch_inputs in inputs:
                product(batch_inputs[i], False)[0].numpy()
            best = min(best, time.perf_counter() - start)
        times[name] = best / len(x) * 1e6
    return times


def _function_loop(model: keras.Model, x: np.ndarray, batch: int):  # noqa: ANN202
    """The model called in one `tf.function` per batch, as `evaluate_under_variation` steps it:
    the hardware mode without `predict`'s own machinery (on the AVX2 machine of
    docs/benchmarks.md, `predict` alternated between two speeds from round to round; this does
    not)."""
    step = tf.function(lambda images: model(images, training=False))
    batches = [tf.constant(x[start:start + batch]) for start in range(0, len(x), batch)]
    step(batches[0])   # traces

    def run() -> None:
        for images in batches:
            step(images).numpy()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10000, help="test images for TFLite")
    parser.add_argument("--hardware-limit", type=int, default=500, help="test images for both hardware modes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=250, help="TFLite and Keras batch")
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--model", help="a trained tfxbar-quantized mnist_cnn() (.keras); "
                                            "default: train briefly")
    args = parser.parse_args()

    x_test, y_test = datasets.load("mnist", "test")
    x_train, y_train = datasets.load("mnist", "train[:6400]")
    keras.utils.set_random_seed(0)
    float_model = tfxbar.models.mnist_cnn()   # TFLite's speed does not depend on the weights
    tfxbar.register_keras_objects()
    path = args.model
    if path:
        steps = "trained"
    else:
        qmodel = tfxbar.quantize_model(float_model, "w4a3", calibration_data=x_train[:512] / 255.0)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        qmodel.compile(keras.optimizers.Adam(1e-3), loss)
        steps = min(args.train_steps, len(x_train) // 64)
        qmodel.fit(x_train[:64 * steps] / 255.0, y_train[:64 * steps], batch_size=64, epochs=1, verbose=0)
        steps = f"{steps} training steps"
        path = os.path.join(tempfile.mkdtemp(), "qmodel.keras")
        qmodel.save(path)
    module = native.load("native")
    fast = tuple(m for m in ("lut", "dense") if native.method_supported(module, m))
    names = (*fast, "sparse", "tf", "tf-layers", "ideal")
    copies = {name: keras.models.load_model(path, compile=False) for name in names}
    program = tfxbar.CrossbarConverter.from_keras_model(
        copies["ideal"], dac_bits=1, adc_bits=6, adc_range="calibrated",
        representative_data=x_train[:256]).convert()
    interpreter = tfxbar.Interpreter(program, "hardware")
    modes = {"tf": HardwareMode(copies["tf"], program=program, engine="tf").install()}
    previous = os.environ.get("TFXBAR_KERNEL_METHOD", "auto")
    for method in names[:-3]:
        os.environ["TFXBAR_KERNEL_METHOD"] = method   # read when the mode is built
        modes[method] = HardwareMode(copies[method], program=program, engine="native").install()
    os.environ["TFXBAR_KERNEL_METHOD"] = names[0]
    modes["tf-layers"] = HardwareMode(copies["tf-layers"], program=program, engine="native",
                                      native_layers=False).install()
    os.environ["TFXBAR_KERNEL_METHOD"] = previous
    lite = _tflite(_tflite_model(float_model), args.batch, 2)

    n_hw = args.hardware_limit - args.hardware_limit % args.batch   # one batch shape: one XLA compile
    x_hw, y_hw = x_test[:n_hw], y_test[:n_hw]
    xf_hw = (x_hw / 255.0).astype(np.float32)
    x_lite = (x_test[:args.limit] / 255.0).astype(np.float32)
    n_lite = len(x_lite) - len(x_lite) % args.batch
    logits = {engine: copies[engine].predict(xf_hw, batch_size=args.batch, verbose=0)
              for engine in names}   # also warms up
    if not np.array_equal(logits["tf-layers"], logits[names[0]]):
        raise SystemExit("hardware_throughput: the in-place layer ops changed the logits")
    predicted = {engine: np.argmax(out, -1) for engine, out in logits.items()}
    interp_pred = interpreter.predict(x_hw)

    def keras_run(engine: str):  # noqa: ANN202
        return lambda: copies[engine].predict(xf_hw, batch_size=args.batch, verbose=0)

    runs = {f"Keras hardware mode, native engine ({method})": (keras_run(method), n_hw)
            for method in names[:-3]}
    runs.update({
        "Keras hardware mode, TF/XLA engine": (keras_run("tf"), n_hw),
        "interpreter, modelled hardware": (lambda: interpreter.run(x_hw), n_hw),
        "Keras quantized model, no hardware mode (ceiling)": (keras_run("ideal"), n_hw),
        "TFLite int8 (ideal 8-bit)": (lambda: _run_tflite(lite, x_lite[:n_lite], args.batch), n_lite)})
    kernel_method = names[0]
    # predict on batches without tf.data's autotuner (`tfxbar.inference_batches`): on 2 CPUs the
    # autotuner's thread halves whole rounds of predict on arrays.
    batches_hw = tfxbar.inference_batches(xf_hw, batch_size=args.batch)
    runs[f"Keras hardware mode, native engine ({kernel_method}), predict on inference_batches"] = (
        lambda: copies[kernel_method].predict(batches_hw, verbose=0), n_hw)
    runs["Keras quantized model, no hardware mode (ceiling), predict on inference_batches"] = (
        lambda: copies["ideal"].predict(batches_hw, verbose=0), n_hw)
    runs[f"Keras hardware mode, native engine ({kernel_method}), tf.function loop"] = (
        _function_loop(copies[kernel_method], xf_hw, args.batch), n_hw)
    runs[f"Keras hardware mode, native engine ({kernel_method}), TF's own BN and quantizer ops, "
         "tf.function loop"] = (_function_loop(copies["tf-layers"], xf_hw, args.batch), n_hw)
    runs["Keras quantized model, no hardware mode (ceiling), tf.function loop"] = (
        _function_loop(copies["ideal"], xf_hw, args.batch), n_hw)
    runs[f"crossbar kernels alone ({kernel_method}; share of the hardware mode)"] = (
        _kernels_alone(modes[kernel_method], copies[kernel_method], xf_hw, args.batch), n_hw)
    rates, load = rotated_rounds(runs, args.rounds)
    layers = _per_crossbar(modes[kernel_method], copies[kernel_method], xf_hw, args.batch)
    for mode in modes.values():
        mode.remove()
    median = {k: statistics.median(v) for k, v in rates.items()}
    base = median["interpreter, modelled hardware"]

    print(f"CPU: {cpu_flags()}; {os.cpu_count()} CPUs visible; TF {tf.__version__}")
    engines = [e for e in names[:-1] if e != "tf-layers"]
    accuracy = ", ".join(f"Keras {e} {np.mean(predicted[e] == y_hw):.4f}" for e in engines)
    agreement = ", ".join(f"{e} {np.mean(predicted[e] == interp_pred):.4f}" for e in engines)
    print(f"MNIST CNN w4a3, 128×128 tiles, 1-bit DAC, 6-bit calibrated ADCs, {steps}; "
          f"{n_hw} test images in hardware mode: accuracy {accuracy}, "
          f"interpreter {np.mean(interp_pred == y_hw):.4f}; top-1 agreement with the interpreter: "
          f"{agreement}")
    print(f"load average (1 min) during the rounds: {min(load):.1f}–{max(load):.1f}")
    # The best round too: on a shared VM whole rounds slow down by a third at random (both
    # kernel methods alike), which moves a median of few rounds more than the engines differ.
    best = {k: max(v) for k, v in rates.items()}
    best_base = best["interpreter, modelled hardware"]
    kernels = next(k for k in median if k.startswith("crossbar kernels alone"))
    hardware = f"Keras hardware mode, native engine ({kernel_method})"
    # The loop is the like-for-like share (the products are timed in tf.functions too);
    # `predict` adds its own rounds-long slowdowns (docs/benchmarks.md).
    print(f"crossbar kernels: {median[hardware + ', tf.function loop'] / median[kernels]:.0%} of the "
          f"{kernel_method} hardware mode's time in the tf.function loop, "
          f"{median[hardware] / median[kernels]:.0%} under predict (median rounds); the rest is the "
          "model's layers around them")
    print(f"| engine | img/s (median of {args.rounds}) | vs interpreter (modelled) | vs TFLite int8 | "
          "best round img/s | best vs best interpreter |")
    print("|---|---|---|---|---|---|")
    lite_rate = median["TFLite int8 (ideal 8-bit)"]
    for name, rate in median.items():
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}× | {rate / lite_rate:.3f}× | {best[name]:,.0f} | "
              f"{best[name] / best_base:.2f}× |")
    print(f"crossbar products alone ({kernel_method}), µs per image: " +
          ", ".join(f"{name} {us:,.0f}" for name, us in layers.items()))
    print("rounds (img/s): " + "; ".join(f"{k} " + ", ".join(f"{r:,.0f}" for r in v)
                                         for k, v in rates.items()))


if __name__ == "__main__":
    main()
