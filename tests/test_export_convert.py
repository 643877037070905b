"""Converter: per-preset fidelity with Keras, supported layers, and ConversionError messages."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from export_toys import agreement, pixel_codes, trained
from toys import toy_data

import tfxbar
from tfxbar.export import register_handler
from tfxbar.export.elementwise import Affine
from tfxbar.export.handlers import HANDLERS

PRESETS = ["binary-dense", "binary-mlp", "w2a2-biased", "w4a3", "w8a8"]


@pytest.mark.parametrize("preset", ["binary-dense", "w2a2-biased"])
def test_fidelity_toy(preset: str) -> None:
    qmodel = trained(preset)
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    codes, x = pixel_codes()
    top1, codes_agree, layers = agreement(qmodel, program, codes, x)
    assert layers == 2
    assert top1 == 1.0
    assert codes_agree >= 0.9999


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, ...]:
    datasets = pytest.importorskip("tfxbar.datasets")
    os.environ.setdefault("TFXBAR_DATA_DIR", "/work/shared/data")
    try:
        x_train, y_train = datasets.load("mnist", "train[:1500]")
        x_test, _ = datasets.load("mnist", "test[:500]")
    except Exception as exc:  # noqa: BLE001 - data not available offline
        pytest.skip(f"MNIST not available: {exc}")
    return x_train, y_train, x_test


def _mnist_model() -> keras.Model:
    return keras.Sequential([
        keras.layers.Conv2D(4, 3, strides=2, padding="same", input_shape=(28, 28, 1)),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(16),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(10),
    ])


@pytest.mark.parametrize("preset", PRESETS)
def test_fidelity_mnist_slice(preset: str, mnist: tuple[np.ndarray, ...]) -> None:
    x_train, y_train, x_test = mnist
    qmodel = trained(preset, _mnist_model(), x_train.astype(np.float32) / 255, y_train, epochs=1)
    start = time.perf_counter()
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    assert time.perf_counter() - start < 2.0
    top1, codes_agree, _ = agreement(qmodel, program, x_test, x_test.astype(np.float32) / 255)
    assert top1 == 1.0
    assert codes_agree >= 0.9999


@pytest.mark.parametrize("preset", ["binary-mlp", "binary-dense", "w4a3"])
def test_mlp_whose_flatten_carries_the_input_quantizer_converts(preset: str) -> None:
    """quantize_model puts an MLP's input quantizer on its Flatten (no QuantizeLayer): the program
    takes the model input's codes under that quantizer and agrees with Keras."""
    x, y = toy_data(256)
    mlp = tfxbar.models.mlp(16, input_shape=x.shape[1:], classes=4, dropout=0.1)
    qmodel = trained(preset, mlp, x, y)
    assert not any(type(layer).__name__ == "QuantizeLayer" for layer in qmodel.layers)
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    flatten = next(o for o in tfxbar.quantized_outputs(qmodel) if "flatten" in o.layer.name)
    assert program.header["input"]["shape"] == list(x.shape[1:])
    assert program.header["input"]["bits"] == flatten.form().bits
    assert program.header["input"]["scale"] == pytest.approx(float(flatten.form().step))
    _, xf = pixel_codes()
    top1, codes_agree, layers = agreement(qmodel, program, program.quantize_input(xf), xf)
    assert layers == 2   # the input codes (tapped at the flatten) and the hidden layer's
    assert top1 == 1.0 and codes_agree >= 0.9999


def _pool_model(pooling: str) -> keras.Model:
    # Linear stages before the pool: the window sum is taken on the integer accumulator.
    pool = keras.layers.AveragePooling2D() if pooling == "avg" else keras.layers.GlobalAveragePooling2D()
    return keras.Sequential([
        keras.layers.Conv2D(4, 3, strides=2, padding="same", input_shape=(12, 12, 1)),
        keras.layers.BatchNormalization(), pool, keras.layers.ReLU(), keras.layers.Flatten(),
        keras.layers.Dense(4)])


@pytest.mark.parametrize("pooling", ["avg", "global"])
def test_average_pooling(pooling: str) -> None:
    x, y = toy_data(256)
    qmodel = trained("w4a3", _pool_model(pooling), x, y)
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    assert "sum_pool" in [op["kind"] for op in program.ops]
    codes, xf = pixel_codes()
    top1, codes_agree, _ = agreement(qmodel, program, codes, xf)
    assert top1 == 1.0 and codes_agree >= 0.9999


