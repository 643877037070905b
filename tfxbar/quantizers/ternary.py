"""Ternary weights, w ∈ {−α, 0, +α}."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

from tfxbar.quantizers.base import WeightQuantizer
from tfxbar.quantizers.ste import round_ste

__all__ = ["TernaryWeights"]


@keras.utils.register_keras_serializable(package="tfxbar")
class TernaryWeights(WeightQuantizer):
    """Ternary weights (TWN): threshold Δ = t·mean|w|, α = mean of |w| over |w| > Δ.

    Both Δ and α are per output channel by default and pass no gradient; the weights get
    an identity straight-through gradient, cancelled where |w| > clip_value.

    Cell views: ``differential`` (default; codes −1/0/+1 on a pair of binary cells) or
    ``offset`` (codes {0, 1, 2} in one three-level cell, offset 1).

    Arguments:
        threshold: t in Δ = t·mean|w| (0.7, as in TWN).
        per_channel: Δ and α per output channel (default) or per tensor.
        cell_view: ``"differential"`` or ``"offset"``.
        clip_value: |w| beyond which the straight-through gradient is zero.
        channel_axis: output-channel axis of the kernel (set by the configs).

    References:
        Li, Zhang, Liu, Ternary Weight Networks, arXiv:1605.04711, 2016.
    """

    def __init__(self, threshold: float = 0.7, per_channel: bool = True,
                 cell_view: str | None = None, clip_value: float = 1.0,
                 channel_axis: int = -1) -> None:
        super().__init__(per_channel, cell_view, channel_axis)
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.threshold = float(threshold)
        self.clip_value = float(clip_value)

    @property
    def levels(self) -> tuple[int, ...]:
        return (-1, 0, 1) if self.cell_view == "differential" else (0, 1, 2)

    def parts(self, w: tf.Tensor, weights: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        axes = self._reduce_axes(w.shape.rank)
        delta = self.threshold * self._mean_abs(w)
        mask = tf.cast(tf.abs(w) > delta, w.dtype)
        alpha = tf.reduce_sum(tf.abs(w) * mask, axes, keepdims=True) / tf.maximum(
            tf.reduce_sum(mask, axes, keepdims=True), 1.0)
        alpha = tf.stop_gradient(self._positive(alpha))
        # Codes are sign(w)·[|w| > Δ]; forward is exact, gradient is the clipped identity.
        hard = tf.stop_gradient(tf.sign(w) * mask)
        ste = w * tf.cast(tf.abs(w) <= self.clip_value, w.dtype)
        codes = round_ste(ste - tf.stop_gradient(ste) + hard)
        if self.cell_view == "differential":
            return codes, alpha, tf.zeros_like(alpha)
        return codes + 1.0, alpha, tf.ones_like(alpha)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold,
                "clip_value": self.clip_value}
