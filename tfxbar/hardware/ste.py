"""Straight-through estimator for the hardware forward pass (ADC-aware training)."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["straight_through"]


@tf.custom_gradient
def straight_through(ideal: tf.Tensor, hardware: tf.Tensor) -> tf.Tensor:
    """`hardware` in the forward pass, the gradient of `ideal` in the backward pass.

    ADCs and accumulators are piecewise constant (their gradient is zero almost everywhere), so
    training differentiates the exact integer GEMM the hardware approximates, as quantizers do
    for rounding (Bengio et al., arXiv:1308.3432). Unlike ``ideal + stop_gradient(hardware −
    ideal)``, the forward value is `hardware` bit for bit.

    Example:
        >>> y = straight_through(tf.matmul(x, w), hardware_matmul(x, w))
    """
    def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return upstream, tf.zeros_like(hardware)

    return tf.identity(hardware), grad
