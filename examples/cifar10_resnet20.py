"""ResNet-20 on CIFAR-10, from float training to a checked integer crossbar program.

    python examples/cifar10_resnet20.py --stage all          # float → qat → export
    python examples/cifar10_resnet20.py --stage qat          # re-run one stage from its input

Stages (each reads the previous stage's checkpoint under --out, so any one can be re-run):

- ``float``: train `tfxbar.models.resnet20()` in float (random 4-px-padded crops and horizontal
  flips; SGD, momentum 0.9, cosine decay; L2 1e-4) → ``float.keras``;
- ``qat``: `quantize_model(float, preset, calibration_data=2,000 training images)`, with A2Q
  weights on the stem and the classifier so that every accumulator fits --acc-bits (see
  `accumulator_specs`), then quantization-aware fine-tuning (Adam, cosine decay) → ``qat.keras``;
- ``report``: print the docs/results.md table from ``results.json``.
- ``export``: convert to an integer program (``resnet20_<preset>.xbar``), check accumulators
  against --acc-bits, run the program on the test set with the bit-exact interpreter.

Every stage merges its figures (test accuracy, epochs, wall time, seed, command) into
``results.json``, written atomically. Validation is the last 5,000 training images (see
examples/common.py); the test set is only evaluated, never used for a choice.
Offline, set TFXBAR_DATA_DIR (see README).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

import tfxbar
from tfxbar.atomic import write_atomically
from tfxbar.check import A2QWeights

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Splits, load_splits  # noqa: E402 - examples/ is not a package

PRESETS = {
    **tfxbar.PRESETS,
    # 4-bit weights and activations: the usual W4A4 point of the ResNet QAT literature.
    "w4a4": tfxbar.Preset(
        "w4a4", "4-bit symmetric weights, 4-bit activations",
        conv=tfxbar.LayerSpec(tfxbar.quantizers.UniformWeights(4), tfxbar.quantizers.ClippedRound(4)),
        dense=tfxbar.LayerSpec(tfxbar.quantizers.UniformWeights(4), tfxbar.quantizers.ClippedRound(4))),
}


def accumulator_specs(model: keras.Model, preset: tfxbar.Preset, accumulator_bits: int
                      ) -> dict[str, tfxbar.LayerSpec]:
    """A2Q weights (`tfxbar.check.A2QWeights`) for the two layers whose worst case can exceed
    the accumulator: the stem conv reads 8-bit pixel codes, and the classifier reads window
    sums of activation codes (the program sums codes over the 8×8 global average pool and
    folds 1/64 into the classifier), i.e. inputs up to 64·(2^a − 1), log2 of which is 9 bits
    at a = 3. Every other conv fits: 3·3·64·(2^a − 1)·7 ≤ 2^15 − 1 for a ≤ 3."""
    pixel = tfxbar.scheme.pixel_input()
    window = int(np.prod(model.get_layer("pool").input_shape[1:3]))
    sums = window * preset.dense.inputs.top
    weight_bits = preset.conv.weights.num_bits
    return {
        "stem_conv": tfxbar.LayerSpec(
            A2QWeights(weight_bits, accumulator_bits, pixel.num_bits), pixel),
        "logits": tfxbar.LayerSpec(
            A2QWeights(weight_bits, accumulator_bits, math.ceil(math.log2(sums + 1))),
            preset.dense.inputs),
    }


def augmented(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled batches with He et al.'s augmentation: 4-px zero padding, random 32×32 crop, flip."""
    def augment(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.image.pad_to_bounding_box(image, 4, 4, 40, 40)
        image = tf.image.random_crop(image, tf.shape(x)[1:])
        return tf.image.random_flip_left_right(image), label

    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), 1) == y))


