"""``tfxbar sweep CONFIG``: a design-space sweep (tfxbar.sweep) from a JSON config."""

from __future__ import annotations

import argparse
import os

from tfxbar.cli import EXIT_OK, CommandError
from tfxbar.cli._common import int_range

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sweep", help="sweep ADC/DAC bits, tiles, cells, mapping, σ, accumulator: accuracy vs energy",
        description="Converts the model at every grid point of CONFIG (JSON, see docs/hardware_mode.md) "
                    "(optionally after a plain-QAT or ADC-aware fine-tune of a fresh copy of the model) "
                    "and measures accuracy (ideal, Keras hardware mode, chips mean/worst), energy, tiles "
                    "and accumulator bits; rows go to the config's table (CSV, or Parquet for a .parquet "
                    "name) as points finish (a re-run skips them), then a Pareto plot of accuracy vs "
                    "energy.",
        epilog="example: tfxbar sweep docs/sweeps/p4_mnist.json --workers 2")
    parser.add_argument("config", help="sweep config (JSON)")
    parser.add_argument("--address", default=None,
                        help="run on a Ray cluster at this address ('auto', 'ray://host:10001'; 'local': a "
                             "private one-CPU instance); default: a local process pool")
    parser.add_argument("--workers", type=int_range(1, 64), default=None, metavar="N",
                        help="local worker processes (default: usable CPUs, at most 4)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from tfxbar.sweep import SweepConfig, pareto, sweep

    if not os.path.exists(args.config):
        raise CommandError(f"no such sweep config: {args.config}")
    try:
        config = SweepConfig.load(args.config)
    except (ValueError, OSError) as exc:
        raise CommandError(str(exc).splitlines()[0]) from None
    for what in ("model", "data", "finetune_data"):
        if getattr(config, what) is not None and not os.path.exists(getattr(config, what)):
            raise CommandError(f"sweep config {args.config}: {what} {getattr(config, what)} does not exist")
    try:
        rows = sweep(config, address=args.address, workers=args.workers)
    except (ValueError, ImportError) as exc:   # a table made with other fine-tune settings; no pyarrow
        raise CommandError(str(exc).splitlines()[0]) from None
    print(f"{len(rows)} points in {config.table}" + (f", Pareto plot {config.plot}" if config.plot else ""))
    for row in pareto(rows):
        print(f"  Pareto: {float(row['accuracy_hardware']):.4f} at {float(row['energy_pj']) / 1e3:.1f} nJ "
              f"({', '.join(f'{k}={row.get(k)}' for k in config.axes)})")
    return EXIT_OK
