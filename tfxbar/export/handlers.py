"""Layer handlers: one function per Keras layer type, found through a registry.

A handler lowers one layer into `Lowering` primitives. Register your own for a custom layer::

    @tfxbar.export.register_handler(MyScale)
    def _my_scale(layer, ctx):
        ctx.lowering.elementwise(layer.name, "MyScale", Affine(layer.gain, 0.0))

The converter applies the layer's tfxbar output quantizer (if any) after the handler ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.export.elementwise import Affine, Relu, Softmax
from tfxbar.export.errors import ConversionError
from tfxbar.export.finite import require_finite_weights
from tfxbar.export.lowering import Lowering, same_pads
from tfxbar.introspect import QuantizedKernel

__all__ = ["HANDLERS", "LayerContext", "Handler", "handler_for", "register_handler"]


@dataclasses.dataclass
class LayerContext:
    """What a handler gets besides the layer: the lowering and the layer's quantizers."""

    lowering: Lowering
    kernel: QuantizedKernel | None
    wrapper: keras.layers.Layer | None


Handler = Callable[[keras.layers.Layer, LayerContext], None]
#: Handlers by exact Keras layer type.
HANDLERS: dict[type, Handler] = {}


def register_handler(*layer_types: type) -> Callable[[Handler], Handler]:
    """Decorator registering a handler for exact Keras layer types (replaces an existing one)."""

    def decorate(fn: Handler) -> Handler:
        for layer_type in layer_types:
            HANDLERS[layer_type] = fn
        return fn

    return decorate


def handler_for(layer: keras.layers.Layer) -> Handler:
    """The handler of `layer`'s exact type; ConversionError naming the layer otherwise."""
    try:
        return HANDLERS[type(layer)]
    except KeyError:
        known = ", ".join(sorted(t.__name__ for t in HANDLERS))
        raise ConversionError(layer.name, type(layer).__name__, "no export handler for this layer type",
                              f"supported: {known}; register one with "
                              "tfxbar.export.register_handler") from None


def _activation(layer: keras.layers.Layer, ctx: LayerContext, name: str) -> None:
    kind = type(layer).__name__
    if name == "linear":
        return
    if name == "relu":
        ctx.lowering.elementwise(layer.name, kind, Relu())
    elif name == "softmax":
        ctx.lowering.elementwise(layer.name, kind, Softmax())
    else:
        raise ConversionError(layer.name, kind, f"activation {name!r} is not supported",
                              "use relu, linear or softmax (or a separate ReLU layer)")


def _activation_name(layer: keras.layers.Layer) -> str:
    fn = getattr(layer, "activation", None)
    return "linear" if fn is None else keras.activations.serialize(fn)


def _crossbar_parts(layer: keras.layers.Layer, ctx: LayerContext) -> tuple:
    kind = type(layer).__name__
    if ctx.kernel is None:
        raise ConversionError(layer.name, kind, "has no tfxbar weight quantizer",
                              "quantize the model with tfxbar.quantize_model (or annotate the layer "
                              "with a tfxbar CrossbarConfig)")
    form = ctx.kernel.integer_form()
    out = form.codes.shape[form.channel_axis]
    scale = np.broadcast_to(form.scale, form.codes.shape).reshape(-1, out)[0]
    offset = np.broadcast_to(form.offset, form.codes.shape).reshape(-1, out)[0]
    bias = layer.bias.numpy() if getattr(layer, "use_bias", False) else np.zeros(out, np.float32)
    require_finite_weights(layer.name, kind, kernel=ctx.kernel.kernel.numpy(), bias=bias, scale=scale,
                           offset=offset)
    return form.codes.reshape(-1, out), scale, offset, bias, form.levels


@register_handler(keras.layers.Dense)
def _dense(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    codes, scale, offset, bias, levels = _crossbar_parts(layer, ctx)
    shape = ctx.lowering._shape()  # noqa: SLF001
    if len(shape) != 1:
        raise ConversionError(layer.name, "Dense", f"input of rank {len(shape) + 1} (shape {shape})",
                              "add a Flatten before the Dense layer")
    ctx.lowering.crossbar(layer.name, "Dense", codes, scale, offset, bias, (codes.shape[1],),
                          {"kernel": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0]}, levels)
    _activation(layer, ctx, _activation_name(layer))


