"""Layer handlers: one function per Keras layer type, found through a registry.

A handler lowers one layer into `Lowering` primitives. Register your own for a custom layer::

    @tfxbar.export.register_handler(MyScale)
    def _my_scale(layer, ctx):
        ctx.lowering.elementwise(layer.name, "MyScale", Affine(layer.gain, 0.0))

The converter applies the layer's tfxbar output quantizer (if any) after the handler ran.
Single-input handlers work on ``ctx.lowering.state`` (a copy of their input's state);
multi-input handlers (Add, Concatenate) find their input states in ``ctx.inputs``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.export.elementwise import Affine, Relu, Softmax
from tfxbar.export.errors import ConversionError
from tfxbar.export.lowering import Acc, Codes, Lowering, same_pads
from tfxbar.introspect import QuantizedKernel

__all__ = ["HANDLERS", "LayerContext", "Handler", "handler_for", "register_handler"]


@dataclasses.dataclass
class LayerContext:
    """What a handler gets besides the layer: the lowering and the layer's quantizers."""

    lowering: Lowering
    kernel: QuantizedKernel | None
    wrapper: keras.layers.Layer | None
    inputs: list[Codes | Acc | None] = dataclasses.field(default_factory=list)
    #: the layer's output quantizer as (step, bits), if it has one
    output: tuple[float, int] | None = None
    #: set by a handler that applied the output quantizer itself
    quantized: bool = False


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
    elif name == "relu6":
        ctx.lowering.elementwise(layer.name, kind, Relu(6.0))
    elif name == "softmax":
        ctx.lowering.elementwise(layer.name, kind, Softmax())
    else:
        raise ConversionError(layer.name, kind, f"activation {name!r} is not supported",
                              "use relu, relu6, linear or softmax (or a separate ReLU / LeakyReLU layer)")


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


def _conv_geometry(layer: keras.layers.Layer, kind: str, shape: tuple[int, ...],
                   kernel: tuple[int, int], strides: tuple[int, int]) -> tuple[tuple[int, int], dict]:
    """``((oh, ow), geometry attrs)`` of a convolution over an HWC input."""
    groups = getattr(layer, "groups", 1)
    if layer.data_format != "channels_last" or set(layer.dilation_rate) != {1} or groups != 1:
        raise ConversionError(layer.name, kind, "only channels_last, dilation 1, groups 1 are supported",
                              "rebuild the layer with those settings")
    if len(shape) != 3:
        raise ConversionError(layer.name, kind, f"expects an {'NWC' if kind == 'Conv1D' else 'NHWC'} "
                              f"input, got shape {shape}")
    (kh, kw), (sh, sw) = kernel, strides
    padding = layer.padding
    if padding == "causal":
        raise ConversionError(layer.name, kind, "causal padding is not supported",
                              "pad explicitly (ZeroPadding1D) and use padding='valid'")
    pt, pb, oh = same_pads(shape[0], kh, sh, padding)
    pl, pr, ow = same_pads(shape[1], kw, sw, padding)
    return (oh, ow), {"kernel": [kh, kw], "strides": [sh, sw], "pads": [pt, pb, pl, pr]}


