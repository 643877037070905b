"""Per-layer fidelity of the exported program with Keras, for every preset (tfxbar.export.fidelity)."""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras
from export_toys import pixel_codes, trained
from toys import toy_data

import tfxbar
from tfxbar.export.elementwise import Affine, Relu
from tfxbar.export.fidelity import U32, float32_error_bound, measure


@pytest.mark.parametrize("preset", sorted(tfxbar.PRESETS))
def test_every_layer_agrees_with_keras(preset: str) -> None:
    qmodel = trained(preset)
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    _, x = pixel_codes(400)
    fidelity = measure(qmodel, program, x)
    assert [layer.layer for layer in fidelity.layers] == sorted(
        op["tap"] for op in program.ops if op["tap"] and op["kind"] != "dequantize")
    assert len(fidelity.layers) == 2
    assert fidelity.top1_agreement == 1.0
    for layer in fidelity.layers:
        assert layer.size > 0
        assert layer.program_exact == 0, layer      # the program is the exact integer model
        assert layer.unexplained == 0, layer        # Keras differs only at float32 ties
        assert layer.raw_agreement >= 0.999, layer  # few ties, little propagation
        assert layer.largest_tie_distance < 1e-5, layer


def test_a_wrong_threshold_is_detected() -> None:
    qmodel = trained("w4a3")
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    index = next(i for i, op in enumerate(program.ops) if op["kind"] == "threshold")
    arrays = dict(program.arrays)
    thresholds = arrays[f"op{index}.thresholds"].copy()
    step = (thresholds[:, -1] - thresholds[:, 0]) // thresholds.shape[1] + 1
    thresholds += step[:, None]    # about one code lower everywhere, still monotone
    arrays[f"op{index}.thresholds"] = thresholds
    broken = tfxbar.Program(program.header, arrays)
    _, x = pixel_codes(100)
    first = measure(qmodel, broken, x).layers[0]
    assert first.program_exact > 0
    assert first.raw > 0
    assert first.local == 0          # the exact model itself is unaffected


def test_float32_error_bound_covers_a_float32_forward_pass() -> None:
    rng = np.random.default_rng(0)
    k, channels = 576, 8
    codes = rng.integers(0, 256, (2000, k))
    weights = rng.integers(-127, 128, (k, channels))
    step_in, scale, step = np.float32(1 / 255), rng.uniform(1e-3, 1e-2, channels).astype(np.float32), 0.05
    mean, a_bn = rng.normal(0, 3, channels), rng.uniform(0.5, 2, channels)
    beta = rng.normal(0, 1, channels)
    # Keras, float32: inputs and weights stored in float32, dot product, BN, ReLU, / step.
    y = (codes * step_in).astype(np.float32) @ (weights * scale).astype(np.float32)
    y = (y - mean.astype(np.float32)) * a_bn.astype(np.float32) + beta.astype(np.float32)
    keras = np.maximum(y, 0) / np.float32(step)
    acc = codes @ weights
    chain = [Affine(float(step_in) * scale.astype(np.float64), 0.0), Affine(np.ones(channels), -mean),
             Affine(a_bn, beta), Relu()]
    err = (k + 2) * U32 * (codes @ np.abs(weights))
    exact, bound = float32_error_bound(chain, acc, err.astype(np.float64), step)
    assert np.all(np.abs(keras.astype(np.float64) - exact) <= bound)


@pytest.mark.parametrize("case", ["avg", "global", "negative_gamma"])
def test_pooling_and_decreasing_thresholds_are_exact(case: str) -> None:
    if case == "negative_gamma":
        qmodel = trained("w4a3")
        bn = next(layer for layer in qmodel.layers if isinstance(layer, keras.layers.BatchNormalization))
        gamma = bn.gamma.numpy()
        gamma[::2] *= -1
        bn.gamma.assign(gamma)
    else:
        pool = keras.layers.AveragePooling2D() if case == "avg" else keras.layers.GlobalAveragePooling2D()
        model = keras.Sequential([
            keras.layers.Conv2D(4, 3, strides=2, padding="same", input_shape=(12, 12, 1)),
            keras.layers.BatchNormalization(), pool, keras.layers.ReLU(), keras.layers.Flatten(),
            keras.layers.Dense(4)])
        qmodel = trained("w4a3", model, *toy_data(256))
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    _, x = pixel_codes(200)
    fidelity = measure(qmodel, program, x)
    assert fidelity.top1_agreement == 1.0
    for layer in fidelity.layers:
        assert layer.program_exact == 0 and layer.unexplained == 0, layer
