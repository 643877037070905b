"""ADC-aware training on MNIST: how much accuracy low-resolution ADCs cost, and how much a short
fine-tune in the Keras hardware mode (tfxbar.hardware.HardwareMode) wins back.

For each ADC resolution a W4A3 MNIST CNN (float-trained, then QAT-trained once) is converted
with 128 × 128 tiles, a `--dac-bits` DAC and calibrated ADC steps, and evaluated in hardware
mode. Then, from the same weights, two fine-tunes of the same budget: *plain QAT* (ideal
crossbars) and *ADC-aware* (the hardware mode installed: forward through the program's tiles,
DACs, ADCs and accumulator, straight-through gradients, ADC steps fixed from the conversion).
Both are evaluated in hardware mode with the conversion's ADC steps. The ADC-aware model is then
deployed — converted again with those steps — and run by the numpy interpreter in hardware mode
on `--check` test images to show that the figure is the program's.

Usage (seeded; ≈ 15 min on 2 shared cores):
    TFXBAR_DATA_DIR=/work/shared/data python examples/adc_aware_training.py \\
        --adc-bits 3 4 5 6 --json docs/adc_aware_training.json
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
from tfxbar.atomic import write_atomically  # noqa: E402
from tfxbar.hardware import HardwareMode, with_adc_steps  # noqa: E402


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=250, verbose=0), -1) == y))


def _fit(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> None:
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=6000, help="MNIST training images")
    parser.add_argument("--test", type=int, default=1000, help="MNIST test images")
    parser.add_argument("--check", type=int, default=200, help="test images run by the interpreter")
    parser.add_argument("--float-epochs", type=int, default=2, help="float training epochs")
    parser.add_argument("--epochs", type=int, default=1, help="QAT epochs of the base model")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-train", type=int, default=4000, help="training images of the fine-tunes")
    parser.add_argument("--lr", type=float, default=3e-4, help="fine-tune learning rate")
    parser.add_argument("--adc-bits", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--dac-bits", type=int, default=1)
    parser.add_argument("--widths", type=int, nargs=2, default=[8, 16], help="channels of the two stages")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here (atomically)")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = datasets.load("mnist", f"train[:{args.train}]")
    x_test, y_test = datasets.load("mnist", "test")
    x_test, y_test = x_test[:args.test], y_test[:args.test]
    xf_train, xf_test = datasets.normalize(x_train), datasets.normalize(x_test)
    model = tfxbar.models.mnist_cnn(tuple(args.widths), args.hidden)
    _fit(model, xf_train, y_train, args.float_epochs, 1e-3)
    qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=xf_train[:1000])
    _fit(qmodel, xf_train, y_train, args.epochs, 1e-3)
    base = qmodel.get_weights()
    rows = []
    ideal = _accuracy(qmodel, xf_test, y_test)
    print(f"W4A3 MNIST CNN {args.widths}/{args.hidden}: ideal accuracy {ideal:.4f} ({args.test} test images)")
    for bits in args.adc_bits:
        start = time.perf_counter()
        qmodel.set_weights(base)
        config = tfxbar.ConverterConfig(dac_bits=args.dac_bits, adc_bits=bits, adc_range="calibrated",
                                        representative_data=x_train[:256])
        program = tfxbar.CrossbarConverter(qmodel, config).convert()
        with HardwareMode(qmodel, program=program):
            before = _accuracy(qmodel, xf_test, y_test)
        result = {"adc_bits": bits, "dac_bits": args.dac_bits, "ideal": ideal, "hardware": before}
        for name, aware in (("plain_qat", False), ("adc_aware", True)):
            qmodel.set_weights(base)
            keras.utils.set_random_seed(args.seed + 1)   # the same batches for both fine-tunes
            hardware = HardwareMode(qmodel, program=program)
            if aware:
                with hardware:
                    _fit(qmodel, xf_train[:args.finetune_train], y_train[:args.finetune_train],
                         args.finetune_epochs, args.lr)
            else:
                _fit(qmodel, xf_train[:args.finetune_train], y_train[:args.finetune_train],
                     args.finetune_epochs, args.lr)
            with hardware:
                result[name] = _accuracy(qmodel, xf_test, y_test)
        # Deploy the ADC-aware weights with the ADC steps they were trained against.
        deployed = with_adc_steps(tfxbar.CrossbarConverter(qmodel, config).convert(), program)
        n = min(args.check, args.test)
        predictions = tfxbar.Interpreter(deployed, "hardware").predict(x_test[:n])
        with HardwareMode(qmodel, program=deployed):
            keras_predictions = np.argmax(qmodel.predict(xf_test[:n], batch_size=250, verbose=0), -1)
        result["program_check"] = {"images": n, "interpreter": float(np.mean(predictions == y_test[:n])),
                                   "agreement_with_keras": float(np.mean(predictions == keras_predictions))}
        result["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(result)
        print(f"ADC {bits} bits, DAC {args.dac_bits}: hardware {before:.4f} → plain QAT fine-tune "
              f"{result['plain_qat']:.4f}, ADC-aware {result['adc_aware']:.4f}; deployed program "
              f"{result['program_check']['interpreter']:.4f} on {n} (Keras agreement "
              f"{result['program_check']['agreement_with_keras']:.4f}); {result['seconds']} s", flush=True)
    if args.json:
        report = {"command": " ".join(sys.argv), "args": vars(args), "rows": rows}
        write_atomically(args.json, lambda f: f.write(json.dumps(report, indent=1).encode()))


if __name__ == "__main__":
    main()
