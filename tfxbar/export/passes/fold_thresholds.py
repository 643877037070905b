"""Fold bias, BN, activation and the output quantizer into per-channel integer thresholds.

After a crossbar, the real value entering a quantizer is ``g_c(X)`` for the integer accumulator
X of channel c and a monotone chain g_c (bias, BN, ReLU …). The quantizer's code is
``q(X) = clip(round_half_even(g_c(X) / step), 0, 2^bits − 1)``, monotone in X. For each level
k = 1 … 2^bits − 1 this pass finds, by an exact integer binary search over X's static range
[lo, hi], the threshold T_k with

- direction +1 (q non-decreasing): q(X) ≥ k ⇔ X ≥ T_k (T_k = hi + 1 when never reached);
- direction −1 (q non-increasing, e.g. BN with γ < 0): q(X) ≥ k ⇔ X ≤ T_k (T_k = lo − 1 if never).

The next layer's input code is then the number of thresholds passed (P2's coalesced clipped
rounding). g is evaluated in float64, so ties are broken exactly as round-half-to-even of the
real-valued model; the Keras float32 forward may differ at values within float32 rounding of
a boundary.
"""

from __future__ import annotations

import numpy as np

from tfxbar.export.elementwise import Elementwise
from tfxbar.export.ir import Graph

__all__ = ["fold_thresholds", "integer_thresholds"]


def _codes(chain: list[Elementwise], x: np.ndarray, step: float, top: int) -> np.ndarray:
    v = x.astype(np.float64)
    for stage in chain:
        v = stage.apply(v)
    return np.clip(np.round(v / step), 0, top)


def integer_thresholds(chain: list[Elementwise], lo: np.ndarray, hi: np.ndarray, step: float,
                       bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds ``(C, 2^bits − 1)`` int64 and directions ``(C,)`` int8 of a monotone chain.

    Arguments:
        chain: per-channel elementwise stages applied to the accumulator.
        lo, hi: int64 ``(C,)`` static bounds of the accumulator.
        step: the quantizer's step.
        bits: the quantizer's bits.

    Returns:
        ``(thresholds, direction)`` as described in the module docstring.
    """
    lo = np.asarray(lo, np.int64)
    hi = np.asarray(hi, np.int64)
    top = 2 ** bits - 1
    levels = np.arange(1, top + 1, dtype=np.int64)[None, :]
    at_lo = _codes(chain, lo[:, None], step, top)[:, 0]
    at_hi = _codes(chain, hi[:, None], step, top)[:, 0]
    direction = np.where(at_hi >= at_lo, 1, -1).astype(np.int8)
    sign = direction.astype(np.int64)[:, None]
    # Search in y = sign·X, where the code is non-decreasing; y ranges over [ylo, yhi].
    ylo = np.where(sign > 0, lo[:, None], -hi[:, None]) + 0 * levels
    yhi = np.where(sign > 0, hi[:, None], -lo[:, None]) + 1 + 0 * levels  # yhi: "never"
    left, right = ylo.copy(), yhi.copy()
    while np.any(left < right):
        mid = left + (right - left) // 2
        reached = _codes(chain, sign * mid, step, top) >= levels
        active = left < right
        right = np.where(active & reached, mid, right)
        left = np.where(active & ~reached, mid + 1, left)
    return sign * left, direction


def fold_thresholds(graph: Graph) -> Graph:
    """Fill every ``threshold`` op's ``thresholds`` and ``direction`` arrays."""
    for op in graph.ops:
        if op.kind == "threshold":
            meta = op.meta
            op.arrays["thresholds"], op.arrays["direction"] = integer_thresholds(
                meta["chain"], meta["lo"], meta["hi"], meta["step"], op.attrs["bits"])
    return graph
