"""Reference networks of the papers, sized for crossbars and for a 2-core CPU."""

from __future__ import annotations

from collections.abc import Sequence

import tf_keras as keras

__all__ = ["mlp", "mnist_cnn", "vgg_small"]


def _conv_block(x, filters: int, name: str):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _dense_head(x, hidden: int, classes: int, dropout: float):
    """Hidden dense layer (BN, ReLU), dropout, classifier: the two dense crossbar layers."""
    x = keras.layers.Dense(hidden, use_bias=False, name="fc")(x)
    x = keras.layers.BatchNormalization(name="fc_bn")(x)
    x = keras.layers.ReLU(name="fc_relu")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.layers.Dense(classes, name="logits")(x)


def mnist_cnn(widths: Sequence[int] = (32, 64), hidden: int = 128, *,
              input_shape: tuple[int, int, int] = (28, 28, 1), classes: int = 10,
              dropout: float = 0.25) -> keras.Model:
    """A small CNN for MNIST / Fashion-MNIST: two conv blocks per width, then two dense layers.

    Conv → BN → ReLU pairs, a max-pool after each width, a BN'd hidden dense layer and the
    classifier. Inputs are images scaled to [0, 1]; the output is logits.

    Arguments:
        widths: channels of each stage (two 3×3 convolutions per stage).
        hidden: units of the hidden dense layer (P1 compares several).
        input_shape: image shape.
        classes: number of classes.
        dropout: dropout rate before the classifier.

    Returns:
        An uncompiled functional tf_keras model.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for stage, width in enumerate(widths):
        x = _conv_block(x, width, f"s{stage}a")
        x = _conv_block(x, width, f"s{stage}b")
        x = keras.layers.MaxPooling2D(name=f"s{stage}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _dense_head(x, hidden, classes, dropout), name="mnist_cnn")


def mlp(hidden: int = 512, *, input_shape: tuple[int, ...] = (28, 28, 1), classes: int = 10,
        dropout: float = 0.2) -> keras.Model:
    """P3's two-layer MLP: pixels → hidden (BN, ReLU) → classes; two crossbar layers.

    Arguments:
        hidden: hidden units (P3 studies the layer size).
        input_shape: image shape.
        classes: number of classes.
        dropout: dropout rate before the classifier.

    Returns:
        An uncompiled functional tf_keras model producing logits.
    """
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    return keras.Model(inputs, _dense_head(x, hidden, classes, dropout), name="mlp")


def vgg_small(widths: Sequence[int] = (32, 64, 128), hidden: int = 256, *,
              input_shape: tuple[int, int, int] = (32, 32, 3), classes: int = 10,
              dropout: float = 0.3) -> keras.Model:
    """A VGG-style CNN for CIFAR-10 sized for a CPU: two conv blocks per stage, max-pool, dense.

    Arguments:
        widths: channels per stage.
        hidden: units of the hidden dense layer.
        input_shape: image shape.
        classes: number of classes.
        dropout: dropout rate before the classifier.

    Returns:
        An uncompiled functional tf_keras model producing logits.
    """
    return mnist_cnn(widths, hidden, input_shape=input_shape, classes=classes, dropout=dropout)
