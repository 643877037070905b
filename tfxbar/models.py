"""Reference networks of the papers, sized for crossbars and for a 2-core CPU."""

from __future__ import annotations

from collections.abc import Sequence

import tf_keras as keras

__all__ = ["mlp", "mnist_cnn", "mobilenet_small", "resnet20", "vgg_small"]


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


def _basic_block(x, filters: int, stride: int, name: str, weight_decay: float):
    """ResNet v1 basic block: conv-BN-ReLU, conv-BN, add the shortcut, ReLU.

    The shortcut is the identity when the shape is kept, else a strided 1×1 conv + BN
    (He et al.'s option B), so every crossbar of the block reads quantizable codes.
    """
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                            kernel_regularizer=reg, name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                            kernel_regularizer=reg, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        x = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                kernel_regularizer=reg, name=f"{name}_proj")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(x)
    y = keras.layers.Add(name=f"{name}_add")([y, x])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet20(widths: Sequence[int] = (16, 32, 64), blocks: int = 3, *,
             input_shape: tuple[int, int, int] = (32, 32, 3), classes: int = 10,
             weight_decay: float = 1e-4) -> keras.Model:
    """ResNet v1 for CIFAR-10 (ResNet-20 with the defaults; about 0.27 M parameters).

    A 3×3 stem conv (BN, ReLU), then one stage per width of `blocks` basic blocks (two 3×3
    convs each; the first block of every stage after the first has stride 2), global average
    pooling and a dense classifier. Shortcuts are the identity, or a 1×1 conv + BN where the
    shape changes. Convolutions have no bias (BN follows each). ResNet-32/44/56 are
    ``blocks=5/7/9``. Inputs are images scaled to [0, 1]; the output is logits.

    Arguments:
        widths: channels of each stage.
        blocks: basic blocks per stage (depth = 6·blocks + 2).
        input_shape: image shape.
        classes: number of classes.
        weight_decay: L2 factor on every convolution and dense kernel (0 for none).

    Returns:
        An uncompiled functional tf_keras model producing logits.

    References:
        K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
        CVPR 2016, section 4.2 (the CIFAR-10 networks).
    """
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(widths[0], 3, padding="same", use_bias=False,
                            kernel_regularizer=reg, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, width in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, width, stride, f"s{stage}b{block}", weight_decay)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"resnet{6 * blocks + 2}")


def _depthwise(x, stride: int, name: str):
    """3×3 depthwise conv + BN + ReLU; stride 2 pads explicitly and uses 'valid' (as Keras'
    MobileNet does), so the program's padding is the model's."""
    if stride == 2:
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same" if stride == 1 else "valid",
                                     use_bias=False, name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    return keras.layers.ReLU(name=f"{name}_dw_relu")(x)


def _pointwise(x, filters: int, name: str, relu: bool = True):
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def mobilenet_small(blocks: Sequence[tuple[int, int]] = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)),
                    stem: int = 32, *, inverted_residual: bool = False, expansion: int = 4,
                    input_shape: tuple[int, int, int] = (32, 32, 3), classes: int = 10,
                    dropout: float = 0.2) -> keras.Model:
    """A small MobileNet for CIFAR-10: depthwise-separable blocks (v1) or inverted residuals (v2).

    A 3×3 stem conv (stride 1 for 32×32 images), then one block per ``(filters, stride)``,
    global average pooling, dropout and a dense classifier.

    - v1 block: 3×3 DepthwiseConv2D + BN + ReLU, 1×1 Conv2D + BN + ReLU.
    - v2 block (``inverted_residual=True``): 1×1 expansion conv (×`expansion`) + BN + ReLU,
      3×3 depthwise + BN + ReLU, 1×1 projection conv + BN, Add with the block input when the
      stride is 1 and the width is kept, then a ReLU. Unlike MobileNet v2's linear bottleneck
      the block output passes a ReLU: the next crossbar reads unsigned activation codes, which
      clip negative values anyway, so the ReLU makes that explicit in the float model.

    Strided depthwise convs use ZeroPadding2D + 'valid' padding as Keras' MobileNet does.

    Arguments:
        blocks: ``(filters, stride)`` of each block.
        stem: channels of the stem conv.
        inverted_residual: build v2 blocks instead of v1 blocks.
        expansion: v2 expansion factor.
        input_shape: image shape.
        classes: number of classes.
        dropout: dropout rate before the classifier.

    Returns:
        An uncompiled functional tf_keras model producing logits.

    References:
        A. Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
        Applications", 2017; M. Sandler et al., "MobileNetV2: Inverted Residuals and Linear
        Bottlenecks", CVPR 2018.
    """
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(stem, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for i, (filters, stride) in enumerate(blocks):
        name = f"b{i}"
        if not inverted_residual:
            x = _pointwise(_depthwise(x, stride, name), filters, f"{name}_pw")
            continue
        y = _pointwise(x, x.shape[-1] * expansion, f"{name}_expand")
        y = _pointwise(_depthwise(y, stride, name), filters, f"{name}_project", relu=False)
        if stride == 1 and x.shape[-1] == filters:
            y = keras.layers.Add(name=f"{name}_add")([y, x])
        x = keras.layers.ReLU(name=f"{name}_out")(y)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_small" if inverted_residual else "mobilenet_small")
