"""Robustness of quantized MNIST models to ReRAM programming variation, plain vs variation-aware.

Trains P3's two-layer MLP on binary cells (preset "binary-mlp") and a small W4A3 CNN (P4,
preset "w4a3") twice each, with the same seed and epochs: plainly (quantization-aware only)
and variation-aware (`tfxbar.DeviceVariation`, lognormal programming variation at σ_train,
ramped in over the first epoch). Every model is then evaluated on 10 simulated chips per
lognormal σ in {0, 0.05, 0.1, 0.2, 0.3} with `tfxbar.evaluate_under_variation`; the script
prints a Markdown table and saves the accuracy-vs-σ curves as a PNG.

    TFXBAR_DATA_DIR=/work/shared/data python examples/variation_robustness.py

The defaults (5 MLP epochs, 4 CNN epochs, full MNIST) take roughly 30-40 min on 2 CPU cores;
``--quick`` runs a smoke test in about a minute. Harder settings: ``--dataset fashion_mnist``,
``--models mlp`` with ``--hidden 64`` (a narrow P3 MLP), ``--cell-view offset`` (one cell per
weight plus the reference column instead of a differential pair), ``--on-off-ratio``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

import tfxbar  # noqa: E402
from tfxbar import datasets  # noqa: E402
from tfxbar.scheme.presets import Preset, get_preset  # noqa: E402
from tfxbar.variation import DeviceModel, DeviceVariation, ramp  # noqa: E402

SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3)


def binary_mlp(hidden: int = 512) -> keras.Model:
    """P3's two-layer MLP; binary weights on differential binary cells."""
    return keras.Sequential([
        keras.layers.Flatten(input_shape=(28, 28, 1)),
        keras.layers.Dense(hidden),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(10),
    ])


def w4a3_cnn() -> keras.Model:
    """A small CNN for P4's W4A3 setting."""
    return keras.Sequential([
        keras.layers.Conv2D(16, 3, input_shape=(28, 28, 1)),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(10),
    ])


MODELS = {"mlp": ("P3 binary MLP", binary_mlp, "binary-mlp", "epochs_mlp"),
          "cnn": ("P4 W4A3 CNN", w4a3_cnn, "w4a3", "epochs_cnn")}


def _preset(name: str, cell_view: str | None) -> str | Preset:
    """The preset, with every weight quantizer switched to `cell_view` if given."""
    if cell_view is None:
        return name
    preset = get_preset(name)

    def switched(spec):
        q = spec.weights
        config = {**q.get_config(), "cell_view": cell_view}
        return dataclasses.replace(spec, weights=type(q).from_config(config))

    return dataclasses.replace(preset, name=f"{name}-{cell_view}", conv=switched(preset.conv),
                               dense=switched(preset.dense))


def train(builder, preset, x, y, epochs: int, seed: int, device: DeviceModel | None,
          batch_size: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = tfxbar.quantize_model(builder(), preset)
    model.compile(keras.optimizers.Adam(2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    callbacks = [] if device is None else [DeviceVariation(device, schedule=ramp(1), seed=seed)]
    model.fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, verbose=2)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs-mlp", type=int, default=5)
    parser.add_argument("--epochs-cnn", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=60000)
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--trials", type=int, default=10, help="simulated chips per σ")
    parser.add_argument("--train-sigma", type=float, default=0.2, help="σ of variation-aware training")
    parser.add_argument("--on-off-ratio", type=float, default=100.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", default="docs/variation_robustness.png")
    parser.add_argument("--json", default="docs/variation_robustness.json")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument("--hidden", type=int, default=512, help="hidden width of the MLP")
    parser.add_argument("--cell-view", default=None, choices=["differential", "offset"],
                        help="override the presets' cell mapping of the weights")
    args = parser.parse_args()
    if args.quick:
        args.epochs_mlp = args.epochs_cnn = 1
        args.train_size, args.test_size, args.trials = 2000, 1000, 2

    x_train, y_train = datasets.load(args.dataset, f"train[:{args.train_size}]")
    x_test, y_test = datasets.load(args.dataset, f"test[:{args.test_size}]")
    x_train, x_test = datasets.normalize(x_train), datasets.normalize(x_test)
    base = DeviceModel(on_off_ratio=args.on_off_ratio)

    curves: dict[str, dict[float, tfxbar.variation.VariationResult]] = {}
    for key in args.models.split(","):
        name, builder, preset, epochs_attr = MODELS[key.strip()]
        if key.strip() == "mlp" and args.hidden != 512:
            name, builder = f"{name} 784-{args.hidden}-10", functools.partial(binary_mlp, args.hidden)
        if args.cell_view:
            name = f"{name} ({args.cell_view} cells)"
        preset = _preset(preset, args.cell_view)
        for kind, device in [("plain", None), ("variation-aware", base.with_sigma(args.train_sigma))]:
            label = f"{name}, {kind}"
            start = time.time()
            model = train(builder, preset, x_train, y_train, getattr(args, epochs_attr), args.seed,
                          device, args.batch_size)
            print(f"{label}: trained in {time.time() - start:.0f} s", flush=True)
            curves[label] = {}
            for sigma in SIGMAS:
                curves[label][sigma] = tfxbar.evaluate_under_variation(
                    model, (x_test, y_test), base.with_sigma(sigma), trials=args.trials,
                    seed=args.seed + 1, batch_size=500, verbose=0)
                print(f"  σ={sigma:<4} {curves[label][sigma]}", flush=True)

    header = "| model | training | " + " | ".join(f"σ = {s}" for s in SIGMAS) + " |"
    print("\n" + header + "\n|" + "---|" * (len(SIGMAS) + 2))
    for label, curve in curves.items():
        name, kind = label.split(", ")
        cells = " | ".join(f"{100 * r.mean:.2f} ± {100 * r.std:.2f} (min {100 * r.min:.2f})"
                           for r in curve.values())
        print(f"| {name} | {kind} | {cells} |")
    tfxbar.plot_robustness(curves, args.png, title=f"{args.dataset}, {args.trials} chips per σ, "
                           f"on/off {args.on_off_ratio:g}")
    with open(args.json, "w") as f:
        json.dump({"args": vars(args), "results": {label: {str(s): r.to_dict() for s, r in c.items()}
                                                   for label, c in curves.items()}}, f, indent=1)
    print(f"\nsaved {args.png} and {args.json}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
