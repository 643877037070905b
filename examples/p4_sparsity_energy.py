"""P4 reproduction: sparsity-aware ADC energy of W8A8 and W4A3 MNIST CNNs on 128 × 128 arrays.

Trains `tfxbar.models.mnist_cnn()` once in float, then fine-tunes it with quantization-aware
training under the ``w8a8`` and ``w4a3`` presets; exports each to 128 × 128 tiles with
bit-serial 1-bit DACs (ISAAC-style) and lossless ADCs; runs the numpy interpreter on the MNIST
test set and counts, per tile and DAC cycle, the ADC conversions that sparsity-aware
processing skips (all-zero input bit-plane of a tile; all-zero cell columns). Prints accuracy,
ADC energy with and without skipping, the reduction and the total energy-efficiency gain,
beside the figures of P4 (Bao et al., Frontiers in Electronics 2022): 79 % / 53 % ADC energy
reduction and 2.98× / 1.15× efficiency for W8A8 / W4A3.

Usage:
    TFXBAR_DATA_DIR=/work/shared/data python examples/p4_sparsity_energy.py \
        --float-epochs 2 --qat-epochs 2 --out-dir runs/p4

Trained weights are cached in ``--out-dir`` (``<preset>.weights.h5``); a second call only
re-exports and re-measures (add ``--retrain`` to train again). The last 5,000 training
images are the validation set; the test set is only used for the final measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

import tfxbar  # noqa: E402
from tfxbar import datasets  # noqa: E402

PAPER = {"w8a8": {"adc_reduction": 0.79, "efficiency": 2.98},
         "w4a3": {"adc_reduction": 0.53, "efficiency": 1.15}}


def _compile(model: keras.Model, lr: float, steps: int) -> None:
    schedule = keras.optimizers.schedules.CosineDecay(lr, max(steps, 1))
    model.compile(keras.optimizers.Adam(schedule),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])


def train(args: argparse.Namespace) -> dict[str, keras.Model]:
    """The QAT models of every preset, from the cache or trained now (float once, then QAT)."""
    # Weights only (HDF5): a `.keras` file of this model does not load back at present (the
    # model-input QuantizeLayer's variables), so the QAT model is rebuilt and its weights loaded.
    paths = {p: os.path.join(args.out_dir, f"{p}.weights.h5") for p in args.presets}
    if not args.retrain and all(os.path.exists(p) for p in paths.values()):
        models = {}
        for preset, path in paths.items():
            models[preset] = tfxbar.quantize_model(tfxbar.models.mnist_cnn(), preset)
            models[preset].load_weights(path)
        return models
    keras.utils.set_random_seed(args.seed)
    x_train, y_train = datasets.load("mnist", "train[:-5000]")
    x_val, y_val = datasets.load("mnist", "train[-5000:]")
    x_train, x_val = datasets.normalize(x_train), datasets.normalize(x_val)
    steps = -(-len(x_train) // args.batch_size)
    model = tfxbar.models.mnist_cnn()
    _compile(model, 2e-3, steps * args.float_epochs)
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.float_epochs,
              validation_data=(x_val, y_val), verbose=2)
    weights = model.get_weights()
    models = {}
    for preset in args.presets:
        keras.utils.set_random_seed(args.seed)
        base = tfxbar.models.mnist_cnn()
        base.set_weights(weights)
        qmodel = tfxbar.quantize_model(base, preset, calibration_data=x_train[:2000])
        _compile(qmodel, 1e-3, steps * args.qat_epochs)
        qmodel.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.qat_epochs,
                   validation_data=(x_val, y_val), verbose=2)
        qmodel.save_weights(paths[preset])
        models[preset] = qmodel
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float-epochs", type=int, default=2)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presets", nargs="*", default=["w8a8", "w4a3"])
    parser.add_argument("--out-dir", default="runs/p4")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--test-subset", type=int, default=10000,
                        help="first N MNIST test images to measure on (default: all 10,000)")
    parser.add_argument("--tile", type=int, default=128, help="tile rows = tile columns")
    parser.add_argument("--dac-bits", type=int, default=1, help="input bits per DAC cycle")
    parser.add_argument("--cell-bits", type=int, default=None,
                        help="bits per cell (default: one multi-level cell per weight and polarity)")
    parser.add_argument("--energy", help="JSON/TOML file overriding the energy model defaults")
    parser.add_argument("--plot", action="store_true", help="write <out-dir>/<preset>_energy.png")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    start = time.time()
    models = train(args)
    train_min = (time.time() - start) / 60  # ≈ 0 when the weights came from the cache
    x_test, y_test = datasets.load("mnist", f"test[:{args.test_subset}]")
    energy = tfxbar.EnergyModel.from_file(args.energy) if args.energy else tfxbar.EnergyModel()

    rows = []
    for preset, qmodel in models.items():
        keras_acc = float(np.mean(np.argmax(qmodel.predict(datasets.normalize(x_test), batch_size=500,
                                                           verbose=0), -1) == y_test))
        converter = tfxbar.CrossbarConverter.from_keras_model(
            qmodel, tile_rows=args.tile, tile_cols=args.tile, dac_bits=args.dac_bits,
            cell_bits=args.cell_bits)
        program = converter.convert()
        program.save(os.path.join(args.out_dir, f"{preset}.xbar"))
        t0 = time.time()
        report = tfxbar.summary(program, data=x_test, energy=energy, batch_size=100)
        measure_s = time.time() - t0
        print(report, flush=True)
        if args.plot:
            from tfxbar.cost.plot import plot_energy

            plot_energy(report, os.path.join(args.out_dir, f"{preset}_energy.png"))
        total = report.totals
        rows.append({
            "preset": preset,
            "keras_acc": keras_acc,
            "interpreter_acc": float(np.mean(np.argmax(report.outputs, -1) == y_test)),
            "adc_bits": [layer.adc_bits for layer in report.layers],
            "adc_pj_dense": total["energy_dense"]["adc"],
            "adc_pj_sparse": total["energy_sparse"]["adc"],
            "adc_reduction": total["adc_reduction"],
            "adc_share_dense": total["energy_dense"]["adc"] / sum(total["energy_dense"].values()),
            "efficiency": total["efficiency_gain"],
            "skipped_input": total["adc_skipped_zero_input"] / total["adc_conversions"],
            "skipped_column": total["adc_skipped_zero_column"] / total["adc_conversions"],
            "measure_s": round(measure_s, 1),
        })

    print(f"\nN = {len(x_test)} MNIST test images; {args.tile}×{args.tile} tiles, "
          f"{args.dac_bits}-bit DAC, cell_bits={args.cell_bits}; training {train_min:.1f} min\n")
    print("| preset | Keras acc | interpreter acc | ADC bits per layer | ADC share (dense) | "
          "ADC µJ/inf dense → sparse | skipped: zero input / zero column | ADC energy reduction "
          "(paper) | efficiency gain (paper) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        paper = PAPER.get(r["preset"], {})
        print(f"| {r['preset']} | {r['keras_acc'] * 100:.2f} % | {r['interpreter_acc'] * 100:.2f} % | "
              f"{'/'.join(map(str, r['adc_bits']))} | {r['adc_share_dense'] * 100:.0f} % | "
              f"{r['adc_pj_dense'] / 1e6:.3f} → {r['adc_pj_sparse'] / 1e6:.3f} | "
              f"{r['skipped_input'] * 100:.1f} % / {r['skipped_column'] * 100:.1f} % | "
              f"{r['adc_reduction'] * 100:.1f} % ({paper.get('adc_reduction', float('nan')) * 100:.0f} %) | "
              f"{r['efficiency']:.2f}× ({paper.get('efficiency', float('nan')):.2f}×) |")
    print(json.dumps({"args": vars(args), "rows": rows}, default=str))


if __name__ == "__main__":
    main()
