"""`DeviceVariation`: exact no-ops, clean weights, no retracing, Keras callback interplay."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from toys import toy_data

import tfxbar
from tfxbar.variation import DeviceModel, DeviceVariation, per_epoch, ramp

SHAPE = (8, 8, 1)
NOISY = DeviceModel(lognormal_sigma=0.3, read_sigma=0.02, stuck_at_0=0.02, stuck_at_1=0.02)


def _model(preset: str = "w4a3", lr: float = 1e-2) -> keras.Model:
    keras.utils.set_random_seed(0)
    float_model = keras.Sequential([keras.layers.Flatten(input_shape=SHAPE),
                                    keras.layers.Dense(16, activation="relu"),
                                    keras.layers.Dense(4)])
    model = tfxbar.quantize_model(float_model, preset)
    model.compile(keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    return model


def _fit(model: keras.Model, callbacks=(), epochs: int = 2, **kwargs) -> keras.callbacks.History:
    x, y = toy_data(128, SHAPE)
    keras.utils.set_random_seed(1)  # the same shuffling in every run
    return model.fit(x, y, batch_size=32, epochs=epochs, callbacks=list(callbacks), verbose=0,
                     **kwargs)


def _assert_same_weights(a: keras.Model, b: keras.Model) -> None:
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("preset", ["w4a3", "w2a2-biased"])
def test_zero_sigma_leaves_training_bit_identical(preset):
    reference = _model(preset)
    _fit(reference)
    # No noise stage at all, and every stage in the graph with a zero-strength schedule.
    for callback in [DeviceVariation(DeviceModel()), DeviceVariation(NOISY, schedule=0.0)]:
        model = _model(preset)
        _fit(model, [callback])
        _assert_same_weights(model, reference)


def test_noise_changes_training_so_the_previous_test_can_fail():
    reference = _model()
    _fit(reference)
    model = _model()
    _fit(model, [DeviceVariation(NOISY)])
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), reference.get_weights(),
                                                         strict=True))


@pytest.mark.parametrize("preset", ["binary-mlp", "w2a2-biased"])
def test_zero_learning_rate_keeps_weights_bit_identical_under_noise(preset):
    model = _model(preset, lr=0.0)
    before = [w.copy() for w in model.get_weights()]
    history = _fit(model, [DeviceVariation(NOISY, seed=5)], epochs=1)
    assert history.history["variation_weight_error"][0] > 0.05  # the noise was there
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


class _Probe(keras.callbacks.Callback):
    """Records the train function's trace count and what inference sees during training."""

    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        self.x, self.traces, self.strengths, self.predictions = x, [], [], []
        self.dv: DeviceVariation | None = None

    def on_train_batch_end(self, batch, logs=None):
        if self.dv is not None:
            self.strengths.append(float(self.dv.state.strength.numpy()))

    def on_epoch_end(self, epoch, logs=None):
        self.function = self.model.train_function
        self.traces.append(self.function.experimental_get_tracing_count())
        self.predictions.append(self.model(self.x, training=False).numpy())


def test_schedules_change_sigma_without_retracing_and_inference_stays_clean():
    x, _ = toy_data(16, SHAPE)
    baseline = _Probe(x)  # tf_keras itself may trace more than once on the first call
    _fit(_model(), [baseline])
    model = _model()
    dv = DeviceVariation(NOISY, schedule=ramp(2))
    probe = _Probe(x)
    probe.dv = dv
    _fit(model, [dv, probe])
    assert probe.traces == baseline.traces == [baseline.traces[0]] * 2
    assert probe.strengths[0] == 0.0 and probe.strengths[3] == 0.375 and probe.strengths[-1] == 0.875
    # training=False during training is clean: equal to the model's output after the hooks left.
    assert all(q.quantizer.cell_noise is None for q in tfxbar.quantized_kernels(model))
    np.testing.assert_array_equal(probe.predictions[-1], model(x, training=False).numpy())
    # A second fit without the callback traces a clean train function.
    before = model.get_weights()
    _fit(model, [], epochs=1)
    assert model.train_function is not probe.function
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_per_epoch_schedule_is_logged():
    history = _fit(_model(), [DeviceVariation(NOISY, schedule=per_epoch([0.5, 1.0]))])
    assert history.history["variation_strength"] == [0.5, 1.0]
    np.testing.assert_allclose(history.history["variation_lognormal_sigma"], [0.15, 0.3], rtol=1e-6)


