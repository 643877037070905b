"""Every registered tfxbar object survives model.save / load_model in every tf_keras format."""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

import tfxbar
from tfxbar.quantizers import ClippedRound, UniformWeights, WeightQuantizer

REGISTERED = sorted(name for name in keras.utils.get_custom_objects() if name.startswith("tfxbar>"))
FORMATS = ["model.h5", "model.keras", "savedmodel"]


# Settings away from every default, so a from_config that dropped one would be caught.
NON_DEFAULT = {
    "BinaryWeights": {"per_channel": False, "cell_view": "offset", "clip_value": 0.5},
    "TernaryWeights": {"threshold": 0.5, "cell_view": "offset", "clip_value": 0.75},
    "UniformWeights": {"bits": 3, "cell_view": "offset", "scale_mode": "mse"},
    "BiasedWeights": {"bits": 3, "offset_frac_bits": None, "per_channel": False},
    "ClippedRound": {"bits": 5, "step": "calibrated", "init_step": 0.25},
    "InputBinarizer": {"rule": "median", "init_step": 0.5},
    "DeviceModel": {"lognormal_sigma": 0.1, "read_sigma": 0.02, "stuck_at_1": 0.01, "cell_bits": 2,
                    "drift_nu": 0.05},
}


def _make(cls: type):
    return cls(**NON_DEFAULT.get(cls.__name__, {}))


def _model_using(cls: type) -> keras.Model:
    """A small quantized model in which an instance of `cls` (non-default settings) does real work."""
    # The Conv2D reads the model input directly, so a QuantizeLayer (pixel codes) is saved too.
    float_model = keras.Sequential([
        keras.layers.Conv2D(2, 3, input_shape=(6, 6, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(8),
        keras.layers.ReLU(),
        keras.layers.Dense(3),
    ])
    if issubclass(cls, WeightQuantizer):
        specs = {"conv2d": tfxbar.LayerSpec(_make(cls), ClippedRound(8)),
                 "dense": tfxbar.LayerSpec(_make(cls), ClippedRound(8)),
                 "dense_1": tfxbar.LayerSpec(_make(cls), ClippedRound(3))}
    elif issubclass(cls, ClippedRound):
        specs = {"dense_1": tfxbar.LayerSpec(UniformWeights(4), _make(cls))}
    elif cls in (tfxbar.CrossbarConfig, tfxbar.OutputConfig):
        specs = {"dense_1": tfxbar.LayerSpec(UniformWeights(4), ClippedRound(3))}
    else:
        raise AssertionError(f"{cls.__name__} is registered but this test has no model for it: "
                             "add one so its save/load round trip is covered")
    model = tfxbar.quantize_model(float_model, "w8a8", specs)
    rng = np.random.default_rng(0)
    for variable in model.weights:  # move every weight off its initial value
        if variable.dtype.is_floating:
            variable.assign(variable + rng.normal(0, 0.05, variable.shape).astype(np.float32))
    return model


def _lives_in_models(cls: type) -> bool:
    return issubclass(cls, (WeightQuantizer, ClippedRound, tfxbar.CrossbarConfig, tfxbar.OutputConfig))


@pytest.mark.parametrize("name", REGISTERED)
def test_quantized_model_round_trips_in_every_format(name, tmp_path):
    cls = keras.utils.get_custom_objects()[name]
    if not _lives_in_models(cls):
        # Not part of a model (e.g. a device model): its Keras config must round-trip.
        obj = _make(cls)
        restored = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(obj))
        assert type(restored) is cls and restored.get_config() == obj.get_config()
        assert restored.get_config() != cls().get_config() or cls.__name__ not in NON_DEFAULT
        return
    model = _model_using(cls)
    used = {type(q) for q in [*(k.quantizer for k in tfxbar.quantized_kernels(model)),
                              *(o.quantizer for o in tfxbar.quantized_outputs(model))]}
    assert cls in used or cls in (tfxbar.CrossbarConfig, tfxbar.OutputConfig)
    x = np.random.default_rng(1).uniform(0, 1, (16, 6, 6, 1)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    for fmt in FORMATS:
        path = str(tmp_path / fmt)
        model.save(path)
        loaded = keras.models.load_model(path)  # no custom_objects, no quantize_scope
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected, err_msg=fmt)
        # Every quantizer comes back with the settings it was saved with.
        assert [k.quantizer for k in tfxbar.quantized_kernels(loaded)] == \
            [k.quantizer for k in tfxbar.quantized_kernels(model)], fmt
        assert [o.quantizer for o in tfxbar.quantized_outputs(loaded)] == \
            [o.quantizer for o in tfxbar.quantized_outputs(model)], fmt
        forms = [k.integer_form() for k in tfxbar.quantized_kernels(loaded)]
        for before, after in zip((k.integer_form() for k in tfxbar.quantized_kernels(model)),
                                 forms, strict=True):
            np.testing.assert_array_equal(before.codes, after.codes)
            np.testing.assert_array_equal(before.scale, after.scale)


def test_every_public_quantizer_is_registered():
    public = [getattr(tfxbar.quantizers, n) for n in tfxbar.quantizers.__all__]
    classes = [c for c in public if isinstance(c, type) and hasattr(c, "get_config")
               and not getattr(c, "__abstractmethods__", None)]
    assert classes
    for cls in classes:
        assert f"tfxbar>{cls.__name__}" in REGISTERED, cls
