"""Vectorised integer kernels of the interpreter: im2col, pooling, thresholds (numpy only)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["apply_thresholds", "im2col", "max_pool", "sum_pool"]


def _windows(x: np.ndarray, size: tuple[int, int], strides: tuple[int, int]) -> np.ndarray:
    """(B, Ho, Wo, C, kh, kw) strided view of windows of an NHWC array."""
    view = sliding_window_view(x, size, axis=(1, 2))
    return view[:, ::strides[0], ::strides[1]]


def im2col(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int]) -> np.ndarray:
    """Patches ``(B, Ho, Wo, kh·kw·C)`` of an NHWC array, rows ordered (kh, kw, C) like a
    Keras kernel reshaped to (kh·kw·C, filters); zero padding (code 0 is the real value 0)."""
    pt, pb, pl, pr = pads
    if any(pads):
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    win = _windows(x, tuple(kernel), tuple(strides))
    b, ho, wo, c = win.shape[:4]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(b, ho, wo, kernel[0] * kernel[1] * c)


def max_pool(x: np.ndarray, pool: list[int], strides: list[int], pads: list[int],
             mode: np.ndarray) -> np.ndarray:
    """Per-channel max (mode +1) or min (mode −1) over windows; padding never wins."""
    y = x * mode.astype(x.dtype)
    if any(pads):
        pt, pb, pl, pr = pads
        y = np.pad(y, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=np.iinfo(np.int64).min)
    return _windows(y, tuple(pool), tuple(strides)).max(axis=(4, 5)) * mode.astype(x.dtype)


def sum_pool(x: np.ndarray, pool: list[int] | None, strides: list[int] | None) -> np.ndarray:
    """Integer window sums (valid windows), or the global sum over H and W when `pool` is None."""
    if pool is None:
        return x.sum(axis=(1, 2))
    return _windows(x, tuple(pool), tuple(strides)).sum(axis=(4, 5))


def apply_thresholds(x: np.ndarray, thresholds: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Codes: per channel (last axis), how many thresholds `x` passes.

    Direction +1: #{k : x ≥ T_k}; direction −1: #{k : x ≤ T_k}.
    """
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty(flat.shape, np.int64)
    for c in range(flat.shape[1]):
        if direction[c] > 0:
            out[:, c] = np.searchsorted(thresholds[c], flat[:, c], side="right")
        else:
            out[:, c] = np.searchsorted(-thresholds[c], -flat[:, c], side="right")
    return out.reshape(x.shape)
