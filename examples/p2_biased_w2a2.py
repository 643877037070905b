"""P2: W2A2 trained-biased weights vs W2A2 symmetric vs float, on CIFAR-10 and Fashion-MNIST.

    python examples/p2_biased_w2a2.py --dataset cifar10 --seed 0
    python examples/p2_biased_w2a2.py --dataset fashion_mnist --seed 0

One float VGG-style CNN is trained; two copies of it are then quantized and trained further:
"w2a2-biased" (one 2-bit cell per weight, codes 0..3 minus a trained per-channel offset on a
2^-8 grid, P2) and a symmetric W2A2 baseline (codes −1, 0, +1 with an MSE-chosen scale, on a
differential pair). Both use 2-bit clipped-rounding activations, i.e. BN + ReLU + quantizer
coalesced; the exporter folds that stage into integer thresholds, and the exported program's
accuracy is measured with the ideal-mode interpreter on the whole test set.

CIFAR-10 uses light augmentation (random flips and 4-pixel shifts); the network is sized so
that each training phase takes well under 30 minutes on 2 CPU cores. Choices are made on
the validation split (the last 5,000 training images); the test set is evaluated only at
the end.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from common import Splits, accuracy, compile_model, load_splits, report

import tfxbar
from tfxbar.quantizers import ClippedRound, UniformWeights
from tfxbar.scheme.presets import pixel_input

SYMMETRIC = tfxbar.Preset(
    "w2a2-symmetric",
    "symmetric 2-bit weights (−1, 0, +1; MSE scale) on a differential pair, 2-bit activations",
    conv=tfxbar.LayerSpec(tfxbar.quantizers.UniformWeights(2, scale_mode="mse"),
                          tfxbar.quantizers.ClippedRound(2)),
    dense=tfxbar.LayerSpec(tfxbar.quantizers.UniformWeights(2, scale_mode="mse"),
                           tfxbar.quantizers.ClippedRound(2)),
)

SETTINGS = {  # dataset → (widths, hidden, float epochs, QAT epochs, augment)
    "cifar10": ((16, 32, 64), 128, 12, 8, True),
    "fashion_mnist": ((32, 64), 128, 4, 4, False),
}


def end_layers(model: keras.Model, bits: int) -> dict[str, tfxbar.LayerSpec]:
    """k-bit weights for the first and the last crossbar layer (and a k-bit input to the last).

    A common choice in low-precision CNNs: the first layer sees few input channels and the
    classifier few outputs, so they hold a small share of the weights and crossbars.
    """
    crossbars = [layer for layer in model.layers
                 if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    first, last = crossbars[0], crossbars[-1]
    return {first.name: tfxbar.LayerSpec(UniformWeights(bits), pixel_input()),
            last.name: tfxbar.LayerSpec(UniformWeights(bits), ClippedRound(bits))}


def training_data(data: Splits, batch_size: int, augment: bool, seed: int) -> tf.data.Dataset:
    """Shuffled training batches; with `augment`, random horizontal flips and ±4-pixel shifts."""
    ds = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    ds = ds.shuffle(len(data.x_train), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        def jitter(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            x = tf.image.random_flip_left_right(x)
            size = tf.shape(x)
            x = tf.image.resize_with_crop_or_pad(x, size[1] + 8, size[2] + 8)
            x = tf.image.random_crop(x, size)
            return x, y
        ds = ds.map(jitter, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def train(model: keras.Model, data: Splits, epochs: int, lr: float, augment: bool, seed: int,
          batch_size: int = 128) -> None:
    compile_model(model, lr, epochs, len(data.x_train), batch_size)
    model.fit(training_data(data, batch_size, augment, seed), epochs=epochs,
              validation_data=(data.x_val, data.y_val), verbose=2)


def program_accuracy(qmodel: keras.Model, data: Splits) -> tuple[float, float]:
    """Ideal-mode accuracy of the exported program, and its top-1 agreement with Keras."""
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    predictions = tfxbar.Interpreter(program).predict(program.quantize_input(data.x_test))
    keras_top1 = np.argmax(qmodel.predict(data.x_test, batch_size=500, verbose=0), 1)
    return float(np.mean(predictions == data.y_test)), float(np.mean(predictions == keras_top1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(SETTINGS), default="cifar10")
    parser.add_argument("--float-epochs", type=int, help="default: per dataset (see SETTINGS)")
    parser.add_argument("--qat-epochs", type=int, help="default: per dataset (see SETTINGS)")
    parser.add_argument("--save-float", help="also save the float model here (.keras)")
    parser.add_argument("--float-model", help="start from this saved float model instead of training one")
    parser.add_argument("--ends-bits", type=int,
                        help="weight bits of the first and last layer (default: W2A2 everywhere)")
    parser.add_argument("--variants", nargs="+", choices=("biased", "symmetric"),
                        default=["biased", "symmetric"], help="quantized variants to train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    widths, hidden, float_epochs, qat_epochs, augment = SETTINGS[args.dataset]
    float_epochs = args.float_epochs if args.float_epochs is not None else float_epochs
    qat_epochs = args.qat_epochs if args.qat_epochs is not None else qat_epochs
    start = time.time()
    data = load_splits(args.dataset)
    shape = data.x_train.shape[1:]

    keras.utils.set_random_seed(args.seed)
    phase = time.time()
    if args.float_model:
        model = keras.models.load_model(args.float_model)
    else:
        model = tfxbar.models.vgg_small(widths, hidden, input_shape=shape)
        train(model, data, float_epochs, 2e-3, augment, args.seed)
    base = {"paper": "P2", "dataset": args.dataset, "seed": args.seed, "widths": list(widths),
            "hidden": hidden, "float_epochs": float_epochs, "qat_epochs": qat_epochs,
            "float_model": args.float_model, "ends_bits": args.ends_bits}
    specs = end_layers(model, args.ends_bits) if args.ends_bits else None
    report({**base, "variant": "float", "val": accuracy(model, data.x_val, data.y_val),
            "test": accuracy(model, data.x_test, data.y_test),
            "phase_minutes": round((time.time() - phase) / 60, 1)}, start)
    if args.save_float:
        model.save(args.save_float)

    presets = {"biased": "w2a2-biased", "symmetric": SYMMETRIC}
    for preset in (presets[name] for name in args.variants):
        keras.utils.set_random_seed(args.seed)
        phase = time.time()
        qmodel = tfxbar.quantize_model(model, preset, specs, calibration_data=data.x_train[:2000])
        train(qmodel, data, qat_epochs, 1e-3, augment, args.seed)
        minutes = round((time.time() - phase) / 60, 1)
        program_acc, agreement = program_accuracy(qmodel, data)
        report({**base, "variant": preset if isinstance(preset, str) else preset.name,
                "val": accuracy(qmodel, data.x_val, data.y_val),
                "test": accuracy(qmodel, data.x_test, data.y_test),
                "program_test": program_acc, "program_keras_top1_agreement": agreement,
                "phase_minutes": minutes}, start)


if __name__ == "__main__":
    main()
