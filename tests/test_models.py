"""Reference networks: shapes, sizes, and that quantize_model plans them (strict: nothing left
float, nothing the converter rejects) and trains them (tiny widths)."""

from __future__ import annotations

import numpy as np
import tf_keras as keras

import tfxbar


def _count(model: keras.Model, kind: type) -> int:
    return sum(type(layer) is kind for layer in model.layers)


def _one_step(model: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def _data(n: int = 8, shape: tuple[int, ...] = (16, 16, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, *shape)).astype(np.float32), rng.integers(0, 10, n)


def test_resnet20_has_he_et_al_structure_and_size():
    model = tfxbar.models.resnet20()
    # He et al. report 0.27 M parameters for ResNet-20.
    assert 0.26e6 < model.count_params() < 0.28e6
    assert model.output_shape == (None, 10)
    # 1 stem + 9 blocks × 2 convs + 2 projection shortcuts (where 16→32 and 32→64 channels).
    assert _count(model, keras.layers.Conv2D) == 21
    assert _count(model, keras.layers.Add) == 9
    projections = [layer.name for layer in model.layers if layer.name.endswith("_proj")]
    assert projections == ["s1b0_proj", "s2b0_proj"]
    assert all(not layer.use_bias for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert model.get_layer("s2b2_out").output_shape == (None, 8, 8, 64)
    assert tfxbar.models.resnet20(blocks=5).name == "resnet32"


def test_resnet_quantizes_every_conv_and_quantizes_block_outputs_once():
    model = tfxbar.models.resnet20((4, 8), blocks=1, input_shape=(16, 16, 3))
    plan = tfxbar.plan_quantization(model, "w4a3")
    assert not plan.float_layers
    # The first stage's output feeds both the next block's conv and its projection shortcut:
    # one quantizer on the ReLU after the Add serves both crossbars.
    assert plan.layers["s0b0_out"].output is not None
    notes = " ".join(plan.layers["s0b0_out"].notes)
    assert "s1b0_conv1" in notes
    # The residual branch (conv → BN) enters the Add unquantized: the converter adds accumulators.
    assert plan.layers["s1b0_bn2"].output is None and plan.layers["s1b0_proj_bn"].output is None
    x, y = _data()
    qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=x, strict=True)
    crossbars = [layer.name for layer in model.layers
                 if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)]
    assert sorted(k.layer.name for k in tfxbar.quantized_kernels(qmodel)) == sorted(crossbars)
    assert qmodel.predict(x, verbose=0).shape == (8, 10)
    _one_step(qmodel, x, y)


def test_mobilenet_small_depthwise_is_quantized_with_codes_padded():
    model = tfxbar.models.mobilenet_small(((8, 1), (16, 2)), stem=4, input_shape=(16, 16, 3))
    assert _count(model, keras.layers.DepthwiseConv2D) == 2
    assert model.get_layer("b1_dw").output_shape == (None, 8, 8, 4 * 2)
    plan = tfxbar.plan_quantization(model, "w4a3")
    assert not plan.float_layers
    assert plan.layers["b1_dw"].weights is not None
    # The quantizer of the strided depthwise's input sits before the zero padding (0 pads as code 0).
    assert plan.layers["b0_pw_relu"].output is not None
    assert plan.layers["b1_pad"].output is None
    x, y = _data()
    qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=x, strict=True)
    assert {"b0_dw", "b1_dw"} <= {k.layer.name for k in tfxbar.quantized_kernels(qmodel)}
    _one_step(qmodel, x, y)


def test_mobilenet_v2_variant_adds_residuals_where_shapes_match():
    blocks = ((8, 1), (8, 1), (16, 2))
    model = tfxbar.models.mobilenet_small(blocks, stem=8, inverted_residual=True, expansion=2,
                                          input_shape=(16, 16, 3))
    # Stride 1 and 8 → 8 channels: blocks 0 and 1; block 2 changes both.
    adds = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert adds == ["b0_add", "b1_add"]
    assert model.get_layer("b0_expand_conv").output_shape[-1] == 16
    x, y = _data()
    qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=x, strict=True)
    assert not tfxbar.plan_quantization(model, "w4a3").float_layers
    _one_step(qmodel, x, y)
