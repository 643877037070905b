"""Errors of the exporter: one for conversion, one for malformed program files (numpy only)."""

from __future__ import annotations

__all__ = ["ConversionError", "FormatError"]


class ConversionError(ValueError):
    """A Keras model cannot be converted to a crossbar program.

    The message names the layer, its type and what to do about it.

    Arguments:
        layer: the Keras layer's name (or None when the problem is not one layer's).
        kind: the layer's type name (with no layer: what the problem concerns, default the model).
        problem: what is wrong.
        remedy: what the user can do.
    """

    def __init__(self, layer: str | None, kind: str | None, problem: str, remedy: str = "") -> None:
        where = f"layer {layer!r} ({kind})" if layer is not None else (kind or "model")
        message = f"{where}: {problem}"
        if remedy:
            message += f"; {remedy}"
        super().__init__(message)
        self.layer = layer
        self.kind = kind
        self.problem = problem
        self.remedy = remedy


class FormatError(ValueError):
    """A program file is malformed: the message names the field and the problem.

    Arguments:
        field: dotted path of the offending field (e.g. ``ops[2].thresholds``).
        problem: what is wrong with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