@register_handler(keras.layers.Conv2D)
def _conv2d(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    codes, scale, offset, bias, levels = _crossbar_parts(layer, ctx)
    shape = ctx.lowering._shape()  # noqa: SLF001
    kind = "Conv2D"
    if layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1:
        raise ConversionError(layer.name, kind, "only channels_last, dilation 1, groups 1 are supported",
                              "rebuild the layer with those settings")
    if len(shape) != 3:
        raise ConversionError(layer.name, kind, f"expects an NHWC input, got shape {shape}")
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    pt, pb, oh = same_pads(shape[0], kh, sh, layer.padding)
    pl, pr, ow = same_pads(shape[1], kw, sw, layer.padding)
    ctx.lowering.crossbar(layer.name, kind, codes, scale, offset, bias, (oh, ow, codes.shape[1]),
                          {"kernel": [kh, kw], "strides": [sh, sw], "pads": [pt, pb, pl, pr]}, levels)
    _activation(layer, ctx, _activation_name(layer))


@register_handler(keras.layers.BatchNormalization)
def _batch_norm(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    rank = len(layer.input_shape)
    if axis is None or axis % rank != rank - 1:
        raise ConversionError(layer.name, "BatchNormalization", f"normalizes axis {layer.axis}",
                              "only the last (channel) axis can be folded")
    mean = layer.moving_mean.numpy().astype(np.float64)
    var = layer.moving_variance.numpy().astype(np.float64)
    gamma = layer.gamma.numpy().astype(np.float64) if layer.scale else np.ones_like(mean)
    beta = layer.beta.numpy().astype(np.float64) if layer.center else np.zeros_like(mean)
    a = gamma / np.sqrt(var + layer.epsilon)
    # (x − mean)·a + beta, in the order Keras evaluates it: folding it into a·x + (beta − mean·a)
    # would be the same real function, but would hide the cancellation in beta − mean·a from
    # float32 error bounds (tfxbar.export.fidelity). Before a quantizer the chain becomes integer
    # thresholds, so the second stage costs nothing at run time.
    ctx.lowering.elementwise(layer.name, "BatchNormalization", Affine(np.ones_like(mean), -mean))
    ctx.lowering.elementwise(layer.name, "BatchNormalization", Affine(a, beta))


@register_handler(keras.layers.ReLU)
def _relu(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    slope = float(np.asarray(layer.negative_slope))
    if slope < 0:
        raise ConversionError(layer.name, "ReLU", "negative_slope < 0 is not monotone")
    max_value = None if layer.max_value is None else float(np.asarray(layer.max_value))
    ctx.lowering.elementwise(layer.name, "ReLU", Relu(max_value, slope, float(np.asarray(layer.threshold))))


@register_handler(keras.layers.Activation)
def _activation_layer(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    _activation(layer, ctx, _activation_name(layer))


def _window(layer: keras.layers.Layer, kind: str) -> tuple:
    if layer.data_format != "channels_last":
        raise ConversionError(layer.name, kind, "channels_first is not supported")
    return tuple(layer.pool_size), tuple(layer.strides), layer.padding


@register_handler(keras.layers.MaxPooling2D)
def _max_pool(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    ctx.lowering.max_pool(layer.name, "MaxPooling2D", *_window(layer, "MaxPooling2D"))


@register_handler(keras.layers.AveragePooling2D)
def _avg_pool(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    ctx.lowering.sum_pool(layer.name, "AveragePooling2D", *_window(layer, "AveragePooling2D"))


@register_handler(keras.layers.GlobalAveragePooling2D)
def _global_avg_pool(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    if layer.data_format != "channels_last" or layer.keepdims:
        raise ConversionError(layer.name, "GlobalAveragePooling2D", "only channels_last, keepdims=False")
    ctx.lowering.sum_pool(layer.name, "GlobalAveragePooling2D", None, None, "valid")


@register_handler(keras.layers.Flatten)
def _flatten(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    ctx.lowering.flatten(layer.name, "Flatten")


@register_handler(keras.layers.Dropout, keras.layers.InputLayer)
def _identity(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    return None


@register_handler(tfmot_api.QuantizeLayer)
def _model_input(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    """The model-input quantizer: the program takes its integer codes."""
    from tfxbar.quantizers import ClippedRound

    if not isinstance(layer.quantizer, ClippedRound):
        raise ConversionError(layer.name, "QuantizeLayer", "the input quantizer is not a tfxbar "
                              "ClippedRound", "quantize with tfxbar.quantize_model")
    form = layer.quantizer.form({k: v.numpy() for k, v in layer.quantizer_vars.items()})
    ctx.lowering.start(tuple(layer.input_shape[1:]), form.bits, float(form.step), layer.name)
