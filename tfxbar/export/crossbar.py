"""Crossbar ops prepared for the interpreter: the integer weight matrix rebuilt from the tiles
(ideal mode) and, per tile, the stacked cells, static partial-sum bounds and ADC constants
(hardware mode). Integers travel as float32/float64 wherever every partial sum is provably
exact in that dtype, so the GEMMs run on BLAS.

Lane packing (ideal mode, convolutions): output c of an image lies in [lo_c, hi_c], so y − lo_c
fits in S unsigned bits. F images of the batch ride in one float64 as x₀ + 2^S·x₁ + 2^2S·x₂ + …
The GEMM is linear, so it returns y₀ + 2^S·y₁ + …, every partial sum an integer below 2^53
(exact; `Crossbar._fit_lanes` proves it for the F chosen). Adding Σ_f 2^(S·f)·(−lo_c) makes
every lane an unsigned S-bit field, and integer shifts and masks cut them apart. One float64
multiply does F useful multiply-adds (F/2 times the float32 rate on AVX2), and im2col copies 2/F
of the bytes. A threshold right after the convolution is looked up straight from the fields
(`tfxbar.export.kernels.FieldCodes`). The work runs in blocks of patch rows held in
per-thread buffers that are reused from batch to batch.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from tfxbar.export.kernels import FieldCodes, im2col, patch_view

__all__ = ["Crossbar", "Tile", "exact_gemm", "release_scratch", "static_bounds", "weight_matrix"]

_EXACT_FLOAT64 = 2 ** 53
_EXACT_FLOAT32 = 2 ** 24
_MIN_PACKED_PATCHES = 4096   # below this (e.g. dense layers) the packing costs more than it saves
_BLOCK_ROWS = 3072           # patch rows per packed GEMM block (fewer, longer numpy calls hold the GIL less)


def _exact_dtype(bound: int) -> np.dtype:
    """Cheapest GEMM dtype in which every partial sum of magnitude ≤ `bound` is exact:
    integers below 2^24 (2^53) are exact in float32 (float64) whatever the summation order."""
    if bound < _EXACT_FLOAT32:
        return np.dtype(np.float32)
    return np.dtype(np.float64 if bound < _EXACT_FLOAT64 else np.int64)


def exact_gemm(x: np.ndarray, w: np.ndarray, exact_float: bool) -> np.ndarray:
    """Exact integer product; float64 BLAS when every partial sum fits in 53 bits."""
    if exact_float:
        return np.rint(x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    return x.astype(np.int64) @ w.astype(np.int64)


def weight_matrix(attrs: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str = "") -> np.ndarray:
    """The integer weights (K, N) a crossbar op's tiles encode: Σ polarity · Σ slice cells ·
    2^(slice_bits·s), shifted by offset_shift, minus offset_num (docs/format.md)."""
    weights = np.zeros((attrs["rows"], attrs["cols"]), np.int64)
    for t in range(len(attrs["tiles"])):
        cells = arrays[f"{prefix}tile{t}.cells"]
        block = sum(sign * sum(cells[p, s].astype(np.int64) << (attrs["slice_bits"] * s)
                               for s in range(attrs["slices"]))
                    for p, sign in enumerate(attrs["polarities"]))
        weights[np.ix_(arrays[f"{prefix}tile{t}.rows"], arrays[f"{prefix}tile{t}.cols"])] += block
    return (weights << attrs["offset_shift"]) - arrays[f"{prefix}offset_num"][None, :]


def static_bounds(weights: np.ndarray, input_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the extremes (lo, hi) of X = Σ W·x over all inputs x in [0, input_max]^K."""
    return np.minimum(weights, 0).sum(axis=0) * input_max, np.maximum(weights, 0).sum(axis=0) * input_max


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """A contiguous index range as a slice (views instead of gathers), else the index itself."""
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return slice(int(index[0]), int(index[0]) + len(index))
    return index


