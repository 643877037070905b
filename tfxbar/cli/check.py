"""``tfxbar check PROGRAM --acc-bits 16``: accumulator bounds of a program; exit 1 on violation."""

from __future__ import annotations

import argparse
import sys

from tfxbar.atomic import write_atomically
from tfxbar.cli import EXIT_OK, EXIT_VIOLATION, CommandError
from tfxbar.cli._common import add_data_arguments, int_range, load_inputs, open_program

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check", help="check a program's accumulator and ADC bounds",
        description="Static worst-case bounds of every crossbar (final accumulator per output "
                    "channel, running accumulator per tile, Σx register, ADC partial sum per tile "
                    "column), optionally the maxima observed on calibration data. Exits 1 if an "
                    "accumulator can overflow.",
        epilog="example: tfxbar check mnist.xbar --acc-bits 16 --calibration-dataset mnist "
               "--calibration-limit 1000")
    parser.add_argument("program", help="program file (.xbar, written by `tfxbar export`)")
    parser.add_argument("--acc-bits", type=int_range(2, 64), default=None, metavar="P",
                        help="signed accumulator width to check against (default: the program's)")
    parser.add_argument("--policy", choices=("static", "data"), default="static",
                        help="decide violations from the worst-case bounds (default, sound) or from the "
                             "calibration maxima")
    parser.add_argument("--per-column", action="store_true",
                        help="one row per tile column / output channel (default: the worst per tile)")
    parser.add_argument("--json", metavar="FILE", help="also write the full report as JSON ('-' for stdout)")
    add_data_arguments(parser, prefix="calibration-")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from tfxbar.check import check_program

    program = open_program(args.program)
    codes, _ = load_inputs(args, program.header["input"], prefix="calibration_")
    if args.policy == "data" and codes is None:
        raise CommandError("--policy data needs --calibration-dataset or --calibration-inputs")
    report = check_program(program, args.acc_bits, codes, policy=args.policy, per_column=args.per_column)
    if args.json == "-":
        print(report.to_json())
    else:
        print(report)
        if args.json:
            text = report.to_json().encode("utf-8")
            write_atomically(args.json, lambda handle: handle.write(text))
    if not report.ok:
        print(f"tfxbar check: {len(report.violations)} violation(s) for a {report.accumulator_bits}-bit "
              "accumulator", file=sys.stderr)
        return EXIT_VIOLATION
    return EXIT_OK
