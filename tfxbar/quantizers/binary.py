"""Binary weights, w ∈ {−α, +α}."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

from tfxbar.quantizers.base import WeightQuantizer
from tfxbar.quantizers.ste import sign_ste

__all__ = ["BinaryWeights"]


@keras.utils.register_keras_serializable(package="tfxbar")
class BinaryWeights(WeightQuantizer):
    """Binary weights w = α·sign(w) with α = mean|w| per output channel (XNOR-Net scaling).

    The gradient is BinaryConnect's straight-through estimator, cancelled where |w| > clip_value;
    α is a statistic of the weights and passes no gradient.

    Cell views: ``differential`` (default; codes ±1 on a pair of binary cells, P3's
    "binary ReRAM") or ``offset`` (codes {0, 1} in one binary cell, offset ½, scale 2α).

    Arguments:
        per_channel: α per output channel (default) or one α per tensor.
        cell_view: ``"differential"`` or ``"offset"``.
        clip_value: |w| beyond which the straight-through gradient is zero.
        channel_axis: output-channel axis of the kernel (set by the configs).

    References:
        Courbariaux et al., BinaryConnect, NeurIPS 2015; Rastegari et al., XNOR-Net, ECCV 2016.

    Example:
        >>> q = BinaryWeights()
        >>> form = q.integer_form(np.float32([[0.5, -0.2], [-0.1, 0.4]]))
        >>> form.codes.tolist()
        [[1, -1], [-1, 1]]
    """

    def __init__(self, per_channel: bool = True, cell_view: str | None = None,
                 clip_value: float = 1.0, channel_axis: int = -1) -> None:
        super().__init__(per_channel, cell_view, channel_axis)
        self.clip_value = float(clip_value)

    @property
    def levels(self) -> tuple[int, ...]:
        return (-1, 1) if self.cell_view == "differential" else (0, 1)

    def parts(self, w: tf.Tensor, weights: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        alpha = tf.stop_gradient(self._mean_abs(w))
        sign = sign_ste(w, self.clip_value)
        if self.cell_view == "differential":
            return sign, alpha, tf.zeros_like(alpha)
        # {−1, +1} → {0, 1}; halving and doubling are exact in floating point.
        return (sign + 1.0) * 0.5, 2.0 * alpha, tf.fill(tf.shape(alpha), 0.5)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "clip_value": self.clip_value}
