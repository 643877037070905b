"""P5: accuracy vs accumulator bits, with bit widths planned for the accumulator (MNIST, CIFAR-10).

    python examples/p5_accumulator_bits.py --dataset cifar10 --float-model runs/cifar_float.keras \
        --acc-bits 8 12 16 20 --methods worst-case --qat-epochs 2 --seed 0
    python examples/p5_accumulator_bits.py --dataset mnist --acc-bits 8 12 16 20 --methods worst-case \
        --qat-epochs 1 --seed 0
    python examples/p5_accumulator_bits.py --dataset mnist --acc-bits 12 --methods a2q --qat-epochs 1 --seed 0

(the commands of docs/results.md; `runs/cifar_float.keras` comes from examples/p2_biased_w2a2.py
--save-float, or leave --float-model out to train the float model here.)

One float model is trained (or loaded with --float-model). For each accumulator width P and
each method, the per-layer input bits N and weight bits M are planned for P, the float model
is quantized with them, fine-tuned briefly with quantization in the loop, exported with the
differential mapping, and checked:

- ``worst-case`` (P5 as published): `tfxbar.plan_bitwidths`, the largest (N, M) with
  K·(2^N − 1)·(2^(M−1) − 1) ≤ 2^(P−1) − 1, plain uniform weights. When a layer's fan-in K alone
  exceeds the budget (K > 2^(P−1) − 1, nothing fits even at N = 1, M = 2) there is no valid
  plan: the layer and the P it would need are reported and nothing is trained.
- ``a2q``: the same search, but a pair fits when the trained float weights' largest
  per-channel ‖q‖₁ at M bits is within A2Q's bound (2^(P−1) − 1)·2^(−N); QAT then uses
  `A2QWeights`, which keeps every channel within the bound by construction, so the guarantee
  holds for the fine-tuned weights too. A layer where even (1, 2) breaks the bound gets (1, 2)
  and the quantizer shrinks its weights until they fit ("forced").

Per (P, method): Keras test accuracy, the exported program's ideal-mode test accuracy,
`tfxbar.check_program(program, P)` (static worst-case bounds; must pass), and a hardware-mode
run with a wrapping P-bit accumulator on the first --hardware-limit test images (overflows,
agreement with ideal mode). MNIST trains the float model without augmentation; CIFAR-10 uses
P2's flips and shifts. The test set is only evaluated, never used to choose anything.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
import tf_keras as keras
from common import Splits, accuracy, load_splits, report
from p2_biased_w2a2 import train

import tfxbar
from tfxbar.check import A2QWeights
from tfxbar.quantizers import ClippedRound, UniformWeights

METHODS = ("worst-case", "a2q")
SETTINGS = {  # dataset → (model builder, float epochs, float lr, augment)
    "mnist": (lambda: tfxbar.models.mnist_cnn(), 3, 2e-3, False),
    "cifar10": (lambda: tfxbar.models.vgg_small((16, 32, 64), 128), 12, 2e-3, True),
}
CROSSBAR = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def crossbar_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, CROSSBAR)]


def planner_key(pair: tuple[int, int]) -> tuple[int, int, int]:
    """plan_bitwidths' "sum" objective: max N + M, ties to the balanced pair, then wider weights."""
    return pair[0] + pair[1], -abs(pair[0] - pair[1]), pair[1]


def worst_case_plan(model: keras.Model, p: int) -> tuple[dict[str, tuple[int, int]] | None, str]:
    """P5's plan as (N, M) per layer, or None and which layers cannot fit."""
    plan = tfxbar.plan_bitwidths(model, accumulator_bits=p)
    missing = [layer for layer in plan.layers.values() if layer.input_bits is None]
    if missing:
        # Even N = 1, M = 2 needs K ≤ 2^(P−1) − 1, i.e. P ≥ ⌈log2(K + 1)⌉ + 1.
        why = "; ".join(f"{layer.name} (K={layer.fan_in}) needs P ≥ "
                        f"{math.ceil(math.log2(layer.fan_in + 1)) + 1}" for layer in missing)
        return None, f"no valid plan: {why}"
    return {name: (layer.input_bits, layer.weight_bits) for name, layer in plan.layers.items()}, ""


def channel_l1(kernel: np.ndarray, bits: int) -> int:
    """Largest per-output-channel ‖q‖₁ of max-scaled symmetric `bits`-bit codes of `kernel`."""
    top = 2 ** (bits - 1) - 1
    w = kernel.reshape(-1, kernel.shape[-1])
    scale = np.maximum(np.abs(w).max(0), 1e-12) / top
    return int(np.abs(np.clip(np.round(w / scale), -top, top)).sum(0).max())


