"""Uniform symmetric k-bit weights, w = s·c with c ∈ {−(2^(k−1)−1) … 2^(k−1)−1}."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfxbar.quantizers.base import WeightQuantizer
from tfxbar.quantizers.ste import round_ste

__all__ = ["UniformWeights"]

_MSE_FRACTIONS = np.linspace(0.25, 1.0, 16, dtype=np.float32)


@keras.utils.register_keras_serializable(package="tfxbar")
class UniformWeights(WeightQuantizer):
    """Symmetric uniform k-bit weights with a per-channel scale (narrow range, no −2^(k−1)).

    The scale is a statistic of the weights (no gradient): ``"max"`` maps max|w| to the top
    code; ``"mse"`` picks, per channel, the clipping range among 16 fractions of max|w| that
    minimises the squared quantization error (useful at k ≤ 3, where max-scaling wastes levels).

    Cell views: ``differential`` (default; g⁺ = max(c, 0), g⁻ = max(−c, 0), each k−1 bits) or
    ``offset`` (c + n in one cell of 2^k − 1 levels, offset n). Bit-slicing a code across
    several cells is a mapping choice of the exporter, not of the quantizer.

    Arguments:
        bits: k, from 2 to 8.
        per_channel: one scale per output channel (default) or per tensor.
        cell_view: ``"differential"`` or ``"offset"``.
        scale_mode: ``"max"`` or ``"mse"``.
        channel_axis: output-channel axis of the kernel (set by the configs).

    Example:
        >>> UniformWeights(4).levels[-1]
        7
    """

    def __init__(self, bits: int = 4, per_channel: bool = True, cell_view: str | None = None,
                 scale_mode: str = "max", channel_axis: int = -1) -> None:
        super().__init__(per_channel, cell_view, channel_axis)
        if not 2 <= int(bits) <= 8:
            raise ValueError(f"UniformWeights bits must be in 2..8, got {bits}")
        if scale_mode not in ("max", "mse"):
            raise ValueError(f"scale_mode must be 'max' or 'mse', got {scale_mode!r}")
        self.num_bits = int(bits)
        self.scale_mode = scale_mode

    @property
    def n(self) -> int:
        """Largest code magnitude, 2^(k−1) − 1."""
        return 2 ** (self.num_bits - 1) - 1

    @property
    def levels(self) -> tuple[int, ...]:
        n = self.n
        return tuple(range(-n, n + 1)) if self.cell_view == "differential" else tuple(range(2 * n + 1))

    def _scale(self, w: tf.Tensor) -> tf.Tensor:
        # × float32(1/n), not / n: graph mode (Grappler) turns a division by a constant into
        # this product, and `integer_form` (eager) must get the very same scale.
        top = self._positive(self._max_abs(w)) * np.float32(1.0 / self.n)
        if self.scale_mode == "max":
            return top
        candidates = tf.reshape(_MSE_FRACTIONS, [-1] + [1] * w.shape.rank) * top[None]
        q = tf.clip_by_value(tf.round(w[None] / candidates), -self.n, self.n) * candidates
        err = tf.reduce_sum(tf.square(q - w[None]), [a + 1 for a in self._reduce_axes(w.shape.rank)],
                            keepdims=True)
        best = tf.one_hot(tf.argmin(err, axis=0), len(_MSE_FRACTIONS), axis=0, dtype=w.dtype)
        return tf.reduce_sum(best * candidates, axis=0)

    def parts(self, w: tf.Tensor, weights: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        scale = tf.stop_gradient(self._scale(w))
        codes = round_ste(tf.clip_by_value(w / scale, -self.n, self.n))
        if self.cell_view == "differential":
            return codes, scale, tf.zeros_like(scale)
        return codes + self.n, scale, tf.fill(tf.shape(scale), float(self.n))

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.num_bits, **super().get_config(), "scale_mode": self.scale_mode}
