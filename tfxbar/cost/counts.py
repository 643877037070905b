"""Operation counts of a crossbar program: static (per inference) and measured on real data.

A *layer* is one crossbar op plus the digital ops that follow it up to the next crossbar
(thresholds, pooling, flatten). Per inference and per crossbar op with P polarities, L slices,
D DAC cycles and M patches (output pixels of a Conv2D, 1 for a Dense layer), a tile t with
r_t rows, c_t columns and ref_t ∈ {0, 1} reference columns has

    columns_t = P·L·c_t + ref_t          ADC conversions per patch and DAC cycle
    N_adc     = M·D·Σ_t columns_t         (one shift-add per conversion)
    N_dac     = M·D·Σ_t P·L·r_t           (every physical array drives its own rows)
    N_cell    = M·D·Σ_t (P·L·r_t·c_t + ref_t·r_t)

Sparsity-aware processing (P4) skips, per patch and DAC cycle, every conversion of a tile
whose input slice (its rows' bits of that DAC cycle) is all zero — and with it the tile's DAC
drives and cell reads — and, always, the conversions of physical columns whose cells are all
zero (their partial sum is 0). `measure` counts both on real inputs with the interpreter.

References:
    P4: Bao et al., "Quantization and sparsity-aware processing for energy-efficient NVM-based
    convolutional neural networks", Frontiers in Electronics 2022.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from tfxbar.export.format import Program
from tfxbar.export.interpreter import Interpreter

__all__ = ["LayerCounts", "Measured", "measure", "static_counts"]


@dataclasses.dataclass
class Measured:
    """Counts per inference (averaged over the measured examples) with sparsity-aware skipping.

    Arguments:
        examples: number of inputs measured.
        tile_cycles: (patch, tile, DAC cycle) triples per inference.
        tile_cycles_zero: of those, with an all-zero input slice.
        adc_conversions: conversions left after both skips.
        adc_skipped_zero_input: conversions skipped for all-zero input slices.
        adc_skipped_zero_column: conversions skipped for all-zero columns (non-zero slices only).
        dac_drives: row drives left (skipped tiles drive nothing).
        cell_reads: cell reads left.
    """

    examples: int
    tile_cycles: float
    tile_cycles_zero: float
    adc_conversions: float
    adc_skipped_zero_input: float
    adc_skipped_zero_column: float
    dac_drives: float
    cell_reads: float

    @property
    def shift_adds(self) -> float:
        return self.adc_conversions


@dataclasses.dataclass
class LayerCounts:
    """Static counts of one layer (crossbar op and the digital ops after it), per inference.

    Arguments:
        name: the crossbar op's name (from the Keras layer).
        layer_type: ``Dense`` or ``Conv2D``.
        op_index: index of the crossbar op in the program.
        weights: weight description, e.g. ``int4`` (signed, differential) or ``uint2+off``.
        mapping: ``differential`` or ``offset``.
        polarities, slices, slice_bits: the cell layout (P, L, b).
        rows, cols: the layer's weight matrix K × N.
        patches: patches per inference (M).
        tiles: number of tiles; each holds P·L physical arrays of tile_rows × tile_cols.
        arrays: physical arrays (tiles·P·L).
        cells: used cells: every weight cell of every polarity and slice, plus a tile's
            reference column once (r cells per tile, not per polarity or slice: it is one
            physical column, converted once per DAC cycle).
        capacity: cells of the physical arrays (arrays · tile_rows · tile_cols).
        zero_columns: physical columns whose cells are all zero.
        columns: physical columns read by ADCs (including reference columns).
        adc_bits, adc_bits_lossless: configured and lossless ADC resolution.
        acc_bits_required, acc_bits: accumulator bits needed and configured.
        dac_bits, dac_cycles: DAC resolution and cycles per input.
        adc_conversions, dac_drives, cell_reads, shift_adds, accumulates, compares: per inference.
        measured: sparsity-aware counts on data (`measure`), or None.
    """

    name: str
    layer_type: str
    op_index: int
    weights: str
    mapping: str
    polarities: int
    slices: int
    slice_bits: int
    rows: int
    cols: int
    patches: int
    tiles: int
    arrays: int
    cells: int
    capacity: int
    zero_columns: int
    columns: int
    adc_bits: int
    adc_bits_lossless: int
    acc_bits_required: int
    acc_bits: int
    dac_bits: int
    dac_cycles: int
    adc_conversions: int
    dac_drives: int
    cell_reads: int
    shift_adds: int
    accumulates: int = 0
    compares: int = 0
    measured: Measured | None = None

    @property
    def utilization(self) -> float:
        """Used cells / (tiles × P·L × tile_rows × tile_cols); the reference column counts as
        used, once per tile (`tfxbar info` reports the same figure)."""
        return self.cells / self.capacity if self.capacity else 0.0

    def counts(self, sparse: bool = False) -> dict[str, float]:
        """Operations per inference by energy kind; `sparse` uses the measured counts."""
        m = self.measured if sparse else None
        if sparse and m is None:
            raise ValueError(f"layer {self.name!r} has no measured counts; pass data")
        return {"adc": m.adc_conversions if m else self.adc_conversions,
                "dac": m.dac_drives if m else self.dac_drives,
                "cell": m.cell_reads if m else self.cell_reads,
                "shift_add": m.shift_adds if m else self.shift_adds,
                "accumulate": self.accumulates, "compare": self.compares}


def _tile_geometry(attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per tile: rows, columns read, non-zero columns read, drives and used cells per cycle."""
    pl = len(attrs["polarities"]) * attrs["slices"]
    out = []
    for t, tile in enumerate(attrs["tiles"]):
        cells = arrays[f"tile{t}.cells"]
        r, c = cells.shape[2], cells.shape[3]
        ref = int(tile["reference"])
        used = r * c
        if "groups" in attrs:   # a DepthwiseConv2D tile: only its channels' own (row, column) pairs
            rows, cols = arrays[f"tile{t}.rows"], arrays[f"tile{t}.cols"]
            per_channel = attrs["cols"] // attrs["groups"]
            used = int(((rows[:, None] % attrs["groups"]) == (cols[None, :] // per_channel)).sum())
        out.append({"rows": arrays[f"tile{t}.rows"], "columns": pl * c + ref,
                    "nonzero": int(cells.any(axis=2).sum()) + ref,
                    "drives": pl * r, "cells": pl * used + ref * r})
    return out


def _weight_label(attrs: dict[str, Any]) -> str:
    magnitude = attrs["slices"] * attrs["slice_bits"]
    if attrs["mapping"] == "differential":
        return f"int{magnitude + 1}"
    return f"uint{magnitude}+off"


def static_counts(program: Program) -> list[LayerCounts]:
    """Static counts of every crossbar layer of `program` (no data needed).

    Returns:
        One `LayerCounts` per crossbar op, in program order; thresholds, pooling, residual adds
        and the reference offset correction are attributed to the preceding crossbar op in
        file order.
    """
    options = program.header["options"]
    layers: list[LayerCounts] = []
    for i, op in enumerate(program.ops):
        attrs = op["attrs"]
        size = math.prod(op["out_shape"])
        if op["kind"] == "crossbar":
            geometry = _tile_geometry(attrs, program.op_arrays(i))
            p, s = len(attrs["polarities"]), attrs["slices"]
            patches = size // attrs["cols"]
            cycles = attrs["dac_cycles"]
            per_tile = p * s * options["tile_rows"] * options["tile_cols"]
            columns = sum(g["columns"] for g in geometry)
            layers.append(LayerCounts(
                name=op["name"], layer_type=attrs["layer_type"], op_index=i,
                weights=_weight_label(attrs), mapping=attrs["mapping"], polarities=p, slices=s,
                slice_bits=attrs["slice_bits"], rows=attrs["rows"], cols=attrs["cols"],
                patches=patches, tiles=len(geometry), arrays=len(geometry) * p * s,
                cells=sum(g["cells"] for g in geometry), capacity=len(geometry) * per_tile,
                zero_columns=columns - sum(g["nonzero"] for g in geometry), columns=columns,
                adc_bits=attrs["adc_bits"], adc_bits_lossless=attrs["adc_bits_lossless"],
                acc_bits_required=attrs["acc_bits_required"], acc_bits=options["accumulator_bits"],
                dac_bits=attrs["dac_bits"], dac_cycles=cycles,
                adc_conversions=patches * cycles * columns,
                dac_drives=patches * cycles * sum(g["drives"] for g in geometry),
                cell_reads=patches * cycles * sum(g["cells"] for g in geometry),
                shift_adds=patches * cycles * columns,
                accumulates=size if attrs["reference"] else 0))
        elif layers and op["kind"] == "threshold":
            layers[-1].compares += size * attrs["bits"]          # binary search over 2^bits − 1
        elif layers and op["kind"] == "max_pool":
            layers[-1].compares += size * (math.prod(attrs["pool"]) - 1)
        elif layers and op["kind"] == "add":
            # Digital: each input scaled by its multiplier and summed (codes of one step: sums only).
            terms = len(op["inputs"]) - (1 if op["out_max"] is not None else 0)
            layers[-1].accumulates += size * terms
        elif layers and op["kind"] == "sum_pool":
            window = (math.prod(op["in_shape"][:-1]) if attrs["global"]
                      else math.prod(attrs["pool"]))
            layers[-1].accumulates += size * (window - 1)
    return layers


class _Counter:
    """Interpreter hook: accumulates active (non-zero) tile-cycles per crossbar op."""

    def __init__(self, program: Program) -> None:
        self.geometry, self.plan = {}, {}
        for i, op in enumerate(program.ops):
            if op["kind"] == "crossbar":
                self.geometry[i] = _tile_geometry(op["attrs"], program.op_arrays(i))
                self.plan[i] = (op["attrs"]["dac_bits"], op["attrs"]["dac_cycles"])
        self.totals = {i: np.zeros((len(g), 2), np.int64) for i, g in self.geometry.items()}

    def __call__(self, index: int, patches: np.ndarray) -> None:
        dac, cycles = self.plan[index]
        mask = (1 << dac) - 1
        for t, tile in enumerate(self.geometry[index]):
            # OR over the tile's rows: bit-plane j of the tile is all zero iff these bits are.
            union = np.bitwise_or.reduce(patches[:, tile["rows"]], axis=1)
            active = sum(int(np.count_nonzero((union >> (dac * j)) & mask)) for j in range(cycles))
            self.totals[index][t] += (active, len(patches) * cycles)


def measure(program: Program, data: np.ndarray, *, batch_size: int = 128,
            interpreter: Interpreter | None = None) -> tuple[dict[str, Measured], np.ndarray]:
    """Run `program` on `data` and count sparsity-aware skipping per crossbar layer.

    Arguments:
        program: the program.
        data: integer input codes ``(N, *input.shape)``.
        batch_size: examples per interpreter batch.
        interpreter: run this interpreter (e.g. hardware mode) instead of an ideal-mode one.

    Returns:
        ``({layer name: Measured}, outputs)`` — the per-inference counts and the program's
        outputs on `data` (so accuracy needs no second run).
    """
    counter = _Counter(program)
    runner = interpreter or Interpreter(program)
    runner.crossbar_hook = counter
    try:
        outputs = runner.run(data, batch_size=batch_size)
    finally:
        runner.crossbar_hook = None
    n = max(len(data), 1)
    found = {}
    for index, geometry in counter.geometry.items():
        totals = counter.totals[index]
        active, cycles = totals[:, 0], totals[:, 1]
        columns = np.array([g["columns"] for g in geometry])
        nonzero = np.array([g["nonzero"] for g in geometry])
        found[program.ops[index]["name"]] = Measured(
            examples=len(data), tile_cycles=float(cycles.sum()) / n,
            tile_cycles_zero=float((cycles - active).sum()) / n,
            adc_conversions=float(active @ nonzero) / n,
            adc_skipped_zero_input=float((cycles - active) @ columns) / n,
            adc_skipped_zero_column=float(active @ (columns - nonzero)) / n,
            dac_drives=float(active @ np.array([g["drives"] for g in geometry])) / n,
            cell_reads=float(active @ np.array([g["cells"] for g in geometry])) / n)
    return found, outputs
