"""Train the W4A3 preset (P4) CNN on MNIST: float pre-training, then quantization-aware training.

    python examples/mnist_w4a3.py --float-epochs 3 --qat-epochs 5 --seed 0

Prints float and W4A3 test accuracy. Offline, set TFXBAR_DATA_DIR (see README). The last
5,000 training images are held out for validation; the test set is only evaluated at the end.
"""

from __future__ import annotations

import argparse
import json
import time

import tf_keras as keras

import tfxbar
from tfxbar import datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--float-epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--preset", default="w4a3", choices=sorted(tfxbar.PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="save the quantized model here (.keras)")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = datasets.load("mnist", "train[:-5000]")
    x_val, y_val = datasets.load("mnist", "train[-5000:]")
    x_test, y_test = datasets.load("mnist", "test")
    x_train, x_val, x_test = map(datasets.normalize, (x_train, x_val, x_test))

    def compile_(model: keras.Model, lr: float, steps: int) -> None:
        schedule = keras.optimizers.schedules.CosineDecay(lr, steps)
        model.compile(keras.optimizers.Adam(schedule),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])

    steps = -(-len(x_train) // args.batch_size)
    start = time.time()
    model = tfxbar.models.mnist_cnn()
    compile_(model, 2e-3, steps * args.float_epochs)
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.float_epochs,
              validation_data=(x_val, y_val), verbose=2)
    float_acc = model.evaluate(x_test, y_test, verbose=0)[1]

    qmodel = tfxbar.quantize_model(model, args.preset, calibration_data=x_train[:2000], verbose=True)
    compile_(qmodel, 1e-3, steps * args.qat_epochs)
    qmodel.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.qat_epochs,
               validation_data=(x_val, y_val), verbose=2)
    quant_acc = qmodel.evaluate(x_test, y_test, verbose=0)[1]
    if args.save:
        qmodel.save(args.save)
    print(json.dumps({"preset": args.preset, "seed": args.seed, "float_epochs": args.float_epochs,
                      "qat_epochs": args.qat_epochs, "float_test_acc": round(float_acc, 4),
                      "quant_test_acc": round(quant_acc, 4),
                      "minutes": round((time.time() - start) / 60, 1)}))


if __name__ == "__main__":
    main()