def a2q_plan(model: keras.Model, p: int) -> tuple[dict[str, tuple[int, int]], str]:
    """Weight-aware (N, M) per layer under A2Q's per-channel L1 bound; notes forced layers."""
    chosen, forced = {}, []
    for layer in crossbar_layers(model):
        kernel = layer.kernel.numpy()
        pairs = []
        for m in range(2, 9):
            l1 = channel_l1(kernel, m)
            ns = [n for n in range(1, 9) if l1 <= math.floor(tfxbar.a2q_l1_bound(n, p))]
            if ns:
                pairs.append((max(ns), m))
        pairs = [a for a in pairs if not any(b != a and b[0] >= a[0] and b[1] >= a[1] for b in pairs)]
        if not pairs:
            forced.append(layer.name)
        chosen[layer.name] = max(pairs, key=planner_key) if pairs else (1, 2)
    return chosen, ("forced to (1, 2): " + ", ".join(forced)) if forced else ""


def layer_specs(bits: dict[str, tuple[int, int]], p: int, method: str) -> dict[str, tfxbar.LayerSpec]:
    specs = {}
    for name, (n, m) in bits.items():
        weights = A2QWeights(m, p, n) if method == "a2q" else UniformWeights(m)
        specs[name] = tfxbar.LayerSpec(weights, ClippedRound(n))
    return specs


def evaluate_program(qmodel: keras.Model, data: Splits, p: int, hardware_limit: int) -> dict[str, Any]:
    """Export (differential mapping), check at P, ideal accuracy, hardware run with a P-bit wrap."""
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel, weight_mapping="differential").convert()
    check = tfxbar.check_program(program, accumulator_bits=p)
    codes = program.quantize_input(data.x_test)
    ideal = tfxbar.Interpreter(program).predict(codes)
    result = {"program_test": float(np.mean(ideal == data.y_test)), "check_ok": bool(check.ok),
              "check_bits": {name: int(info["bits"]) for name, info in check.layers.items()}}
    if hardware_limit > 0:
        hardware = tfxbar.Interpreter(program, "hardware", accumulator_bits=p, accumulator_mode="wrap")
        predicted = hardware.predict(codes[:hardware_limit])
        result["hw_examples"] = int(len(predicted))
        result["hw_overflows"] = int(sum(s["acc_overflows"] for s in hardware.stats.values()))
        result["hw_agree_ideal"] = float(np.mean(predicted == ideal[:hardware_limit]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(SETTINGS), default="mnist")
    parser.add_argument("--acc-bits", type=int, nargs="+", default=[8, 10, 12, 14, 16, 18, 20])
    parser.add_argument("--methods", choices=METHODS, nargs="+", default=list(METHODS))
    parser.add_argument("--float-model", help="load this float model (.keras) instead of training one")
    parser.add_argument("--save-float", help="save the trained float model here (.keras)")
    parser.add_argument("--float-epochs", type=int, help="default: 3 (MNIST), 12 (CIFAR-10)")
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--qat-lr", type=float, default=1e-3)
    parser.add_argument("--hardware-limit", type=int, default=500,
                        help="test images for the hardware-mode run (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build, float_epochs, float_lr, augment = SETTINGS[args.dataset]
    start = time.time()
    data = load_splits(args.dataset)

    keras.utils.set_random_seed(args.seed)
    if args.float_model:
        model = keras.models.load_model(args.float_model)
    else:
        model = build()
        float_epochs = args.float_epochs if args.float_epochs is not None else float_epochs
        train(model, data, float_epochs, float_lr, augment, args.seed)
        if args.save_float:
            model.save(args.save_float)
    float_test = accuracy(model, data.x_test, data.y_test)
    base = {"paper": "P5", "dataset": args.dataset, "seed": args.seed, "qat_epochs": args.qat_epochs}
    report({**base, "variant": "float", "float_model": args.float_model,
            "fan_in": {name: layer.fan_in
                       for name, layer in tfxbar.plan_bitwidths(model, 16).layers.items()},
            "val": accuracy(model, data.x_val, data.y_val), "test": float_test}, start)

    for p in args.acc_bits:
        for method in args.methods:
            phase = time.time()
            bits, note = worst_case_plan(model, p) if method == "worst-case" else a2q_plan(model, p)
            record = {**base, "variant": method, "acc_bits": p, "note": note,
                      "bits": {name: list(nm) for name, nm in bits.items()} if bits else None}
            if bits is None:
                report(record, start)
                continue
            keras.utils.set_random_seed(args.seed)
            qmodel = tfxbar.quantize_model(model, "w8a8", layer_specs(bits, p, method),
                                           calibration_data=data.x_train[:2000])
            train(qmodel, data, args.qat_epochs, args.qat_lr, augment, args.seed)
            record.update(val=accuracy(qmodel, data.x_val, data.y_val),
                          test=accuracy(qmodel, data.x_test, data.y_test))
            record.update(evaluate_program(qmodel, data, p, args.hardware_limit))
            record["drop_test"] = float_test - record["test"]
            record["phase_minutes"] = round((time.time() - phase) / 60, 1)
            report(record, start)


if __name__ == "__main__":
    main()
