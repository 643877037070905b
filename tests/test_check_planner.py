"""plan_bitwidths (P5) and the A2Q-style L1-bounded weight quantizer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from export_toys import pixel_codes
from toys import tiny_cnn, toy_data

import tfxbar
from tfxbar.check import check_program


@pytest.mark.parametrize("accumulator_bits", [10, 12, 16, 20])
@pytest.mark.parametrize("objective", ["sum", "balanced"])
def test_plan_is_pareto_optimal_and_exact(accumulator_bits: int, objective: str) -> None:
    plan = tfxbar.plan_bitwidths(tiny_cnn(), accumulator_bits, objective=objective)
    assert [layer.fan_in for layer in plan.layers.values()] == [9, 100, 16]
    limit = 2 ** (accumulator_bits - 1) - 1
    for layer in plan.layers.values():
        feasible = [(n, m) for n, m in itertools.product(range(1, 9), range(2, 9))
                    if layer.fan_in * (2 ** n - 1) * (2 ** (m - 1) - 1) <= limit]
        for n, m in layer.pareto:
            assert (n, m) in feasible  # guaranteed to fit (the worst case is attained, so exact) …
            assert (n + 1, m) not in feasible or n == 8  # … and uses the accumulator fully
            assert not any(q[0] >= n and q[1] >= m and q != (n, m) for q in feasible)
        if not feasible:
            assert layer.input_bits is None
            continue
        score = (lambda p: p[0] + p[1]) if objective == "sum" else min
        assert score((layer.input_bits, layer.weight_bits)) == max(score(p) for p in feasible)
        assert layer.worst_case <= limit


def test_plan_worked_example_and_pins() -> None:
    plan = tfxbar.plan_bitwidths(tiny_cnn(), 12)
    dense = plan.layers["dense"]
    assert dense.pareto == [(4, 2), (2, 3), (1, 5)]
    assert (dense.input_bits, dense.weight_bits) == (4, 2)  # ties on N+M go to the balanced pair
    pinned = tfxbar.plan_bitwidths(tiny_cnn(), 16, input_bits={"conv2d_1": 8})
    assert pinned.layers["conv2d_1"].input_bits == 8 and pinned.layers["conv2d_1"].weight_bits == 4
    assert "pareto" in str(pinned)
    with pytest.raises(ValueError, match="not crossbar layers"):
        tfxbar.plan_bitwidths(tiny_cnn(), 16, input_bits={"nope": 3})
    with pytest.raises(ValueError, match="cannot fit"):
        tfxbar.plan_bitwidths(tiny_cnn(), 6).layer_specs()


def test_planned_model_passes_the_checker_at_that_width() -> None:
    accumulator_bits = 14
    model = tiny_cnn()
    plan = tfxbar.plan_bitwidths(model, accumulator_bits)
    x, _ = toy_data(128)
    qmodel = tfxbar.quantize_model(model, "w8a8", plan.layer_specs(), calibration_data=x)
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel, weight_mapping="differential").convert()
    report = check_program(program, accumulator_bits)
    assert report.ok, str(report)
    first = program.ops[0]["attrs"]
    assert first["input_bits"] == plan.layers["conv2d"].input_bits


def test_a2q_bound_and_quantizer_guarantee() -> None:
    assert tfxbar.a2q_l1_bound(3, 16) == (2 ** 15 - 1) / 8
    assert tfxbar.a2q_l1_bound(3, 16, input_signed=True) == (2 ** 15 - 1) / 4
    quantizer = tfxbar.check.A2QWeights(4, accumulator_bits=12, input_bits=4)
    limit = quantizer.l1_limit
    assert limit == (2 ** 11 - 1) // 16
    kernel = tf.Variable(np.random.default_rng(0).normal(0, 1, (3, 3, 8, 6)).astype(np.float32))
    with tf.GradientTape() as tape:
        out = quantizer(kernel, True, {})
        loss = tf.reduce_sum(out ** 2)
    assert tape.gradient(loss, kernel) is not None
    form = quantizer.integer_form(kernel.numpy())
    l1 = np.abs(form.codes).reshape(-1, 6).sum(axis=0)
    assert l1.max() <= limit and l1.max() > limit // 2  # binding, but never exceeded
    plain = tfxbar.quantizers.UniformWeights(4).integer_form(kernel.numpy())
    assert np.abs(plain.codes).reshape(-1, 6).sum(axis=0).max() > limit  # the constraint did work
    restored = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(quantizer))
    assert restored == quantizer and restored.l1_limit == limit


def test_a2q_model_fits_its_accumulator_for_any_input() -> None:
    accumulator_bits = 13
    model = tiny_cnn()
    plan = tfxbar.plan_bitwidths(model, accumulator_bits, input_bits={"conv2d": 8})
    specs = plan.layer_specs(a2q=True)
    specs = {name: tfxbar.LayerSpec(type(s.weights)(6, accumulator_bits, s.weights.input_bits), s.inputs)
             for name, s in specs.items()}  # 6-bit weights: only the L1 bound keeps them in range
    x, y = toy_data(128)
    qmodel = tfxbar.quantize_model(model, "w8a8", specs, calibration_data=x)
    qmodel.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qmodel.fit(x, y, epochs=1, batch_size=64, verbose=0)
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel, weight_mapping="differential").convert()
    codes, _ = pixel_codes(32)
    report = check_program(program, accumulator_bits, calibration=codes)
    assert report.ok, str(report)


def test_fan_in_counts_groups_depthwise_and_average_pooling_window_sums() -> None:
    """The worst case must be computed from what the accumulator really sums: a grouped kernel is
    already (kh, kw, C/groups, out); a depthwise kernel sums kh·kw; and an average pooling between a
    layer and its input quantizer feeds it integer window sums (pool area × the code range)."""
    inputs = keras.Input((8, 8, 16))
    h = keras.layers.Conv2D(8, 3, groups=4, name="grouped")(inputs)
    h = keras.layers.DepthwiseConv2D(3, name="depthwise")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    plan = tfxbar.plan_bitwidths(keras.Model(inputs, outputs), 16)
    assert plan.layers["grouped"].fan_in == 3 * 3 * 4
    assert plan.layers["depthwise"].fan_in == 3 * 3
    assert plan.layers["head"].fan_in == (2 * 2 * 8) * (2 * 2)   # 32 features, each a 2×2 window sum


def test_conv1d_fan_in_and_1d_average_pooling_window() -> None:
    """Conv1D sums k·C_in products; a 1-D average pooling before a layer multiplies its fan-in."""
    inputs = keras.Input((10, 3))
    x = keras.layers.Conv1D(4, 3, name="c1")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.AveragePooling1D(2)(x)
    x = keras.layers.Conv1D(5, 2, name="c2")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    plan = tfxbar.plan_bitwidths(model, 16)
    fan_in = {name: layer.fan_in for name, layer in plan.layers.items()}
    assert fan_in == {"c1": 9, "c2": 2 * 4 * 2, "fc": 5 * 3}
