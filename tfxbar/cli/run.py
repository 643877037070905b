"""``tfxbar run PROGRAM --dataset mnist``: accuracy of a program in the numpy interpreter."""

from __future__ import annotations

import argparse
import time

import numpy as np

from tfxbar.cli import EXIT_OK, EXIT_VIOLATION, CommandError
from tfxbar.cli._common import (
    add_batch_size_argument,
    add_data_arguments,
    fraction,
    int_range,
    load_inputs,
    open_program,
)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run", help="run a program on a dataset and print its accuracy",
        description="Runs the program in the reference interpreter (ideal: exact integers; "
                    "hardware: tiles, bit-serial DAC, ADCs and a finite accumulator) and prints "
                    "top-1 accuracy, throughput and, in hardware mode, ADC clips and overflows.",
        epilog="example: TFXBAR_DATA_DIR=/data tfxbar run mnist.xbar --dataset mnist --mode hardware")
    parser.add_argument("program", help="program file")
    add_data_arguments(parser, labels=True)
    parser.add_argument("--mode", choices=("ideal", "hardware"), default="ideal",
                        help="interpreter mode (default: ideal)")
    parser.add_argument("--acc-bits", type=int_range(2, 64), default=None, metavar="P",
                        help="accumulator width, --mode hardware only (default: the program's)")
    parser.add_argument("--acc-mode", choices=("saturate", "wrap"), default=None,
                        help="accumulator overflow behaviour, --mode hardware only (default: the program's)")
    parser.add_argument("--engine", choices=("interpreter", "keras"), default="interpreter",
                        help="interpreter: the numpy reference (default); keras: the quantized Keras model "
                             "given by --model, its crossbars in the program's hardware mode "
                             "(tfxbar.hardware, TensorFlow speed) or, with --mode ideal, as trained")
    parser.add_argument("--model", default=None, metavar="MODEL.keras",
                        help="the quantized Keras model the program was converted from (--engine keras)")
    add_batch_size_argument(parser, 256)
    parser.add_argument("--min-accuracy", type=fraction, default=None, metavar="A",
                        help="exit 1 if the accuracy is below A (a fraction in [0, 1], e.g. 0.98)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from tfxbar.export.interpreter import Interpreter

    if not args.dataset and not args.inputs:
        raise CommandError("give --dataset NAME, or --inputs FILE.npy with --labels FILE.npy")
    if args.inputs and not args.labels:  # run measures accuracy: inputs alone are not enough
        raise CommandError("--inputs needs --labels FILE.npy (one integer label per input)")
    if args.mode == "ideal":  # the ideal interpreter has an exact accumulator: these would be ignored
        options = (("--acc-bits", args.acc_bits), ("--acc-mode", args.acc_mode))
        given = [flag for flag, value in options if value is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise CommandError(f"{' and '.join(given)} only {verb} to --mode hardware (ideal mode "
                               "accumulates exactly); add --mode hardware")
    if (args.engine == "keras") != (args.model is not None):
        raise CommandError("--engine keras needs --model MODEL.keras (and --model goes with --engine keras)")
    program = open_program(args.program)
    codes, labels = load_inputs(args, program.header["input"])
    if args.engine == "keras":
        predictions, seconds, stats = _run_keras(args, program, codes)
    else:
        interpreter = Interpreter(program, args.mode, accumulator_bits=args.acc_bits,
                                  accumulator_mode=args.acc_mode)
        start = time.perf_counter()
        predictions = interpreter.predict(codes, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        stats = interpreter.stats
    accuracy = float(np.mean(predictions == labels))
    source = args.inputs if args.inputs else f"{args.dataset} {args.split}"
    print(f"{source}: accuracy {accuracy:.4f} on {len(labels)} examples "
          f"({args.mode} mode, {args.engine}, {len(labels) / max(seconds, 1e-9):.0f} img/s)")
    if args.mode == "hardware":
        for name, counts in stats.items():
            print(f"  {name}: {counts['adc_clips']} ADC clips of {counts['adc_conversions']} conversions, "
                  f"{counts['acc_overflows']} accumulator overflows")
    if args.min_accuracy is not None and accuracy < args.min_accuracy:
        print(f"accuracy {accuracy:.4f} is below --min-accuracy {args.min_accuracy}")
        return EXIT_VIOLATION
    return EXIT_OK


def _run_keras(args: argparse.Namespace, program: object,
               codes: np.ndarray) -> tuple[np.ndarray, float, dict[str, dict[str, int]]]:
    """Predictions, seconds and hardware counters of the Keras engine (``--engine keras``)."""
    import tf_keras as keras

    import tfxbar  # noqa: F401  (registers the quantizers for load_model)
    from tfxbar.hardware import HardwareMode

    try:
        model = keras.models.load_model(args.model, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CommandError(f"cannot load model {args.model}: {exc}".splitlines()[0]) from None
    # The model's input quantizer turns code · scale back into the program's input codes.
    x = codes.astype(np.float32) * np.float32(program.header["input"]["scale"])
    hardware = None
    if args.mode == "hardware":
        try:
            hardware = HardwareMode(model, program=program, accumulator_bits=args.acc_bits,
                                    accumulator_mode=args.acc_mode).install()
        except ValueError as exc:
            raise CommandError(f"--model {args.model} does not fit the program: {exc}") from None
    model.predict(x[:args.batch_size], batch_size=args.batch_size, verbose=0)   # trace (and compile) once
    if hardware is not None:
        hardware.reset_stats()
    start = time.perf_counter()
    predictions = np.argmax(model.predict(x, batch_size=args.batch_size, verbose=0), axis=-1)
    seconds = time.perf_counter() - start
    return predictions, seconds, hardware.stats() if hardware is not None else {}
