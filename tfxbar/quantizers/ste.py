"""Straight-through estimators whose forward pass is bit-exact.

The exporter reads each quantizer's integer form and must reproduce the fake-quantized
weights exactly, so the forward value of every helper here is the plain TensorFlow op
(``round``, ``sign``, identity); only the gradient is replaced.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["round_ste", "sign_ste", "scale_gradient"]


@tf.custom_gradient
def round_ste(x: tf.Tensor) -> tf.Tensor:
    """`tf.round` (half to even) forward, identity gradient."""

    def grad(dy: tf.Tensor) -> tf.Tensor:
        return dy

    return tf.round(x), grad


def sign_ste(x: tf.Tensor, clip_value: float = 1.0) -> tf.Tensor:
    """Sign with sign(0) = +1 forward; identity gradient where |x| <= clip_value (BinaryConnect)."""

    @tf.custom_gradient
    def _sign(v: tf.Tensor) -> tf.Tensor:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            return dy * tf.cast(tf.abs(v) <= clip_value, dy.dtype)

        return tf.where(v >= 0, tf.ones_like(v), -tf.ones_like(v)), grad

    return _sign(x)


def scale_gradient(x: tf.Tensor, factor: float) -> tf.Tensor:
    """Identity forward, gradient multiplied by `factor` (LSQ's step-size gradient scaling)."""

    @tf.custom_gradient
    def _scaled(v: tf.Tensor) -> tf.Tensor:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            return dy * factor

        return tf.identity(v), grad

    return _scaled(x)