class _CacheProbe(keras.callbacks.Callback):
    def __init__(self, dv: DeviceVariation) -> None:
        super().__init__()
        self.dv, self.pairs = dv, []

    def on_train_batch_end(self, batch, logs=None):
        state = self.dv.state
        cached = None if state.exp_sigma is None else float(state.exp_sigma.numpy())
        self.pairs.append((cached, float(state.lognormal_amplitude().numpy())))


def test_lognormal_cache_follows_per_epoch_sigma_and_is_skipped_for_per_batch_schedules():
    dv = DeviceVariation(NOISY, schedule=per_epoch([0.5, 1.0]))
    probe = _CacheProbe(dv)
    _fit(_model(), [dv, probe])
    assert sorted({cached for cached, _ in probe.pairs}) == pytest.approx([0.15, 0.3])
    assert all(cached == sigma for cached, sigma in probe.pairs)  # every step hit the cache
    dv = DeviceVariation(NOISY, schedule=ramp(2))
    probe = _CacheProbe(dv)
    _fit(_model(), [dv, probe])
    assert dv.state.exp_table is None and {cached for cached, _ in probe.pairs} == {None}


def test_checkpoints_hold_clean_weights_and_early_stopping_works(tmp_path):
    model = _model()
    weights = str(tmp_path / "w_{epoch}.h5")
    full = str(tmp_path / "m_{epoch}")  # SavedModel: traces the (hooked) call functions
    callbacks = [DeviceVariation(NOISY),
                 keras.callbacks.ModelCheckpoint(weights, save_weights_only=True),
                 keras.callbacks.ModelCheckpoint(full),
                 keras.callbacks.EarlyStopping("loss", patience=0, min_delta=10.0)]
    history = _fit(model, callbacks, epochs=3)
    assert len(history.history["loss"]) == 2  # stopped early
    saved = _model()
    saved.load_weights(str(tmp_path / "w_2.h5"))
    _assert_same_weights(saved, model)
    restored = keras.models.load_model(str(tmp_path / "m_2"))
    _assert_same_weights(restored, model)
    x, _ = toy_data(16, SHAPE)
    np.testing.assert_array_equal(restored(x, training=True), model(x, training=True))


def test_statistics_reach_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")  # tf.summary needs it; not a TensorFlow dependency
    tensorboard = keras.callbacks.TensorBoard(str(tmp_path))
    _fit(_model(), [DeviceVariation(NOISY), tensorboard], epochs=1)
    tags = set()
    for path in glob.glob(os.path.join(str(tmp_path), "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {"epoch_variation_lognormal_sigma", "epoch_variation_weight_error"} <= tags


def test_at_inference_perturbs_validation_and_is_removed_afterwards():
    x, y = toy_data(64, SHAPE)
    model = _model(lr=0.0)
    clean = model.evaluate(x, y, verbose=0)
    history = _fit(model, [DeviceVariation(NOISY.with_sigma(1.0), at_inference=True)], epochs=1,
                   validation_data=(x, y))
    assert history.history["val_loss"][0] != pytest.approx(clean[0], rel=1e-6)
    assert model.evaluate(x, y, verbose=0) == clean


class _Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch == 1:
            raise KeyboardInterrupt


def test_hooks_left_by_an_interrupted_fit_are_removed():
    """tf_keras skips on_train_end when fit raises: the next DeviceVariation fit, `remove()` and
    `remove_variation` each take the noise off again."""
    x, y = toy_data(64, SHAPE)
    model = _model(lr=0.0)
    clean = model.predict(x, verbose=0)
    kernels = tfxbar.quantized_kernels(model)
    for cleanup in ("next fit", "remove", "remove_variation"):
        callback = DeviceVariation(NOISY.with_sigma(1.0), at_inference=True)
        with pytest.raises(KeyboardInterrupt):
            _fit(model, [callback, _Interrupt()], epochs=1)
        assert all(k.quantizer.cell_noise is not None for k in kernels)
        assert not np.array_equal(model.predict(x, verbose=0), clean)   # still noisy
        if cleanup == "next fit":
            with pytest.warns(UserWarning, match="interrupted"):
                _fit(model, [DeviceVariation(NOISY.with_sigma(1.0))], epochs=1)
        elif cleanup == "remove":
            callback.remove()
            callback.remove()   # idempotent
        else:
            assert tfxbar.variation.remove_variation(model) == len(kernels)
            assert tfxbar.variation.remove_variation(model) == 0
        assert all(k.quantizer.cell_noise is None for k in kernels)
        np.testing.assert_array_equal(model.predict(x, verbose=0), clean)


def test_rejects_an_uncompiled_or_float_model():
    float_model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    float_model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="quantized"):
        float_model.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0,
                        callbacks=[DeviceVariation(NOISY)])
    with pytest.raises(TypeError):
        DeviceVariation(0.2)
