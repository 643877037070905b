"""The ``tfxbar`` command line: export, check, run and inspect crossbar programs.

Subcommands live in modules listed in `COMMAND_MODULES`; each exposes
``register(subparsers) -> argparse.ArgumentParser`` and sets ``handler=<fn(args) -> int>`` on
its parser (``parser.set_defaults(handler=...)``). A listed module that is not installed is
skipped, so a subcommand is added by creating its module.

Exit codes: 0 success; 1 the check found a violation (or ``run --min-accuracy`` was missed);
2 usage or input error (bad arguments, unreadable or invalid files, conversion errors; also
an unexpected internal error, reported in one line — TFXBAR_DEBUG=1 shows its traceback);
130 interrupted. ``info``, ``check`` and ``run`` on a program file never import TensorFlow
(``run --chips`` does, for the chips' random draws).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["COMMAND_MODULES", "EXIT_ERROR", "EXIT_OK", "EXIT_VIOLATION", "CommandError", "build_parser",
           "main"]

EXIT_OK, EXIT_VIOLATION, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Modules that provide subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "tfxbar.cli.export",
    "tfxbar.cli.check",
    "tfxbar.cli.run",
    "tfxbar.cli.info",
    "tfxbar.cli.report",
    "tfxbar.cli.sweep",
)


class CommandError(Exception):
    """A user-facing error: printed as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the project's error style); --help still shows usage.

    Subparsers inherit the class (``add_subparsers`` defaults to the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = _Parser(
        prog="tfxbar",
        description="Export tfxbar-quantized tf_keras models to crossbar programs, check their "
                    "accumulator bounds, run and inspect them.",
        epilog="exit codes: 0 ok, 1 violation (check) or accuracy below --min-accuracy (run), "
               "2 usage or input error")
    from tfxbar import __version__

    parser.add_argument("--version", action="version", version=f"tfxbar {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from tfxbar.export.errors import ConversionError, FormatError

    errors: list[type[BaseException]] = [CommandError, FormatError, ConversionError, OSError, ValueError]
    datasets = sys.modules.get("tfxbar.datasets")
    if datasets is not None:
        errors.append(datasets.DatasetNotFoundError)
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"tfxbar {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _known_errors() as exc:
        message = str(exc) or type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            message = f"no such file: {exc.filename}"
        print(f"tfxbar {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:   # never a traceback (exit 1 would read as "violation"); a bug: say so
        if os.environ.get("TFXBAR_DEBUG"):
            raise
        print(f"tfxbar {args.command}: internal error: {type(exc).__name__}: {exc} (please report it; "
              "TFXBAR_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_ERROR
