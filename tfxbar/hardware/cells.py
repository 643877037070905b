"""Cell codes from a kernel's current integer form, in TensorFlow (ADC-aware training).

The same mapping as the converter's `map_cells` pass (docs/format.md §4.1), recomputed every
step so the hardware forward pass follows the weights as they train; the program only fixes
the mapping (differential or offset), the slices and the tile grid. With unchanged weights the
cells equal the program's tiles exactly (tests/test_hardware_exact.py pins it).

- differential: W = 2^f·c − B (f = 0), cells g⁺ = max(W, 0), g⁻ = max(−W, 0), no digital offset;
- offset: one cell u = c − min(levels), digital offset B' = B − 2^f·min(levels) against Σx;
- every cell split into `slice_bits`-bit slices, least significant first.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfxbar.hardware.tiles import TileLayout

__all__ = ["group_cells", "weight_cells"]


def weight_cells(layout: TileLayout, codes: tf.Tensor, offset: tf.Tensor,
                 low: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Cells (K, P, L, N) and the digital offset B (N,) of integer weight codes.

    Arguments:
        layout: the crossbar's layout (mapping, offset shift, slices).
        codes: the integer codes (K, N) as floats (no gradient is taken through them).
        offset: the weight offset per column (N,), a fixed-point number with `offset_shift`
            fraction bits.
        low: the smallest code level of the quantizer (the offset mapping's zero cell).

    Returns:
        ``(cells, offset_num)``: float32 cell codes and the float64 offset B.
    """
    codes = tf.stop_gradient(tf.cast(codes, tf.float32))
    scale = float(2 ** layout.offset_shift)
    b = tf.round(tf.cast(tf.stop_gradient(offset), tf.float64) * scale)
    if layout.mapping == "differential":
        w = codes * scale - tf.cast(b, tf.float32)[None, :]
        cells = tf.stack([tf.maximum(w, 0.0), tf.maximum(-w, 0.0)], axis=1)      # (K, 2, N)
        b = tf.zeros_like(b)
    else:
        cells = (codes - float(low))[:, None, :]                                  # (K, 1, N)
        b = b - float(low) * scale
    base = float(2 ** layout.slice_bits)
    sliced = [tf.math.floormod(tf.floor(cells / base ** s), base) for s in range(layout.slices)]
    return tf.stack(sliced, axis=2), b


def group_cells(layout: TileLayout, cells: tf.Tensor, dtype: tf.DType) -> list[tf.Tensor]:
    """Per row group, the (r, P·L·N) matrix of `cells` (K, P, L, N), zero outside its tiles."""
    out = []
    for group in layout.groups:
        rows = tf.gather(cells, group.rows) if not group.contiguous else \
            cells[int(group.rows[0]):int(group.rows[0]) + len(group.rows)]
        if not group.present.all():
            rows = rows * tf.constant(group.present.astype(np.float32))
        out.append(tf.cast(tf.reshape(rows, [len(group.rows), -1]), dtype))
    return out
