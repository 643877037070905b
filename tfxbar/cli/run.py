"""``tfxbar run PROGRAM --dataset mnist``: accuracy of a program in the numpy interpreter."""

from __future__ import annotations

import argparse
import time

import numpy as np

from tfxbar.cli import EXIT_OK, EXIT_VIOLATION, CommandError
from tfxbar.cli._common import add_data_arguments, load_inputs, open_program

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run", help="run a program on a dataset and print its accuracy",
        description="Runs the program in the reference interpreter (ideal: exact integers; "
                    "hardware: tiles, bit-serial DAC, ADCs and a finite accumulator) and prints "
                    "top-1 accuracy, throughput and, in hardware mode, ADC clips and overflows.",
        epilog="example: TFXBAR_DATA_DIR=/data tfxbar run mnist.xbar --dataset mnist --mode hardware")
    parser.add_argument("program", help="program file")
    add_data_arguments(parser)
    parser.add_argument("--labels", metavar="FILE.npy", help="integer labels for --inputs")
    parser.add_argument("--mode", choices=("ideal", "hardware"), default="ideal", help="interpreter mode")
    parser.add_argument("--acc-bits", type=int, default=None, metavar="P",
                        help="hardware accumulator width (default: the program's)")
    parser.add_argument("--acc-mode", choices=("saturate", "wrap"), default=None,
                        help="hardware accumulator overflow behaviour (default: the program's)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--min-accuracy", type=float, default=None, metavar="A",
                        help="exit 1 if the accuracy is below A (a fraction, e.g. 0.98)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from tfxbar.export.interpreter import Interpreter

    program = open_program(args.program)
    if args.batch_size < 1:
        raise CommandError("--batch-size must be at least 1")
    if args.acc_bits is not None and not 2 <= args.acc_bits <= 64:
        raise CommandError(f"--acc-bits must be in 2..64, got {args.acc_bits}")
    if not args.dataset and not (args.inputs and args.labels):
        raise CommandError("give --dataset NAME, or --inputs FILE.npy with --labels FILE.npy")
    codes, labels = load_inputs(args, program.header["input"]["shape"])
    if args.inputs:
        labels = np.load(args.labels, allow_pickle=False)[:len(codes)]
        if labels.shape != (len(codes),):
            raise CommandError(f"--labels has shape {labels.shape}, expected ({len(codes)},)")
    interpreter = Interpreter(program, args.mode, accumulator_bits=args.acc_bits,
                              accumulator_mode=args.acc_mode)
    start = time.perf_counter()
    predictions = interpreter.predict(codes, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(predictions == labels))
    source = args.inputs if args.inputs else f"{args.dataset} {args.split}"
    print(f"{source}: accuracy {accuracy:.4f} on {len(labels)} examples "
          f"({args.mode} mode, {len(labels) / max(seconds, 1e-9):.0f} img/s)")
    if args.mode == "hardware":
        for name, stats in interpreter.stats.items():
            print(f"  {name}: {stats['adc_clips']} ADC clips of {stats['adc_conversions']} conversions, "
                  f"{stats['acc_overflows']} accumulator overflows")
    if args.min_accuracy is not None and accuracy < args.min_accuracy:
        print(f"accuracy {accuracy:.4f} is below --min-accuracy {args.min_accuracy}")
        return EXIT_VIOLATION
    return EXIT_OK
