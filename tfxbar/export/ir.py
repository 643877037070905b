"""The exporter's intermediate representation: a straight-line list of integer ops.

Data flows one way: the handlers lower Keras layers into `Op`s, the passes rewrite them in
place, and the writer turns the final `Graph` into a program file. Every op consumes the
output of the op before it (the first consumes the program input).

Op kinds (see docs/format.md for the fields each one carries once all passes have run):

- ``crossbar``: integer GEMM of the input codes with cell codes (Dense or Conv2D via im2col),
  giving a signed integer accumulator per output channel.
- ``sum_pool``: integer window sums (AveragePooling2D, GlobalAveragePooling2D; 1/k is folded
  into the next thresholds or scale).
- ``threshold``: accumulator → activation code, the number of per-channel thresholds passed.
- ``max_pool``: max (or min, per channel) over windows of codes.
- ``flatten``: NHWC → N·(H·W·C) in row-major order.
- ``dequantize``: the final float output, a per-channel chain of affine / ReLU / softmax.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["OP_KINDS", "Graph", "InputSpec", "Op"]

OP_KINDS = ("crossbar", "sum_pool", "threshold", "max_pool", "flatten", "dequantize")


@dataclasses.dataclass
class Op:
    """One integer op.

    Arguments:
        name: unique name, derived from the Keras layer that produced it.
        kind: one of `OP_KINDS`.
        in_shape: per-example input shape.
        out_shape: per-example output shape.
        out_max: largest value of an integer output (None for float or signed outputs).
        attrs: JSON-serializable attributes written to the header.
        arrays: numpy arrays written to the file.
        meta: compiler-only state the passes consume (never written).
        tap: the Keras layer whose quantized output this op's output equals (codes), if any.
    """

    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    out_max: int | None = None
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    tap: str | None = None


@dataclasses.dataclass
class InputSpec:
    """The program input: integer codes x of a real input x·scale, x in [0, 2^bits − 1]."""

    shape: tuple[int, ...]
    bits: int
    scale: float
    name: str = "input"

    @property
    def max(self) -> int:
        return 2 ** self.bits - 1


@dataclasses.dataclass
class Graph:
    """The whole program: input, ops, the converter options, and provenance."""

    input: InputSpec
    ops: list[Op]
    options: dict[str, Any]
    source: dict[str, Any] = dataclasses.field(default_factory=dict)

    def crossbars(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "crossbar"]
