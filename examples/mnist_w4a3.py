"""Train the W4A3 preset (P4) CNN on MNIST: float pre-training, then quantization-aware training.

    python examples/mnist_w4a3.py --float-epochs 3 --qat-epochs 5 --seed 0

Prints float and W4A3 test accuracy. Offline, set TFXBAR_DATA_DIR (see README). The last
5,000 training images are held out for validation; the test set is only evaluated at the end.
"""

from __future__ import annotations

import argparse
import time

import tf_keras as keras
from common import accuracy, fit, load_splits, quantize_and_fit, report

import tfxbar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--float-epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=5)
    parser.add_argument("--preset", default="w4a3", choices=sorted(tfxbar.PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="save the quantized model here (.keras)")
    args = parser.parse_args()

    start = time.time()
    keras.utils.set_random_seed(args.seed)
    data = load_splits("mnist")
    model = tfxbar.models.mnist_cnn()
    fit(model, data, args.float_epochs, lr=2e-3)
    qmodel = quantize_and_fit(model, data, args.preset, args.qat_epochs)
    if args.save:
        qmodel.save(args.save)
    report({"preset": args.preset, "seed": args.seed, "float_epochs": args.float_epochs,
            "qat_epochs": args.qat_epochs,
            "float_test_acc": accuracy(model, data.x_test, data.y_test),
            "quant_test_acc": accuracy(qmodel, data.x_test, data.y_test)}, start)


if __name__ == "__main__":
    main()
