"""Tiny graph models (branches and merges) for the export tests: one per layer family."""

from __future__ import annotations

import tf_keras as keras

L = keras.layers


def _conv_bn(x, filters: int, name: str, strides: int = 1, relu: bool = True, kernel: int = 3):  # noqa: ANN001, ANN202
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x) if relu else x


def _head(x, classes: int = 4):  # noqa: ANN001, ANN202
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return L.Dense(classes, name="logits")(x)


def residual(shape: tuple[int, ...] = (12, 12, 1)) -> keras.Model:
    """A ResNet v1 stem and two basic blocks: an identity and a projection (1×1, stride 2) shortcut."""
    inputs = keras.Input(shape)
    x = _conv_bn(inputs, 4, "stem")
    y = _conv_bn(x, 4, "b1a")
    y = _conv_bn(y, 4, "b1b", relu=False)
    x = L.ReLU(name="b1_out")(L.Add(name="b1_add")([x, y]))
    y = _conv_bn(x, 8, "b2a", strides=2)
    y = _conv_bn(y, 8, "b2b", relu=False)
    shortcut = _conv_bn(x, 8, "b2_proj", strides=2, relu=False, kernel=1)
    x = L.ReLU(name="b2_out")(L.Add(name="b2_add")([shortcut, y]))
    return keras.Model(inputs, _head(x), name="residual")


def inception(shape: tuple[int, ...] = (12, 12, 1)) -> keras.Model:
    """Two branches (1×1 and 3×3 convolutions) concatenated on channels, then a convolution."""
    inputs = keras.Input(shape)
    x = _conv_bn(inputs, 4, "stem")
    a = _conv_bn(x, 3, "branch1", kernel=1)
    b = _conv_bn(x, 5, "branch3")
    x = L.Concatenate(name="concat")([a, b])
    x = _conv_bn(x, 6, "mix")
    return keras.Model(inputs, _head(x), name="inception")


def depthwise(shape: tuple[int, ...] = (12, 12, 1)) -> keras.Model:
    """MobileNet blocks: ZeroPadding2D + strided DepthwiseConv2D, 1×1 pointwise, ReLU6."""
    inputs = keras.Input(shape)
    x = _conv_bn(inputs, 6, "stem")
    x = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)
    x = L.DepthwiseConv2D(3, strides=2, use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(6.0, name="dw_relu")(x)
    x = _conv_bn(x, 8, "pw", kernel=1)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw2")(x)
    x = L.ReLU(name="dw2_relu")(x)
    return keras.Model(inputs, _head(x), name="depthwise")


def shapes(shape: tuple[int, ...] = (12, 12, 1)) -> keras.Model:
    """UpSampling2D, LeakyReLU, GlobalMaxPooling2D with keepdims, Reshape."""
    inputs = keras.Input(shape)
    x = _conv_bn(inputs, 4, "stem", strides=2)
    x = L.UpSampling2D(name="up")(x)
    x = L.Conv2D(4, 3, padding="same", name="c2")(x)
    x = L.LeakyReLU(0.1, name="leaky")(x)
    x = L.GlobalMaxPooling2D(keepdims=True, name="gmp")(x)
    x = L.Reshape((4,), name="squeeze")(x)
    return keras.Model(inputs, L.Dense(4, name="logits")(x), name="shapes")


def conv1d(shape: tuple[int, ...] = (12, 12)) -> keras.Model:
    """A keyword-spotting-style 1-D CNN: Conv1D, MaxPooling1D, GlobalAveragePooling1D."""
    inputs = keras.Input(shape)
    x = L.Conv1D(6, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = L.BatchNormalization(name="c1_bn")(x)
    x = L.ReLU(name="c1_relu")(x)
    x = L.MaxPooling1D(2, name="pool")(x)
    x = L.Conv1D(8, 3, name="c2")(x)
    x = L.ReLU(name="c2_relu")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, L.Dense(4, name="logits")(x), name="conv1d")


def dense_merge(shape: tuple[int, ...] = (12, 12, 1)) -> keras.Model:
    """Two Dense branches of the same flattened input added before the classifier."""
    inputs = keras.Input(shape)
    x = L.Flatten(name="flat")(inputs)
    a = L.Dense(8, name="a")(x)
    b = L.Dense(8, name="b")(x)
    x = L.ReLU(name="merge_relu")(L.Add(name="merge")([a, b]))
    return keras.Model(inputs, L.Dense(4, name="logits")(x), name="dense_merge")


MODELS = {"residual": residual, "inception": inception, "depthwise": depthwise, "shapes": shapes,
          "conv1d": conv1d, "dense_merge": dense_merge}
