"""NaN/Inf and empty inputs on the Keras side (issue #16): calibration, quantizer calibration,
conversion of non-finite weights, robustness evaluation, empty models; and `tfxbar export` now
that `import tfxbar` (which the CLI does first) no longer imports tf_keras."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfxbar
from tfxbar.quantizers import ClippedRound
from tfxbar.quantizers.activation import mse_step
from tfxbar.quantizers.binarizer import InputBinarizer


def _data(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, 6)).astype(np.float32), rng.integers(0, 3, n)


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(3)])


@pytest.fixture(scope="module")
def qmodel() -> keras.Model:
    return tfxbar.quantize_model(_model(), "w4a3", calibration_data=_data()[0])


def test_calibration_data_with_one_nan_is_refused(qmodel: keras.Model) -> None:
    x, _ = _data()
    x[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"data has 1 NaN/Inf value\(s\) \(first at index \[5, 2"):
        tfxbar.calibrate(qmodel, x)
    with pytest.raises(ValueError, match="calibration data has 1 NaN/Inf"):
        tfxbar.quantize_model(_model(), "w4a3", calibration_data=x)


def test_negative_calibration_data_warns(qmodel: keras.Model) -> None:
    x, _ = _data()
    with pytest.warns(UserWarning, match="below 0 .* input quantizer is unsigned and clips them to 0"):
        tfxbar.calibrate(qmodel, x - 0.5)


@pytest.mark.parametrize("quantizer", [ClippedRound(bits=3), InputBinarizer(rule="mean"),
                                       InputBinarizer(rule="median"), InputBinarizer(rule="mse")])
def test_quantizer_calibration_refuses_nan(quantizer: object) -> None:
    values = np.linspace(0, 2, 100, dtype=np.float32)
    assert np.isfinite(quantizer.calibrated_step(values))  # type: ignore[attr-defined]
    values[7] = np.inf
    with pytest.raises(ValueError, match="calibration values has 1 NaN/Inf"):
        quantizer.calibrated_step(values)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="NaN/Inf"):
        mse_step(np.array([0.5, np.nan]), 3)


@pytest.mark.parametrize(("index", "field"), [(0, "kernel"), (1, "bias")])
def test_non_finite_weights_name_the_layer(index: int, field: str) -> None:
    qmodel = tfxbar.quantize_model(_model(), "w4a3", calibration_data=_data()[0])
    wrapper = next(layer for layer in qmodel.layers if layer.name.endswith("dense"))
    variable = next(v for v in wrapper.weights if v.name.split("/")[-1].startswith(field))
    value = variable.numpy()
    value.reshape(-1)[index] = np.nan
    variable.assign(value)
    with pytest.raises(tfxbar.ConversionError, match=rf"layer 'dense' \(Dense\): its {field} has 1 NaN/Inf"):
        tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()


def test_a_nan_training_pixel_stops_the_export() -> None:
    """One NaN pixel makes the learned steps and weights NaN during fit; export names a layer."""
    qmodel = tfxbar.quantize_model(_model(), "w4a3", calibration_data=_data()[0])
    qmodel.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    x[0, 0] = np.nan
    qmodel.fit(x, y, batch_size=32, epochs=1, verbose=0)
    with pytest.raises(tfxbar.ConversionError, match=r"layer '.*' \(.*\): its .* NaN/Inf value"):
        tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()


def test_a_nan_output_step_names_the_layer() -> None:
    qmodel = tfxbar.quantize_model(_model(), "w4a3", calibration_data=_data()[0])
    output = [o for o in tfxbar.quantized_outputs(qmodel) if o.variables][-1]   # not the input's
    for variable in output.variables.values():
        variable.assign(np.nan)
    with pytest.raises(tfxbar.ConversionError, match=rf"layer '{output.layer.name}' .*output quantizer step"):
        tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()


def test_empty_model_is_a_conversion_error() -> None:
    with pytest.raises(tfxbar.ConversionError, match="model: has no layers"):
        tfxbar.CrossbarConverter.from_keras_model(keras.Sequential([keras.Input((4,))]))


def test_evaluate_under_variation_refuses_empty_and_nan_data(qmodel: keras.Model) -> None:
    device = tfxbar.DeviceModel(lognormal_sigma=0.1)
    x, y = _data()
    result = tfxbar.evaluate_under_variation(qmodel, (x, y), device, trials=1, verbose=0)
    assert 0 <= result.accuracies[0] <= 1
    with pytest.raises(ValueError, match="the dataset is empty"):
        tfxbar.evaluate_under_variation(qmodel, (x[:0], y[:0]), device, trials=1, verbose=0)
    with pytest.raises(ValueError, match="the dataset is empty"):
        empty = tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(8)
        tfxbar.evaluate_under_variation(qmodel, empty, device, trials=1, verbose=0)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"x has 1 NaN/Inf value\(s\) \(first at index \[3, 1\]"):
        tfxbar.evaluate_under_variation(qmodel, (x, y), device, trials=1, verbose=0)
    with pytest.raises(ValueError, match="batch 0 of the dataset has NaN/Inf values in x"):
        nan = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        tfxbar.evaluate_under_variation(qmodel, nan, device, trials=1, verbose=0)
    x[3, 1] = 0.5
    bias = next(w for w in qmodel.layers[-1].weights if "bias" in w.name)
    clean = bias.numpy()
    bias.assign(np.full_like(clean, np.nan))   # clean inputs, a NaN output (no clip after a bias)
    try:
        with pytest.raises(ValueError, match="output is NaN/Inf on chip 0"):
            tfxbar.evaluate_under_variation(qmodel, (x, y), device, trials=1, verbose=0)
    finally:
        bias.assign(clean)


def test_cli_export_loads_a_quantized_model(qmodel: keras.Model, tmp_path: Path) -> None:
    """The CLI imports tfxbar before tf_keras: export must still register tfxbar's objects."""
    qmodel.save(tmp_path / "q.keras")
    code = "import sys; from tfxbar.cli import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-c", code, "export", str(tmp_path / "q.keras"), "-o",
                             str(tmp_path / "q.xbar")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-500:]
    assert tfxbar.load_program(tmp_path / "q.xbar").ops[0]["kind"] == "crossbar"
