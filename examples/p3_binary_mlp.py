"""P3: a two-layer MLP on binary ReRAM cells (differential pairs) on MNIST; layer-size study.

    python examples/p3_binary_mlp.py --hidden 256 512 1024 2048 --float-epochs 10 --qat-epochs 15 --seed 0

For each hidden size: train the float MLP, then quantize it with the "binary-mlp" preset
(binary weights on a differential pair of binary cells, 8-bit activations, 8-bit pixels) and
train it further with quantization in the loop (P3 trains and quantizes at the same time).
Reports float and binary test accuracy, the drop (paper: 0.25 %), and the binary model's
accuracy under lognormal programming variation (10 simulated chips per σ).
"""

from __future__ import annotations

import argparse
import time

import tf_keras as keras
from common import accuracy, fit, load_splits, quantize_and_fit, report

import tfxbar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--float-epochs", type=int, default=10)
    parser.add_argument("--qat-epochs", type=int, default=15)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--chips", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    data = load_splits("mnist")

    for hidden in args.hidden:
        keras.utils.set_random_seed(args.seed)
        model = tfxbar.models.mlp(hidden)
        fit(model, data, args.float_epochs, lr=1e-3, verbose=0)
        qmodel = quantize_and_fit(model, data, "binary-mlp", args.qat_epochs, lr=1e-3)
        result = {"paper": "P3", "hidden": hidden, "seed": args.seed,
                  "float_val": accuracy(model, data.x_val, data.y_val),
                  "quant_val": accuracy(qmodel, data.x_val, data.y_val),
                  "float_test": accuracy(model, data.x_test, data.y_test),
                  "quant_test": accuracy(qmodel, data.x_test, data.y_test)}
        result["drop_test"] = result["float_test"] - result["quant_test"]
        for sigma in args.sigmas:
            chips = tfxbar.evaluate_under_variation(
                qmodel, (data.x_test, data.y_test), tfxbar.DeviceModel(lognormal_sigma=sigma),
                trials=args.chips, seed=args.seed, verbose=0)
            result[f"sigma{sigma}_mean"] = float(chips.mean)
            result[f"sigma{sigma}_min"] = float(chips.min)
        report(result, start)


if __name__ == "__main__":
    main()
