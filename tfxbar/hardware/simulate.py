"""docs/format.md §4.1 hardware semantics of one crossbar in TensorFlow, bit-exact (docs/hardware_mode.md).

Integers travel as float32 (float64 when a bound needs it) wherever every value is provably an
exact integer there, as in the numpy interpreter: bit-planes and patches are codes below 2^24;
a partial sum below 2^22 survives the ADC's ``floor(partial · 2^−shift + 0.5)`` exactly in
float32 (a power-of-two scaling plus a half that fits the significand). When the layout proves
that no accumulator addition can overflow (`TileLayout.cannot_overflow`), the additions are
summed at once in float (exact below 2^24 / 2^53); otherwise they run one by one in int64, in
the file's order, saturating or wrapping after every addition and counting overflows.

Two exact shortcuts cut the arithmetic (program cells only, not device conductances):

- **Lane packing.** A tile column's partial sum of one polarity / slice lies in [0, bound]
  (`TileLayout.partial_bound`), so b = bit_length(bound) bits hold it. F = ⌊mantissa / b⌋ of
  the P·L cell matrices of a column ride in one float as c₀ + 2^b·c₁ + …; the GEMM is linear
  and every sum is a non-negative integer below 2^(F·b), so it returns p₀ + 2^b·p₁ + … exactly,
  and floors by powers of two cut the partial sums apart. F times fewer multiply-adds (a
  differential 4-bit layer on 128-row tiles: b = 10, F = 2 in float32).
- **Linear crossbars.** When every ADC step is 1 and no partial sum can pass the ADC's top
  (checked on the current cells while tracing cannot know them), the ADC is the identity and
  the shift-add of every DAC cycle, polarity and slice is the product with the signed weight
  matrix: one GEMM on the codes, no bit-planes, no ADC.

With the native kernel (`tfxbar.hardware.native`) the program-cell, overflow-free case instead
runs `crossbar_kernel.cc` on the input codes (`CrossbarSimulation.from_codes`; given the
layer's input step, the kernel forms them from the real inputs): the same integers, fused per
patch, without the GEMM outputs' round trip through memory.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType

import numpy as np
import tensorflow as tf

from tfxbar.hardware.native import kernel_method
from tfxbar.hardware.products import SHIFTED_ROWS, group_product, pad, shifted_conv
from tfxbar.hardware.tiles import TileLayout

__all__ = ["Accumulator", "CrossbarSimulation"]

_EXACT_ADC_FLOAT32 = 2 ** 22
_EXACT_FLOAT32 = 2 ** 24
_MANTISSA = {tf.float32: 24, tf.float64: 53}   # integers below 2^m are exact
_MANTISSA_LIMIT = {dtype: 2 ** bits for dtype, bits in _MANTISSA.items()}


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


class CrossbarSimulation:
    """The hardware accumulator of one crossbar op for given cells.

    Arguments:
        layout: the op's `TileLayout`.
        accumulator: the digital accumulator.
        device: True when the cells are device conductances (real numbers): partial sums are
            then real, the ADC also clamps at 0, and the ADC runs in float32 (rounding at the
            ADC's half-step boundaries may differ from the interpreter's float64 in the last bit).
        native: the native kernel's op module (`tfxbar.hardware.native.load`) or None. Used
            (`uses_native`) for program cells when no accumulator addition can overflow and
            every partial sum fits int32; otherwise the TF formulation runs.

    Example:
        >>> sim = CrossbarSimulation(layout, Accumulator(32, "saturate"))
        >>> acc, clips, overflows = sim(planes_patches, [tf.constant(layout.program_cells(g))
        ...                                                for g in layout.groups])
    """

    def __init__(self, layout: TileLayout, accumulator: Accumulator, device: bool = False,
                 native: ModuleType | None = None) -> None:
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
        # Lane packing (module docstring): device conductances are real numbers, never packed.
        matrices = len(layout.polarities) * layout.slices
        self.lane_bits = max(1, bound.bit_length())
        self.lanes = 1 if device else max(1, min(matrices, _MANTISSA[self.dtype] // self.lane_bits))
        # Linear crossbar: unit ADC steps and no reference column; whether no partial sum can
        # reach the ADC's top depends on the cells (`linear_cells`), unless no cells can.
        self.linear = (not device and self.free and all(not g.shift.any() and g.ref_shift is None
                                                         for g in layout.groups))
        self.always_linear = self.linear and bound <= layout.top
        # An always-linear crossbar is one GEMM on the codes: XLA does that well already.
        self.native = native if (native is not None and not device and self.free and not self.always_linear
                                 and bound < 2 ** 31 and layout.dac_bits <= 8) else None
        if self.native is not None:
            groups = layout.groups
            self._tables = dict(
                rows=np.concatenate([g.rows for g in groups]).astype(np.int32),
                group_sizes=np.array([len(g.rows) for g in groups], np.int32),
                shift=np.stack([g.shift.reshape(-1) for g in groups]).astype(np.int32),
                coef=np.stack([c.reshape(layout.cycles, -1) for c in self.coef]).astype(np.int64),
                ref_shift=np.array([-1 if g.ref_shift is None else g.ref_shift for g in groups], np.int32))
            conv = layout.layer_type == "Conv2D"
            self._attrs = dict(conv=conv, dac_bits=layout.dac_bits, cycles=layout.cycles, top=layout.top,
                               cols=layout.cols, method=kernel_method())
            if conv:
                self._attrs.update(kernel=list(layout.attrs["kernel"]), strides=list(layout.attrs["strides"]),
                                   pads=list(layout.attrs["pads"]))

    @property
    def uses_native(self) -> bool:
        """Whether `from_codes` runs the native kernel (else the bit-planes go to `__call__`)."""
        return self.native is not None

    def from_codes(self, codes: tf.Tensor, cells: list[tf.Tensor], offset_num: tf.Tensor | None = None,
                   scale: tf.Tensor | None = None,
                   step: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`__call__`'s result from the layer's unpadded input codes, by the native kernel.

        Arguments:
            codes: the integer input codes as float32, (B, H, W, C) or (B, K); with `step`, the
                layer's real inputs.
            cells: per row group, its (r, P·L·N) program cell matrix in `cell_dtype()`.
            offset_num: as in `__call__`.
            scale: (N,) float64 real value of one unit of X: then the first result is
                ``float32(X · scale)``, computed in the kernel by the same float64 operations.
            step: the layer's float32 input step: the codes are ``tf.round(codes / step)``,
                computed by the kernel as it reads them (no codes tensor through memory).

        Returns:
            ``(X (M, N) float64, or the real product float32, ADC clips, 0 overflows)``.
        """
        layout = self.layout
        stacked = tf.concat(cells, axis=0) if len(cells) > 1 else cells[0]
        b = tf.constant(layout.offset_num.astype(np.float64)) if offset_num is None else offset_num
        # Forward only: ADC-aware training differentiates the ideal product (`straight_through`).
        unit = tf.zeros([0], tf.float64) if scale is None else tf.stop_gradient(tf.cast(scale, tf.float64))
        codes = tf.stop_gradient(tf.cast(codes, tf.float32))
        op = self.native.tfxbar_crossbar
        divisor = {}
        if "step" in inspect.signature(op).parameters:
            divisor["step"] = tf.zeros([0]) if step is None else tf.reshape(tf.cast(step, tf.float32), [])
        elif step is not None:   # a build from before the op took the step (benchmarks/kernel_ab.py)
            codes = tf.round(codes / tf.cast(step, tf.float32))
        tables = {k: tf.constant(v) for k, v in self._tables.items()}
        out, clips = op(
            codes=codes, cells=tf.stop_gradient(stacked), **tables,
            offset_num=tf.stop_gradient(tf.cast(b, tf.float64)), scale=unit, **divisor,
            Tout=tf.float64 if scale is None else tf.float32, offset_shift=layout.offset_shift, **self._attrs)
        return out, clips, tf.constant(0, tf.int64)

    def cell_dtype(self) -> tf.DType:
        """The dtype the cell matrices must have."""
        return self.dtype

    def __call__(self, planes: tf.Tensor, cells: list[tf.Tensor],
                 offset_num: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The accumulator X for patch rows of every DAC cycle.

        Arguments:
            planes: bit-planes of the input, cycle-major on axis 0 (`products.dac_planes`, then
                `products.pad`): (cycles · B, K) for Dense, (cycles · B, H, W, C) zero padded
                for Conv2D.
            cells: per row group, its (r, P·L·N) cell matrix in `cell_dtype()`.
            offset_num: the digital offset B (N,) as float64 (default: the program's).

        Returns:
            ``(X (M, N), ADC clips, accumulator overflows)``: X as float64 exact integers when
            no addition can overflow, else int64; the counts as int64 scalars.
        """
        if self.always_linear:
            return self._linear(planes, cells)
        if self.linear:
            return tf.cond(self._linear_cells(cells), lambda: self._linear(planes, cells),
                           lambda: self._modelled(planes, cells, offset_num))
        return self._modelled(planes, cells, offset_num)

    def _linear_cells(self, cells: list[tf.Tensor]) -> tf.Tensor:
        """Whether no partial sum of these cells can pass the ADC's top (then the ADC is the identity)."""
        most = tf.reduce_max(tf.stack([tf.reduce_max(tf.reduce_sum(c, axis=0)) for c in cells]))
        return most * float(self.layout.plane_max.max(initial=0)) <= float(self.layout.top)

    def _linear(self, planes: tf.Tensor, cells: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """X = codes · W with W = Σ sign · 2^(slice_bits·l) · cells: what unit-step ADCs that never
        clip add up to, exactly (every |running sum| is within the ADC-output bound of `bounds`)."""
        layout = self.layout
        cycles = layout.cycles
        stacked = tf.reshape(tf.cast(planes, self.sum_dtype), [cycles, -1, *planes.shape[1:]])
        codes = stacked[0]
        for j in range(1, cycles):   # the codes again, from their bit-planes
            codes += stacked[j] * float(2 ** (layout.dac_bits * j))
        return self._linear_product(codes, cells)

    def linear_from_codes(self, codes: tf.Tensor,
                          cells: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`__call__` of an always-linear crossbar (`always_linear`) from the layer's unpadded
        input codes, without bit-planes: the DAC cycles' planes weighted by 2^(d·j) add up to
        the code modulo 2^(d·cycles), which is what the product sees."""
        layout = self.layout
        total = float(2 ** (layout.dac_bits * layout.cycles))
        codes = tf.math.floormod(tf.cast(codes, self.sum_dtype), total)
        return self._linear_product(pad(codes, layout), cells)

    def _linear_product(self, codes: tf.Tensor,
                        cells: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`_linear` on the (padded) codes the planes encode."""
        layout = self.layout
        k, n = len(layout.polarities) * layout.slices, layout.cols
        weights = np.concatenate([np.full(layout.slices, float(p)) for p in layout.polarities]) * \
            np.tile(2.0 ** (layout.slice_bits * np.arange(layout.slices)), len(layout.polarities))
        matrix = tf.zeros([layout.rows, n], self.sum_dtype)
        for group, c in zip(layout.groups, cells, strict=True):
            signed = tf.einsum("rkn,k->rn", tf.reshape(tf.cast(c, self.sum_dtype), [-1, k, n]),
                               tf.constant(weights, self.sum_dtype))
            matrix = tf.tensor_scatter_nd_add(matrix, tf.constant(group.rows[:, None]), signed)
        if layout.layer_type == "Conv2D":
            (kh, kw), strides = layout.attrs["kernel"], layout.attrs["strides"]
            kernel = tf.reshape(matrix, [kh, kw, -1, n])
            if layout.rows <= SHIFTED_ROWS and None not in codes.shape[1:]:
                acc = shifted_conv(codes, kernel, strides)
            else:
                acc = tf.nn.conv2d(codes, kernel, [1, *strides, 1], "VALID")
            acc = tf.reshape(acc, [-1, n])
        else:
            acc = tf.matmul(codes, matrix)
        # No reference column: nothing is subtracted (differential mapping, B = 0).
        zero = tf.constant(0, tf.int64)
        return tf.cast(acc, tf.float64) * float(2 ** layout.offset_shift), zero, zero

    def _pack(self, cells: tf.Tensor) -> tf.Tensor:
        """(r, P·L·N) cells → (r, Q·N): F consecutive matrices per float, 2^b apart."""
        f, n = self.lanes, self.layout.cols
        k = len(self.layout.polarities) * self.layout.slices
        q = -(-k // f)
        c = tf.reshape(cells, [-1, k, n])
        if q * f > k:
            c = tf.pad(c, [[0, 0], [0, q * f - k], [0, 0]])
        weights = tf.constant((2.0 ** (self.lane_bits * np.arange(f)))[None, None, :, None], c.dtype)
        return tf.reshape(tf.reduce_sum(tf.reshape(c, [-1, q, f, n]) * weights, axis=2), [-1, q * n])

    def _unpack(self, packed: tf.Tensor) -> tf.Tensor:
        """(M, Q·N) packed partial sums → (M, P·L·N), exactly (floors by powers of two)."""
        f, n = self.lanes, self.layout.cols
        k = len(self.layout.polarities) * self.layout.slices
        y = tf.reshape(packed, [-1, -(-k // f), n])
        lanes = []
        for i in range(f - 1, 0, -1):
            unit = float(2 ** (self.lane_bits * i))
            high = tf.floor(y * (1.0 / unit))
            lanes.append(high)
            y = y - high * unit
        lanes.append(y)
        out = tf.reshape(tf.stack(lanes[::-1], axis=2), [tf.shape(packed)[0], -1])
        return out[:, :k * n]

    def _modelled(self, planes: tf.Tensor, cells: list[tf.Tensor],
                  offset_num: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Every DAC cycle, ADC conversion and accumulator addition (module docstring)."""
        layout = self.layout
        cycles, n = layout.cycles, layout.cols
        planes = tf.cast(planes, self.dtype)
        clips = tf.constant(0, tf.int64)
        overflows = tf.constant(0, tf.int64)
        top = float(layout.top)
        acc = total = tf.constant(0, self.sum_dtype if self.free else tf.int64)
        for g, group in enumerate(layout.groups):
            matrix = self._pack(cells[g]) if self.lanes > 1 else cells[g]
            reference = group.ref_shift is not None
            ones_exact = int(layout.plane_max.max(initial=0)) * len(group.rows) < _MANTISSA_LIMIT[self.dtype]
            if reference and ones_exact:   # Σx of the reference column: a column of ones, same GEMM
                matrix = tf.concat([matrix, tf.ones([len(group.rows), 1], self.dtype)], axis=1)
            partial = group_product(planes, layout, group, matrix)      # (cycles·M, Q·N [+ 1])
            m = tf.shape(partial)[0] // cycles
            if reference:
                if ones_exact:
                    sums, partial = tf.cast(partial[:, -1:], tf.float64), partial[:, :-1]
                else:
                    sums = group_product(tf.cast(planes, tf.float64), layout, group,
                                         tf.ones([len(group.rows), 1], tf.float64))
            if self.lanes > 1:
                partial = self._unpack(partial)                          # (cycles·M, P·L·N)
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
            if reference:
                shift = group.ref_shift
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
