"""Configs, CrossbarScheme, quantize_model, calibrate: through tfmot's own entry points too."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from toys import tiny_cnn, toy_data

import tfxbar
from tfxbar.export.handlers import HANDLERS
from tfxbar.quantizers import BinaryWeights, ClippedRound, InputBinarizer, UniformWeights

QK = tfmot.quantization.keras


def _layer_types(model: keras.Model) -> dict[str, str]:
    return {layer.name: type(layer).__name__ for layer in model.layers}


@pytest.mark.parametrize("preset", sorted(tfxbar.PRESETS))
def test_every_preset_quantizes_every_crossbar_layer(preset):
    x, _ = toy_data(32)
    model = tfxbar.quantize_model(tiny_cnn(), preset, calibration_data=x)
    kernels = tfxbar.quantized_kernels(model)
    assert [k.layer.name for k in kernels] == ["conv2d", "dense", "dense_1"]
    spec = tfxbar.PRESETS[preset]
    assert type(kernels[0].quantizer) is type(spec.conv.weights)
    assert type(kernels[1].quantizer) is type(spec.dense.weights)
    # Each crossbar layer reads integer codes: the model input, Flatten and the second ReLU.
    outputs = {o.layer.name: o.quantizer for o in tfxbar.quantized_outputs(model)}
    assert set(outputs) == {"conv2d_input_codes", "quant_flatten", "quant_re_lu_1"}
    assert outputs["conv2d_input_codes"] == tfxbar.scheme.pixel_input()
    assert type(outputs["quant_flatten"]) is type(spec.dense.inputs)
    # BN stays a BatchNormalization layer while training (the exporter folds it).
    assert _layer_types(model)["batch_normalization"] == "BatchNormalization"
    assert model.predict(x[:4], verbose=0).shape == (4, 4)


def _transpose_model() -> keras.Model:
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2DTranspose(2, 3, name="up_a")(inputs)
    h = keras.layers.Conv2DTranspose(2, 3, name="up_b")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="dense")(h))


def test_plan_reports_unsupported_layers_and_strict_raises():
    model = _transpose_model()
    plan = tfxbar.plan_quantization(model, "w4a3")
    assert plan.float_layers == ["up_a", "up_b"]
    report = str(plan)
    assert "Conv2DTranspose has no crossbar mapping" in report
    assert "NOT quantized (left float): up_a, up_b" in report
    # The exporter has no Conv2DTranspose handler either: reported before any training.
    assert set(plan.unconvertible) == {"up_a", "up_b"}
    assert "no export handler" in plan.unconvertible["up_a"]
    with pytest.raises(ValueError, match="(?s)up_a.*up_b.*converter would reject"):
        tfxbar.quantize_model(model, "w4a3", strict=True)
    with pytest.warns(UserWarning) as caught:
        quantized = tfxbar.quantize_model(model, "w4a3")
    # One warning names every float layer with its reason.
    messages = [str(w.message) for w in caught if "left float" in str(w.message)]
    assert len(messages) == 1
    assert "up_a (Conv2DTranspose): Conv2DTranspose has no crossbar mapping" in messages[0]
    assert "up_b (Conv2DTranspose)" in messages[0]
    assert [k.layer.name for k in tfxbar.quantized_kernels(quantized)] == ["dense"]


def _permute_model() -> keras.Model:
    """Dense → ReLU → Permute → Dense: a weightless layer type with no export handler."""
    inputs = keras.Input((6,))
    h = keras.layers.Dense(4, name="hidden")(inputs)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Permute((1,), name="permute")(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(h))


def test_layer_without_export_handler_is_found_from_the_handler_registry(monkeypatch):
    plan = tfxbar.plan_quantization(_permute_model(), "w4a3")
    assert not plan.float_layers  # no weights: nothing left float, yet not deployable
    assert list(plan.unconvertible) == ["permute"]
    assert "layer 'permute' (Permute): no export handler" in plan.unconvertible["permute"]
    assert "register_handler" in plan.unconvertible["permute"]
    with pytest.warns(UserWarning, match="converter would reject.*\n.*'permute'"):
        tfxbar.quantize_model(_permute_model(), "w4a3")
    with pytest.raises(ValueError, match="'permute' \\(Permute\\)"):
        tfxbar.quantize_model(_permute_model(), "w4a3", strict=True)
    # A handler registered for the type is found: the plan asks the registry, not a list.
    monkeypatch.setitem(HANDLERS, keras.layers.Permute, lambda layer, ctx: None)
    assert not tfxbar.plan_quantization(_permute_model(), "w4a3").unconvertible


def test_strict_runs_the_converter_lowering_and_reports_its_error():
    # Every layer type has a handler, but the Dense handler refuses a tanh activation: only
    # the converter's lowering of the quantized model sees that.
    inputs = keras.Input((6,))
    h = keras.layers.Dense(4, activation="tanh", name="squash")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    assert not tfxbar.plan_quantization(model, "w4a3").unconvertible
    with pytest.raises(ValueError, match="(?s)converter would reject.*'squash'.*tanh"):
        tfxbar.quantize_model(model, "w4a3", strict=True)


def test_crossbar_with_float_weights_or_float_input_is_unconvertible():
    spec = {"out": tfxbar.LayerSpec(UniformWeights(4), None),
            "hidden": tfxbar.LayerSpec(None, ClippedRound(4))}
    plan = tfxbar.plan_quantization(_permute_model(), "w4a3", spec)
    assert "its weights stay float" in plan.unconvertible["hidden"]
    assert "its input stays float" in plan.unconvertible["out"]


def test_conv1d_is_a_crossbar_layer():
    inputs = keras.Input((8, 3))
    h = keras.layers.Conv1D(4, 3, name="conv")(inputs)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    plan = tfxbar.plan_quantization(model, "w4a3")
    assert not plan.float_layers
    assert plan.input_quantizer == tfxbar.scheme.pixel_input()
    # Quantized before the 1-D average pooling, like the 2-D case.
    assert "before average pooling" in " ".join(plan.layers["re_lu"].notes)
    x = np.random.default_rng(0).uniform(0, 1, (4, 8, 3)).astype(np.float32)
    quantized = tfxbar.quantize_model(model, "w4a3", calibration_data=x)
    kernels = {k.layer.name: k for k in tfxbar.quantized_kernels(quantized)}
    assert set(kernels) == {"conv", "out"}
    form = kernels["conv"].integer_form()
    assert form.codes.shape == (3, 3, 4) and np.abs(form.codes).max() <= 7


def test_separable_conv_is_split_into_depthwise_and_pointwise_with_the_same_function():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.SeparableConv2D(6, 3, strides=2, padding="same", depth_multiplier=2,
                                     activation="relu", name="sep")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(h)))
    rng = np.random.default_rng(0)
    for weight in model.weights:  # a nonzero bias too
        weight.assign(rng.normal(0, 0.5, weight.shape))
    x = rng.uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    split, _ = tfxbar.tfmot_api.ModelTransformer(model, [tfxbar.scheme.SplitSeparableConv()]).transform()
    assert [type(layer).__name__ for layer in split.layers[1:3]] == ["DepthwiseConv2D", "Conv2D"]
    assert [layer.name for layer in split.layers[1:3]] == ["sep_depthwise", "sep"]
    np.testing.assert_allclose(split.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    # quantize_model splits it too: both halves are crossbars, the pointwise reads codes.
    quantized = tfxbar.quantize_model(model, "w8a8", calibration_data=x, strict=True)
    assert [k.layer.name for k in tfxbar.quantized_kernels(quantized)] == ["sep_depthwise", "sep", "out"]
    outputs = {o.layer.name for o in tfxbar.quantized_outputs(quantized)}
    assert "quant_sep_depthwise" in outputs
    # ... and it deploys: the program's top-1 is the quantized model's.
    program = tfxbar.CrossbarConverter.from_keras_model(quantized).convert()
    predicted = tfxbar.Interpreter(program).predict(program.quantize_input(x))
    np.testing.assert_array_equal(predicted, np.argmax(quantized.predict(x, verbose=0), 1))


def test_layer_specs_override_one_layer_and_unknown_names_fail():
    first = tfxbar.LayerSpec(UniformWeights(8), ClippedRound(8))
    plan = tfxbar.plan_quantization(tiny_cnn(), "w2a2-biased", {"dense_1": first})
    assert plan.layers["dense_1"].weights == UniformWeights(8)
    assert plan.layers["re_lu_1"].output == ClippedRound(8)
    assert plan.layers["dense"].weights.num_bits == 2
    with pytest.raises(ValueError, match="not in the model.*dense_9"):
        tfxbar.plan_quantization(tiny_cnn(), "w4a3", {"dense_9": first})
    # A spec on a layer without crossbar weights would be dropped silently: refused, with the way out.
    model = tiny_cnn()
    relu = next(layer.name for layer in model.layers if isinstance(layer, keras.layers.ReLU))
    with pytest.raises(ValueError, match=rf"not crossbar layers: {relu} \(ReLU\).*`inputs` quantizer"):
        tfxbar.plan_quantization(model, "w4a3", {relu: first})
    with pytest.raises(ValueError, match="unknown preset"):
        tfxbar.plan_quantization(tiny_cnn(), "w3a3")


def test_configs_work_with_stock_tfmot_annotate_and_apply():
    model = keras.Sequential([
        keras.layers.Flatten(input_shape=(4, 4)),
        QK.quantize_annotate_layer(keras.layers.Dense(6), tfxbar.CrossbarConfig(BinaryWeights())),
        keras.layers.ReLU(),
        QK.quantize_annotate_layer(keras.layers.Dense(3),
                                   tfxbar.CrossbarConfig(UniformWeights(4), ClippedRound(3))),
    ])
    quantized = QK.quantize_apply(model)  # tfmot's default scheme, our configs
    kernels = {k.layer.name: k for k in tfxbar.quantized_kernels(quantized)}
    assert set(kernels) == {"dense", "dense_1"}
    assert np.unique(np.abs(kernels["dense"].fake_quantized()).round(6), axis=0).shape[0] == 1
    out = quantized.predict(np.random.rand(5, 4, 4), verbose=0)
    step = tfxbar.quantized_outputs(quantized)[-1].form().step
    np.testing.assert_allclose(out / step, np.clip(np.round(out / step), 0, 7), atol=1e-4)


def test_scheme_with_quantize_apply_keeps_batch_norm_and_skips_8bit_transforms():
    annotated = QK.quantize_annotate_model(tiny_cnn())
    scheme = tfxbar.CrossbarScheme("w4a3")
    quantized = QK.quantize_apply(annotated, scheme)
    types = _layer_types(quantized)
    assert types["batch_normalization"] == "BatchNormalization"
    assert "QuantizeLayer" in types.values()
    assert scheme.plan.layers["conv2d"].weights == UniformWeights(4)
    default = QK.quantize_apply(QK.quantize_annotate_model(tiny_cnn()))
    assert "batch_normalization" not in _layer_types(default)  # tfmot folds it; we do not


def test_keras3_models_are_refused_with_a_pointer_to_tf_keras():
    import keras as keras3

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    for call in (lambda: tfxbar.quantize_model(model, "w4a3"),
                 lambda: tfxbar.plan_quantization(model, "w4a3"),
                 lambda: tfxbar.quantized_kernels(model)):
        with pytest.raises(TypeError, match="import tf_keras as keras"):
            call()


def test_calibrate_sets_binarizer_threshold_from_the_dense_input_distribution():
    x, _ = toy_data(128)
    model = tfxbar.quantize_model(tiny_cnn(), "binary-dense")
    chosen = tfxbar.calibrate(model, x)
    assert set(chosen) == {"quant_flatten", "quant_re_lu_1"}  # the fixed pixel step is left alone
    flatten = next(o for o in tfxbar.quantized_outputs(model) if o.layer.name == "quant_flatten")
    entering = keras.Model(model.inputs, flatten.layer.input).predict(x, verbose=0)
    expected = InputBinarizer().calibrated_step(entering.reshape(len(x), -1))
    assert float(flatten.form().step) == pytest.approx(expected, rel=1e-5)


def test_calibrate_sees_the_quantized_kernel_of_a_dense_layer_with_a_relu_activation():
    """The quantizer on a crossbar layer's own output (Dense(activation="relu")) is calibrated on
    that layer's output with its current quantized kernel."""
    x, _ = toy_data(64)
    mlp = keras.Sequential([keras.layers.Flatten(input_shape=x.shape[1:]),
                            keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
    model = tfxbar.quantize_model(mlp, "w4a3", calibration_data=x)   # raised out-of-scope tensors
    dense = next(o for o in tfxbar.quantized_outputs(model) if o.layer.name == "quant_dense")
    entering = keras.Model(model.inputs, dense.layer.input).predict(x, verbose=0)
    kernel = next(k for k in tfxbar.quantized_kernels(model) if k.layer.name == "dense")
    out = np.maximum(entering @ kernel.fake_quantized() + dense.layer.layer.bias.numpy(), 0)
    assert float(dense.form().step) == pytest.approx(float(dense.quantizer.calibrated_step(out)), rel=1e-5)
    step = float(dense.form().step)
    for variable in dense.layer.trainable_weights:
        if "kernel" in variable.name:
            variable.assign(variable * 10.0)
    assert tfxbar.calibrate(model, x)["quant_dense"] == pytest.approx(10 * step, rel=0.05)


def test_missing_calibration_data_for_binarizer_warns():
    with pytest.warns(UserWarning, match="calibration_data") as record:
        tfxbar.quantize_model(tiny_cnn(), "binary-dense")
    assert any("tfxbar.calibrate" in str(w.message) for w in record)
    # ... also when the calibrated quantizer is the model input's.
    model = keras.Sequential([keras.layers.Dense(3, input_shape=(5,)), keras.layers.Dense(2)])
    first = model.layers[0].name
    spec = tfxbar.LayerSpec(UniformWeights(4), ClippedRound(4, "calibrated"))
    with pytest.warns(UserWarning, match="calibration_data"):
        tfxbar.quantize_model(model, "w4a3", {first: spec})


@pytest.mark.parametrize("preset", ["w4a3", "binary-dense", "w2a2-biased", "binary-mlp"])
def test_training_a_tiny_quantized_model_lowers_the_loss(preset):
    x, y = toy_data(256)
    model = tfxbar.quantize_model(tiny_cnn(), preset, calibration_data=x)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    before = model.evaluate(x, y, verbose=0)[0]
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    after, accuracy = model.evaluate(x, y, verbose=0)
    assert after < 0.8 * before
    assert accuracy > 0.5  # four classes: chance is 0.25


def _gap_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.1)(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_input_quantizer_goes_before_average_pooling_and_the_model_exports():
    plan = tfxbar.plan_quantization(_gap_model(), "w4a3")
    assert plan.layers["re_lu"].output == ClippedRound(3)
    assert "before average pooling" in " ".join(plan.layers["re_lu"].notes)
    assert plan.layers["global_average_pooling2d"].output is None
    assert plan.layers["dropout"].output is None
    x = np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)
    model = tfxbar.quantize_model(_gap_model(), "w4a3", calibration_data=x)
    program = tfxbar.CrossbarConverter.from_keras_model(model).convert()
    predicted = tfxbar.Interpreter(program).predict(program.quantize_input(x))
    np.testing.assert_array_equal(predicted, np.argmax(model.predict(x, verbose=0), 1))


def test_user_output_config_on_a_non_crossbar_layer_is_kept():
    custom = tfxbar.OutputConfig(ClippedRound(5, step="fixed", init_step=0.1))
    annotated = keras.Sequential([
        QK.quantize_annotate_layer(keras.layers.Dense(8, input_shape=(6,))),
        QK.quantize_annotate_layer(keras.layers.ReLU(name="act"), custom),
        QK.quantize_annotate_layer(keras.layers.Dense(2, name="out")),
    ])
    scheme = tfxbar.CrossbarScheme("w4a3")
    quantized = QK.quantize_apply(annotated, scheme)
    outputs = {o.layer.name: o.quantizer for o in tfxbar.quantized_outputs(quantized)}
    assert outputs["quant_act"] == ClippedRound(5, step="fixed", init_step=0.1)
    assert any("already has" in note for note in scheme.plan.layers["out"].notes)


def test_a2q_model_loads_after_import_tfxbar_alone(tmp_path):
    # A fresh interpreter: in this one, tfxbar.check.a2q is already imported.
    from tfxbar.check import A2QWeights

    spec = {"dense": tfxbar.LayerSpec(A2QWeights(4, 12, 8), ClippedRound(8))}
    model = tfxbar.quantize_model(tiny_cnn(), "w4a3", spec)
    path = tmp_path / "a2q.keras"
    model.save(path)
    code = ("import tf_keras as keras, tfxbar; "
            f"m = keras.models.load_model({str(path)!r}); "
            "print(type(tfxbar.quantized_kernels(m)[1].quantizer).__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("A2QWeights")
