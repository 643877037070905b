"""P1: binary dense layers with 1-bit calibrated inputs in a small MNIST CNN, across hidden widths.

    python examples/p1_binary_dense.py --widths 64 128 256 --float-epochs 2 --qat-epochs 3 --seed 0

For each hidden width: train the float CNN, then quantize with the "binary-dense" preset
(8-bit convolutions; binary dense weights on differential binary cells; each dense layer's
input binarized at the threshold that minimises its squared error on calibration data) and
fine-tune. Reports float and quantized test accuracy and the drop (paper: 0.68 %). The
threshold-rule ablation (mse / mean / median) runs on the width that is best on validation.
"""

from __future__ import annotations

import argparse
import time

import tf_keras as keras
from common import accuracy, fit, load_splits, quantize_and_fit, report

import tfxbar
from tfxbar.quantizers import BinaryWeights, InputBinarizer


def binary_dense(rule: str) -> tfxbar.Preset:
    base = tfxbar.PRESETS["binary-dense"]
    dense = tfxbar.LayerSpec(BinaryWeights(), InputBinarizer(rule))
    return tfxbar.Preset(f"binary-dense-{rule}", base.description, base.conv, dense)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--float-epochs", type=int, default=2)
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--rules", nargs="*", default=["mean", "median"],
                        help="threshold rules to compare with mse on the best width (none: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    data = load_splits("mnist")

    def run(width: int, rule: str) -> dict:
        keras.utils.set_random_seed(args.seed)
        model = tfxbar.models.mnist_cnn(hidden=width)
        fit(model, data, args.float_epochs, lr=2e-3)
        qmodel = quantize_and_fit(model, data, binary_dense(rule), args.qat_epochs)
        result = {"paper": "P1", "hidden": width, "rule": rule, "seed": args.seed,
                  "float_val": accuracy(model, data.x_val, data.y_val),
                  "quant_val": accuracy(qmodel, data.x_val, data.y_val),
                  "float_test": accuracy(model, data.x_test, data.y_test),
                  "quant_test": accuracy(qmodel, data.x_test, data.y_test)}
        result["drop_test"] = result["float_test"] - result["quant_test"]
        report(result, start)
        return result

    results = [run(width, "mse") for width in args.widths]
    best = max(results, key=lambda r: r["quant_val"])  # chosen on validation, not test
    for rule in args.rules:
        run(best["hidden"], rule)


if __name__ == "__main__":
    main()
