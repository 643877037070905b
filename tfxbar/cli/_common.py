"""Helpers shared by the subcommands: option types, loading programs and input data."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from tfxbar.cli import CommandError
from tfxbar.export.errors import FormatError
from tfxbar.export.format import NOT_A_PROGRAM, Program, load_program, quantize_codes

__all__ = ["add_batch_size_argument", "add_data_arguments", "data_options_given", "fraction", "int_range",
           "load_inputs", "open_program"]

DATASETS = ("mnist", "fashion_mnist", "cifar10")


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in low..high (no upper bound if `high` is None).

    It raises `argparse.ArgumentTypeError`, so argparse prints this message after the option name
    (not "invalid <function name> value").
    """
    expected = f"an integer {f'at least {low}' if high is None else f'in {low}..{high}'}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def fraction(text: str) -> float:
    """An argparse ``type`` for a fraction in [0, 1] (accuracies)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1] (e.g. 0.98 for 98%), got {text!r}")
    return value


def add_batch_size_argument(parser: argparse.ArgumentParser, default: int) -> None:
    """--batch-size N (≥ 1) for the interpreter."""
    parser.add_argument("--batch-size", type=int_range(1), default=default, metavar="N",
                        help=f"interpreter batch size (default {default})")


def open_program(path: str) -> Program:
    """`load_program` with clear errors for a missing file and for a file that is no program at all.

    Other `FormatError`s (a damaged or invalid program) pass through, naming the field.
    """
    if not os.path.exists(path):
        raise CommandError(f"no such program file: {path}")
    if os.path.isdir(path):
        raise CommandError(f"{path} is a directory, not a program file")
    try:
        return load_program(path)
    except FormatError as exc:
        # No archive at all, or an .npz (e.g. a .keras file is a zip) without the program header.
        if NOT_A_PROGRAM in exc.problem:
            raise CommandError(f"{path} is not a tfxbar program file (expected a .xbar written by "
                               "`tfxbar export`)") from None
        raise


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = False, prefix: str = "",
                       split: str = "test", labels: bool = False, title: str = "input data") -> None:
    """--dataset/--split/--limit or --inputs FILE.npy (exclusive), and --labels FILE.npy if `labels`."""
    opt = _names(prefix)[1]
    group = parser.add_argument_group(title)
    source = group.add_mutually_exclusive_group(required=required)
    source.add_argument(f"--{opt}dataset", choices=DATASETS,
                        help="dataset loaded with tfxbar.datasets.load (offline data: set TFXBAR_DATA_DIR)")
    if not required:  # right after --dataset, so the usage line shows [--dataset ... | --inputs ...]
        source.add_argument(f"--{opt}inputs", metavar="FILE.npy",
                            help="integer input codes (N, *input shape) saved with numpy.save")
    group.add_argument(f"--{opt}split", default=split, metavar="SPLIT",
                       help=f"split of --{opt}dataset, tfds syntax (default: {split})")
    group.add_argument(f"--{opt}limit", type=int_range(1), default=None, metavar="N",
                       help="use the first N examples")
    if labels:
        group.add_argument(f"--{opt}labels", metavar="FILE.npy",
                           help=f"integer labels (N,) for --{opt}inputs (required with it)")
    # Remember the default: a --split given with --inputs is an error, not silently ignored.
    parser.set_defaults(**{f"_{_names(prefix)[0]}split_default": split})


def _names(prefix: str) -> tuple[str, str]:
    """(attribute prefix, option prefix) of a data-option prefix given either way."""
    return prefix.replace("-", "_"), prefix.replace("_", "-")


def _split_given(args: argparse.Namespace, attr: str) -> bool:
    return getattr(args, f"{attr}split") != getattr(args, f"_{attr}split_default")


def data_options_given(args: argparse.Namespace, prefix: str = "") -> list[str]:
    """The data options the user set, e.g. to reject them where they would be ignored."""
    attr, opt = _names(prefix)
    given = [f"--{opt}{name}" for name in ("dataset", "inputs", "limit", "labels")
             if getattr(args, f"{attr}{name}", None) is not None]
    return given + ([f"--{opt}split"] if _split_given(args, attr) else [])


def load_inputs(args: argparse.Namespace, spec: dict[str, Any], prefix: str = "") -> tuple[Any, Any]:
    """(codes, labels or None) from the data options, for a program input `spec` (its header's
    ``input``: shape, bits, scale).

    --inputs are the program's input codes already. Dataset images (uint8 pixels) are the codes
    of a program that takes 8-bit pixels (step 1/255); for any other input quantizer (e.g. an MLP
    whose Flatten quantizes to 3 bits) they are quantized from pixels / 255, the real inputs the
    model was trained on (`tfxbar.datasets.normalize`). Labels come from the dataset or, with
    --inputs, from --labels (one per input) if the parser has that option.
    """
    attr, opt = _names(prefix)
    get = lambda name: getattr(args, f"{attr}{name}", None)  # noqa: E731
    flag = lambda name: f"--{opt}{name}"  # noqa: E731
    labels = None
    if get("inputs"):
        if _split_given(args, attr):
            raise CommandError(f"{flag('split')} selects part of {flag('dataset')}; with {flag('inputs')} "
                               f"use {flag('limit')} N")
        codes = _load_npy(get("inputs"), flag("inputs"))
        if get("labels"):
            labels = _load_npy(get("labels"), flag("labels"))
            if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
                raise CommandError(f"{flag('labels')} {get('labels')} must be a 1-D array of integer labels, "
                                   f"got {labels.dtype} {labels.shape}")
            if len(labels) != len(codes):
                raise CommandError(f"{flag('labels')} {get('labels')} has {len(labels)} labels but "
                                   f"{flag('inputs')} {get('inputs')} has {len(codes)} examples; give one "
                                   "label per input")
    elif get("dataset"):
        if get("labels"):
            raise CommandError(f"{flag('labels')} goes with {flag('inputs')}; {flag('dataset')} has its own "
                               "labels")
        from tfxbar import datasets

        codes, labels = datasets.load(get("dataset"), get("split"))
        if (spec["bits"], np.float32(spec["scale"])) != (8, np.float32(1 / 255)):
            codes = quantize_codes(datasets.normalize(codes), spec["bits"], spec["scale"])
    else:
        stray = data_options_given(args, prefix)  # no data source: these would be ignored
        if stray:
            raise CommandError(f"{', '.join(stray)} given without data; add {flag('dataset')} NAME or "
                               f"{flag('inputs')} FILE.npy")
        return None, None
    if get("limit") is not None:  # >= 1: checked by argparse
        codes = codes[:get("limit")]
        labels = None if labels is None else labels[:get("limit")]
    shape = list(spec["shape"])
    if codes.ndim == len(shape) and list(codes.shape[1:]) + [1] == shape:
        codes = codes[..., None]  # (N, H, W) grayscale images for an (H, W, 1) input
    if list(codes.shape[1:]) != shape:
        raise CommandError(f"inputs have shape {tuple(codes.shape[1:])} per example but the program expects "
                           f"{tuple(shape)}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise CommandError(f"inputs must be integer codes (e.g. uint8 pixels), got {codes.dtype}")
    return codes, labels


def _load_npy(path: str, flag: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CommandError(f"{flag}: no such file: {path}") from None
    except (OSError, ValueError) as exc:
        raise CommandError(f"{flag}: cannot read {path} as a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive (e.g. a program file), not one array
        array.close()
        raise CommandError(f"{flag}: {path} is an .npz archive; give one array saved with numpy.save (.npy)")
    return array
