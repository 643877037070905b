"""The in-place inference ops of the layers between the crossbars (tfxbar/hardware/layer_kernels.cc,
`tfxbar.hardware.native_layers`): bit for bit what TensorFlow computes, only at inference, never
overwriting a tensor something else still reads, and gone when the hardware mode is removed."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from export_toys import trained
from toys import toy_data

import tfxbar
from tfxbar.hardware import HardwareMode, native
from tfxbar.hardware.native_layers import batch_norm_affine, mirrored
from tfxbar.quantizers import ClippedRound

_SPECIAL = np.float32([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 3.4e38, -3.4e38])


@pytest.fixture(scope="module")
def module():  # noqa: ANN201
    return native.load("native")


def _same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Equal as float32 bit patterns (signed zeros told apart); NaN where the other has NaN."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def _inputs(shape: tuple[int, ...], seed: int, scale: float = 3.0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, scale, shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[:len(_SPECIAL)] = _SPECIAL   # non-finite and signed-zero inputs as well
    return x


def _batch_norm(shape: tuple[int, ...], seed: int, **kwargs) -> keras.layers.BatchNormalization:  # noqa: ANN003
    layer = keras.layers.BatchNormalization(**kwargs)
    layer.build((None, *shape[1:]))
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        positive = "variance" in weight.name
        values = rng.uniform(1e-4, 4, weight.shape) if positive else rng.normal(0, 2, weight.shape)
        weight.assign(values.astype(np.float32))
    return layer


@pytest.mark.parametrize("shape,kwargs", [
    ((3, 5, 5, 3), {}), ((2, 7, 7, 17), {}), ((4, 6, 6, 32), {"epsilon": 1e-7}),
    ((2, 3, 3, 64), {"center": False}), ((2, 4, 4, 8), {"scale": False}),
    ((16, 128), {}), ((9, 17), {"epsilon": 1e-7}), ((5, 10), {"center": False, "scale": False})])
def test_channel_affine_is_the_batch_norm_bit_for_bit(module, shape, kwargs) -> None:
    """4-D inputs take Keras's fused kernel, 2-D ones its unfused formula: both are reproduced,
    NaN, ±inf, signed zeros and subnormals included, whatever the channel count."""
    layer = _batch_norm(shape, seed=len(shape) + shape[-1], **kwargs)
    assert mirrored(layer)
    x = tf.constant(_inputs(shape, seed=shape[-1]))
    want = layer(x, training=False)
    got = module.tfxbar_channel_affine(tf.identity(x), *batch_norm_affine(layer))
    _same_bits(got, want)


@pytest.mark.parametrize("bits,step", [(1, 0.5), (3, 0.25), (3, 0.1), (4, 0.7), (8, 1 / 255)])
def test_clipped_round_op_is_the_quantizer_bit_for_bit(module, bits: int, step: float) -> None:
    """Exact ties (k + ½)·step round half to even, as tf.round does; values past the clip, −0,
    ±inf and NaN give what TF's ops give; the vector body and the scalar tail (odd lengths)
    agree."""
    quantizer = ClippedRound(bits=bits, step="fixed", init_step=step)
    weights = {"step": tf.Variable(step, dtype=tf.float32)}
    ties = (np.arange(-2, 2 ** bits + 2) + 0.5) * np.float32(step)
    spread = _inputs((1001,), seed=bits, scale=step * 2 ** bits)
    x = np.concatenate([ties, _SPECIAL, spread]).astype(np.float32)
    want = quantizer(tf.constant(x), False, weights)
    quantizer.inference_op = module.tfxbar_clipped_round
    try:
        got = quantizer(tf.constant(x), False, weights)
        trained_path = quantizer(tf.constant(x), True, weights)
    finally:
        quantizer.inference_op = None
    _same_bits(got, want)
    _same_bits(trained_path, want)   # training keeps the TF ops (and their gradient)


def test_a_tensor_read_elsewhere_is_not_overwritten(module) -> None:
    """The ops write into their input's buffer only when nothing else holds it."""
    layer = _batch_norm((2, 4, 4, 8), seed=3)
    x = tf.constant(_inputs((2, 4, 4, 8), seed=4))

    @tf.function
    def both(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        y = x * 2.0
        return y, module.tfxbar_channel_affine(y, *batch_norm_affine(layer)), \
            module.tfxbar_clipped_round(y, tf.constant(0.25), top=7.0)

    y, _, _ = both(x)
    _same_bits(y, x * 2.0)
    _same_bits(x, _inputs((2, 4, 4, 8), seed=4))


def test_channel_mismatch_is_named(module) -> None:
    x = tf.zeros([2, 3, 3, 4])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"a has shape \[5\]; it needs one value per "
                                                             r"channel of x \(4\)"):
        module.tfxbar_channel_affine(x, tf.zeros([4]), tf.zeros([5]), tf.zeros([4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="step has shape"):
        module.tfxbar_clipped_round(x, tf.zeros([2]), top=3.0)


def test_only_what_the_op_mirrors_is_taken() -> None:
    for kwargs in ({"axis": 1}, {"renorm": True}, {"virtual_batch_size": 2}):
        layer = keras.layers.BatchNormalization(**kwargs)
        layer.build((None, 4, 4, 8))
        assert not mirrored(layer), kwargs
    assert not mirrored(keras.layers.BatchNormalization())   # not built


@pytest.fixture(scope="module")
def qmodel() -> keras.Model:
    x, y = toy_data(256)
    model = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Conv2D(8, 3, use_bias=False, name="c1"),
                              keras.layers.BatchNormalization(name="bn1"), keras.layers.ReLU(),
                              keras.layers.Conv2D(8, 3, use_bias=False, name="c2"),
                              keras.layers.BatchNormalization(name="bn2"), keras.layers.ReLU(),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(16, use_bias=False, name="fc"),
                              keras.layers.BatchNormalization(name="fc_bn"), keras.layers.ReLU(),
                              keras.layers.Dense(4, name="logits")])
    return trained("w4a3", model, x, y, epochs=1)


