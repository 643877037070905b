"""Choose the P4 sweep's fine-tune recipe on held-out validation images (never the test images).

Runs one design point of the sweep (default: 4-bit ADCs, 8-bit DACs — the largest loss of the
CIFAR-10 ResNet-20) with every fine-tune recipe below, plain QAT and ADC-aware, through
`tfxbar.sweep.point.evaluate_point`, on ``val.npz`` of examples/p4_sweep_setup.py ``--validation``,
and prints one row per recipe: ideal accuracy (what the fine-tune costs or gains without ADC
loss) and hardware accuracy. The winner goes into docs/sweeps/p4_cifar10.json.

    TFXBAR_DATA_DIR=/work/shared/data python examples/p4_sweep_setup.py --dataset cifar10 \\
        --model out/resnet20/qat.keras --test 1000 --finetune-train 8192 --validation 1000 \\
        --out out/p4_cifar10
    python examples/p4_finetune_recipes.py --setup out/p4_cifar10 --out out/p4_cifar10/recipes.json
    python examples/p4_finetune_recipes.py --adc-range calibrated mse --recipes adam-3e-4-cosine-crop-flip \
        --kinds adc_aware --epochs 3       # the ADC range policies side by side

Seeded (``--seed``, the sweep's seed): every recipe sees the same images in the same order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tfxbar.atomic import write_atomically  # noqa: E402
from tfxbar.export.config import DATA_ADC_RANGES  # noqa: E402
from tfxbar.sweep.point import evaluate_point  # noqa: E402

#: name -> (optimizer, learning rate, schedule, augmentation)
RECIPES = {
    "adam-3e-5-constant": ("adam", 3e-5, "constant", "none"),       # the sweep's first recipe
    "adam-1e-4-cosine-crop-flip": ("adam", 1e-4, "cosine", "crop_flip"),
    "adam-3e-4-cosine-crop-flip": ("adam", 3e-4, "cosine", "crop_flip"),
    "adam-1e-3-cosine-crop-flip": ("adam", 1e-3, "cosine", "crop_flip"),
    "sgd-1e-3-cosine-crop-flip": ("sgd", 1e-3, "cosine", "crop_flip"),
    "sgd-1e-2-cosine-crop-flip": ("sgd", 1e-2, "cosine", "crop_flip"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", default="out/p4_cifar10", help="folder of p4_sweep_setup.py")
    parser.add_argument("--adc-bits", type=int, default=4)
    parser.add_argument("--dac-bits", type=int, default=8)
    parser.add_argument("--adc-range", nargs="+", default=["calibrated"], choices=list(DATA_ADC_RANGES),
                        help="ADC range policies to compare (steps chosen on the first 256 images)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--recipes", nargs="*", default=sorted(RECIPES), choices=sorted(RECIPES))
    parser.add_argument("--kinds", nargs="*", default=["qat", "adc_aware"], choices=["qat", "adc_aware"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the rows as JSON (atomically)")
    args = parser.parse_args()
    val = os.path.join(args.setup, "val.npz")
    if not os.path.exists(val):
        parser.error(f"{val} is missing: run examples/p4_sweep_setup.py with --validation")
    base = {"model": os.path.join(args.setup, "model.keras"), "data": val, "trials": 1, "seed": args.seed,
            "representative": 256, "adc_range": "calibrated",
            "finetune_data": os.path.join(args.setup, "train.npz"), "finetune_epochs": args.epochs,
            "finetune_steps": None, "finetune_batch_size": args.batch_size, "finetune_batchnorm": "frozen"}
    rows = []
    for policy in args.adc_range:
        point = {"adc_bits": args.adc_bits, "adc_range": policy, "dac_bits": args.dac_bits}
        rows.append({"recipe": "as trained", **evaluate_point({**point, "finetune": "none"}, base)})
        for name in args.recipes:
            optimizer, lr, schedule, augment = RECIPES[name]
            settings = {**base, "finetune_optimizer": optimizer, "finetune_lr": lr,
                        "finetune_schedule": schedule, "finetune_augment": augment}
            for kind in args.kinds:
                start = time.perf_counter()
                rows.append({"recipe": name, **evaluate_point({**point, "finetune": kind}, settings)})
                row, seconds = rows[-1], time.perf_counter() - start
                print(f"{policy} {name} {kind}: ideal {row['accuracy_ideal']:.3f}, hardware "
                      f"{row['accuracy_hardware']:.3f} ({seconds:.0f} s)", flush=True)
    print(f"\n{args.adc_bits}-bit ADC, {args.dac_bits}-bit DAC, validation images of {val}:\n")
    print("| ADC range | recipe | fine-tune | ideal | hardware |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['adc_range']} | {row['recipe']} | {row['finetune']} | "
              f"{100 * row['accuracy_ideal']:.1f} % | "
              f"{100 * row['accuracy_hardware']:.1f} % |")
    if args.out:
        text = json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1).encode()
        write_atomically(args.out, lambda handle: handle.write(text))


if __name__ == "__main__":
    main()
