"""Device models and the in-graph cell noise: mapping codes onto cells, exact zero-noise path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfxbar.quantizers import BiasedWeights, BinaryWeights, TernaryWeights, UniformWeights
from tfxbar.variation import CellNoise, DeviceModel, VariationState

QUANTIZERS = [BinaryWeights(), BinaryWeights(cell_view="offset"), TernaryWeights(),
              UniformWeights(4), UniformWeights(3, cell_view="offset"), BiasedWeights(2)]
EVERYTHING = DeviceModel(lognormal_sigma=0.3, additive_sigma=0.05, read_sigma=0.02, stuck_at_0=0.05,
                         stuck_at_1=0.05, drift_nu=0.05, drift_nu_std=0.02, drift_time=100.0)


class _Owner(keras.layers.Layer):
    def __init__(self, kernel: np.ndarray) -> None:
        super().__init__()
        self.layer = keras.layers.Layer()
        self.layer.kernel = tf.Variable(kernel)


def _setup(quantizer, shape=(64, 8), seed=0):
    q = type(quantizer).from_config(quantizer.get_config())
    kernel = np.random.default_rng(seed).normal(0, 0.2, shape).astype(np.float32)
    variables = q.build(tf.TensorShape(shape), "kernel", _Owner(kernel))
    return q, tf.Variable(kernel), variables


def _noisy(q, kernel, variables, device, state=None, training=True, kernel_id=0):
    state = state or VariationState(device, seed=3)
    q.cell_noise = CellNoise(state, device, kernel_id, at_inference=True)
    try:
        return q(kernel, training, variables).numpy()
    finally:
        q.cell_noise = None


# -- device model --------------------------------------------------------------------------------
def test_device_model_round_trips_through_dict_and_keras_serialization():
    device = DeviceModel(lognormal_sigma=0.1, stuck_at_1=0.02, on_off_ratio=math.inf, slice_bits=2)
    assert DeviceModel.from_dict(device.to_dict()) == device
    restored = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(device))
    assert restored == device
    assert device.components == {"lognormal_sigma", "stuck"}
    assert DeviceModel().components == frozenset()


@pytest.mark.parametrize("bad", [{"lognormal_sigma": -0.1}, {"stuck_at_0": 0.7, "stuck_at_1": 0.4},
                                 {"on_off_ratio": 1.0}, {"slice_bits": 0}, {"drift_t0": 0.0}])
def test_device_model_rejects_unphysical_values(bad):
    with pytest.raises(ValueError):
        DeviceModel(**bad)


# -- exactness of the zero-noise path ------------------------------------------------------------
@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=repr)
def test_zero_strength_gives_the_clean_kernel_and_gradient_bit_for_bit(quantizer):
    q, kernel, variables = _setup(quantizer)
    device = EVERYTHING.replace(slice_bits=1)  # every stage is in the graph ...
    state = VariationState(device)
    state.strength.assign(0.0)  # ... with zero amplitudes
    state.params.assign(DeviceModel(on_off_ratio=100.0).parameter_vector())

    def value_and_grad(hook):
        q.cell_noise = hook
        with tf.GradientTape() as tape:
            out = q(kernel, True, variables)
            loss = tf.reduce_sum(out * tf.range(out.shape[-1], dtype=tf.float32))
        grads = tape.gradient(loss, [kernel, *variables.values()])
        q.cell_noise = None
        return out.numpy(), [g.numpy() for g in grads]

    clean, clean_grads = value_and_grad(None)
    noisy, noisy_grads = value_and_grad(CellNoise(state, device, 0))
    np.testing.assert_array_equal(noisy, clean)
    for a, b in zip(noisy_grads, clean_grads, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=repr)
def test_noise_perturbs_the_kernel_but_not_at_inference_unless_asked(quantizer):
    q, kernel, variables = _setup(quantizer)
    clean = q(kernel, False, variables).numpy()
    state = VariationState(EVERYTHING)
    q.cell_noise = CellNoise(state, EVERYTHING, 0, at_inference=False)
    np.testing.assert_array_equal(q(kernel, False, variables).numpy(), clean)
    assert np.abs(q(kernel, True, variables).numpy() - clean).max() > 0
    q.cell_noise = None


# -- the cell mapping ----------------------------------------------------------------------------
def test_lognormal_acts_on_conductance_with_the_given_sigma():
    q, kernel, variables = _setup(UniformWeights(4), shape=(400, 50))
    codes = q.integer_form(kernel.numpy()).codes
    sigma = 0.2
    noisy = _noisy(q, kernel, variables, DeviceModel.lognormal(sigma, on_off_ratio=math.inf))
    clean = q(kernel, True, variables).numpy()
    on = codes != 0  # one cell at G ∝ |c|, the other at G_min = 0: w' / w = exp(N(0, σ))
    ratio = np.log(noisy[on] / clean[on])
    assert on.sum() > 5000
    assert abs(ratio.std() - sigma) < 0.02 and abs(ratio.mean()) < 0.02


def test_both_cells_of_a_differential_pair_are_noisy():
    # A zero weight has both cells at G_min: they only cancel if G_min is zero.
    q, kernel, variables = _setup(TernaryWeights(), shape=(200, 20))
    zero = q.integer_form(kernel.numpy()).codes == 0
    assert zero.sum() > 100
    ideal_off = _noisy(q, kernel, variables, DeviceModel.lognormal(0.3, on_off_ratio=math.inf))
    leaky_off = _noisy(q, kernel, variables, DeviceModel.lognormal(0.3, on_off_ratio=10.0))
    assert np.all(ideal_off[zero] == 0)
    assert np.mean(leaky_off[zero] != 0) > 0.99
    assert abs(np.mean(leaky_off[zero])) < 0.1 * np.std(leaky_off[zero])  # independent: zero mean


@pytest.mark.parametrize("quantizer", [UniformWeights(4), UniformWeights(3, cell_view="offset"),
                                       BinaryWeights(cell_view="offset"), BiasedWeights(2)], ids=repr)
@pytest.mark.parametrize("slice_bits", [None, 1])
def test_all_cells_stuck_off_give_zero_weights_including_the_reference_column(quantizer, slice_bits):
    q, kernel, variables = _setup(quantizer)
    device = DeviceModel(stuck_at_0=1.0, on_off_ratio=math.inf, slice_bits=slice_bits)
    np.testing.assert_allclose(_noisy(q, kernel, variables, device), 0.0, atol=1e-6)


def test_all_cells_stuck_on_saturate_each_cell():
    q, kernel, variables = _setup(UniformWeights(3, cell_view="offset"))
    noisy = _noisy(q, kernel, variables, DeviceModel(stuck_at_1=1.0))
    form = q.integer_form(kernel.numpy())
    # Every cell reads the top code 6; the reference cell is at the top already: w = s·(6 − 3).
    np.testing.assert_allclose(noisy, np.broadcast_to(form.scale * 3.0, noisy.shape), rtol=1e-6)


def test_finite_cell_levels_round_codes_unless_the_code_is_sliced():
    q, kernel, variables = _setup(UniformWeights(4))
    clean = q(kernel, True, variables).numpy()
    form = q.integer_form(kernel.numpy())
    binary_cells = DeviceModel(cell_bits=1)
    snapped = _noisy(q, kernel, variables, binary_cells) / form.scale
    expected = np.sign(form.codes) * np.where(np.abs(form.codes) >= 4, 7, 0)  # 0…7 → {0, 7}
    np.testing.assert_allclose(snapped, expected, atol=1e-5)
    sliced = _noisy(q, kernel, variables, binary_cells.replace(slice_bits=1))
    np.testing.assert_allclose(sliced, clean, atol=1e-6)


def test_bit_slices_are_independent_cells_recombined_by_shift_and_add():
    # With G_min = 0 and multiplicative noise a slice at 0 stays exact, so only the set slices
    # of a code are noisy: code 7 (slices 1+2+4) gets Var ≈ σ²·(1 + 4 + 16) in code units².
    q, kernel, variables = _setup(UniformWeights(4), shape=(400, 50))
    form = q.integer_form(kernel.numpy())
    device = DeviceModel(lognormal_sigma=0.05, on_off_ratio=math.inf, slice_bits=1)
    noisy = _noisy(q, kernel, variables, device) / form.scale
    delta = noisy - form.codes
    for code, weight in [(1, 1), (2, 4), (4, 16), (7, 21)]:
        d = delta[form.codes == code]
        expected = 0.05 * math.sqrt(weight)
        assert abs(d.std() / expected - 1) < 0.15, (code, d.std(), expected)


def test_programming_draw_is_fixed_per_chip_and_read_noise_per_read():
    q, kernel, variables = _setup(UniformWeights(4))
    prog = DeviceModel.lognormal(0.2)
    read = DeviceModel(read_sigma=0.05)
    for device, changes_with_reads in [(prog, False), (read, True)]:
        state = VariationState(device)
        first = _noisy(q, kernel, variables, device, state, training=False)
        state.reads.assign_add(1)
        second = _noisy(q, kernel, variables, device, state, training=False)
        state.chip.assign(1)
        other_chip = _noisy(q, kernel, variables, device, state, training=False)
        assert np.array_equal(first, second) != changes_with_reads
        assert not np.array_equal(second, other_chip)
        state.chip.assign(0)
        state.reads.assign(0)
        np.testing.assert_array_equal(_noisy(q, kernel, variables, device, state, training=False), first)


def test_kernels_draw_independent_noise():
    q, kernel, variables = _setup(UniformWeights(4))
    device = DeviceModel.lognormal(0.2)
    state = VariationState(device)
    a = _noisy(q, kernel, variables, device, state, kernel_id=0)
    b = _noisy(q, kernel, variables, device, state, kernel_id=1)
    assert not np.array_equal(a, b)


def test_noise_table_windows_are_standard_normal_reproducible_and_fresh_per_step():
    state = VariationState(DeviceModel.lognormal(0.1), seed=2)
    state.create_table(2 ** 16)
    seed = tf.constant([5, 1], tf.int64)
    a = state.normal([100, 100], seed, exact=False).numpy()
    np.testing.assert_array_equal(a, state.normal([100, 100], seed, exact=False).numpy())
    b = state.normal([100, 100], tf.constant([5, 2], tf.int64), exact=False).numpy()
    assert abs(a.mean()) < 0.05 and abs(a.std() - 1) < 0.05
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.05 and not np.array_equal(a, b)
    # Evaluation draws stay exact Philox samples.
    np.testing.assert_array_equal(state.normal([10], seed, exact=True),
                                  tf.random.stateless_normal([10], seed))


def test_fused_chain_matches_the_graph_chain_and_compiles_once():
    q, kernel, variables = _setup(BinaryWeights(), shape=(256, 32))
    device = DeviceModel.typical_reram()
    state = VariationState(device, seed=3)
    state.create_table(2 ** 16)
    out = {}
    for jit in (False, True):
        q.cell_noise = CellNoise(state, device, 0, jit_compile=jit)
        out[jit] = q(kernel, True, variables).numpy()
    q.cell_noise = None
    assert not np.array_equal(out[False], q(kernel, True, variables).numpy())
    np.testing.assert_allclose(out[True], out[False], rtol=1e-5, atol=1e-6)  # exp may differ in ulp
    # The table windows start at run-time offsets: one XLA program serves every step (XLA's Slice
    # takes its start as a compile-time constant, which recompiled the chain at every step).
    fused = CellNoise(state, device, 0, jit_compile=True)._fused_chain(q)
    codes, _, offset = q.parts(kernel, variables)
    args = [tf.convert_to_tensor(v) for v in (state.params, state.strength, state.seed)]

    def hlo(step: int) -> str:
        return fused.experimental_get_compiler_ir(codes, offset, *args, tf.constant(step, tf.int64),
                                                  tf.convert_to_tensor(state.table))(stage="hlo")

    assert hlo(1) == hlo(2)


@pytest.mark.parametrize("jit", [False, True])
def test_lognormal_cache_gives_the_same_draws_and_is_ignored_once_stale(jit):
    q, kernel, variables = _setup(BinaryWeights(), shape=(256, 32))
    device = DeviceModel.typical_reram()

    def noisy(state: VariationState) -> np.ndarray:
        q.cell_noise = CellNoise(state, device, 0, jit_compile=jit)
        try:
            return q(kernel, True, variables).numpy()
        finally:
            q.cell_noise = None

    plain, cached = VariationState(device, seed=3), VariationState(device, seed=3)
    plain.create_table(2 ** 16)
    cached.create_table(2 ** 16, lognormal_cache=True)
    assert float(cached.exp_sigma.numpy()) == pytest.approx(0.1)
    # Same windows, so the same draws: exp(σ·z) computed at refresh or per step (ulp apart).
    np.testing.assert_allclose(noisy(cached), noisy(plain), rtol=1e-5, atol=1e-6)
    # σ changed without a refresh: the cache (still for σ = 0.1) must not be used.
    for state in (plain, cached):
        state.strength.assign(3.0)
    np.testing.assert_allclose(noisy(cached), noisy(plain), rtol=1e-5, atol=1e-6)
    assert float(cached.exp_sigma.numpy()) == pytest.approx(0.1)
    cached.refresh_exp_table()
    assert float(cached.exp_sigma.numpy()) == pytest.approx(0.3)
    np.testing.assert_allclose(noisy(cached), noisy(plain), rtol=1e-5, atol=1e-6)
    # And the stale-cache check is not vacuous: a cache held for another σ gives other draws.
    cached.exp_sigma.assign(cached.lognormal_amplitude())
    cached.exp_table.assign(tf.ones_like(cached.exp_table))
    assert not np.allclose(noisy(cached), noisy(plain), rtol=1e-3)
