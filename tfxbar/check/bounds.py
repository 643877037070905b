"""Static worst-case accumulator bounds of a crossbar program (numpy only, no TensorFlow).

For every crossbar op the bounds hold for *every* input patch x ∈ [0, input_max]^K and follow
the program's own shift-add plan (docs/format.md §4.1, hardware semantics): tiles in file
order, bit-serial DAC cycles j (least significant first), polarities p and slices l.

- **out** (per output channel n): the final accumulator X[n] = Σ_k W[k, n]·x[k], with the
  integer weights W rebuilt from the cells: hi = input_max·Σ max(W, 0), lo = input_max·Σ min(W, 0).
- **adc** (per tile column, polarity and slice): the partial sum one DAC cycle feeds the ADC,
  Σ_k plane_j(x_k)·cells[k], ≤ min(input_max, 2^d − 1)·Σ_k cells[k] (cycle 0 is the largest).
- **acc** (per output channel, every digital accumulation stage): the running value of the
  digital accumulator after each addition of the plan. After stage (tile t, cycle J, steps
  done), row k of an earlier tile contributes C_k·x_k and row k of tile t contributes
  C_k·(x_k mod 2^(dJ)) + 2^(dJ)·w_k·plane_J(x_k), with C_k the row's full (unshifted) code and
  w_k the code of the polarity/slice steps done in cycle J. Rows are independent inputs, so
  the maximum is a sum of per-row maxima of a function of one integer; each is found exactly
  over the ≤ 6 vertices of its integer feasible set.
- **ref** (per reference tile): the running Σx register of the offset mapping.

When every ADC a column passes through is lossless (step 1, no clipping) the bounds are exact
(``tight``: an input attains them, see `attaining_input`); otherwise each ADC output is bounded
by the ADC of the largest partial sum (the ADC is monotone) and the stages are summed as
intervals, which is sound but not necessarily tight.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tfxbar.export.crossbar import static_bounds, weight_matrix
from tfxbar.export.format import Program

__all__ = ["CrossbarBounds", "attaining_input", "crossbar_bounds", "program_bounds", "signed_bits",
           "unsigned_bits"]

_LIMIT = 2.0 ** 62


def signed_bits(lo: int, hi: int) -> int:
    """Bits of a two's-complement register holding every integer in [lo, hi]."""
    return max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0) + 1


def unsigned_bits(hi: int) -> int:
    """Bits of an unsigned converter code holding every integer in [0, hi] (at least 1)."""
    return max(1, int(hi).bit_length())


@dataclasses.dataclass
class CrossbarBounds:
    """Static bounds of one crossbar op (arrays per output channel unless noted).

    Attributes:
        index, name: the op's index and name in the program.
        input_max: largest input code.
        out_lo, out_hi: bounds of the final accumulator X (int64, shape (N,)).
        acc_lo, acc_hi: extremes of the running digital accumulator over all stages.
        acc_arg_lo, acc_arg_hi: the stage ``(tile, cycle, step)`` attaining each extreme
            (step counts the polarity/slice additions done in that cycle, 1-based).
        tile_acc: per tile, ``(lo, hi)`` extremes over that tile's stages for its columns.
        adc: per tile, the largest partial sum per (polarity, slice, tile column).
        adc_codes: per tile, the largest ADC output code (after the step 2^adc_shift).
        ref: per tile, the largest reference partial sum (None without a reference column).
        ref_total: per tile, the largest running Σx after that tile (None if not a reference tile).
        exact: per output channel, True when every ADC on its path is lossless, so the bounds
            are attained by some input.
        adc_bits: the ADC resolution of the program.
    """

    index: int
    name: str
    input_max: int
    weights: np.ndarray
    out_lo: np.ndarray
    out_hi: np.ndarray
    acc_lo: np.ndarray
    acc_hi: np.ndarray
    acc_arg_lo: list[tuple[int, int, int]]
    acc_arg_hi: list[tuple[int, int, int]]
    tile_acc: list[tuple[np.ndarray, np.ndarray]]
    adc: list[np.ndarray]
    adc_codes: list[np.ndarray]
    ref: list[int | None]
    ref_total: list[int | None]
    exact: np.ndarray
    adc_bits: int

    @property
    def acc_bits(self) -> int:
        """Signed accumulator bits the op needs (running stages, Σx register and final X)."""
        lo = min(int(self.acc_lo.min()), int(self.out_lo.min()))
        hi = max(int(self.acc_hi.max()), int(self.out_hi.max()),
                 max((r for r in self.ref_total if r is not None), default=0))
        # At least 2: the smallest accumulator a program can ask for (docs/format.md, 2..64); an
        # op whose every sum is 0 (e.g. 1-bit ADCs that round all partial sums to 0) needs 1.
        return max(2, signed_bits(lo, hi))


