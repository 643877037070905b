"""Simulated chips in the Keras hardware mode and `evaluate_under_variation(hardware=...)`."""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras
from export_toys import pixel_codes, trained
from toys import toy_data

import tfxbar
from tfxbar.hardware import HardwareMode
from tfxbar.hardware.chips import device_chip


@pytest.fixture(scope="module")
def setup() -> tuple[keras.Model, tfxbar.Program]:
    qmodel = trained("w4a3", epochs=1)
    codes, _ = pixel_codes(64)
    program = tfxbar.CrossbarConverter.from_keras_model(
        qmodel, tile_rows=8, tile_cols=8, dac_bits=1, adc_bits=4, adc_range="calibrated",
        representative_data=codes).convert()
    return qmodel, program


def test_a_keras_chip_is_the_interpreters_chip(setup) -> None:
    qmodel, program = setup
    codes, x = pixel_codes(64, seed=2)
    hw = HardwareMode(qmodel, program=program)
    chip = device_chip(hw, tfxbar.DeviceModel.lognormal(0.3), seed=1, chip=2)
    expected = tfxbar.Interpreter(program, "hardware", conductances=chip).run(codes)
    hw.set_chip(chip)
    with hw:
        got = qmodel.predict(x, verbose=0)
    clean = tfxbar.Interpreter(program, "hardware").run(codes)
    assert not np.array_equal(expected, clean)
    # float32 (Keras) vs float64 (interpreter) device ADCs: rare half-step ties may differ.
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.95


def test_evaluate_under_variation_in_hardware_mode(setup) -> None:
    qmodel, program = setup
    x, y = toy_data(64, seed=3)
    x = np.round(x * 255) / 255
    hw = HardwareMode(qmodel, program=program)
    with hw:
        clean = float(np.mean(qmodel.predict(x, verbose=0).argmax(-1) == y))
    ideal_cells = tfxbar.evaluate_under_variation(qmodel, (x, y), tfxbar.DeviceModel(), trials=2,
                                                  verbose=0, hardware=hw)
    np.testing.assert_array_equal(ideal_cells.accuracies, [clean, clean])
    device = tfxbar.DeviceModel.lognormal(0.8)
    first = tfxbar.evaluate_under_variation(qmodel, (x, y), device, trials=3, seed=5, verbose=0, hardware=hw)
    again = tfxbar.evaluate_under_variation(qmodel, (x, y), device, trials=3, seed=5, verbose=0, hardware=hw)
    np.testing.assert_array_equal(first.accuracies, again.accuracies)
    assert len(set(first.accuracies.tolist())) > 1 or first.mean != clean
    assert not hw.installed   # left as it was found


def test_hardware_of_another_model_is_refused(setup) -> None:
    qmodel, program = setup
    other = trained("w4a3", epochs=1)
    with pytest.raises(ValueError, match="HardwareMode of this model"):
        tfxbar.evaluate_under_variation(other, toy_data(8), tfxbar.DeviceModel(), trials=1, verbose=0,
                                        hardware=HardwareMode(qmodel, program=program))
