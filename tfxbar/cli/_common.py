"""Helpers shared by the subcommands: loading programs and input data."""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from tfxbar.cli import CommandError
from tfxbar.export.format import Program, load_program

__all__ = ["add_data_arguments", "load_inputs", "open_program"]

DATASETS = ("mnist", "fashion_mnist", "cifar10")


def open_program(path: str) -> Program:
    """`load_program` with a clear error for a missing file (FormatError passes through)."""
    if not os.path.exists(path):
        raise CommandError(f"no such program file: {path}")
    return load_program(path)


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = False, prefix: str = "") -> None:
    """--dataset/--split/--limit (and --inputs FILE.npy) options."""
    group = parser.add_argument_group("input data")
    group.add_argument(f"--{prefix}dataset", choices=DATASETS, required=required,
                       help="dataset loaded with tfxbar.datasets.load (offline data: set TFXBAR_DATA_DIR)")
    group.add_argument(f"--{prefix}split", default="test", help="split, tfds syntax (default: test)")
    group.add_argument(f"--{prefix}limit", type=int, default=None, metavar="N",
                       help="use the first N examples")
    if not required:
        group.add_argument(f"--{prefix}inputs", metavar="FILE.npy",
                           help="integer input codes (N, *input shape) saved with numpy.save")


def load_inputs(args: argparse.Namespace, shape: list[int], prefix: str = "") -> tuple[Any, Any]:
    """(codes, labels or None) from the data options, checked against the per-example `shape`."""
    get = lambda name: getattr(args, f"{prefix}{name}", None)  # noqa: E731
    labels = None
    if get("inputs"):
        try:
            codes = np.load(get("inputs"), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read inputs {get('inputs')}: {exc}") from None
    elif get("dataset"):
        from tfxbar import datasets

        codes, labels = datasets.load(get("dataset"), get("split"))
    else:
        return None, None
    if get("limit") is not None:
        if get("limit") < 1:
            raise CommandError("--limit must be at least 1")
        codes = codes[:get("limit")]
        labels = None if labels is None else labels[:get("limit")]
    shape = list(shape)
    if codes.ndim == len(shape) and list(codes.shape[1:]) + [1] == shape:
        codes = codes[..., None]  # (N, H, W) grayscale images for an (H, W, 1) input
    if list(codes.shape[1:]) != shape:
        raise CommandError(f"inputs have shape {tuple(codes.shape[1:])} per example but the program expects "
                           f"{tuple(shape)}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise CommandError(f"inputs must be integer codes (e.g. uint8 pixels), got {codes.dtype}")
    return codes, labels