class Tile:
    """One tile prepared for hardware mode: its cells as one stacked matrix and static bounds."""

    def __init__(self, t: int, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        self.cells = arrays[f"tile{t}.cells"]
        self.rows, self.cols = arrays[f"tile{t}.rows"], arrays[f"tile{t}.cols"]
        self.adc_shift, self.ref_shift = arrays[f"tile{t}.adc_shift"], arrays.get(f"tile{t}.ref_shift")
        p, s, r, c = self.cells.shape
        d, cycles, top = attrs["dac_bits"], attrs["dac_cycles"], (1 << attrs["adc_bits"]) - 1
        # Largest bit-plane value per DAC cycle (the top cycle may hold fewer bits).
        self.plane_max = np.array([min((1 << d) - 1, attrs["input_max"] >> (d * j)) for j in range(cycles)])
        colsum = self.cells.astype(np.int64).sum(axis=2)                     # (P, L, c)
        peak = int(self.plane_max.max()) * int(colsum.max(initial=0))
        self.dtype = _exact_dtype(peak)
        # Polarities × slices side by side: one GEMM per tile computes every column's partial sum.
        self.stacked = self.cells.transpose(2, 0, 1, 3).reshape(r, p * s * c).astype(self.dtype)
        # The ADC is the identity when no step is coarser than 1 and no partial sum can reach its top.
        self.identity = not self.adc_shift.any() and peak <= top
        ref_peak = int(self.plane_max.max()) * r
        self.ref_identity = self.ref_shift is None or (not self.ref_shift.any() and ref_peak <= top)
        # Static bound of every ADC output per (cycle, polarity, slice, column), for overflow proofs.
        partial = self.plane_max[:, None, None, None].astype(np.float64) * colsum[None]
        shift = 2.0 ** self.adc_shift.astype(np.float64)
        self.term_max = (partial if self.identity else np.minimum(top * shift, partial + shift / 2))
        if self.ref_shift is not None:
            ref_step = 2.0 ** float(self.ref_shift[0])
            self.ref_max = self.plane_max * float(r) if self.ref_identity else \
                np.minimum(top * ref_step, self.plane_max * float(r) + ref_step / 2)
        self.conversions = cycles * (p * s * c + (self.ref_shift is not None))
        self.row_index, self.col_index = _as_slice(self.rows), _as_slice(self.cols)
        # Float ADC: floor(partial · 2^−shift + 0.5) is exact in float32 below 2^22 (the + 0.5 and
        # the fraction bits fit in the 24-bit significand), in float64 below 2^51.
        self.adc_dtype = np.dtype(np.float32 if peak < 2 ** 22 else
                                  np.float64 if peak < 2 ** 51 else np.int64)
        self.inv_step = (2.0 ** -self.adc_shift.astype(np.float64)).reshape(-1)   # (P·S·c,)
        # Weight of ADC code (cycle j, polarity, slice, column) in the accumulator, for the
        # overflow-free summation: sign · 2^(shift + slice_bits·s + dac_bits·j).
        signs = np.asarray(attrs["polarities"], np.float64)[:, None, None]
        exps = self.adc_shift.astype(np.float64) + attrs["slice_bits"] * np.arange(s)[None, :, None]
        self.coef = np.stack([(signs * 2.0 ** (exps + d * j)).reshape(p * s, c) for j in range(cycles)])
        # Weights pre-scaled by 2^−shift: the GEMM yields partial / 2^shift directly, exactly (a
        # power-of-two scaling; every partial sum stays a multiple of 2^−shift below 2^22 of them).
        self.scaled = None if self.identity or self.adc_dtype.kind != "f" else \
            (self.stacked.astype(np.float64) * self.inv_step[None, :]).astype(self.adc_dtype)
        # Largest |running sum| of this tile's own additions (ADC outputs times their weights), with
        # and without a device (then only the ADC bounds a term): float32 sums are exact below 2^24.
        weight = np.abs(self.coef) * 2.0 ** -self.adc_shift.astype(np.float64).reshape(1, p * s, c)
        terms = self.term_max.reshape(cycles, p * s, c) * weight
        self.sum_bound = float(terms.sum(axis=(0, 1)).max(initial=0))
        self.sum_bound_device = float((top * np.abs(self.coef)).sum(axis=(0, 1)).max(initial=0))


class Crossbar:
    """Prepared arrays of one crossbar op; `lanes`: most images per float64 word in ideal-mode
    convolutions (fewer when the outputs need more bits; 1 disables the packing)."""

    def __init__(self, op: dict[str, Any], arrays: dict[str, np.ndarray], lanes: int = 4) -> None:
        attrs = op["attrs"]
        self.name, self.attrs = op["name"], attrs
        self.tiles = [Tile(t, arrays, attrs) for t in range(len(attrs["tiles"]))]
        self.offset = arrays["offset_num"]
        self.shift = attrs["offset_shift"]
        self.weights = weight_matrix(attrs, arrays)
        # [lo_c, hi_c] bounds output c (and every partial sum of it) for inputs in [0, input_max].
        self.lo, self.hi = static_bounds(self.weights, attrs["input_max"])
        bound = int((self.hi - self.lo).max(initial=0))   # the largest Σ|w|·input_max
        # Ideal-mode GEMM: float32 when every partial sum is below 2^24, else float64, else int64;
        # activations arrive as exact float32 codes, so BLAS runs on them without conversions.
        self.dtype = _exact_dtype(bound)
        self.gemm_weights = self.weights.astype(self.dtype)
        self.float_weights = self.gemm_weights if self.dtype.kind == "f" else None
        # Lanes (module docstring): y − lo_c fits in S unsigned bits.
        self.lane_bits = max(1, bound.bit_length())
        self.lanes = self._fit_lanes(int(lanes)) if self.dtype.kind == "f" else 1
        self.lane_weights = self.weights.astype(np.float64) if self.lanes > 1 else None
        # A DepthwiseConv2D's block diagonal as (kh·kw, C, m): row (i, j, c) meets only the m
        # columns of channel c, so ideal mode sums kh·kw products per output, not kh·kw·C.
        self.depthwise = None
        if "groups" in attrs:
            c = attrs["groups"]
            blocks = self.gemm_weights.reshape(-1, c, c, attrs["cols"] // c)
            self.depthwise = np.ascontiguousarray(blocks[:, np.arange(c), np.arange(c), :])

    def _fit_lanes(self, most: int) -> int:
        """Most lanes F ≤ `most` for which every packed partial sum is an exact float64 integer:
        each lane's partial sums lie in [lo, hi], so |Σ_f 2^(S·f)·partial_f| ≤ m·Σ_f 2^(S·f) with
        m = max(|lo|, |hi|, input_max) (the packed inputs obey the same bound) must stay below 2^53."""
        m = max(int(-self.lo.min(initial=0)), int(self.hi.max(initial=0)), self.attrs["input_max"])
        s, lanes = self.lane_bits, 1
        # The biased words (every field in [0, 2^S)) stay below 2^(S·F) ≤ 2^53 as well.
        while (lanes < most and s * (lanes + 1) <= 53
               and m * sum(1 << (s * f) for f in range(lanes + 1)) < _EXACT_FLOAT64):
            lanes += 1
        return lanes

    def lead(self, x: np.ndarray) -> tuple[int, ...]:
        """Leading (per-patch) shape of the output for input `x`."""
        if self.attrs["layer_type"] == "Dense":
            return x.shape[:-1]
        (kh, kw), (sh, sw), (pt, pb, pl, pr) = self.attrs["kernel"], self.attrs["strides"], self.attrs["pads"]
        return len(x), (x.shape[1] + pt + pb - kh) // sh + 1, (x.shape[2] + pl + pr - kw) // sw + 1

    def patches(self, x: np.ndarray, dtype: Any = np.int64) -> tuple[np.ndarray, tuple[int, ...]]:
        """Patches, one per row (K columns), as `dtype` (integer codes by default), and the lead shape."""
        x = x.astype(dtype, copy=False)
        if self.attrs["layer_type"] == "Dense":
            return x, x.shape[:-1]
        p = im2col(x, self.attrs["kernel"], self.attrs["strides"], self.attrs["pads"])
        return p.reshape(-1, p.shape[-1]), p.shape[:-1]

    def packs(self, x: np.ndarray) -> bool:
        """Whether `ideal(x)` packs images into lanes (convolutions with enough patches)."""
        return (self.lanes > 1 and self.attrs["layer_type"] == "Conv2D"
                and int(np.prod(self.lead(x))) >= _MIN_PACKED_PATCHES)

    def ideal(self, x: np.ndarray, codes: FieldCodes | None = None) -> np.ndarray:
        """Exact X·W for every patch, (patches, N) in `self.dtype` (exact integers); with `codes`
        (only when `packs(x)`), the following threshold's codes instead (uint8/uint16)."""
        if self.packs(x):
            return self._packed(x, codes)
        if codes is not None:
            raise ValueError("threshold codes are fused only into packed convolutions")
        if self.depthwise is not None:
            window, c, m = self.depthwise.shape
            p = self.patches(x, self.dtype)[0].reshape(-1, window, c)
            return np.einsum("pwc,wcm->pcm", p, self.depthwise).reshape(-1, c * m)
        return self.patches(x, self.dtype)[0] @ self.gemm_weights

    def _packed(self, x: np.ndarray, codes: FieldCodes | None) -> np.ndarray:
        """`ideal` with `self.lanes` images per float64 (module docstring), in blocks of patch rows
        that stay in cache from im2col through the GEMM to the unpacking (and the threshold).
        Every step is exact: codes and lane sums are integers below 2^53, and the scalings are
        powers of two."""
        s, n, lanes = self.lane_bits, len(x), self.lanes
        if n % lanes:   # zero images fill the last lane; their rows are dropped below
            x = np.concatenate([x, np.zeros((lanes - n % lanes, *x.shape[1:]), x.dtype)])
        groups = x.reshape(lanes, len(x) // lanes, *x.shape[1:])
        view = patch_view(self._pack(groups), self.attrs["kernel"], self.attrs["strides"], (0, 0, 0, 0))
        b, ho, wo = view.shape[:3]
        k, cols = self.lane_weights.shape
        out = np.empty((lanes, b * ho * wo, cols), self.dtype if codes is None else codes.table.dtype)
        # Bias every lane by −lo to an unsigned S-bit field; cut the fields apart with shifts and
        # masks; a field plus its channel's base indexes the code table.
        bias = -self.lo.astype(np.float64) * sum(float(2 ** (s * f)) for f in range(lanes))
        offset, mask = (self.lo if codes is None else codes.base).astype(np.int64), (1 << s) - 1
        rows = max(1, _BLOCK_ROWS // wo)                                  # output rows per block
        per = max(1, _BLOCK_ROWS // (ho * wo)) if rows >= ho else 1      # whole images per block
        size = max(per * ho, rows) * wo
        scratch = _scratch("patches", size * k, np.float64)
        acc = _scratch("acc", size * cols, np.float64)
        biased, field = _scratch("biased", size * cols, np.int64), _scratch("field", size * cols, np.int64)
        start = 0
        for i in range(0, b, per):
            for r in range(0, ho, rows if per == 1 else ho):
                block = view[i:i + per, r:r + rows] if per == 1 else view[i:i + per]
                m = block.shape[0] * block.shape[1] * wo
                patches = scratch[:m * k]
                np.copyto(patches.reshape(block.shape), block)
                y, z, lane = acc[:m * cols].reshape(m, cols), biased[:m * cols].reshape(m, cols), \
                    field[:m * cols].reshape(m, cols)
                np.matmul(patches.reshape(m, k), self.lane_weights, out=y)
                np.add(y, bias, out=z, casting="unsafe")        # exact integers below 2^53
                for f in range(lanes):
                    v = z if f == 0 else np.right_shift(z, s * f, out=lane)
                    if f < lanes - 1:
                        v = np.bitwise_and(v, mask, out=lane)
                    if codes is None:
                        np.add(v, offset, out=out[f, start:start + m], casting="unsafe")
                    else:
                        np.add(v, offset, out=lane)
                        np.take(codes.table, lane, out=out[f, start:start + m], mode="clip")
                start += m
        rows_out = out.reshape(-1, cols)   # lane f = the f-th block of the batch; zero images last
        return rows_out[:len(rows_out) // len(x) * n]

    def _pack(self, groups: np.ndarray) -> np.ndarray:
        """The lane words Σ_f 2^(S·f)·groups[f] of a (lanes, B, H, W, C) batch, zero padded for
        the convolution, in a reused buffer; Horner's scheme keeps every step an exact integer."""
        (pt, pb, pl, pr), (lanes, b, h, w, c) = self.attrs["pads"], groups.shape
        shape = (b, h + pt + pb, w + pl + pr, c)
        words = _scratch("words", int(np.prod(shape)), np.float64)[:int(np.prod(shape))].reshape(shape)
        for border in (words[:, :pt], words[:, pt + h:], words[:, :, :pl], words[:, :, pl + w:]):
            border.fill(0)   # the buffer is shared by batches of other sizes
        inner = words[:, pt:pt + h, pl:pl + w]
        np.copyto(inner, groups[-1], casting="unsafe")
        for f in range(lanes - 2, -1, -1):
            inner *= float(2 ** self.lane_bits)
            inner += groups[f]
        return words


_local = threading.local()


def _scratch(key: str, size: int, dtype: Any) -> np.ndarray:
    """A flat per-thread buffer of at least `size` elements, kept until `release_scratch`:
    reusing it avoids the first-touch page faults of fresh multi-megabyte arrays every batch."""
    buffers = _local.__dict__.setdefault("buffers", {})
    buffer = buffers.get((key, np.dtype(dtype)))
    if buffer is None or buffer.size < size:
        buffer = buffers[(key, np.dtype(dtype))] = np.empty(size, dtype)
    return buffer


def release_scratch() -> None:
    """Free this thread's buffers (`Interpreter.run` calls it when a run ends)."""
    _local.__dict__.pop("buffers", None)
