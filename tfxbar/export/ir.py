"""The exporter's intermediate representation: a dataflow graph of integer ops.

Data flows one way: the handlers lower Keras layers into `Op`s, the passes rewrite them in
place, and the writer turns the final `Graph` into a program file. Every op produces one
tensor, named like the op, from the tensors named in its ``inputs`` (the program input is
named ``graph.input.name``); ops are kept in a topological order, the last one is the output.

Op kinds (see docs/format.md for the fields each one carries once all passes have run):

- ``crossbar``: integer GEMM of the input codes with cell codes (Dense or Conv2D via im2col),
  giving a signed integer accumulator per output channel.
- ``sum_pool``: integer window sums (AveragePooling2D, GlobalAveragePooling2D; 1/k is folded
  into the next thresholds or scale).
- ``threshold``: accumulator → activation code, the number of per-channel thresholds passed.
- ``max_pool``: max (or min, per channel) over windows of codes.
- ``flatten``: NHWC → N·(H·W·C) in row-major order.
- ``reshape``: any row-major reshape (Reshape, Conv1D's H = 1 view, keepdims pooling).
- ``pad``: zero padding of codes (ZeroPadding2D; code 0 is the real value 0).
- ``upsample``: nearest-neighbour repetition of codes (UpSampling2D).
- ``add``: Σᵢ mᵢ·Xᵢ per channel with integer multipliers (residual Add; see lowering).
- ``concat``: codes of one step side by side on the channel axis (Concatenate).
- ``dequantize``: the final float output, a per-channel chain of affine / ReLU / softmax.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["OP_KINDS", "Graph", "InputSpec", "Op"]

OP_KINDS = ("crossbar", "sum_pool", "threshold", "max_pool", "flatten", "dequantize", "reshape", "pad",
            "upsample", "add", "concat")


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
        inputs: names of the tensors the op reads (earlier ops, or the program input).
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
    inputs: list[str] = dataclasses.field(default_factory=list)


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

    def consumers(self) -> dict[str, list[Op]]:
        """The ops reading each tensor, by tensor name."""
        found: dict[str, list[Op]] = {}
        for op in self.ops:
            for name in op.inputs:
                found.setdefault(name, []).append(op)
        return found
