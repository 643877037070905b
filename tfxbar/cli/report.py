"""``tfxbar report PROGRAM [--dataset mnist] [--json] [--png FILE]``: the cost table of a program.

Prints `tfxbar.summary` of a program file: per-layer cells, tiles, utilization, ADC and
accumulator bits, DAC cycles, ADC conversions and energy per inference. With input data
(``--dataset``/``--split``/``--limit`` or ``--inputs``) the program runs on it and the table
adds the sparsity-aware counts and energies (P4); ``--png`` writes the per-layer energy
breakdown; ``--energy`` overrides the energy model from a JSON/TOML file (docs/cost_model.md).
"""

from __future__ import annotations

import argparse

from tfxbar.cli import EXIT_OK
from tfxbar.cli._common import add_batch_size_argument, add_data_arguments, load_inputs, open_program

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand.

    Arguments:
        subparsers: the result of ``parser.add_subparsers()``.

    Returns:
        The subcommand's parser (``handler`` = `run`).
    """
    parser = subparsers.add_parser(
        "report", help="cost table: cells, tiles, ADC/DAC counts and energy, sparsity-aware savings",
        description="Per crossbar layer: weights, cells, tiles, utilization, lossless vs configured "
                    "ADC bits, accumulator bits, DAC cycles, ADC conversions and energy per "
                    "inference; with data, the ADC conversions and energy saved by skipping "
                    "all-zero input slices and all-zero columns (docs/cost_model.md).")
    parser.add_argument("program", help="program file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--png", metavar="FILE", help="write the per-layer energy breakdown (PNG)")
    parser.add_argument("--energy", metavar="FILE", help="JSON or TOML file of EnergyModel fields")
    add_batch_size_argument(parser, 128)
    add_data_arguments(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``tfxbar report``; errors propagate to `tfxbar.cli.main` (exit code 2)."""
    from tfxbar.cost import EnergyModel, summary

    program = open_program(args.program)
    energy = EnergyModel.from_file(args.energy) if args.energy else EnergyModel()
    codes, _ = load_inputs(args, program.header["input"])
    report = summary(program, data=codes, energy=energy, batch_size=args.batch_size)
    print(report.to_json() if args.json else report)
    if args.png:
        from tfxbar.cost.plot import plot_energy

        plot_energy(report, args.png)
        if not args.json:
            print(f"wrote {args.png}")
    return EXIT_OK
