"""Vectorised kernels of the interpreter: im2col, pooling, thresholds (numpy only).

They accept integer arrays or float arrays holding exact integers (the interpreter carries
codes and accumulators as float32/float64 where that is exact, to feed BLAS without
conversions) and return the same dtype unless noted; all results are exact integers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["FieldCodes", "ThresholdTable", "apply_thresholds", "im2col", "max_pool", "patch_view",
           "run_plain_op", "sum_pool"]

# Largest magnitude below which every integer is exact in a float dtype.
EXACT = {np.dtype(np.float32): 2 ** 24, np.dtype(np.float64): 2 ** 53}


def _offsets(size: list[int] | tuple[int, int], strides: list[int] | tuple[int, int],
             out: tuple[int, int]) -> list[tuple[int, int, slice, slice]]:
    """(i, j, rows, cols) for every window offset: the strided slices picking element (i, j)
    of every window, so a window reduction is kh·kw elementwise passes over the output."""
    return [(i, j, slice(i, i + strides[0] * (out[0] - 1) + 1, strides[0]),
             slice(j, j + strides[1] * (out[1] - 1) + 1, strides[1]))
            for i in range(size[0]) for j in range(size[1])]


def patch_view(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int]) -> np.ndarray:
    """Read-only strided view ``(B, Ho, Wo, kh, kw, C)`` of every window of an NHWC array, after
    zero padding (code 0 is the real value 0); no patch is copied."""
    pt, pb, pl, pr = pads
    if any(pads):
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    b, h, w, c = x.shape
    kh, kw = kernel
    ho, wo = (h - kh) // strides[0] + 1, (w - kw) // strides[1] + 1
    sb, sh, sw, sc = x.strides
    return as_strided(x, (b, ho, wo, kh, kw, c), (sb, sh * strides[0], sw * strides[1], sh, sw, sc),
                      writeable=False)


def im2col(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int]) -> np.ndarray:
    """Patches ``(B, Ho, Wo, kh·kw·C)`` of an NHWC array, rows ordered (kh, kw, C) like a
    Keras kernel reshaped to (kh·kw·C, filters); zero padding (code 0 is the real value 0).

    Contiguous copy of `patch_view`: in NHWC the (kw, C) block of a window is one contiguous
    run of the input, so numpy copies long runs (≈ 5× faster than the (C, kh, kw) order of
    `sliding_window_view`)."""
    view = patch_view(x, kernel, strides, pads)
    b, ho, wo, kh, kw, c = view.shape
    return np.ascontiguousarray(view).reshape(b, ho, wo, kh * kw * c)


def max_pool(x: np.ndarray, pool: list[int], strides: list[int], pads: list[int],
             mode: np.ndarray) -> np.ndarray:
    """Per-channel max (mode +1) or min (mode −1) over windows; padding never wins."""
    negate = bool(np.any(mode < 0))
    if negate:  # min = −max(−x); signed dtype so that −x is exact
        x = x.astype(np.result_type(x.dtype, np.int8), copy=False) * mode.astype(np.int8)
    if any(pads):
        pt, pb, pl, pr = pads
        low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=low)
    ho = (x.shape[1] - pool[0]) // strides[0] + 1
    wo = (x.shape[2] - pool[1]) // strides[1] + 1
    out = None
    for _, _, rows, cols in _offsets(pool, strides, (ho, wo)):
        out = x[:, rows, cols].copy() if out is None else np.maximum(out, x[:, rows, cols], out=out)
    return out * mode.astype(np.int8) if negate else out


def sum_pool(x: np.ndarray, pool: list[int] | None, strides: list[int] | None) -> np.ndarray:
    """Integer window sums (valid windows), or the global sum over H and W when `pool` is None.

    Float inputs are summed as int64: a sum of accumulators may leave the exact float range."""
    if x.dtype.kind == "f":
        x = x.astype(np.int64)
    if pool is None:
        return x.sum(axis=(1, 2))
    ho = (x.shape[1] - pool[0]) // strides[0] + 1
    wo = (x.shape[2] - pool[1]) // strides[1] + 1
    out = None
    for _, _, rows, cols in _offsets(pool, strides, (ho, wo)):
        out = x[:, rows, cols].astype(np.int64) if out is None else np.add(out, x[:, rows, cols], out=out)
    return out


def _table_size(lo: np.ndarray, hi: np.ndarray) -> float:
    """Entries of per-channel tables over [lo_c, hi_c], in float: bounds read from a file may be as
    wide as int64 allows (they need only contain the true range), where hi − lo + 1 overflows."""
    return float((np.asarray(hi, np.float64) - np.asarray(lo, np.float64) + 1).sum())


class FieldCodes(NamedTuple):
    """Threshold codes indexed by biased accumulator values: the code of value lo_c + v of
    channel c is ``table[base[c] + v]`` for 0 ≤ v ≤ hi_c − lo_c (`ThresholdTable.field_codes`)."""

    table: np.ndarray   # uint8 (or uint16 for more than 255 levels)
    base: np.ndarray    # int64, per channel


class ThresholdTable:
    """Per-channel thresholds (docs/format.md §4.2) prepared for fast evaluation.

    Direction −1 is turned into +1 by negating the input and the thresholds
    (#{k : x ≤ T_k} = #{k : −x ≥ −T_k}). Every code change of channel c then happens in
    [T_c,0 − 1, T_c,last], so clipping x into that range first is exact, and a lookup table
    over it gives all channels in one gather. Tables too large for the cache fall back to
    compare-and-count (few levels) or one binary search per channel.
    """

    MAX_TABLE = 1 << 21   # entries (float32: 8 MB); larger tables thrash the cache
    MAX_COMPARES = 8

    def __init__(self, thresholds: np.ndarray, direction: np.ndarray,
                 bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """`bounds`: optional per-channel (lo, hi) that inputs are known to lie in (a crossbar's
        static accumulator bounds); a table that also covers them needs no clipping."""
        self.negate = np.where(direction < 0, -1, 1).astype(np.int8)
        self.any_negative = bool(np.any(self.negate < 0))
        self.t = thresholds.astype(np.int64) * self.negate[:, None].astype(np.int64)   # non-decreasing rows
        channels, levels = self.t.shape
        self.levels = levels
        self.table = None
        self.covers_bounds = False
        if not levels:
            return
        lo, hi = self.t[:, 0] - 1, self.t[:, -1]
        if bounds is not None:   # negation swaps the ends
            b_lo = np.where(self.negate < 0, -bounds[1], bounds[0])
            b_hi = np.where(self.negate < 0, -bounds[0], bounds[1])
            wide_lo, wide_hi = np.minimum(lo, b_lo), np.maximum(hi, b_hi)
            if _table_size(wide_lo, wide_hi) <= self.MAX_TABLE:
                lo, hi, self.covers_bounds = wide_lo, wide_hi, True
        if _table_size(lo, hi) > self.MAX_TABLE:
            return
        sizes = hi - lo + 1
        self.base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.end = self.base + sizes - 1
        # code of value v in channel c: #{k : v ≥ T_c,k}
        self.table = np.concatenate([np.searchsorted(self.t[c], np.arange(lo[c], hi[c] + 1), side="right")
                                     for c in range(channels)]).astype(np.float32)
        self.shift = self.base - lo

    def field_codes(self, lo: np.ndarray, hi: np.ndarray) -> FieldCodes | None:
        """Every channel's codes over its whole static range [lo_c, hi_c] as one small-integer
        table (what a packed convolution looks its threshold up in), or None when that table
        would exceed `MAX_TABLE` entries or the codes 16 bits."""
        if _table_size(lo, hi) > self.MAX_TABLE or self.levels >= 1 << 16:
            return None
        sizes = (hi - lo + 1).astype(np.int64)
        dtype = np.uint8 if self.levels < 256 else np.uint16
        table = np.concatenate([np.searchsorted(self.t[c], self.negate[c] * np.arange(lo[c], hi[c] + 1),
                                                side="right") for c in range(len(sizes))] or [[]])
        base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return FieldCodes(table.astype(dtype), base)

    def __call__(self, x: np.ndarray, in_bounds: bool = False) -> np.ndarray:
        """Codes (float32, exact) for integer-valued `x` whose last axis is the channel;
        `in_bounds`: `x` lies within the `bounds` given at construction."""
        if not self.levels:
            return np.zeros(x.shape, np.float32)
        if x.dtype.kind != "f":
            x = x.astype(np.int64, copy=False)   # small unsigned codes would wrap below
        if self.any_negative:
            x = x.astype(np.result_type(x.dtype, np.int8), copy=False) * self.negate
        if self.table is not None:
            return self._lookup(x, in_bounds and self.covers_bounds)
        if self.levels <= self.MAX_COMPARES:
            return self._count(x)
        flat = x.reshape(-1, x.shape[-1])
        out = np.empty(flat.shape, np.float32)
        for c in range(flat.shape[1]):
            out[:, c] = np.searchsorted(self.t[c], flat[:, c], side="right")
        return out.reshape(x.shape)

    def _lookup(self, x: np.ndarray, inside: bool) -> np.ndarray:
        limit = EXACT.get(x.dtype)
        top = int(self.end[-1]) + 1
        if limit is not None and (np.abs(self.shift).max(initial=0) >= limit or top >= limit):
            x = x.astype(np.int64)   # the shifted index would not be exact in this float dtype
        # Rounding is monotone and the table range is exact, so out-of-range values
        # (exact or not) still clip to the right end.
        index = x + self.shift.astype(x.dtype)
        if not inside:
            np.clip(index, self.base.astype(x.dtype), self.end.astype(x.dtype), out=index)
        return self.table.take(index.astype(np.intp, copy=False))

    def _count(self, x: np.ndarray) -> np.ndarray:
        limit = EXACT.get(x.dtype)
        t = self.t if limit is None else np.clip(self.t, -limit, limit).astype(x.dtype)  # |x| < limit
        out = np.zeros(x.shape, np.float32)
        for k in range(self.levels):
            out += x >= t[:, k]
        return out


def apply_thresholds(x: np.ndarray, thresholds: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Codes (int64): per channel (last axis), how many thresholds `x` passes.

    Direction +1: #{k : x ≥ T_k}; direction −1: #{k : x ≤ T_k}.
    """
    return ThresholdTable(thresholds, direction)(x).astype(np.int64)

def run_plain_op(op: dict[str, Any], arrays: dict[str, np.ndarray], args: list[np.ndarray]) -> np.ndarray:
    """One op without crossbar or threshold state (pooling, shapes, merges, the float output) of
    a program header entry `op`, its `arrays`, on its input values `args`."""
    kind, attrs, x = op["kind"], op["attrs"], args[0]
    if kind == "max_pool":
        return max_pool(x, attrs["pool"], attrs["strides"], attrs["pads"], arrays["mode"])
    if kind == "sum_pool":
        return sum_pool(x, None if attrs["global"] else attrs["pool"], attrs.get("strides"))
    if kind in ("flatten", "reshape"):
        return x.reshape(len(x), *op["out_shape"])
    if kind == "pad":
        pt, pb, pl, pr = attrs["pads"]
        return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    if kind == "upsample":
        return np.repeat(np.repeat(x, attrs["size"][0], axis=1), attrs["size"][1], axis=2)
    if kind == "concat":
        return np.concatenate(args, axis=-1)
    if kind == "add":
        if op["out_max"] is not None:   # codes of one step: an exact float sum
            dtype = np.float32 if op["out_max"] < 2 ** 24 else np.float64
            return sum(a.astype(dtype, copy=False) for a in args)
        m = arrays["multipliers"]
        return sum(a.astype(np.int64) * m[j] for j, a in enumerate(args))
    if kind == "dequantize":
        return _dequantize(x, attrs["chain"], arrays)
    raise ValueError(f"op {op['name']!r}: unknown kind {kind!r}")


def _dequantize(x: np.ndarray, chain: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> np.ndarray:
        v = x.astype(np.float64)
        for j, stage in enumerate(chain):
            if stage["kind"] == "affine":
                v = v * arrays[f"stage{j}.a"] + arrays[f"stage{j}.b"]
            elif stage["kind"] == "relu":
                y = np.where(v >= stage["threshold"], v, stage["negative_slope"] * (v - stage["threshold"]))
                v = y if stage["max_value"] is None else np.minimum(y, stage["max_value"])
            else:
                e = np.exp(v - v.max(axis=-1, keepdims=True))
                v = e / e.sum(axis=-1, keepdims=True)
        return v