def _program(qmodel: keras.Model) -> tfxbar.Program:
    config = tfxbar.ConverterConfig(dac_bits=1, adc_bits=5, adc_range="clip")
    return tfxbar.CrossbarConverter(qmodel, config).convert()


def _op_types(model: keras.Model, x: tf.Tensor, training: bool) -> set[str]:
    function = tf.function(lambda images: model(images, training=training))
    return {op.type for op in function.get_concrete_function(x).graph.get_operations()}


def test_the_hardware_mode_runs_them_at_inference_only(qmodel: keras.Model) -> None:
    """Installed: the logits are the bits TF's own layers give, from graphs that hold the native
    ops; training keeps Keras's batch norm (and moves its statistics); removed: no trace left."""
    x = tf.constant(toy_data(64, seed=5)[0])
    program = _program(qmodel)
    with HardwareMode(qmodel, program=program, engine="native", native_layers=False):
        want = qmodel.predict(x, batch_size=32, verbose=0)
        assert "TfxbarChannelAffine" not in _op_types(qmodel, x, False)
    with HardwareMode(qmodel, program=program, engine="native") as mode:
        assert len(mode.native_layers.batch_norms) == 3 and len(mode.native_layers.quantizers) >= 3
        got = qmodel.predict(x, batch_size=32, verbose=0)
        inference, training = _op_types(qmodel, x, False), _op_types(qmodel, x, True)
        bn = qmodel.get_layer("bn1")
        before = bn.moving_mean.numpy()
        qmodel(x, training=True)
        moved = not np.array_equal(before, bn.moving_mean.numpy())
    _same_bits(got, want)
    assert {"TfxbarChannelAffine", "TfxbarClippedRound"} <= inference
    assert not {"TfxbarChannelAffine", "TfxbarClippedRound"} & training
    assert moved
    assert "call" not in vars(qmodel.get_layer("bn1"))
    assert all(q.inference_op is None for q in mode.native_layers.quantizers)


def test_the_tf_engine_has_none(qmodel: keras.Model) -> None:
    program = _program(qmodel)
    assert HardwareMode(qmodel, program=program, engine="tf").native_layers is None
