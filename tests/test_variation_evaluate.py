"""`evaluate_under_variation` and `plot_robustness`."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from toys import toy_data

import tfxbar
from tfxbar.variation import DeviceModel, evaluate_under_variation, plot_robustness
from tfxbar.variation.evaluate import _evaluator

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    x, y = toy_data(256, SHAPE)
    model = tfxbar.quantize_model(keras.Sequential([
        keras.layers.Flatten(input_shape=SHAPE), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(4)]), "w4a3")
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    return model, toy_data(200, SHAPE, seed=1)


def test_same_seed_same_chips_and_different_seed_different_chips(trained):
    model, data = trained
    device = DeviceModel(lognormal_sigma=0.8, read_sigma=0.05, stuck_at_0=0.05)
    a = evaluate_under_variation(model, data, device, trials=4, seed=7, batch_size=64, verbose=0)
    b = evaluate_under_variation(model, data, device, trials=4, seed=7, batch_size=64, verbose=0)
    c = evaluate_under_variation(model, data, device, trials=4, seed=8, batch_size=64, verbose=0)
    np.testing.assert_array_equal(a.accuracies, b.accuracies)
    assert not np.array_equal(a.accuracies, c.accuracies)
    assert a.std > 0 and a.min <= a.mean <= a.max
    assert a.to_dict()["accuracies"] == a.accuracies.tolist()


def test_zero_sigma_gives_the_clean_accuracy_on_every_chip_and_weights_stay_clean(trained):
    model, (x, y) = trained
    before = model.get_weights()
    clean = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    dataset = tf.data.Dataset.from_tensor_slices((x, keras.utils.to_categorical(y, 4))).batch(50)
    result = evaluate_under_variation(model, dataset, DeviceModel(), trials=3, verbose=0)
    np.testing.assert_array_equal(result.accuracies, [clean] * 3)
    noisy = evaluate_under_variation(model, dataset, DeviceModel.lognormal(1.0), trials=2, verbose=0)
    assert noisy.mean < clean
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(k.quantizer.cell_noise is None for k in tfxbar.quantized_kernels(model))


def test_a_sigma_sweep_reuses_one_traced_graph(trained):
    model, data = trained
    device = DeviceModel.lognormal(0.1)
    counts = []
    for sigma in (0.1, 0.3, 0.5):
        evaluate_under_variation(model, data, device.with_sigma(sigma), trials=2, batch_size=100,
                                 verbose=0)
        counts.append(_evaluator(model, device).step.experimental_get_tracing_count())
    assert counts[0] >= 1 and counts == [counts[0]] * 3


def test_plot_robustness_writes_a_png(trained, tmp_path):
    model, data = trained
    curve = {s: evaluate_under_variation(model, data, DeviceModel.lognormal(s), trials=2, verbose=0)
             for s in (0.0, 0.5)}
    path = plot_robustness({"w4a3": curve, "again": list(curve.items())}, tmp_path / "r.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