@register_handler(keras.layers.Conv2D)
def _conv2d(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    codes, scale, offset, bias, levels = _crossbar_parts(layer, ctx)
    shape = ctx.lowering._shape()  # noqa: SLF001
    (oh, ow), geometry = _conv_geometry(layer, "Conv2D", shape, tuple(layer.kernel_size),
                                        tuple(layer.strides))
    ctx.lowering.crossbar(layer.name, "Conv2D", codes, scale, offset, bias, (oh, ow, codes.shape[1]),
                          geometry, levels)
    _activation(layer, ctx, _activation_name(layer))


@register_handler(keras.layers.Conv1D)
def _conv1d(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    """A Conv1D is a Conv2D over a 1 × W image: reshape (W, C) → (1, W, C) and back."""
    codes, scale, offset, bias, levels = _crossbar_parts(layer, ctx)
    lowering = ctx.lowering
    shape = lowering._shape()  # noqa: SLF001
    if len(shape) != 2:
        raise ConversionError(layer.name, "Conv1D", f"expects an NWC input, got shape {shape}")
    lowering.reshape(f"{layer.name}_2d", "Conv1D", (1, *shape))
    (_, ow), geometry = _conv_geometry(layer, "Conv1D", (1, *shape), (1, layer.kernel_size[0]),
                                       (1, layer.strides[0]))
    lowering.crossbar(layer.name, "Conv2D", codes, scale, offset, bias, (1, ow, codes.shape[1]),
                      geometry, levels)
    lowering.reshape(f"{layer.name}_1d", "Conv1D", (ow, codes.shape[1]))
    _activation(layer, ctx, _activation_name(layer))


@register_handler(keras.layers.DepthwiseConv2D)
def _depthwise(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    """One crossbar whose weight matrix is block-diagonal: rows (kh, kw, C) × columns C·m, with
    channel c's kh·kw weights in its own m columns. Tiles hold whole channels side by side and
    no tile holds an all-zero block (`partition_tiles`)."""
    kind = "DepthwiseConv2D"
    if ctx.kernel is None:
        raise ConversionError(layer.name, kind, "has no tfxbar weight quantizer",
                              "quantize the model with tfxbar.quantize_model")
    form = ctx.kernel.integer_form()
    kh, kw, channels, mult = form.codes.shape
    offset = np.broadcast_to(form.offset, form.codes.shape)
    if np.any(offset != 0):
        raise ConversionError(layer.name, kind, "weights with an offset (trained-biased or asymmetric "
                              "levels) leave the block-diagonal's zeros nonzero",
                              "give this layer a symmetric weight quantizer (e.g. tfxbar.quantizers."
                              "UniformWeights) through layer_specs")
    dense = np.zeros((kh * kw * channels, channels * mult), np.int64)
    rows = (np.arange(kh * kw)[:, None] * channels + np.arange(channels)[None, :])   # (kh·kw, C)
    for q in range(mult):
        dense[rows, np.arange(channels)[None, :] * mult + q] = form.codes[..., q].reshape(kh * kw, channels)
    scale = np.broadcast_to(form.scale, form.codes.shape)[0, 0].reshape(-1)
    bias = layer.bias.numpy() if layer.use_bias else np.zeros(channels * mult, np.float32)
    shape = ctx.lowering._shape()  # noqa: SLF001
    (oh, ow), geometry = _conv_geometry(layer, kind, shape, tuple(layer.kernel_size), tuple(layer.strides))
    geometry["groups"] = int(channels)
    ctx.lowering.crossbar(layer.name, kind, dense, scale, np.zeros(channels * mult), bias,
                          (oh, ow, channels * mult), geometry, tuple(form.levels) + (0,))
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


@register_handler(keras.layers.LeakyReLU)
def _leaky_relu(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    alpha = float(np.asarray(layer.alpha))
    if alpha < 0:
        raise ConversionError(layer.name, "LeakyReLU", "alpha < 0 is not monotone")
    ctx.lowering.elementwise(layer.name, "LeakyReLU", Relu(None, alpha, 0.0))


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


def _as_2d(layer: keras.layers.Layer, ctx: LayerContext, kind: str) -> tuple[int, ...]:
    """1-D layers run as 2-D ones on a 1 × W image: (W, C) → (1, W, C); returns (W, C)."""
    shape = ctx.lowering._shape()  # noqa: SLF001
    if getattr(layer, "data_format", "channels_last") != "channels_last" or len(shape) != 2:
        raise ConversionError(layer.name, kind, f"expects a channels_last NWC input, got shape {shape}")
    ctx.lowering.reshape(f"{layer.name}_2d", kind, (1, *shape))
    return shape


def _global_pool(layer: keras.layers.Layer, ctx: LayerContext, kind: str) -> None:
    """Global average (window sum) or max pooling over H, W; keepdims gives (1, 1, C)."""
    lowering = ctx.lowering
    if "1D" in kind:
        _as_2d(layer, ctx, kind)
    elif layer.data_format != "channels_last":
        raise ConversionError(layer.name, kind, "channels_first is not supported")
    h, w, c = lowering._shape()  # noqa: SLF001
    if "Average" in kind:
        lowering.sum_pool(layer.name, kind, None, None, "valid")
    else:
        lowering.max_pool(layer.name, kind, (h, w), (h, w), "valid")
        lowering.reshape(f"{layer.name}_squeeze", kind, (c,))
    if layer.keepdims:
        lowering.reshape(f"{layer.name}_keepdims", kind, (1, c) if "1D" in kind else (1, 1, c))


for _kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "GlobalMaxPooling1D"):
    register_handler(getattr(keras.layers, _kind))(
        lambda layer, ctx, kind=_kind: _global_pool(layer, ctx, kind))


@register_handler(keras.layers.MaxPooling1D, keras.layers.AveragePooling1D)
def _pool_1d(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    kind = type(layer).__name__
    width, channels = _as_2d(layer, ctx, kind)
    pool, stride = (1, layer.pool_size[0]), (1, layer.strides[0])
    if kind == "MaxPooling1D":
        ctx.lowering.max_pool(layer.name, kind, pool, stride, layer.padding)
    else:
        ctx.lowering.sum_pool(layer.name, kind, pool, stride, layer.padding)
    out = ctx.lowering._shape()  # noqa: SLF001
    ctx.lowering.reshape(f"{layer.name}_1d", kind, out[1:])


@register_handler(keras.layers.Flatten)
def _flatten(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    ctx.lowering.flatten(layer.name, "Flatten")


@register_handler(keras.layers.Reshape)
def _reshape(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    ctx.lowering.reshape(layer.name, "Reshape", tuple(layer.output_shape[1:]))


@register_handler(keras.layers.ZeroPadding2D)
def _zero_padding(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    if layer.data_format != "channels_last":
        raise ConversionError(layer.name, "ZeroPadding2D", "channels_first is not supported")
    (pt, pb), (pl, pr) = layer.padding
    ctx.lowering.pad(layer.name, "ZeroPadding2D", (pt, pb, pl, pr))


@register_handler(keras.layers.UpSampling2D)
def _upsampling(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    if layer.data_format != "channels_last" or layer.interpolation != "nearest":
        raise ConversionError(layer.name, "UpSampling2D", "only channels_last, interpolation='nearest'",
                              "bilinear upsampling mixes codes with fractional weights")
    ctx.lowering.upsample(layer.name, "UpSampling2D", tuple(layer.size))


def _merge_inputs(layer: keras.layers.Layer, ctx: LayerContext, kind: str) -> list[Codes | Acc]:
    if any(s is None for s in ctx.inputs):
        raise ConversionError(layer.name, kind, "an input is the float model input",
                              "quantize the model input (tfxbar.quantize_model does)")
    return list(ctx.inputs)


@register_handler(keras.layers.Add)
def _add(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    ctx.lowering.add(layer.name, "Add", _merge_inputs(layer, ctx, "Add"))


@register_handler(keras.layers.Concatenate)
def _concatenate(layer: keras.layers.Layer, ctx: LayerContext) -> None:
    states = _merge_inputs(layer, ctx, "Concatenate")
    if layer.axis not in (-1, len(states[0].shape)):
        raise ConversionError(layer.name, "Concatenate", f"axis {layer.axis}",
                              "only the channel (last) axis can be concatenated")
    step, bits = ctx.output if ctx.output is not None else (None, None)
    # Named (and tapped) like the wrapper that carries the output quantizer.
    name = ctx.wrapper.name if ctx.wrapper is not None else layer.name
    ctx.quantized = ctx.lowering.concat(name, "Concatenate", states, step, bits)


@register_handler(keras.layers.Dropout, keras.layers.InputLayer, keras.layers.SpatialDropout2D,
                  keras.layers.GaussianNoise)
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
