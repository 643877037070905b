"""`A2QWeights`: symmetric k-bit weights whose per-channel L1 norm fits an accumulator (A2Q-style).

A2Q (Colbert et al., ICCV 2023) guarantees that a P-bit signed accumulator never overflows on
N-bit inputs when every output channel's integer weights q satisfy
‖q‖₁ ≤ (2^(P−1) − 1)·2^(σ − N) (σ = 1 for signed inputs, 0 for unsigned). This quantizer
enforces that bound *by construction* in the forward pass, so a model trains to fit:

- per channel, codes are ``round(w / s)`` with the max-based scale s of `UniformWeights`;
- in a channel where that would exceed the bound T, the scale grows to s' = max(s, ‖w‖₁ / T)
  and the codes are rounded toward zero, so ‖q‖₁ ≤ ‖w‖₁ / s' ≤ T exactly.

Gradients pass straight through the rounding, as in `UniformWeights`; the loss then sees the
coarser channels and redistributes their weight mass. (A2Q proper reparametrizes w by weight
normalization with a learned, clipped norm; this is the same guarantee on top of tfxbar's
max-scaled uniform weights, without new trainable variables.)
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf
import tf_keras as keras

from tfxbar.quantizers import UniformWeights
from tfxbar.quantizers.ste import round_ste

__all__ = ["A2QWeights"]


def _trunc_ste(x: tf.Tensor) -> tf.Tensor:
    """Round toward zero with a straight-through gradient."""
    return x + tf.stop_gradient(tf.sign(x) * tf.floor(tf.abs(x)) - x)


@keras.utils.register_keras_serializable(package="tfxbar")
class A2QWeights(UniformWeights):
    """`UniformWeights` whose integer codes satisfy A2Q's per-channel L1 bound.

    Arguments:
        bits: weight bits k (2..8); codes in [−(2^(k−1) − 1), 2^(k−1) − 1].
        accumulator_bits: P, the signed accumulator width to fit.
        input_bits: N, the bits of the layer's input codes.
        input_signed: whether the inputs are signed (σ = 1); tfxbar's ClippedRound inputs are not.
        cell_view, scale_mode, channel_axis: as `UniformWeights` (always per channel).

    Raises:
        ValueError: the bound is below 1 (no non-zero weight fits).
    """

    def __init__(self, bits: int = 4, accumulator_bits: int = 16, input_bits: int = 8,
                 input_signed: bool = False, cell_view: str | None = None, scale_mode: str = "max",
                 channel_axis: int = -1, per_channel: bool = True) -> None:
        super().__init__(bits, True, cell_view, scale_mode, channel_axis)
        from tfxbar.check.planner import a2q_l1_bound

        self.accumulator_bits, self.input_bits = int(accumulator_bits), int(input_bits)
        self.input_signed = bool(input_signed)
        self.l1_limit = math.floor(a2q_l1_bound(self.input_bits, self.accumulator_bits, self.input_signed))
        if self.l1_limit < 1:
            raise ValueError(f"A2Q bound for {self.input_bits}-bit inputs and a {self.accumulator_bits}-bit "
                             "accumulator is below 1: no non-zero weight fits")

    def parts(self, w: tf.Tensor, weights: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        axes = self._reduce_axes(w.shape.rank)
        scale = tf.stop_gradient(self._scale(w))
        rounded = tf.round(tf.clip_by_value(w / scale, -self.n, self.n))
        over = tf.reduce_sum(tf.abs(rounded), axes, keepdims=True) > self.l1_limit
        wider = tf.maximum(scale, tf.reduce_sum(tf.abs(w), axes, keepdims=True) / self.l1_limit)
        scale = tf.stop_gradient(tf.where(over, wider, scale))
        v = tf.clip_by_value(w / scale, -self.n, self.n)
        codes = tf.where(over, _trunc_ste(v), round_ste(v))
        if self.cell_view == "differential":
            return codes, scale, tf.zeros_like(scale)
        return codes + self.n, scale, tf.fill(tf.shape(scale), float(self.n))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "accumulator_bits": self.accumulator_bits,
                "input_bits": self.input_bits, "input_signed": self.input_signed}
