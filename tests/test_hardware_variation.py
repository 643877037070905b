"""`DeviceVariation` with the Keras hardware mode: variation-aware and ADC-aware training at once."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from export_toys import pixel_codes, trained
from toys import toy_data

import tfxbar
from tfxbar.hardware import HardwareMode
from tfxbar.introspect import quantized_kernels
from tfxbar.variation import DeviceModel, DeviceVariation, VariationState
from tfxbar.variation.cells import install, uninstall


def _program(qmodel: keras.Model) -> tfxbar.Program:
    codes, _ = pixel_codes(64)
    return tfxbar.CrossbarConverter.from_keras_model(
        qmodel, tile_rows=8, tile_cols=8, dac_bits=1, adc_bits=4, adc_range="calibrated",
        representative_data=codes).convert()


def _x() -> np.ndarray:
    return pixel_codes(32, seed=2)[1]


@pytest.fixture(scope="module")
def setup() -> tuple[keras.Model, tfxbar.Program]:
    qmodel = trained("w4a3", epochs=1)
    return qmodel, _program(qmodel)


@pytest.fixture(scope="module")
def biased() -> tuple[keras.Model, tfxbar.Program]:
    qmodel = trained("w2a2-biased", epochs=1)
    return qmodel, _program(qmodel)


@pytest.mark.parametrize("models", ["setup", "biased"])   # differential; offset + reference column
def test_cell_noise_reaches_the_hardware_forward_pass(models, request) -> None:
    qmodel, program = request.getfixturevalue(models)
    hw, x = HardwareMode(qmodel, program=program), _x()
    state = VariationState(DeviceModel.lognormal(0.3), seed=1)
    with hw:
        clean = qmodel(x, training=True).numpy()   # training: the hardware value (straight-through)
        saved = install(qmodel, state, DeviceModel.lognormal(0.3))
        try:
            noisy = qmodel(x, training=True).numpy()
            again = qmodel(x, training=True).numpy()
            state.step_counter.assign_add(1)                       # the next training step
            next_step = qmodel(x, training=True).numpy()
            inference = qmodel(x, training=False).numpy()          # hooks are training-only
            uninstall(saved)
            clean_inference = qmodel(x, training=False).numpy()    # (training calls move BN)
            saved = install(qmodel, state, DeviceModel.lognormal(0.3))
            state.set_device(DeviceModel.lognormal(0.0))
            zero = qmodel(x, training=True).numpy()
        finally:
            uninstall(saved)
    assert not np.allclose(noisy, clean)            # the ADCs saw noisy cells
    np.testing.assert_array_equal(noisy, again)     # one draw per step …
    assert not np.allclose(next_step, noisy)        # … and a fresh one the next step
    np.testing.assert_array_equal(zero, clean)      # σ = 0: the noise-free hardware exactly
    np.testing.assert_array_equal(inference, clean_inference)


def test_the_noise_is_on_each_physical_cell_as_on_a_chip(setup) -> None:
    # Δ of a differential pair is drawn per cell: g⁺ and g⁻ of the same weight get different draws,
    # and a zero cell (σ·0 under a lognormal) stays zero unless G_min lifts it.
    qmodel, program = setup
    hw = HardwareMode(qmodel, program=program)
    crossbar = next(iter(hw.crossbars.values()))
    state = VariationState(DeviceModel.lognormal(0.3, on_off_ratio=float("inf")), seed=1)
    saved = install(qmodel, state, DeviceModel.lognormal(0.3, on_off_ratio=float("inf")))
    try:
        noise = crossbar.cell_noise(True)
        cells = tf.constant([[[[3.0]], [[0.0]]], [[[0.0]], [[5.0]]]])   # (K=2, P=2, L=1, N=1)
        delta = noise.cell_deltas(cells, 8.0, training=True).numpy()
    finally:
        uninstall(saved)
    assert delta.shape == cells.shape
    assert delta[0, 0, 0, 0] != 0 and delta[1, 1, 0, 0] != 0
    assert delta[0, 1, 0, 0] == 0 and delta[1, 0, 0, 0] == 0
    assert delta[0, 0, 0, 0] / 3.0 != delta[1, 1, 0, 0] / 5.0   # not one shared factor


def test_fit_with_device_variation_in_hardware_mode_keeps_clean_weights(setup) -> None:
    qmodel, program = setup
    x, y = toy_data(128, seed=4)
    x = np.round(x * 255) / 255
    qmodel.compile(keras.optimizers.SGD(0.0),   # no update: the weights must come out unchanged
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in qmodel.trainable_weights]
    losses = {}
    for sigma in (0.0, 0.5):   # training-mode losses use batch statistics: comparable
        with HardwareMode(qmodel, program=program):
            history = qmodel.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False,
                                 callbacks=[DeviceVariation(DeviceModel.lognormal(sigma), seed=1)])
        losses[sigma] = history.history["loss"][0]
        for w, old in zip(qmodel.trainable_weights, before, strict=True):
            np.testing.assert_array_equal(w.numpy(), old, err_msg=w.name)
        assert all(k.quantizer.cell_noise is None for k in quantized_kernels(qmodel))
    assert np.isfinite(list(losses.values())).all()
    assert losses[0.5] != losses[0.0]   # the noise was in the training forward pass


def test_variation_and_adc_aware_fit_trains(setup) -> None:
    qmodel, program = setup
    qmodel.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = toy_data(128, seed=4)
    x = np.round(x * 255) / 255
    before = [w.numpy().copy() for w in qmodel.trainable_weights]
    callback = DeviceVariation(DeviceModel.lognormal(0.2), seed=1)
    with HardwareMode(qmodel, program=program) as hw:
        history = qmodel.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
        assert sum(s["adc_conversions"] for s in hw.stats().values()) > 0
    assert np.isfinite(history.history["loss"]).all()
    assert "variation_weight_error" in history.history
    after = [w.numpy() for w in qmodel.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
