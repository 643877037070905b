"""Weight and activation quantizers: levels, integer forms, straight-through gradients."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfxbar.quantizers import (
    BiasedWeights,
    BinaryWeights,
    ClippedRound,
    InputBinarizer,
    TernaryWeights,
    UniformWeights,
)

WEIGHT_QUANTIZERS = [
    BinaryWeights(),
    BinaryWeights(cell_view="offset"),
    BinaryWeights(per_channel=False),
    TernaryWeights(),
    TernaryWeights(cell_view="offset", threshold=0.5),
    *[UniformWeights(k) for k in range(2, 9)],
    UniformWeights(3, cell_view="offset", scale_mode="mse"),
    *[BiasedWeights(k) for k in range(1, 5)],
    BiasedWeights(2, offset_frac_bits=None, per_channel=False),
]
SHAPES = [((20, 6), -1), ((3, 3, 2, 5), -1), ((3, 3, 4, 1), -2)]


class _Owner(keras.layers.Layer):
    """Stands in for the QuantizeWrapper: owns quantizer variables, wraps a layer with a kernel."""

    def __init__(self, kernel: np.ndarray) -> None:
        super().__init__()
        self.layer = keras.layers.Layer()
        self.layer.kernel = tf.Variable(kernel)


def _build(quantizer, kernel: np.ndarray) -> dict:
    return quantizer.build(tf.TensorShape(kernel.shape), "kernel", _Owner(kernel))


def _fresh(quantizer, axis: int):
    clone = type(quantizer).from_config(quantizer.get_config())
    clone.channel_axis = axis
    return clone


@pytest.mark.parametrize("shape,axis", SHAPES, ids=["dense", "conv", "depthwise"])
@pytest.mark.parametrize("quantizer", WEIGHT_QUANTIZERS, ids=repr)
def test_integer_form_reproduces_fake_quantized_weights_exactly(quantizer, shape, axis):
    q = _fresh(quantizer, axis)
    kernel = np.random.default_rng(1).normal(0, 0.2, shape).astype(np.float32)
    variables = _build(q, kernel)
    fake = q(tf.constant(kernel), True, variables).numpy()
    form = q.integer_form(kernel, {k: v.numpy() for k, v in variables.items()})
    np.testing.assert_array_equal(form.dequantize(), fake)  # w == s·(c − b), bit for bit
    # ... also in the graph fit/predict run, which Grappler rewrites (a variable: no folding).
    variable = tf.Variable(kernel)
    graph = tf.function(lambda: q(variable, False, variables))().numpy()
    np.testing.assert_array_equal(form.dequantize(), graph)
    assert set(np.unique(form.codes)) <= set(q.levels)
    assert form.cell_view == q.cell_view
    channels = shape[axis]
    per_channel_params = form.scale.size if q.per_channel else channels
    assert per_channel_params == channels


def test_binary_levels_are_plus_minus_mean_abs_per_channel():
    kernel = np.float32([[0.5, -0.1], [-0.3, 0.3], [0.1, 0.2]])
    w = BinaryWeights()(tf.constant(kernel), True, {}).numpy()
    alpha = np.abs(kernel).mean(axis=0)
    np.testing.assert_allclose(np.abs(w), np.broadcast_to(alpha, w.shape), rtol=1e-6)
    np.testing.assert_array_equal(np.sign(w), np.where(kernel >= 0, 1, -1))
    offset = BinaryWeights(cell_view="offset").integer_form(kernel)
    assert offset.codes.min() == 0 and offset.codes.max() == 1
    np.testing.assert_array_equal(offset.offset, 0.5)
    assert offset.cell_bits == 1


def test_ternary_zeroes_weights_below_threshold():
    kernel = np.float32([[1.0], [0.05], [-0.9], [-0.1], [0.6]])
    form = TernaryWeights(threshold=0.7).integer_form(kernel)
    delta = 0.7 * np.abs(kernel).mean()
    expected = np.sign(kernel) * (np.abs(kernel) > delta)
    np.testing.assert_array_equal(form.codes, expected.astype(np.int32))
    alpha = np.abs(kernel)[np.abs(kernel) > delta].mean()
    np.testing.assert_allclose(form.scale.ravel(), [alpha], rtol=1e-6)


def test_differential_cells_are_non_negative_and_rebuild_codes():
    kernel = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    form = UniformWeights(4).integer_form(kernel)
    plus, minus = form.cells
    assert plus.min() >= 0 and minus.min() >= 0
    assert not np.any((plus > 0) & (minus > 0))
    np.testing.assert_array_equal(plus - minus, form.codes)
    assert form.cell_bits == 3  # 4-bit signed codes: two 3-bit cells


def test_uniform_max_scale_maps_largest_weight_to_top_code():
    kernel = np.float32([[0.7, -0.2], [-0.35, 0.4]])
    form = UniformWeights(4).integer_form(kernel)
    assert np.abs(form.codes).max(axis=0).tolist() == [7, 7]


def test_uniform_mse_scale_beats_max_scale_at_two_bits():
    kernel = np.random.default_rng(0).normal(size=(512, 4)).astype(np.float32)

    def error(mode: str) -> float:
        q = UniformWeights(2, scale_mode=mode)
        return float(np.mean((q(tf.constant(kernel), True, {}).numpy() - kernel) ** 2))

    assert error("mse") < 0.8 * error("max")


def test_biased_codes_fit_one_cell_and_offset_on_grid():
    kernel = np.random.default_rng(2).normal(0, 0.1, (30, 4)).astype(np.float32)
    q = BiasedWeights(3)
    variables = _build(q, kernel)
    variables["offset"].assign(variables["offset"] + 0.01234)
    assert set(variables) == {"log_scale", "offset"}
    form = q.integer_form(kernel, {k: v.numpy() for k, v in variables.items()})
    assert form.codes.min() >= 0 and form.codes.max() <= 7
    assert form.cells[0] is form.codes
    np.testing.assert_array_equal(form.offset * 256, np.round(form.offset * 256))


def test_biased_initialisation_from_kernel_fits_it():
    kernel = np.random.default_rng(3).normal(0, 0.05, (64, 8)).astype(np.float32)
    q = BiasedWeights(2)
    variables = _build(q, kernel)
    fake = q(tf.constant(kernel), True, variables).numpy()
    # A well-placed 4-level grid keeps the error far below the weights' own variance.
    assert np.mean((fake - kernel) ** 2) < 0.2 * np.var(kernel)
    np.testing.assert_allclose(variables["offset"].numpy(), 1.5)


def test_biased_scale_and_offset_are_trained():
    kernel = tf.Variable(np.random.default_rng(4).normal(0, 0.1, (16, 3)).astype(np.float32))
    q = BiasedWeights(2)
    variables = _build(q, kernel.numpy())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(kernel, True, variables) ** 3)
    grads = tape.gradient(loss, [kernel, variables["log_scale"], variables["offset"]])
    assert all(g is not None for g in grads)
    assert float(tf.reduce_sum(tf.abs(grads[0]))) > 0
    assert float(tf.reduce_sum(tf.abs(grads[1]))) > 0
    # The offset learns from clipped weights (LSQ+): push a few beyond the grid.
    stretch = np.where(np.arange(16) % 5 == 0, 20.0, 1.0)[:, None].astype(np.float32)
    outliers = tf.Variable(kernel.numpy() * stretch)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(outliers, True, variables) ** 3)
    assert float(tf.reduce_sum(tf.abs(tape.gradient(loss, variables["offset"])))) > 0
    with pytest.raises(ValueError, match="trained variables"):
        q.integer_form(kernel.numpy())


def test_binary_straight_through_gradient_is_clipped():
    w = tf.Variable([[0.5], [-2.0], [0.9], [1.5]])
    with tf.GradientTape() as tape:
        out = BinaryWeights(per_channel=False)(w, True, {})
    grad = tape.gradient(out, w).numpy().ravel()
    assert grad[0] > 0 and grad[2] > 0
    assert grad[1] == 0 and grad[3] == 0


def test_uniform_gradient_is_identity():
    w = tf.Variable(np.random.default_rng(5).normal(size=(10, 2)).astype(np.float32))
    with tf.GradientTape() as tape:
        out = UniformWeights(4)(w, True, {})
    np.testing.assert_allclose(tape.gradient(out, w).numpy(), 1.0)


@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_clipped_round_forward_matches_its_integer_form(bits):
    q = ClippedRound(bits, step="learned", init_step=0.25)
    owner = keras.layers.Layer()
    variables = q.build(tf.TensorShape([None, 64]), "out", owner)
    x = np.random.default_rng(bits).normal(0.5, 1.0, (4, 64)).astype(np.float32)
    x[0, :4] = [0.125, 0.375, -0.3, 1e6]  # ties (half to even), negative, saturating
    y = q(tf.constant(x), True, variables).numpy()
    form = q.form(variables)
    codes = form.codes(x)
    np.testing.assert_array_equal(codes * form.step, y)
    assert codes.min() == 0 and codes.max() == 2 ** bits - 1
    assert codes[0, 0] == 0  # 0.125 / 0.25 = 0.5 rounds half to even → 0
    assert codes[0, 1] == min(2, 2 ** bits - 1)  # 1.5 → 2
    assert codes[0, 2] == 0 and codes[0, 3] == 2 ** bits - 1  # clipped at both ends


def test_clipped_round_gradients_pass_inside_range_and_train_the_step():
    q = ClippedRound(2, step="learned", init_step=0.5)
    variables = q.build(tf.TensorShape([None, 4]), "out", keras.layers.Layer())
    x = tf.Variable([[-1.0, 0.3, 1.2, 5.0]])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(q(x, True, variables))
    gx, gs = tape.gradient(y, [x, variables["log_step"]])
    np.testing.assert_array_equal(gx.numpy(), [[0.0, 1.0, 1.0, 0.0]])
    assert gs is not None and float(gs) != 0.0
    fixed = ClippedRound(8, step="fixed", init_step=1 / 255)
    fixed_vars = fixed.build(tf.TensorShape([None, 4]), "in", keras.layers.Layer())
    assert not fixed_vars["step"].trainable


def test_input_binarizer_mse_threshold_is_the_lloyd_max_optimum():
    x = np.random.default_rng(0).exponential(1.0, 20000).astype(np.float32)
    x[:8000] = 0.0  # ReLU's point mass at zero
    q = InputBinarizer()
    step = q.calibrated_step(x)
    # Brute force over thresholds with the level set to the conditional mean (the optimum).
    best = min(
        (np.mean((np.where(x > t, x[x > t].mean(), 0.0) - x) ** 2), t)
        for t in np.linspace(0.05, 4, 400))
    assert abs(step / 2 - best[1]) < 0.05
    assert InputBinarizer("mean").calibrated_step(x) == pytest.approx(2 * x.mean(), rel=1e-5)
    assert InputBinarizer("median").calibrated_step(x) == pytest.approx(
        2 * np.median(x[x > 0]), rel=1e-5)


@pytest.mark.parametrize("make", [
    lambda: UniformWeights(9), lambda: UniformWeights(1), lambda: BiasedWeights(5),
    lambda: BinaryWeights(cell_view="biased"), lambda: TernaryWeights(threshold=0),
    lambda: ClippedRound(0), lambda: ClippedRound(4, step="ema"), lambda: InputBinarizer("max"),
    lambda: UniformWeights(4, scale_mode="p99"),
])
def test_invalid_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make()
