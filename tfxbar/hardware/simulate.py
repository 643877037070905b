"""docs/format.md §4.1 hardware semantics of one crossbar in TensorFlow, bit-exact.

Integers travel as float32 (float64 when a bound needs it) wherever every value is provably an
exact integer there, as in the numpy interpreter: bit-planes and patches are codes below 2^24;
a partial sum below 2^22 survives the ADC's ``floor(partial · 2^−shift + 0.5)`` exactly in
float32 (a power-of-two scaling plus a half that fits the significand). When the layout proves
that no accumulator addition can overflow (`TileLayout.cannot_overflow`), the additions are
summed at once in float (exact below 2^24 / 2^53); otherwise they run one by one in int64, in
the file's order, saturating or wrapping after every addition and counting overflows.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfxbar.hardware.tiles import RowGroup, TileLayout

__all__ = ["Accumulator", "CrossbarSimulation", "dac_planes", "group_patches", "pad"]

_EXACT_ADC_FLOAT32 = 2 ** 22
_EXACT_FLOAT32 = 2 ** 24


@dataclasses.dataclass(frozen=True)
class Accumulator:
    """The digital accumulator: signed `bits` wide, ``"saturate"`` or ``"wrap"`` on overflow."""

    bits: int
    mode: str

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 64):
            raise ValueError(f"accumulator_bits must be an int in 2..64, got {self.bits!r}")
        if self.mode not in ("saturate", "wrap"):
            raise ValueError(f"accumulator_mode must be 'saturate' or 'wrap', got {self.mode!r}")

    def limit(self, value: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(value brought into range, how many entries were out of range) for int64 `value`."""
        lo, hi = -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        over = tf.logical_or(value > hi, value < lo)
        count = tf.reduce_sum(tf.cast(over, tf.int64))
        if self.mode == "saturate":
            return tf.clip_by_value(value, lo, hi), count
        if self.bits == 64:   # int64 itself wraps
            return value, count
        wrapped = tf.bitwise.bitwise_and(value - lo, tf.constant((1 << self.bits) - 1, tf.int64)) + lo
        return tf.where(over, wrapped, value), count


def dac_planes(codes: tf.Tensor, dac_bits: int, cycles: int) -> tf.Tensor:
    """Bit-planes ``(x >> d·j) & (2^d − 1)`` of exact float codes, stacked cycle-major on axis 0."""
    if cycles == 1:
        return codes
    base = float(2 ** dac_bits)
    planes = [tf.math.floormod(tf.floor(codes * (2.0 ** -(dac_bits * j))), base) for j in range(cycles)]
    return tf.concat(planes, axis=0)


def pad(x: tf.Tensor, layout: TileLayout) -> tf.Tensor:
    """A Conv2D crossbar's NHWC input with the program's zero padding (code 0 is the real 0)."""
    if layout.layer_type == "Dense":
        return x
    pt, pb, pl, pr = layout.attrs["pads"]
    return tf.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]]) if pt or pb or pl or pr else x


def _segments(rows: np.ndarray, channels: int) -> list[tuple[int, int, int]]:
    """A row group's patch rows as runs ``(tap, first channel, end channel)`` (rows are ordered
    (kh, kw, C), so row k is channel k % C of kernel tap k // C)."""
    runs: list[list[int]] = []
    for k in rows.tolist():
        tap, c = divmod(k, channels)
        if runs and runs[-1][0] == tap and runs[-1][2] == c:
            runs[-1][2] += 1
        else:
            runs.append([tap, c, c + 1])
    return [tuple(r) for r in runs]


def group_patches(x: tf.Tensor, layout: TileLayout, group: RowGroup) -> tf.Tensor:
    """Patch rows (…, r) of one row group: the group's own columns of im2col, cut from strided
    windows of the padded NHWC input (no full im2col: a group needs r/K of it); Dense: a slice."""
    rows = group.rows
    if layout.layer_type == "Dense":
        return x[:, int(rows[0]):int(rows[0]) + len(rows)] if group.contiguous else tf.gather(x, rows, axis=1)
    (kh, kw), (sh, sw) = layout.attrs["kernel"], layout.attrs["strides"]
    channels = layout.rows // (kh * kw)
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    parts = []
    for tap, c0, c1 in _segments(rows, channels):
        dy, dx = divmod(tap, kw)
        parts.append(x[:, dy:dy + sh * (oh - 1) + 1:sh, dx:dx + sw * (ow - 1) + 1:sw, c0:c1])
    out = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
    return tf.reshape(out, [-1, len(rows)])


