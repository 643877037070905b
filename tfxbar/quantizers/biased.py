"""Trained biased number representation (P2): w = s·(c − b), one non-negative cell per weight."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfxbar.quantizers.base import WeightQuantizer
from tfxbar.quantizers.ste import round_ste, scale_gradient

__all__ = ["BiasedWeights"]


@keras.utils.register_keras_serializable(package="tfxbar")
class BiasedWeights(WeightQuantizer):
    """Trained biased weights: integer cell code c ∈ {0 … 2^k − 1}, trained scale s and bias b.

    One cell per weight holds c; the bias b is applied once per column, digitally or through
    a reference column: Σᵢ s(cᵢ − b)xᵢ = s(Σᵢ cᵢxᵢ − b·Σᵢ xᵢ). s and b are trainable per output
    channel with LSQ-style straight-through gradients (s in log space); b is kept on a grid of 2^−f so the
    column correction b·Σx stays a fixed-point product in hardware.

    They are initialised from the layer's kernel when it is available (a pretrained float
    model): b = (2^k − 1)/2 and the s that minimises the squared error per channel.

    Arguments:
        bits: k, cell bits, from 1 to 4.
        offset_frac_bits: f, fractional bits of b (None: b unconstrained).
        per_channel: s and b per output channel (default) or per tensor.
        channel_axis: output-channel axis of the kernel (set by the configs).

    References:
        Wang and Lin, Trained Biased Number Representation for ReRAM-Based Neural Network
        Accelerators, ACM JETC 15(2), 2019 (P2). Esser et al., Learned Step Size
        Quantization, ICLR 2020 (step-size gradient).
    """

    cell_views = ("biased",)

    def __init__(self, bits: int = 2, offset_frac_bits: int | None = 8, per_channel: bool = True,
                 cell_view: str | None = None, channel_axis: int = -1) -> None:
        super().__init__(per_channel, cell_view, channel_axis)
        if not 1 <= int(bits) <= 4:
            raise ValueError(f"BiasedWeights bits must be in 1..4 (one cell per weight), got {bits}")
        self.num_bits = int(bits)
        self.offset_frac_bits = None if offset_frac_bits is None else int(offset_frac_bits)

    @property
    def top(self) -> int:
        """Largest cell code, 2^k − 1."""
        return 2 ** self.num_bits - 1

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(range(self.top + 1))

    def _initial_values(self, kernel: np.ndarray | None, shape: list[int]) -> tuple[np.ndarray, np.ndarray]:
        keep = self._keep_shape(shape)
        offset = np.full(keep, self.top / 2.0, np.float32)
        if kernel is None:
            fan = float(np.prod(shape[:-1])) if len(shape) > 1 else 1.0
            return np.full(keep, 4.0 * math.sqrt(1.0 / fan) / self.top, np.float32), offset
        axes = tuple(self._reduce_axes(len(shape)))
        top = np.maximum(np.abs(kernel).max(axis=axes, keepdims=True), 1e-8) / (self.top / 2.0)
        best, best_err = top, np.full(keep, np.inf, np.float32)
        for fraction in np.linspace(0.2, 1.0, 17):
            s = top * fraction
            q = s * (np.clip(np.round(kernel / s + offset), 0, self.top) - offset)
            err = ((q - kernel) ** 2).sum(axis=axes, keepdims=True)
            better = err < best_err
            best, best_err = np.where(better, s, best), np.where(better, err, best_err)
        return best.astype(np.float32), offset

    def build(self, tensor_shape: tf.TensorShape, name: str, layer: Any) -> dict[str, Any]:
        shape = [int(d) for d in tensor_shape]
        kernel = getattr(getattr(layer, "layer", None), name, None)
        try:
            kernel_value = None if kernel is None else np.asarray(kernel.numpy(), np.float32)
        except (AttributeError, NotImplementedError, ValueError):
            kernel_value = None  # symbolic or not yet created: load_model restores the values
        super().build(tensor_shape, name, layer)  # fixes the wrapper's weight order
        scale, offset = self._initial_values(kernel_value, shape)
        keep = self._keep_shape(shape)
        return {
            # Log-parametrised so Adam's O(lr) updates are relative and never cross zero.
            "log_scale": layer.add_weight(f"{name}_log_scale", shape=keep, trainable=True,
                                          initializer=keras.initializers.Constant(np.log(scale))),
            "offset": layer.add_weight(f"{name}_offset", shape=keep, trainable=True,
                                       initializer=keras.initializers.Constant(offset)),
        }

    def parts(self, w: tf.Tensor, weights: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        if "offset" not in weights or "log_scale" not in weights:
            raise ValueError("BiasedWeights needs its trained variables: call integer_form(kernel, weights) "
                             "with the dict build() returned, or use tfxbar.quantized_kernels(model)[i]"
                             ".integer_form()")
        per_param = float(np.prod([d for d in w.shape])) / float(np.prod(weights["offset"].shape))
        scale = self._positive(tf.exp(tf.convert_to_tensor(weights["log_scale"])))
        offset = scale_gradient(tf.convert_to_tensor(weights["offset"]),
                                1.0 / math.sqrt(per_param * self.top))
        if self.offset_frac_bits is not None:
            unit = 2.0 ** self.offset_frac_bits  # power of two: the division below is exact
            offset = round_ste(offset * unit) / unit
        codes = round_ste(tf.clip_by_value(w / scale + offset, 0.0, float(self.top)))
        return codes, scale, offset

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.num_bits, "offset_frac_bits": self.offset_frac_bits,
                **super().get_config()}
