"""The layers between the crossbars at inference, on the native library's in-place ops.

Once the crossbar products were fast, TensorFlow's own CPU kernels around them cost the
hardware mode 15–18 % of its time (docs/benchmarks.md, eleventh run): its FusedBatchNorm goes
through Eigen's broadcasting evaluator, and each of a `ClippedRound` quantizer's five ops
(divide, minimum, maximum, round, multiply) writes a fresh tensor. `NativeLayers` runs both, at
inference only, as one pass each that writes into its input's buffer (``layer_kernels.cc``):
the same float32 operations in the same order, so every output is bit-identical to
TensorFlow's (tests/test_native_layers.py). Training, a symbolic ``training`` flag and any
BatchNormalization the op cannot mirror (an axis other than the last, renorm, virtual batches,
float16 …) take the layer's own path.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import tensorflow as tf
import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.introspect import quantized_outputs

__all__ = ["NativeLayers", "batch_norm_affine", "mirrored"]


def mirrored(layer: keras.layers.BatchNormalization) -> bool:
    """Whether `TfxbarChannelAffine` computes what built `layer` computes at inference: one
    normalized axis, the last; float32; no renorm or virtual batches."""
    axis = list(layer.axis) if layer.built else []
    rank = layer.input_spec.ndim if layer.input_spec is not None else None
    return (len(axis) == 1 and rank is not None and axis[0] == rank - 1 and not layer.renorm
            and layer.virtual_batch_size is None and layer.dtype == "float32"
            and layer.compute_dtype == "float32")


def batch_norm_affine(layer: keras.layers.BatchNormalization) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(mean, a, beta)`` with which (x − mean)·a + beta is `layer` at inference, bit for bit.

    The fused kernel (4-D inputs) computes (x − mean)·(rsqrt(var + ε)·γ) + β; the unfused
    `tf.nn.batch_normalization` x·inv + (β − mean·inv) with inv = rsqrt(var + ε)·γ, which is
    this form with mean 0. Read from the variables on every call, so updated statistics count.
    """
    variance = tf.convert_to_tensor(layer.moving_variance)
    mean = tf.convert_to_tensor(layer.moving_mean)
    a = tf.math.rsqrt(variance + layer.epsilon)
    if layer.scale:
        a = a * layer.gamma
    if layer.fused:
        beta = tf.convert_to_tensor(layer.beta) if layer.center else tf.zeros_like(mean)
        return mean, a, beta
    beta = layer.beta - mean * a if layer.center else -mean * a
    return tf.zeros_like(mean), a, beta


class NativeLayers:
    """Puts the in-place inference ops into `model`'s BatchNormalization layers (their `call`)
    and tfxbar output quantizers (`ClippedRound.inference_op`); `remove` restores both.

    Arguments:
        model: a tfxbar-quantized model.
        module: the loaded native library (`tfxbar.hardware.native.load`).
    """

    def __init__(self, model: keras.Model, module: ModuleType) -> None:
        self.module = module
        self.batch_norms = [layer for layer in _layers(model)
                            if isinstance(layer, keras.layers.BatchNormalization) and mirrored(layer)]
        self.quantizers = [found.quantizer for found in quantized_outputs(model)]
        self.installed = False

    def install(self) -> None:
        if self.installed:
            return
        for layer in self.batch_norms:
            layer.call = self._batch_norm_call(layer)
        for quantizer in self.quantizers:
            quantizer.inference_op = self.module.tfxbar_clipped_round
        self.installed = True

    def remove(self) -> None:
        if not self.installed:
            return
        for layer in self.batch_norms:
            del layer.call
        for quantizer in self.quantizers:
            quantizer.inference_op = None
        self.installed = False

    def _batch_norm_call(self, layer: keras.layers.BatchNormalization):  # noqa: ANN202
        own = type(layer).call
        affine = self.module.tfxbar_channel_affine

        def call(inputs: tf.Tensor, training: Any = None, mask: Any = None) -> tf.Tensor:
            # The layer's own resolution: None → the learning phase; a frozen layer never trains.
            resolved = layer._get_training_value(training)  # noqa: SLF001
            if resolved is False and inputs.dtype == tf.float32:
                return affine(inputs, *batch_norm_affine(layer))
            return own(layer, inputs, training=training, mask=mask)

        return call


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers, with a QuantizeWrapper's inner layer in its place."""
    return [layer.layer if isinstance(layer, tfmot_api.QuantizeWrapper) else layer
            for layer in model.layers]