def _adc_value(partial: np.ndarray | int, shift: np.ndarray | int, bits: int) -> np.ndarray:
    """The hardware ADC's output (value, not code) for a partial sum: round half up, saturate."""
    shift = np.asarray(shift, np.int64)
    code = np.minimum((np.asarray(partial, np.int64) + ((1 << shift) >> 1)) >> shift, (1 << bits) - 1)
    return code << shift


def _candidates(m: int, pmax: int, xmax: int) -> list[tuple[int, int]]:
    """Vertices (low part L, plane P) of {L < m, P ≤ pmax, L + m·P ≤ xmax} worth trying."""
    full = min(m - 1, xmax)
    top = min(m - 1, xmax - m * pmax)
    points = [(0, 0), (full, 0), (0, pmax), (top, pmax)]
    if pmax >= 1:
        points += [(m - 1, pmax - 1), (0, pmax - 1)]
    return points


def _row_extreme(code: np.ndarray, done: np.ndarray, m: int, pmax: int, xmax: int,
                 sign: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, max (sign=+1) or min (sign=−1) of code·(x mod m) + m·done·plane(x), and the x."""
    points = _candidates(m, pmax, xmax)
    values = np.stack([sign * (code * low + (m * plane) * done) for low, plane in points])
    best = values.argmax(axis=0)
    xs = np.array([low + m * plane for low, plane in points], np.int64)
    return sign * np.take_along_axis(values, best[None], 0)[0], xs[best]


def _tiles(attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    out = []
    for t, tile in enumerate(attrs["tiles"]):
        cells = arrays[f"tile{t}.cells"].astype(np.int64)
        code = sum(sign * sum(cells[p, s] << (attrs["slice_bits"] * s) for s in range(attrs["slices"]))
                   for p, sign in enumerate(attrs["polarities"]))
        out.append({"cells": cells, "code": code, "rows": arrays[f"tile{t}.rows"].astype(np.int64),
                    "cols": arrays[f"tile{t}.cols"].astype(np.int64),
                    "shift": arrays[f"tile{t}.adc_shift"].astype(np.int64),
                    "ref_shift": (int(arrays[f"tile{t}.ref_shift"][0]) if tile["reference"] else None)})
    return out


def _guard(attrs: dict[str, Any], arrays: dict[str, np.ndarray], name: str) -> None:
    code = float(2 ** (attrs["slice_bits"] * attrs["slices"]) - 1)
    bound = attrs["rows"] * attrs["input_max"] * (code * 2.0 ** attrs["offset_shift"]
                                                   + float(np.abs(arrays["offset_num"]).max(initial=0)))
    if bound >= _LIMIT:
        raise ValueError(f"crossbar {name!r}: worst-case sums reach 2^{np.log2(bound):.0f}; the checker "
                         "(and the reference interpreter) handle at most 2^62")


def crossbar_bounds(program: Program, index: int) -> CrossbarBounds:
    """Static bounds of crossbar op `index` of `program` (see the module docstring).

    Arguments:
        program: a validated `Program`.
        index: the op index of a crossbar op.

    Returns:
        A `CrossbarBounds`.

    Raises:
        ValueError: op `index` is not a crossbar, or its sums could exceed 2^62.
    """
    op = program.ops[index]
    if op["kind"] != "crossbar":
        raise ValueError(f"op {index} ({op['name']!r}) is a {op['kind']}, not a crossbar")
    attrs, arrays = op["attrs"], program.op_arrays(index)
    _guard(attrs, arrays, op["name"])
    xmax, d, cycles = attrs["input_max"], attrs["dac_bits"], attrs["dac_cycles"]
    b, signs, slices, bits = attrs["slice_bits"], attrs["polarities"], attrs["slices"], attrs["adc_bits"]
    mask = (1 << d) - 1
    planes = [min(xmax >> (d * j), mask) for j in range(cycles)]
    tiles = _tiles(attrs, arrays)
    weights = weight_matrix(attrs, arrays)
    n = attrs["cols"]
    out_lo, out_hi = static_bounds(weights, xmax)

    exact = np.ones(n, bool)
    adc, adc_codes, refs, ref_exact = [], [], [], True
    for tile in tiles:
        partial = tile["cells"].sum(axis=2) * planes[0]
        adc.append(partial)
        codes = (partial + ((1 << tile["shift"]) >> 1)) >> tile["shift"]
        adc_codes.append(codes)
        lossless = (tile["shift"] == 0) & (codes <= (1 << bits) - 1)
        exact[tile["cols"]] &= lossless.all(axis=(0, 1))
        if tile["ref_shift"] is None:
            refs.append(None)
        else:
            refs.append(len(tile["rows"]) * planes[0])
            ref_exact &= tile["ref_shift"] == 0 and refs[-1] <= (1 << bits) - 1
    if attrs["reference"] and not ref_exact:
        exact[:] = False

    # Running digital accumulator: exact per-row analysis and a sound interval analysis.
    done_hi, done_lo = np.zeros(n, np.int64), np.zeros(n, np.int64)
    iv_hi, iv_lo = np.zeros(n, np.int64), np.zeros(n, np.int64)
    acc_hi, acc_lo = np.zeros(n, np.int64), np.zeros(n, np.int64)
    arg_hi = np.tile(np.array([-1, 0, 0], np.int64), (n, 1))  # (-1, 0, 0): the initial zero
    arg_lo = arg_hi.copy()
    tile_acc = []
    for t, tile in enumerate(tiles):
        cols, code, cells = tile["cols"], tile["code"], tile["cells"]
        colsum = cells.sum(axis=2)
        t_hi = np.full(len(cols), np.iinfo(np.int64).min)
        t_lo = np.full(len(cols), np.iinfo(np.int64).max)
        for j in range(cycles):
            m, done, step = 1 << (d * j), np.zeros_like(code), 0
            for p, sign in enumerate(signs):
                for s in range(slices):
                    step += 1
                    done = done + sign * (cells[p, s] << (b * s))
                    value = _adc_value(colsum[p, s] * planes[j], tile["shift"][p, s], bits) << (b * s + d * j)
                    if sign > 0:
                        iv_hi[cols] += value
                    else:
                        iv_lo[cols] -= value
                    hi = done_hi[cols] + _row_extreme(code, done, m, planes[j], xmax, 1)[0].sum(0)
                    lo = done_lo[cols] + _row_extreme(code, done, m, planes[j], xmax, -1)[0].sum(0)
                    hi = np.where(exact[cols], hi, iv_hi[cols])
                    lo = np.where(exact[cols], lo, iv_lo[cols])
                    up, down = hi > acc_hi[cols], lo < acc_lo[cols]
                    acc_hi[cols[up]], arg_hi[cols[up]] = hi[up], (t, j, step)
                    acc_lo[cols[down]], arg_lo[cols[down]] = lo[down], (t, j, step)
                    t_hi, t_lo = np.maximum(t_hi, hi), np.minimum(t_lo, lo)
        done_hi[cols] += np.where(code > 0, code, 0).sum(0) * xmax
        done_lo[cols] += np.where(code < 0, code, 0).sum(0) * xmax
        tile_acc.append((t_lo, t_hi))

    ref_total: list[int | None] = []
    total = 0
    for tile, ref in zip(tiles, refs, strict=True):
        if ref is None:
            ref_total.append(None)
            continue
        if ref_exact:
            total += len(tile["rows"]) * xmax
        else:
            total += sum(int(_adc_value(len(tile["rows"]) * planes[j], tile["ref_shift"], bits)) << (d * j)
                         for j in range(cycles))
        ref_total.append(total)
    if not exact.all():
        # Interval bound of X = (acc << f) − B·Σx for the lossy columns.
        offset, f = arrays["offset_num"], attrs["offset_shift"]
        x_hi = (iv_hi << f) - np.where(offset < 0, offset, 0) * total
        x_lo = (iv_lo << f) - np.where(offset > 0, offset, 0) * total
        out_hi, out_lo = np.where(exact, out_hi, x_hi), np.where(exact, out_lo, x_lo)
    return CrossbarBounds(index, op["name"], xmax, weights, out_lo, out_hi, acc_lo, acc_hi,
                          [tuple(map(int, a)) for a in arg_lo], [tuple(map(int, a)) for a in arg_hi],
                          tile_acc, adc, adc_codes, refs, ref_total, exact, bits)


def program_bounds(program: Program) -> dict[int, CrossbarBounds]:
    """`crossbar_bounds` of every crossbar op, by op index."""
    return {i: crossbar_bounds(program, i) for i, op in enumerate(program.ops) if op["kind"] == "crossbar"}


def attaining_input(program: Program, bounds: CrossbarBounds, quantity: str, column: int,
                    side: str = "hi", tile: int | None = None, polarity: int = 0,
                    slice_: int = 0) -> np.ndarray:
    """An input patch (length K, int64) that attains a bound of an exact column.

    Arguments:
        program: the program the bounds were computed from.
        bounds: the op's `CrossbarBounds`.
        quantity: ``"out"`` (final X), ``"acc"`` (running accumulator extreme) or ``"adc"``
            (the partial sum of tile `tile`, `polarity`, `slice_` in DAC cycle 0).
        column: output channel index.
        side: ``"hi"`` or ``"lo"`` (not for ``"adc"``).

    Returns:
        x with entries in [0, input_max] such that the quantity equals its bound.

    Raises:
        ValueError: unknown quantity/side, or the column's bounds are not exact.
    """
    if side not in ("hi", "lo"):
        raise ValueError(f"side must be 'hi' or 'lo', got {side!r}")
    op = program.ops[bounds.index]
    attrs, arrays = op["attrs"], program.op_arrays(bounds.index)
    tiles = _tiles(attrs, arrays)
    xmax, sign = bounds.input_max, 1 if side == "hi" else -1
    x = np.zeros(attrs["rows"], np.int64)
    if quantity == "out":
        x[sign * bounds.weights[:, column] > 0] = xmax
        return x
    if not bounds.exact[column]:
        raise ValueError(f"column {column} of {bounds.name!r} passes a lossy ADC: its bounds are sound "
                         "but not attained by construction")
    if quantity == "adc":
        if tile is None:
            raise ValueError("quantity 'adc' needs tile=")
        info = tiles[tile]
        where = np.flatnonzero(info["cols"] == column)
        if not where.size:
            raise ValueError(f"tile {tile} does not hold column {column}")
        mask = (1 << attrs["dac_bits"]) - 1
        active = info["cells"][polarity, slice_, :, where[0]] > 0
        x[info["rows"][active]] = min(xmax, mask)
        return x
    if quantity != "acc":
        raise ValueError(f"quantity must be 'out', 'acc' or 'adc', got {quantity!r}")
    t_arg, j_arg, step_arg = (bounds.acc_arg_hi if side == "hi" else bounds.acc_arg_lo)[column]
    d, b = attrs["dac_bits"], attrs["slice_bits"]
    for t, info in enumerate(tiles):
        where = np.flatnonzero(info["cols"] == column)
        if not where.size:
            continue
        code = info["code"][:, where[0]]
        if t < t_arg:
            x[info["rows"][sign * code > 0]] = xmax
        elif t == t_arg:
            done, step = np.zeros_like(code), 0
            for p, pol in enumerate(attrs["polarities"]):
                for s in range(attrs["slices"]):
                    step += 1
                    if step <= step_arg:
                        done = done + pol * (info["cells"][p, s, :, where[0]] << (b * s))
            pmax = min(xmax >> (d * j_arg), (1 << d) - 1)
            x[info["rows"]] = _row_extreme(code, done, 1 << (d * j_arg), pmax, xmax, sign)[1]
    return x