def train(model: keras.Model, data: Splits, optimizer: str, lr: float, epochs: int,
          batch_size: int, seed: int) -> float:
    """Fit with cosine decay over the whole run; returns the wall time in seconds."""
    steps = max(1, epochs * -(-len(data.x_train) // batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(lr, steps)
    opt = (keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True) if optimizer == "sgd"
           else keras.optimizers.Adam(schedule))
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    start = time.time()
    model.fit(augmented(data.x_train, data.y_train, batch_size, seed), epochs=epochs,
              validation_data=(data.x_val, data.y_val), verbose=2)
    return time.time() - start


def record(out: str, figures: dict[str, Any]) -> None:
    """Merge `figures` into out/results.json (atomically) and print them."""
    path = os.path.join(out, "results.json")
    results: dict[str, Any] = {}
    if os.path.exists(path):
        with open(path) as handle:
            results = json.load(handle)
    results.update(figures)
    text = json.dumps(results, indent=2, sort_keys=True).encode()
    write_atomically(path, lambda handle: handle.write(text))
    print("RESULT " + json.dumps(figures), flush=True)


def stage_float(args: argparse.Namespace, data: Splits) -> None:
    model = tfxbar.models.resnet20(weight_decay=args.weight_decay)
    seconds = train(model, data, "sgd", args.float_lr, args.float_epochs, args.batch_size, args.seed)
    model.save(os.path.join(args.out, "float.keras"))
    record(args.out, {"float_accuracy": accuracy(model, data.x_test, data.y_test),
                      "float_val_accuracy": accuracy(model, data.x_val, data.y_val),
                      "float_epochs": args.float_epochs, "float_lr": args.float_lr,
                      "float_minutes": round(seconds / 60, 1), "params": model.count_params()})


def stage_qat(args: argparse.Namespace, data: Splits) -> None:
    model = keras.models.load_model(os.path.join(args.out, "float.keras"))
    preset = PRESETS[args.preset]
    specs = accumulator_specs(model, preset, args.acc_bits) if args.a2q else None
    qmodel = tfxbar.quantize_model(model, preset, specs, calibration_data=data.x_train[:2000],
                                   verbose=True)
    before = accuracy(qmodel, data.x_test, data.y_test)
    seconds = train(qmodel, data, "adam", args.qat_lr, args.qat_epochs, args.batch_size, args.seed)
    qmodel.save(os.path.join(args.out, "qat.keras"))
    record(args.out, {"preset": args.preset, "a2q_stem_and_logits": args.a2q,
                      "quantized_accuracy_before_qat": before,
                      "quantized_accuracy": accuracy(qmodel, data.x_test, data.y_test),
                      "quantized_val_accuracy": accuracy(qmodel, data.x_val, data.y_val),
                      "qat_epochs": args.qat_epochs, "qat_lr": args.qat_lr,
                      "qat_minutes": round(seconds / 60, 1)})


def stage_export(args: argparse.Namespace, data: Splits) -> None:
    qmodel = keras.models.load_model(os.path.join(args.out, "qat.keras"))
    start = time.time()
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    export_seconds = time.time() - start
    path = os.path.join(args.out, f"resnet20_{args.preset}.xbar")
    program.save(path)
    check = tfxbar.check_program(program, accumulator_bits=args.acc_bits)
    print(check)
    n = args.program_images or len(data.x_test)
    x_test, y_test = data.x_test[:n], data.y_test[:n]
    codes = program.quantize_input(x_test)
    start = time.time()
    predicted = tfxbar.Interpreter(program).predict(codes)
    run_seconds = time.time() - start
    keras_top1 = np.argmax(qmodel.predict(x_test, batch_size=500, verbose=0), 1)
    print(tfxbar.summary(program))
    record(args.out, {"program_accuracy": float(np.mean(predicted == y_test)),
                      "program_test_images": n,
                      "quantized_accuracy_same_images": float(np.mean(keras_top1 == y_test)),
                      "program_keras_top1_agreement": float(np.mean(predicted == keras_top1)),
                      f"accumulators_within_{args.acc_bits}_bits": bool(check.ok),
                      "program": path, "export_seconds": round(export_seconds, 1),
                      "interpreter_images_per_second": round(len(codes) / run_seconds, 1)})


def stage_report(args: argparse.Namespace, data: Splits | None) -> None:
    """Print the docs/results.md table from results.json (no training, no data)."""
    with open(os.path.join(args.out, "results.json")) as handle:
        r = json.load(handle)

    def pct(key: str) -> str:
        return f"{100 * r[key]:.2f} %" if key in r else "–"

    rows = [("float ResNet-20 (Keras)", pct("float_accuracy"), f"{r.get('float_epochs')} epochs, "
             f"{r.get('float_minutes')} min"),
            (f"quantized {r.get('preset')} before QAT", pct("quantized_accuracy_before_qat"), ""),
            (f"quantized {r.get('preset')} after QAT (Keras)", pct("quantized_accuracy"),
             f"{r.get('qat_epochs')} epochs, {r.get('qat_minutes')} min"),
            ("integer program (interpreter, ideal)", pct("program_accuracy"),
             f"top-1 = Keras on {pct('program_keras_top1_agreement')} of "
             f"{r.get('program_test_images')} images"),
            (f"accumulators within {args.acc_bits} bits (static)",
             str(r.get(f"accumulators_within_{args.acc_bits}_bits", "–")), "")]
    print("| | CIFAR-10 test accuracy | notes |\n|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")
    print(f"\nseed {r.get('seed')}; commands: "
          + "; ".join(f"`python {r[k]}`" for k in sorted(r) if k.startswith("command_")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=["float", "qat", "export", "all", "report"], default="all")
    parser.add_argument("--preset", default="w4a3", choices=sorted(PRESETS))
    parser.add_argument("--float-epochs", type=int, default=20)
    parser.add_argument("--qat-epochs", type=int, default=5)
    parser.add_argument("--float-lr", type=float, default=0.1)
    parser.add_argument("--qat-lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=0,
                        help="use only the first N training images (0: all); for timing runs")
    parser.add_argument("--acc-bits", type=int, default=16)
    parser.add_argument("--program-images", type=int, default=0,
                        help="run the program on the first N test images only (0: all 10,000)")
    parser.add_argument("--no-a2q", dest="a2q", action="store_false",
                        help="plain preset weights on the stem and classifier too (their worst "
                             "case then needs more than --acc-bits)")
    parser.add_argument("--out", default="out/resnet20")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.stage == "report":
        stage_report(args, None)
        return
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    data = load_splits("cifar10")
    if args.train_images:
        data.x_train, data.y_train = data.x_train[:args.train_images], data.y_train[:args.train_images]
    record(args.out, {"seed": args.seed, f"command_{args.stage}": " ".join(sys.argv)})
    stages = ["float", "qat", "export"] if args.stage == "all" else [args.stage]
    for name in stages:
        print(f"\n== stage {name} ({time.time() - start:.0f} s)", flush=True)
        {"float": stage_float, "qat": stage_qat, "export": stage_export}[name](args, data)
    record(args.out, {f"{args.stage}_wall_minutes": round((time.time() - start) / 60, 1)})


if __name__ == "__main__":
    main()
