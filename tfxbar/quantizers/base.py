"""The weight-quantizer interface every crossbar weight representation implements."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import tensorflow as tf

from tfxbar import tfmot_api
from tfxbar.quantizers.config_identity import ConfigIdentity
from tfxbar.quantizers.integer_form import CELL_VIEWS, IntegerForm
from tfxbar.quantizers.variable_order import inner_weights_first

__all__ = ["WeightQuantizer"]

_EPS = 1e-8


class WeightQuantizer(ConfigIdentity, tfmot_api.Quantizer, abc.ABC):
    """A tfmot `Quantizer` for crossbar weights that also exposes its integer form.

    Subclasses implement `parts`, returning float tensors ``(codes, scale, offset)`` whose
    codes are integral; the fake-quantized kernel is then exactly ``scale * (codes - offset)``
    and `integer_form` returns the same three arrays, so the exporter never re-derives them.

    Arguments:
        per_channel: one scale per output channel (True) or one per tensor.
        cell_view: how the codes map onto cells; one of `CELL_VIEWS`.
        channel_axis: kernel axis of the output channels (-1 for Dense/Conv2D, -2 for
            DepthwiseConv2D); the configs set it.
    """

    #: Cell views this representation supports; the first one is the default.
    cell_views: tuple[str, ...] = ("differential", "offset")

    def __init__(self, per_channel: bool = True, cell_view: str | None = None,
                 channel_axis: int = -1) -> None:
        cell_view = cell_view or self.cell_views[0]
        if cell_view not in self.cell_views:
            raise ValueError(
                f"{type(self).__name__} supports cell_view in {self.cell_views} "
                f"(of {CELL_VIEWS}), got {cell_view!r}"
            )
        self.per_channel = bool(per_channel)
        self.cell_view = cell_view
        self.channel_axis = int(channel_axis)
        #: Set by `tfxbar.variation` to perturb the cells behind the weights; never serialized.
        #: Called as ``cell_noise(quantizer, codes, scale, offset, training)`` and returns the
        #: kernel the forward pass uses; None means ideal cells.
        self.cell_noise: Any = None

    # -- what subclasses provide -------------------------------------------------------------
    @property
    @abc.abstractmethod
    def levels(self) -> tuple[int, ...]:
        """The integer values a code may take, in this quantizer's cell view."""

    @abc.abstractmethod
    def parts(self, w: tf.Tensor, weights: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Float tensors ``(codes, scale, offset)``; codes carry the straight-through gradient."""

    @property
    def bits(self) -> int:
        """Bits needed to store one code: ceil(log2(number of levels))."""
        return max(1, int(np.ceil(np.log2(len(self.levels)))))

    # -- tfmot Quantizer ---------------------------------------------------------------------
    def build(self, tensor_shape: tf.TensorShape, name: str, layer: Any) -> dict[str, Any]:
        inner_weights_first(layer)
        return {}

    def __call__(self, inputs: tf.Tensor, training: Any, weights: dict[str, Any],
                 **kwargs: Any) -> tf.Tensor:
        codes, scale, offset = self.parts(inputs, weights)
        if self.cell_noise is not None:
            return self.cell_noise(self, codes, scale, offset, training)
        return scale * (codes - offset)

    def get_config(self) -> dict[str, Any]:
        return {"per_channel": self.per_channel, "cell_view": self.cell_view,
                "channel_axis": self.channel_axis}


    # -- integer form ------------------------------------------------------------------------
    def integer_form(self, kernel: np.ndarray, weights: dict[str, Any] | None = None) -> IntegerForm:
        """The integer codes, scale and offset of `kernel` under this quantizer.

        Arguments:
            kernel: the float (clean) kernel.
            weights: this quantizer's variables (the dict `build` returned), as tensors or arrays.

        Returns:
            An `IntegerForm` whose `dequantize()` equals this quantizer's output elementwise.
        """
        tensors = {k: tf.convert_to_tensor(np.asarray(v)) for k, v in (weights or {}).items()}
        codes, scale, offset = self.parts(tf.convert_to_tensor(kernel, tf.float32), tensors)
        keep = self._keep_shape(np.shape(kernel))
        return IntegerForm(
            codes=np.rint(codes.numpy()).astype(np.int32),
            scale=np.broadcast_to(np.asarray(scale.numpy(), np.float32), keep).copy(),
            offset=np.broadcast_to(np.asarray(offset.numpy(), np.float32), keep).copy(),
            levels=self.levels,
            cell_view=self.cell_view,
            channel_axis=self.channel_axis % len(keep),
        )

    # -- helpers for subclasses --------------------------------------------------------------
    def _reduce_axes(self, rank: int) -> list[int]:
        if not self.per_channel:
            return list(range(rank))
        channel = self.channel_axis % rank
        return [a for a in range(rank) if a != channel]

    def _keep_shape(self, shape: tuple[int, ...] | tf.TensorShape) -> list[int]:
        """Shape of a per-channel (or per-tensor) statistic, broadcastable to the kernel."""
        shape = list(shape)
        reduce = set(self._reduce_axes(len(shape)))
        return [1 if a in reduce else int(d) for a, d in enumerate(shape)]

    def _mean_abs(self, w: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.abs(w), axis=self._reduce_axes(w.shape.rank), keepdims=True)

    def _max_abs(self, w: tf.Tensor) -> tf.Tensor:
        return tf.reduce_max(tf.abs(w), axis=self._reduce_axes(w.shape.rank), keepdims=True)

    @staticmethod
    def _positive(x: tf.Tensor) -> tf.Tensor:
        return tf.maximum(x, _EPS)
