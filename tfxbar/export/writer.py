"""The writer: a fully lowered `Graph` → a `Program` (header + arrays, format version 2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tfxbar.export.format import FORMAT_NAME, FORMAT_VERSION, Program
from tfxbar.export.ir import Graph, Op

__all__ = ["write_program"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _op_entry(index: int, op: Op, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    attrs = dict(op.attrs)
    own = dict(op.arrays)
    if op.kind == "dequantize":
        chain = op.meta["chain"]
        attrs["chain"] = [stage.header() for stage in chain]
        for j, stage in enumerate(chain):
            for field, value in stage.arrays().items():
                own[f"stage{j}.{field}"] = np.asarray(value, np.float64)
    if op.kind == "crossbar":
        attrs["rows"], attrs["cols"] = (int(d) for d in op.meta["codes"].shape)
    for field, value in own.items():
        arrays[f"op{index}.{field}"] = np.ascontiguousarray(value)
    return {"name": op.name, "kind": op.kind, "inputs": list(op.inputs), "in_shape": list(op.in_shape),
            "out_shape": list(op.out_shape), "out_max": op.out_max, "tap": op.tap,
            "attrs": _jsonable(attrs)}


def write_program(graph: Graph, producer: str = "tfxbar") -> Program:
    """Build the `Program` of `graph` (validated).

    Raises:
        FormatError: the graph does not make a valid program (a compiler bug).
    """
    arrays: dict[str, np.ndarray] = {}
    ops = [_op_entry(i, op, arrays) for i, op in enumerate(graph.ops)]
    spec = graph.input
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "producer": producer,
        "options": _jsonable(graph.options),
        "input": {"name": spec.name, "shape": list(spec.shape), "bits": spec.bits, "scale": spec.scale},
        "ops": ops,
    }
    return Program(header, arrays)
