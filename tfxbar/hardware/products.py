"""A crossbar's inputs and row-group products in TensorFlow: DAC bit-planes, the program's
padding, and each row group's GEMM with its cells formed without im2col (a slice of a Dense
input; for Conv2D, one small convolution per rectangle of kernel taps × channels).

Every function is exact on exact integers: the products are sums of the same integer terms.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfxbar.hardware.tiles import RowGroup, TileLayout

__all__ = ["SHIFTED_ROWS", "Window", "dac_planes", "group_product", "pad", "shifted_conv", "windows"]


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


# A Conv2D with at most this many patch rows (a pixel layer: 3×3 × 1–3 channels) is computed
# as a sum of shifted inputs (`shifted_conv`): the CPU convolution of so few input channels
# is slow, while the sum fuses into one XLA loop (the MNIST CNN's first layer: docs/benchmarks.md,
# "per crossbar").
SHIFTED_ROWS = 32


def shifted_conv(x: tf.Tensor, kernel: tf.Tensor, strides: tuple[int, int]) -> tf.Tensor:
    """VALID ``conv2d(x, kernel)`` as Σ over taps and input channels of a strided slice of `x`
    times a row of `kernel` (static spatial shape); exact on exact integers, as the sum of the
    same products."""
    (kh, kw, channels, _), (sh, sw) = kernel.shape, strides
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    acc = None
    for dy in range(kh):
        for dx in range(kw):
            window = x[:, dy:dy + sh * (oh - 1) + 1:sh, dx:dx + sw * (ow - 1) + 1:sw, :]
            for c in range(channels):
                term = window[..., c:c + 1] * kernel[dy, dx, c]
                acc = term if acc is None else acc + term
    return acc


@dataclasses.dataclass
class Window:
    """A rectangle of kernel taps × a channel range inside one row group: one small convolution.

    Attributes:
        dy, dx: its first kernel row and column; h, w: its size in taps.
        c0, c1: its channel range.
        positions: where its patch rows, in (dy, dx, c) order, sit in the group's rows.
    """

    dy: int
    dx: int
    h: int
    w: int
    c0: int
    c1: int
    positions: list[int]


def windows(rows: np.ndarray, kernel: tuple[int, int], channels: int) -> list[Window]:
    """A Conv2D row group cut into rectangles of taps with one channel range each: runs of one
    tap, merged along the kernel row, then across kernel rows (ascending patch rows throughout,
    so each window's rows keep the group's order)."""
    found: list[Window] = []
    start = 0
    for tap, c0, c1 in _segments(rows, channels):
        dy, dx = divmod(tap, kernel[1])
        span = list(range(start, start + c1 - c0))
        start += c1 - c0
        last = found[-1] if found else None
        if last and (last.h, last.dy, last.dx + last.w, last.c0, last.c1) == (1, dy, dx, c0, c1):
            last.w += 1
            last.positions += span
        else:
            found.append(Window(dy, dx, 1, 1, c0, c1, span))
    merged: list[Window] = []
    for win in found:
        last = merged[-1] if merged else None
        if last and (last.dx, last.w, last.c0, last.c1) == (win.dx, win.w, win.c0, win.c1) \
                and last.dy + last.h == win.dy:
            last.h += 1
            last.positions += win.positions
        else:
            merged.append(win)
    return merged


def group_product(x: tf.Tensor, layout: TileLayout, group: RowGroup, matrix: tf.Tensor) -> tf.Tensor:
    """The GEMM of one row group's patch rows with `matrix` (r, W) → (…, W), without im2col:
    Dense: a slice of the input; Conv2D: one VALID convolution of the padded NHWC input per
    `windows` rectangle, summed (the partial sums of disjoint row sets; exact for integer sums
    below the dtype's exact range, as every sum of non-negative cells is at most the whole)."""
    rows = group.rows
    if layout.layer_type == "Dense":
        x = x[:, int(rows[0]):int(rows[0]) + len(rows)] if group.contiguous else tf.gather(x, rows, axis=1)
        return tf.matmul(x, matrix)
    (kh, kw), (sh, sw) = layout.attrs["kernel"], layout.attrs["strides"]
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    out = None
    for win in windows(rows, (kh, kw), layout.rows // (kh * kw)):
        part = matrix if win.positions == list(range(len(rows))) else tf.gather(matrix, win.positions)
        kernel = tf.reshape(part, [win.h, win.w, win.c1 - win.c0, matrix.shape[-1]])
        bottom, right = win.dy + sh * (oh - 1) + win.h, win.dx + sw * (ow - 1) + win.w
        crop = x[:, win.dy:bottom, win.dx:right, win.c0:win.c1]
        y = tf.nn.conv2d(crop, kernel, [1, sh, sw, 1], "VALID")
        out = y if out is None else out + y
    return tf.reshape(out, [-1, matrix.shape[-1]])
