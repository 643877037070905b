"""A crossbar op's tiles regrouped for TensorFlow: one GEMM per *row group* (numpy only).

docs/format.md §4.1 converts every tile column's partial sum of one DAC cycle with its own ADC.
A tile column's partial sum only involves the tile's rows, so all tiles that share a row map
(the tiles of one row block, whatever their column block) can be computed by one GEMM of the
row block's inputs with a (rows, polarity · slice · N) cell matrix that is zero in the columns
those tiles do not hold: a zero column's partial sum is 0, its ADC code 0 (round half up of 0)
and it adds 0 to the accumulator, which can neither overflow nor clip. So a crossbar becomes
one GEMM per row block, in tile order, with every column's additions in the file's order as
long as each column meets its tiles in row-group order (the converter's grid does; other
layouts are refused).

`TileLayout` holds what the TF simulation (`tfxbar.hardware.simulate`) needs: row groups,
per-group ADC steps, reference columns, the accumulator weights of every ADC code and a static
proof of when no accumulator addition can overflow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["RowGroup", "TileLayout"]


@dataclasses.dataclass
class RowGroup:
    """The tiles of one row map.

    Attributes:
        rows: the crossbar rows (patch positions) of the group, int64 (r,).
        tiles: ``(tile index, column map)`` of each tile in the group, in file order.
        present: bool (N,), the columns some tile of the group holds.
        shift: int64 (P, L, N) ADC step exponents (0 where no tile holds the column).
        ref_shift: the reference tile's ADC step exponent, or None without one.
    """

    rows: np.ndarray
    tiles: list[tuple[int, np.ndarray]]
    present: np.ndarray
    shift: np.ndarray
    ref_shift: int | None

    @property
    def contiguous(self) -> bool:
        """Whether `rows` is a range (a slice instead of a gather)."""
        return bool(len(self.rows) and np.array_equal(self.rows, np.arange(self.rows[0],
                                                                           self.rows[0] + len(self.rows))))


class TileLayout:
    """The tiles of one crossbar op of a program, as row groups (module docstring).

    Arguments:
        op: the op's header entry (``program.ops[i]``).
        arrays: its arrays (``program.op_arrays(i)``).

    Raises:
        ValueError: the op is not a crossbar, or some column meets its tiles out of row-group order.

    Example:
        >>> layout = TileLayout(program.ops[0], program.op_arrays(0))
        >>> [len(g.rows) for g in layout.groups]
    """

    def __init__(self, op: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if op["kind"] != "crossbar":
            raise ValueError(f"op {op['name']!r} is a {op['kind']!r} op, not a crossbar")
        attrs = op["attrs"]
        self.name, self.attrs = op["name"], attrs
        self.layer_type = attrs["layer_type"]
        self.rows, self.cols = attrs["rows"], attrs["cols"]
        self.polarities = list(attrs["polarities"])
        self.slices, self.slice_bits = attrs["slices"], attrs["slice_bits"]
        self.dac_bits, self.cycles = attrs["dac_bits"], attrs["dac_cycles"]
        self.offset_shift, self.mapping = attrs["offset_shift"], attrs["mapping"]
        self.adc_bits = attrs["adc_bits"]
        self.top = (1 << self.adc_bits) - 1
        self.input_max = attrs["input_max"]
        self.offset_num = arrays["offset_num"].astype(np.int64)
        self.tile_cells = [arrays[f"tile{t}.cells"] for t in range(len(attrs["tiles"]))]
        p, s = len(self.polarities), self.slices
        groups: dict[bytes, RowGroup] = {}
        order: dict[int, list[int]] = {}   # column → row groups in the file order of its tiles
        self.conversions = 0               # ADC conversions per patch (docs/format.md §4.1)
        for t, tile in enumerate(attrs["tiles"]):
            rows = arrays[f"tile{t}.rows"].astype(np.int64)
            cols = arrays[f"tile{t}.cols"].astype(np.int64)
            key = rows.tobytes()
            group = groups.get(key)
            if group is None:
                group = groups[key] = RowGroup(rows, [], np.zeros(self.cols, bool),
                                               np.zeros((p, s, self.cols), np.int64), None)
            index = list(groups).index(key)
            group.tiles.append((t, cols))
            group.present[cols] = True
            group.shift[:, :, cols] = arrays[f"tile{t}.adc_shift"].astype(np.int64)
            if tile["reference"]:
                group.ref_shift = int(arrays[f"tile{t}.ref_shift"][0])
                order.setdefault(-1, []).append(index)
            for c in cols.tolist():
                order.setdefault(c, []).append(index)
            self.conversions += self.cycles * (p * s * len(cols) + int(tile["reference"]))
        for column, seq in order.items():
            if seq != sorted(seq):
                what = "the reference column" if column < 0 else f"column {column}"
                raise ValueError(f"crossbar {self.name!r}: {what} meets its tiles out of row-group "
                                 "order; the TF hardware mode needs the converter's tile grid")
        self.groups = list(groups.values())
        # Largest bit-plane value per DAC cycle (the top cycle may hold fewer bits).
        self.plane_max = np.array([min((1 << self.dac_bits) - 1, self.input_max >> (self.dac_bits * j))
                                   for j in range(self.cycles)], np.int64)

    # -- constants of the simulation -----------------------------------------------------------
    def coefficients(self, group: RowGroup) -> np.ndarray:
        """Accumulator weight of each ADC code, (cycles, P·L, N) int64: the ADC's step 2^shift,
        then ``polarity · 2^(slice_bits·l + dac_bits·j)`` (docs/format.md §4.1)."""
        signs = np.asarray(self.polarities, np.int64)[:, None, None]
        exps = group.shift + self.slice_bits * np.arange(self.slices)[None, :, None]
        return np.stack([(signs << (exps + self.dac_bits * j)).reshape(-1, self.cols)
                         for j in range(self.cycles)])

    def partial_bound(self) -> int:
        """Largest partial sum of one tile column for any cells of the program's slice width."""
        rows = max((len(g.rows) for g in self.groups), default=0)
        return int(self.plane_max.max(initial=0)) * rows * ((1 << self.slice_bits) - 1)

    def bounds(self) -> tuple[np.ndarray, float]:
        """ADC-bounded magnitudes ``(Σ|terms| per column of the cell accumulator, Σ|terms| of the
        reference sum)``: every ADC output is at most top·2^shift, whatever the cells or a device
        hold, so these bound every running sum (float64, rounding far below the margins used)."""
        acc = np.zeros(self.cols, np.float64)
        ref = 0.0
        for group in self.groups:
            coef = np.abs(self.coefficients(group)).astype(np.float64)
            acc += float(self.top) * (coef * group.present[None, None, :]).sum(axis=(0, 1))
            if group.ref_shift is not None:
                ref += float(self.top) * float(sum(2.0 ** (group.ref_shift + self.dac_bits * j)
                                                   for j in range(self.cycles)))
        return acc, ref

    def cannot_overflow(self, accumulator_bits: int) -> bool:
        """Static proof that no accumulator addition leaves ``accumulator_bits`` (conservative)."""
        acc, ref = self.bounds()
        final = acc * 2.0 ** self.offset_shift + ref * np.abs(self.offset_num.astype(np.float64))
        limit = float((1 << (accumulator_bits - 1)) - 1) * (1 - 1e-9)
        return bool(max(acc.max(initial=0), ref, final.max(initial=0)) <= limit)

    def program_cells(self, group: RowGroup,
                      conductances: Any = None) -> np.ndarray:
        """The group's cells as one (r, P·L·N) float64 matrix, zero outside its tiles' columns;
        with `conductances` (``(layer, tile, cells) -> array``, as `tfxbar.Interpreter`), the
        device's conductances in code units instead."""
        p, s = len(self.polarities), self.slices
        out = np.zeros((len(group.rows), p, s, self.cols), np.float64)
        for t, cols in group.tiles:
            cells = self.tile_cells[t]
            if conductances is not None:
                g = np.asarray(conductances(self.name, t, cells), np.float64)
                if g.shape != cells.shape:
                    raise ValueError(f"conductances for {self.name} tile {t} must have shape {cells.shape}")
                cells = g
            out[:, :, :, cols] = np.transpose(cells, (2, 0, 1, 3))
        return out.reshape(len(group.rows), -1)