class CrossbarSimulation:
    """The hardware accumulator of one crossbar op for given cells.

    Arguments:
        layout: the op's `TileLayout`.
        accumulator: the digital accumulator.
        device: True when the cells are device conductances (real numbers): partial sums are
            then real, the ADC also clamps at 0, and the ADC runs in float32 (rounding at the
            ADC's half-step boundaries may differ from the interpreter's float64 in the last bit).

    Example:
        >>> sim = CrossbarSimulation(layout, Accumulator(32, "saturate"))
        >>> acc, clips, overflows = sim(planes_patches, [tf.constant(layout.program_cells(g))
        ...                                                for g in layout.groups])
    """

    def __init__(self, layout: TileLayout, accumulator: Accumulator, device: bool = False) -> None:
        self.layout, self.accumulator, self.device = layout, accumulator, bool(device)
        bound = layout.partial_bound()
        self.dtype = tf.float32 if device or bound < _EXACT_ADC_FLOAT32 else tf.float64
        acc, ref = layout.bounds()
        self.free = layout.cannot_overflow(accumulator.bits) and accumulator.bits <= 53
        # Overflow-free sums are exact in float32 below 2^24, else in float64 (below 2^53).
        final = acc.max(initial=0) * 2.0 ** layout.offset_shift + \
            ref * float(np.abs(layout.offset_num).max(initial=0))
        self.sum_dtype = tf.float32 if max(acc.max(initial=0), ref, final) < _EXACT_FLOAT32 else tf.float64
        self.coef = [layout.coefficients(g) for g in layout.groups]
        self.inv_step = [2.0 ** -g.shift.reshape(-1) for g in layout.groups]

    def cell_dtype(self) -> tf.DType:
        """The dtype the cell matrices must have."""
        return self.dtype

    def __call__(self, planes: tf.Tensor, cells: list[tf.Tensor],
                 offset_num: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The accumulator X for patch rows of every DAC cycle.

        Arguments:
            planes: bit-planes of the input, cycle-major on axis 0 (`dac_planes` then `pad`):
                (cycles · B, K) for Dense, (cycles · B, H, W, C) zero padded for Conv2D.
            cells: per row group, its (r, P·L·N) cell matrix in `cell_dtype()`.
            offset_num: the digital offset B (N,) as float64 (default: the program's).

        Returns:
            ``(X (M, N), ADC clips, accumulator overflows)``: X as float64 exact integers when
            no addition can overflow, else int64; the counts as int64 scalars.
        """
        layout = self.layout
        cycles, n = layout.cycles, layout.cols
        planes = tf.cast(planes, self.dtype)
        clips = tf.constant(0, tf.int64)
        overflows = tf.constant(0, tf.int64)
        top = float(layout.top)
        acc = total = tf.constant(0, self.sum_dtype if self.free else tf.int64)
        for g, group in enumerate(layout.groups):
            whole = layout.layer_type == "Conv2D" and len(group.rows) == layout.rows and group.contiguous
            if whole and group.ref_shift is None:
                # One row block holds every patch row: a plain convolution, no patches at all.
                (kh, kw), strides = layout.attrs["kernel"], layout.attrs["strides"]
                kernel = tf.reshape(cells[g], [kh, kw, -1, cells[g].shape[-1]])
                partial = tf.reshape(tf.nn.conv2d(planes, kernel, [1, *strides, 1], "VALID"),
                                     [-1, cells[g].shape[-1]])
                m = tf.shape(partial)[0] // cycles
            else:
                x = group_patches(planes, layout, group)           # (cycles·M, r)
                m = tf.shape(x)[0] // cycles
                partial = tf.matmul(x, cells[g])                   # (cycles·M, P·L·N)
            code = tf.floor(partial * tf.constant(self.inv_step[g], self.dtype) + 0.5)
            clips += tf.reduce_sum(tf.cast(code > top, tf.int64))
            code = tf.minimum(code, top)
            if self.device:
                code = tf.maximum(code, 0.0)
            code = tf.reshape(code, [cycles, m, -1, n])
            if self.free:
                weights = tf.constant(self.coef[g][:, None].astype(np.float64), self.sum_dtype)
                acc += tf.reduce_sum(tf.cast(code, self.sum_dtype) * weights, axis=[0, 2])
            else:
                coef = tf.constant(self.coef[g])
                code = tf.cast(code, tf.int64)
                for j in range(cycles):
                    for k in range(coef.shape[1]):
                        acc, count = self.accumulator.limit(acc + code[j, :, k] * coef[j, k])
                        overflows += count
            if group.ref_shift is not None:
                shift = group.ref_shift
                sums = tf.reduce_sum(tf.cast(x, tf.float64), axis=1, keepdims=True)
                ref = tf.floor(sums * 2.0 ** -shift + 0.5)
                clips += tf.reduce_sum(tf.cast(ref > top, tf.int64))
                ref = tf.reshape(tf.minimum(ref, top) * 2.0 ** shift, [cycles, m, 1])
                for j in range(cycles):
                    term = ref[j] * 2.0 ** (layout.dac_bits * j)
                    if self.free:
                        total += tf.cast(term, self.sum_dtype)
                    else:
                        total, count = self.accumulator.limit(total + tf.cast(term, tf.int64))
                        overflows += count
        shift = 2 ** layout.offset_shift
        if self.free:
            b = tf.constant(layout.offset_num.astype(np.float64)) if offset_num is None else offset_num
            out = tf.cast(acc, tf.float64) * float(shift) - tf.cast(total, tf.float64) * b[None, :]
            return out, clips, overflows
        # B may exceed float64's exact range (up to 2^62): the program's int64 unless one is given.
        b = tf.constant(layout.offset_num) if offset_num is None else tf.cast(offset_num, tf.int64)
        out = acc * shift - total * b[None, :]
        out, count = self.accumulator.limit(out)
        return out, clips, overflows + count