def test_average_pooling_of_float_relu_output_raises() -> None:
    # tfxbar's planner quantizes before average pooling; a hand-annotated model that quantizes
    # after it cannot be computed in integers and must be refused.
    qk = tfmot.quantization.keras
    after_pool = tfxbar.OutputConfig(tfxbar.quantizers.ClippedRound(3))
    model = keras.Sequential([
        qk.quantize_annotate_layer(keras.layers.Conv2D(4, 3, input_shape=(12, 12, 1)),
                                   tfxbar.CrossbarConfig(tfxbar.quantizers.UniformWeights(4))),
        keras.layers.ReLU(),
        qk.quantize_annotate_layer(keras.layers.GlobalAveragePooling2D(), after_pool),
        qk.quantize_annotate_layer(keras.layers.Dense(4, name="head"),
                                   tfxbar.CrossbarConfig(tfxbar.quantizers.UniformWeights(4))),
    ])
    no_input_quantizer = {"head": tfxbar.LayerSpec(tfxbar.quantizers.UniformWeights(4), None)}
    qmodel = qk.quantize_apply(model, tfxbar.CrossbarScheme("w4a3", no_input_quantizer))
    with pytest.raises(tfxbar.ConversionError, match="GlobalAveragePooling2D.*output quantizer"):
        tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()


def test_negative_batchnorm_gamma_gives_decreasing_thresholds() -> None:
    qmodel = trained("w4a3")
    bn = next(layer for layer in qmodel.layers if isinstance(layer, keras.layers.BatchNormalization))
    gamma = bn.gamma.numpy()
    gamma[::2] *= -1
    bn.gamma.assign(gamma)
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    index = next(i for i, op in enumerate(program.ops) if op["kind"] == "threshold")
    assert (program.op_arrays(index)["direction"] == -1).any()
    codes, x = pixel_codes()
    top1, codes_agree, _ = agreement(qmodel, program, codes, x)
    assert top1 == 1.0 and codes_agree >= 0.9999


def test_converter_options_as_attributes() -> None:
    qmodel = trained("w4a3", epochs=1)
    converter = tfxbar.CrossbarConverter.from_keras_model(qmodel, tile_rows=16)
    converter.tile_cols = 8
    converter.weight_mapping = "bit_sliced"
    assert converter.config.tile_cols == 8 and converter.tile_rows == 16
    program = converter.convert()
    dense = next(op for op in program.ops if op["name"] == "dense")
    assert len(dense["attrs"]["tiles"]) == 7 * 2  # 100 rows / 16, 16 cols / 8
    assert dense["attrs"]["slice_bits"] == 1 and dense["attrs"]["slices"] == 3
    with pytest.raises(AttributeError, match="unknown converter option"):
        converter.tile_colums = 4
    converter.adc_range = "bogus"
    with pytest.raises(tfxbar.ConversionError, match="^converter option: adc_range"):
        converter.convert()


def test_float_layer_raises_conversion_error() -> None:
    model = keras.Sequential([keras.layers.Dense(4, input_shape=(6,)), keras.layers.Dense(2)])
    with pytest.raises(tfxbar.ConversionError, match=r"'dense'.*\(Dense\).*no tfxbar weight quantizer"):
        tfxbar.CrossbarConverter.from_keras_model(model).convert()


def test_unsupported_layer_names_layer_type_and_remedy() -> None:
    model = keras.Sequential([keras.layers.Dense(4, input_shape=(6,)), keras.layers.LayerNormalization(),
                              keras.layers.Dense(2)])
    qmodel = tfxbar.quantize_model(model, "w4a3")
    with pytest.raises(tfxbar.ConversionError) as info:
        tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    message = str(info.value)
    assert "LayerNormalization" in message and "register_handler" in message
    assert info.value.kind == "LayerNormalization"


class Gain(keras.layers.Layer):
    """A user layer: multiplies by a constant."""

    def call(self, x):  # noqa: ANN001, ANN201
        return x * 2.0


def test_user_handler_registration() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (64, 6)).astype(np.float32)
    model = keras.Sequential([keras.layers.Dense(5, input_shape=(6,)), Gain(), keras.layers.ReLU(),
                              keras.layers.Dense(3)])
    with tfmot.quantization.keras.quantize_scope({"Gain": Gain}):
        qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=x)
    with pytest.raises(tfxbar.ConversionError, match="Gain"):
        tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()

    @register_handler(Gain)
    def _gain(layer: keras.layers.Layer, ctx) -> None:  # noqa: ANN001
        channels = ctx.lowering.state.shape[-1]
        ctx.lowering.elementwise(layer.name, "Gain", Affine(np.full(channels, 2.0), 0.0))

    try:
        program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    finally:
        HANDLERS.pop(Gain)
    codes = np.round(x * 255).astype(np.uint8)
    top1, codes_agree, _ = agreement(qmodel, program, codes, codes.astype(np.float32) / 255)
    assert top1 == 1.0 and codes_agree >= 0.9999
