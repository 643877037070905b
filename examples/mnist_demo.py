"""The tfxbar main job on MNIST: float training, then W4A3 quantization-aware training.

    python examples/mnist_demo.py

Trains the reference CNN in float for one epoch, quantizes it with the W4A3 preset (P4),
fine-tunes it for one epoch and prints float vs quantized test accuracy.
"""

from __future__ import annotations

import argparse
import time

import tf_keras as keras

import tfxbar
from tfxbar import datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="float epochs, then as many QAT epochs")
    parser.add_argument("--preset", default="w4a3", choices=sorted(tfxbar.PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.time()
    keras.utils.set_random_seed(args.seed)
    print("[1/4] loading MNIST")
    x_train, y_train = datasets.load("mnist", "train")
    x_test, y_test = datasets.load("mnist", "test")
    x_train, x_test = datasets.normalize(x_train), datasets.normalize(x_test)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    print(f"[2/4] training the float CNN for {args.epochs} epoch(s)")
    model = tfxbar.models.mnist_cnn()
    model.compile(keras.optimizers.Adam(2e-3), loss, ["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=args.epochs, verbose=2)
    float_acc = model.evaluate(x_test, y_test, verbose=0)[1]

    print(f"[3/4] quantizing with preset {args.preset!r}")
    qmodel = tfxbar.quantize_model(model, args.preset, calibration_data=x_train[:2000], verbose=True)
    qmodel.compile(keras.optimizers.Adam(5e-4), loss, ["accuracy"])
    print(f"[4/4] quantization-aware training for {args.epochs} epoch(s)")
    qmodel.fit(x_train, y_train, batch_size=128, epochs=args.epochs, verbose=2)
    quant_acc = qmodel.evaluate(x_test, y_test, verbose=0)[1]

    print()
    print(f"{'model':<28}{'MNIST test accuracy':>20}")
    print(f"{'float':<28}{100 * float_acc:>19.2f}%")
    print(f"{'quantized (' + args.preset + ')':<28}{100 * quant_acc:>19.2f}%")
    print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
