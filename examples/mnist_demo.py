"""The tfxbar main job: MNIST from float training to a checked, costed integer crossbar program.

    python examples/mnist_demo.py

1. train the reference CNN in float (1 epoch);
2. quantize it with the W4A3 preset (P4) and train it quantization-aware (1 epoch);
3. fine-tune it variation-aware (lognormal σ = 0.1 on the cells, part of an epoch);
4. export it to an integer crossbar program (128 × 128 tiles) and save the file;
5. check every accumulator against a 16-bit budget;
6. run the integer program on MNIST (ideal mode: all 10,000 test images; hardware mode with
   bit-serial DAC and the program's ADCs: the first 1,000);
7. evaluate the Keras model on simulated chips (lognormal σ = 0.1, 5 chips);
8. print one table and write the program, a JSON of the figures, and an energy PNG to --out.
Takes about 6–8 minutes on 2 CPU cores. Offline, set TFXBAR_DATA_DIR (see README).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import tf_keras as keras

import tfxbar
from tfxbar import datasets
from tfxbar.cost import plot_energy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="w4a3", choices=sorted(tfxbar.PRESETS))
    parser.add_argument("--sigma", type=float, default=0.1, help="lognormal σ of the cells")
    parser.add_argument("--acc-bits", type=int, default=16)
    parser.add_argument("--out", default="out", help="folder for the program, JSON and PNG")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()

    def step(n: int, text: str) -> None:
        print(f"\n[{n}/8 · {time.time() - start:4.0f} s] {text}", flush=True)

    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    x_train, y_train = datasets.load("mnist", "train")
    x_test, y_test = datasets.load("mnist", "test")
    x_train, x_test = datasets.normalize(x_train), datasets.normalize(x_test)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def accuracy(model: keras.Model) -> float:
        return float(np.mean(np.argmax(model.predict(x_test, batch_size=500, verbose=0), 1) == y_test))

    step(1, "training the float CNN (1 epoch)")
    model = tfxbar.models.mnist_cnn()
    model.compile(keras.optimizers.Adam(2e-3), loss, ["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=1, verbose=2)
    float_acc = accuracy(model)

    step(2, f"quantizing ({args.preset}) and quantization-aware training (1 epoch)")
    qmodel = tfxbar.quantize_model(model, args.preset, calibration_data=x_train[:2000])
    qmodel.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, 469)),
                   loss, ["accuracy"])
    qmodel.fit(x_train, y_train, batch_size=128, epochs=1, verbose=2)
    quant_acc = accuracy(qmodel)

    step(3, f"variation-aware fine-tuning (lognormal σ = {args.sigma}, 20,000 images)")
    device = tfxbar.DeviceModel(lognormal_sigma=args.sigma)
    qmodel.compile(keras.optimizers.Adam(2e-4), loss, ["accuracy"])
    qmodel.fit(x_train[:20000], y_train[:20000], batch_size=128, epochs=1, verbose=2,
               callbacks=[tfxbar.DeviceVariation(device, seed=args.seed)])
    aware_acc = accuracy(qmodel)

    step(4, "exporting the integer crossbar program")
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    program_path = os.path.join(args.out, f"mnist_{args.preset}.xbar")
    program.save(program_path)
    print(f"saved {program_path}")

    step(5, f"checking accumulators against {args.acc_bits} bits")
    codes = program.quantize_input(x_test)
    check = tfxbar.check_program(program, accumulator_bits=args.acc_bits)
    print(check)

    step(6, "running the integer program (ideal: 10,000 images; hardware: 1,000)")
    ideal = tfxbar.Interpreter(program).predict(codes)
    ideal_acc = float(np.mean(ideal == y_test))
    hardware = tfxbar.Interpreter(program, "hardware").predict(codes[:1000])
    hardware_acc = float(np.mean(hardware == y_test[:1000]))
    ideal_1000 = float(np.mean(ideal[:1000] == y_test[:1000]))
    keras_agree = float(np.mean(ideal == np.argmax(qmodel.predict(x_test, batch_size=500, verbose=0), 1)))

    step(7, f"evaluating on 5 simulated chips (lognormal σ = {args.sigma})")
    chips = tfxbar.evaluate_under_variation(qmodel, (x_test, y_test), device, trials=5,
                                            seed=args.seed, verbose=1)

    step(8, "cost model (sparsity-aware, measured on 500 test images)")
    cost = tfxbar.summary(program, data=codes[:500])
    totals = cost.totals
    png = plot_energy(cost, os.path.join(args.out, f"mnist_{args.preset}_energy.png"))
    adc_nj = totals["energy_dense"]["adc"] / 1000
    adc_sparse_nj = totals["energy_sparse"]["adc"] / 1000

    rows = [
        ("float CNN (Keras)", f"{100 * float_acc:.2f} %"),
        (f"quantized {args.preset} (Keras)", f"{100 * quant_acc:.2f} %"),
        ("after variation-aware fine-tuning", f"{100 * aware_acc:.2f} %"),
        ("integer program, ideal mode", f"{100 * ideal_acc:.2f} % "
                                         f"(same top-1 as Keras on {100 * keras_agree:.2f} %)"),
        ("integer program, hardware mode (first 1,000)",
         f"{100 * hardware_acc:.2f} % (ideal on the same: {100 * ideal_1000:.2f} %)"),
        (f"under variation σ={args.sigma}: mean / min of 5 chips",
         f"{100 * chips.mean:.2f} % / {100 * chips.min:.2f} %"),
        ("tiles (128 × 128) / array utilization", f"{totals['tiles']} / {100 * totals['utilization']:.1f} %"),
        (f"accumulators within {args.acc_bits} bits", "yes" if check.ok else "NO (see table above)"),
        ("ADC energy per inference: dense → sparsity-aware",
         f"{adc_nj:.1f} nJ → {adc_sparse_nj:.1f} nJ ({100 * totals['adc_reduction']:.0f} % less)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'tfxbar MNIST demo':<{width}}   result\n{'-' * (width + 30)}")
    for label, value in rows:
        print(f"{label:<{width}}   {value}")
    figures = {label: value for label, value in rows}
    with open(os.path.join(args.out, "mnist_demo.json"), "w") as handle:
        json.dump({**figures, "seconds": round(time.time() - start)}, handle, indent=2)
    print(f"\nwrote {program_path}, {png} and {args.out}/mnist_demo.json "
          f"in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
