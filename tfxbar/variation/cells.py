"""Cell noise in the graph: codes → conductances → noisy conductances → effective weights.

`CellNoise` is what `WeightQuantizer.cell_noise` is set to. It maps each weight's integer code
onto the cells the exporter programs (both cells of a differential pair; one cell plus the
reference column for offset / trained-biased weights; every slice of a bit-sliced code),
perturbs each cell independently in conductance space with a `DeviceModel`, and returns
``scale · ((codes + Δc) − (offset + Δb))``. Δc and Δb pass no gradient, so the gradient
reaches the clean kernel exactly as without noise (straight-through), and with zero noise
Δc = Δb = 0 exactly: the kernel is bit-identical to the clean one.

All random draws are stateless, keyed by (seed, kernel, cell group, noise kind) and a counter
held in a variable, so one graph serves every batch, chip and σ without retracing. In training
with a noise table, each kernel's whole chain (table windows, both cells, faults, read-back)
is one XLA-compiled function: a single pass over the cells instead of ~20 full-size tensors.
While σ stays put (constant or per-epoch schedules), the lognormal factors exp(σ·z) come from a
second table, exp(σ·table), refreshed when σ changes: the exp, the chain's largest cost, then
runs once per σ instead of once per cell per step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow.compiler.tf2xla.python import xla as _xla
from tensorflow.python.saved_model import save_context

from tfxbar.introspect import quantized_kernels
from tfxbar.quantizers import WeightQuantizer
from tfxbar.variation.devices import PARAMETERS, SCHEDULED, DeviceModel

__all__ = ["CellNoise", "VariationState", "cell_levels", "install", "uninstall"]

_P = {name: i for i, name in enumerate(PARAMETERS)}
# Noise kinds; each gets its own stateless stream per kernel and cell group.
_LOGNORMAL, _ADDITIVE, _READ, _STUCK, _DRIFT = range(5)
_GROUPS = 32  # cell groups per kernel: ≤ 8 slices × (g⁺, g⁻ or one cell), then the reference
_REF_GROUP = _GROUPS - 1


class VariationState:
    """The variables the noise graph reads; assigning them never retraces.

    Arguments:
        device: the initial device model (its numeric parameters go into `params`).
        seed: base seed of every draw.
        step_counter: an int64 variable advanced once per training step (the optimizer's
            `iterations` in `DeviceVariation`); keys the per-batch draws during training.

    Attributes:
        params: float32 vector of the device's `PARAMETERS`.
        strength: float32 scalar multiplying the stochastic amplitudes (the schedule).
        seed: int64 base seed.
        chip: int64 index of the simulated chip (inference: programming draws, faults).
        reads: int64 read counter (inference: read-noise draws, advanced per batch).
    """

    def __init__(self, device: DeviceModel, seed: int = 0, step_counter: Any = None) -> None:
        self.params = tf.Variable(device.parameter_vector(), trainable=False, name="device_params")
        self.strength = tf.Variable(1.0, trainable=False, name="variation_strength")
        self.seed = tf.Variable(int(seed), dtype=tf.int64, trainable=False, name="variation_seed")
        self.chip = tf.Variable(0, dtype=tf.int64, trainable=False, name="variation_chip")
        self.reads = tf.Variable(0, dtype=tf.int64, trainable=False, name="variation_reads")
        self.step_counter = step_counter if step_counter is not None else tf.Variable(
            0, dtype=tf.int64, trainable=False, name="variation_steps")
        self.table: tf.Variable | None = None
        self.exp_table: tf.Variable | None = None
        self.exp_sigma: tf.Variable | None = None

    def create_table(self, size: int, lognormal_cache: bool = False) -> None:
        """Hold `size` N(0, 1) samples from which training draws windows (see `normal`).

        `lognormal_cache`: also hold exp(σ·table) for the current lognormal σ (see
        `refresh_exp_table`); worth it when σ changes rarely (not for per-batch schedules).
        """
        seed = tf.stack([tf.convert_to_tensor(self.seed), tf.constant(-1, tf.int64)])
        self.table = tf.Variable(tf.random.stateless_normal([int(size)], seed), trainable=False,
                                 name="variation_noise_table")
        if lognormal_cache:
            self.exp_table = tf.Variable(tf.ones([int(size)]), trainable=False,
                                         name="variation_lognormal_table")
            # NaN equals nothing: until the first refresh every draw computes its exp.
            self.exp_sigma = tf.Variable(float("nan"), trainable=False, name="variation_lognormal_sigma")
            self.refresh_exp_table()

    def lognormal_amplitude(self) -> tf.Tensor:
        """The lognormal σ in force: the device's σ times the schedule's strength (computed
        exactly as the noise chain computes it, so the two compare equal)."""
        return _amplitudes(tf.convert_to_tensor(self.params),
                           tf.convert_to_tensor(self.strength))[_P["lognormal_sigma"]]

    def refresh_exp_table(self) -> None:
        """Recompute exp(σ·table) if σ changed since the last refresh. A stale cache is never
        used: the chain compares σ with `exp_sigma` at every step and otherwise computes the exp."""
        if self.exp_table is None or self.table is None:
            return
        sigma = self.lognormal_amplitude()
        if bool(tf.equal(sigma, tf.convert_to_tensor(self.exp_sigma))):
            return
        self.exp_table.assign(tf.exp(sigma * tf.convert_to_tensor(self.table)))
        self.exp_sigma.assign(sigma)

    def normal(self, shape: list[int], seed: tf.Tensor, exact: bool) -> tf.Tensor:
        """N(0, 1) samples of a static `shape`, a pure function of `seed`.

        With a table and not `exact`, a window of the table at a seeded random offset: one memory
        copy instead of Philox and Box-Muller for every cell, which would cost more than the
        forward pass of a small crossbar layer (the shared noise table of Salimans et al.,
        Evolution Strategies, arXiv:1703.03864).
        """
        table = None if exact or self.table is None else tf.convert_to_tensor(self.table)
        return _normal(shape, seed, table)

    def set_device(self, device: DeviceModel) -> None:
        """Load a device's numeric parameters (its structure — stages, cell and slice bits —
        must match the one the hooks were installed with)."""
        self.params.assign(device.parameter_vector())
        self.refresh_exp_table()

    def effective(self) -> dict[str, float]:
        """Current parameter values with the schedule's strength applied (for logging)."""
        values = dict(zip(PARAMETERS, self.params.numpy().tolist(), strict=True))
        strength = float(self.strength.numpy())
        return {k: (v * strength if k in SCHEDULED else v) for k, v in values.items()}


def _amplitudes(params: tf.Tensor, strength: tf.Tensor) -> tf.Tensor:
    """The scheduled parameters times the schedule's strength."""
    return params[: len(SCHEDULED)] * strength


def _normal(shape: list[int], seed: tf.Tensor, table: tf.Tensor | None,
            fused: bool = False) -> tf.Tensor:
    """Exact Philox normals without a table, else a table window at a seeded offset.

    `fused`: the caller is XLA-compiled. XLA's `Slice` needs its start as a compile-time
    constant, so `tf.slice` with a random start would recompile the function at every step;
    XLA's `DynamicSlice` takes the start at run time (same window, same values).
    """
    n = int(np.prod(shape))
    room = 0 if table is None else int(table.shape[0]) - n + 1
    if room < 1:
        return tf.random.stateless_normal(shape, seed)
    start = tf.random.stateless_uniform([1], seed, minval=0, maxval=room, dtype=tf.int64)
    window = _xla.dynamic_slice(table, start, [n]) if fused else tf.slice(table, start, [n])
    return tf.reshape(window, shape)


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What one evaluation of the noise chain reads: tensors, so the same code runs on the
    state's variables or on the arguments of the fused (XLA) function."""

    params: tf.Tensor  # float32 [len(PARAMETERS)]
    strength: tf.Tensor  # float32 scalar
    seed: tf.Tensor  # int64 scalar
    counter: tf.Tensor  # int64: keys programming draws and faults
    read_counter: tf.Tensor  # int64: keys read noise
    table: tf.Tensor | None  # N(0, 1) table; None: exact Philox draws
    fused: bool = False  # inside the XLA-compiled chain (see `_normal`)
    exp_table: tf.Tensor | None = None  # exp(exp_sigma · table), or None
    exp_sigma: tf.Tensor | None = None


def cell_levels(quantizer: WeightQuantizer) -> int:
    """Levels one (unsliced) cell needs under the quantizer's cell view."""
    levels = quantizer.levels
    if quantizer.cell_view == "differential":
        return max(abs(min(levels)), abs(max(levels))) + 1
    return max(levels) - min(levels) + 1


@dataclasses.dataclass(frozen=True)
class _Structure:
    """The parts of a device model that shape the graph (changing them needs a retrace)."""

    components: frozenset[str]
    cell_bits: int | None
    slice_bits: int | None

    @classmethod
    def of(cls, device: DeviceModel) -> _Structure:
        return cls(device.components, device.cell_bits, device.slice_bits)


class CellNoise:
    """The `cell_noise` hook of one quantized kernel.

    Arguments:
        state: the shared `VariationState`.
        structure: which noise stages exist and the cell / slice bits (from a `DeviceModel`).
        kernel_id: index of the kernel in the model; keys its random streams.
        at_inference: also perturb the forward pass when ``training`` is False, with one
            programming draw per chip (``state.chip``) and read noise per ``state.reads``.
        jit_compile: in training with a noise table, run the chain as one XLA-compiled
            function (same distributions; the fused exp may differ from TensorFlow's in the
            last bit). Evaluation and exact draws never use it.
    """

    def __init__(self, state: VariationState, device: DeviceModel, kernel_id: int,
                 at_inference: bool = False, jit_compile: bool = False) -> None:
        self.state = state
        self.structure = _Structure.of(device)
        self.kernel_id = int(kernel_id)
        self.at_inference = bool(at_inference)
        self.jit_compile = bool(jit_compile)
        self._fused: dict[tuple[int, bool], Any] = {}  # (id(quantizer), cached) → XLA chain

    def __call__(self, quantizer: WeightQuantizer, codes: tf.Tensor, scale: tf.Tensor,
                 offset: tf.Tensor, training: Any) -> tf.Tensor:
        # A SavedModel (e.g. ModelCheckpoint mid-training) must hold the clean program, and
        # could not capture this state's untracked variables anyway.
        if not self.active(training):
            return scale * (codes - offset)
        d_codes, d_offset = self.deltas(quantizer, codes, offset, bool(training))
        return scale * ((codes + tf.stop_gradient(d_codes)) - (offset + tf.stop_gradient(d_offset)))

    # -- the cell mapping --------------------------------------------------------------------
    def active(self, training: Any) -> bool:
        """Whether a pass with this `training` flag reads noisy cells (as `__call__` decides)."""
        return bool(training or self.at_inference) and not save_context.in_save_context()

    def _inputs(self, training: bool) -> _Inputs:
        """The state's tensors for one pass: per-step draws in training (from the table if
        there is one), else the chip's programming draws and per-read read noise (exact)."""
        s = self.state
        if training:
            counter = read_counter = tf.cast(tf.convert_to_tensor(s.step_counter), tf.int64)
        else:
            counter = tf.convert_to_tensor(s.chip)
            read_counter = counter * 2 ** 32 + tf.convert_to_tensor(s.reads)
        # Chips in evaluation always get exact Philox draws.
        table = tf.convert_to_tensor(s.table) if training and s.table is not None else None
        return _Inputs(tf.convert_to_tensor(s.params), tf.convert_to_tensor(s.strength),
                       tf.convert_to_tensor(s.seed), counter, read_counter, table)

    def cell_deltas(self, cells: tf.Tensor, levels: float, training: bool) -> tf.Tensor:
        """Read-back errors, in code units, of physical cells given one by one.

        For the Keras hardware mode (`tfxbar.hardware`), whose ADCs see every cell of a
        crossbar: cell (p, l) of a (K, P, L, N) tensor (polarity p, slice l) gets the streams of
        cell group p·L + l of this kernel — the groups `deltas` gives the plus / minus cells and
        slices of a kernel — with this pass's draws (a fresh draw per training step).

        Arguments:
            cells: non-negative cell codes (K, P, L, N), float32.
            levels: levels of one physical cell (2^slice_bits of the program).
            training: training pass (per-step draws) or inference (the state's chip and read).

        Returns:
            Δ of the cells' shape (no gradient).

        Example:
            >>> noisy = cells + noise.cell_deltas(cells, 8.0, training=True)
        """
        inputs = self._inputs(training)
        polarities, slices = cells.shape[1], cells.shape[2]
        planes = [[self._cell_delta(cells[:, p, k, :], float(levels), p * slices + k, inputs)
                   for k in range(slices)] for p in range(polarities)]
        return tf.stop_gradient(tf.stack([tf.stack(row, axis=1) for row in planes], axis=1))

    def deltas(self, quantizer: WeightQuantizer, codes: tf.Tensor, offset: tf.Tensor,
               training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """Code errors ``(Δc, Δb)`` in code units that the noisy cells add to codes and offset."""
        c, b = tf.stop_gradient(codes), tf.stop_gradient(offset)
        inputs = self._inputs(training)
        params, strength, seed, counter, table = (inputs.params, inputs.strength, inputs.seed,
                                                  inputs.counter, inputs.table)
        s = self.state
        def run(*cache: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            if table is not None and self.jit_compile:
                return self._fused_chain(quantizer, bool(cache))(c, b, params, strength, seed,
                                                                 counter, table, *cache)
            return self._chain(quantizer, c, b, _Inputs(params, strength, seed, counter,
                                                        inputs.read_counter, table, False, *cache))

        if table is None or s.exp_table is None or "lognormal_sigma" not in self.structure.components:
            return run()
        # The cache serves only the σ it was computed for; the choice is made outside the XLA
        # cluster, as a conditional inside it would split the fused loop.
        exp_table, exp_sigma = tf.convert_to_tensor(s.exp_table), tf.convert_to_tensor(s.exp_sigma)
        sigma = _amplitudes(params, strength)[_P["lognormal_sigma"]]
        return tf.cond(tf.equal(sigma, exp_sigma), lambda: run(exp_table, exp_sigma), run)

    def _fused_chain(self, quantizer: WeightQuantizer, cached: bool = False) -> Any:
        """The training chain of this kernel as one XLA cluster: XLA fuses the windows, the
        exp, the fault selects and the read-back into a single loop over the cells.
        `cached`: it also takes ``exp_table, exp_sigma`` (see `VariationState.create_table`)."""
        key = (id(quantizer), cached)
        fused = self._fused.get(key)
        if fused is None:
            def chain(c: tf.Tensor, b: tf.Tensor, params: tf.Tensor, strength: tf.Tensor,
                      seed: tf.Tensor, counter: tf.Tensor, table: tf.Tensor,
                      *cache: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                inputs = _Inputs(params, strength, seed, counter, counter, table, True, *cache)
                return self._chain(quantizer, c, b, inputs)

            fused = self._fused[key] = tf.function(chain, jit_compile=True, autograph=False)
        return fused

    def _chain(self, quantizer: WeightQuantizer, c: tf.Tensor, b: tf.Tensor,
               inputs: _Inputs) -> tuple[tf.Tensor, tf.Tensor]:
        levels = cell_levels(quantizer)
        if quantizer.cell_view == "differential":
            slices = self._slices(levels)
            d_plus = self._stored_delta(tf.maximum(c, 0.0), levels, 0, inputs)
            d_minus = self._stored_delta(tf.maximum(-c, 0.0), levels, slices, inputs)
            return d_plus - d_minus, tf.zeros_like(b)
        d_cell = self._stored_delta(c - float(min(quantizer.levels)), levels, 0, inputs)
        # The offset b is realised as b·Σx: a reference column with one cell per row,
        # programmed to the top level and shared by every output column, scaled digitally.
        shape = c.shape.as_list()
        shape[quantizer.channel_axis] = 1
        top = float(self._physical_levels(levels) - 1)
        d_ref = self._cell_delta(tf.fill(shape, top), top + 1.0, _REF_GROUP, inputs)
        return d_cell, b * d_ref / top

    def _slice_bits(self, levels: int) -> int | None:
        bits = self.structure.slice_bits
        need = max(1, int(np.ceil(np.log2(levels))))
        return bits if bits is not None and bits < need else None

    def _slices(self, levels: int) -> int:
        bits = self._slice_bits(levels)
        need = max(1, int(np.ceil(np.log2(levels))))
        return 1 if bits is None else -(-need // bits)

    def _physical_levels(self, levels: int) -> int:
        bits = self._slice_bits(levels)
        return levels if bits is None else 2 ** bits

    def _stored_delta(self, g: tf.Tensor, levels: int, group: int, inputs: _Inputs) -> tf.Tensor:
        """Δ of a non-negative code g held in one cell or in bit slices (shift-and-add)."""
        bits = self._slice_bits(levels)
        if bits is None:
            return self._cell_delta(g, float(levels), group, inputs)
        base = float(2 ** bits)
        total = tf.zeros_like(g)
        for k in range(self._slices(levels)):
            weight = base ** k
            piece = tf.math.floormod(tf.math.floordiv(g, weight), base)
            total += weight * self._cell_delta(piece, base, group + k, inputs)
        return total

    # -- one physical cell ---------------------------------------------------------------------
    def _lognormal(self, shape: list[int], group: int, sigma: tf.Tensor, inputs: _Inputs) -> tf.Tensor:
        """exp(σ·z) per cell. With the exp cache (which `deltas` passes only when it holds this
        σ), the same window of exp(σ·table): same start, same z; the cache changes the cost,
        not the draw."""
        seed = self._seed(group, _LOGNORMAL, inputs)
        if inputs.exp_table is not None:
            return _normal(shape, seed, inputs.exp_table, inputs.fused)
        return tf.exp(sigma * _normal(shape, seed, inputs.table, inputs.fused))

    def _seed(self, group: int, kind: int, inputs: _Inputs) -> tf.Tensor:
        key = inputs.seed * 1_000_003 + (self.kernel_id * _GROUPS + group) * 8 + kind
        return tf.stack([key, inputs.read_counter if kind == _READ else inputs.counter])

    def _cell_delta(self, g: tf.Tensor, levels: float, group: int, inputs: _Inputs) -> tf.Tensor:
        """Read-back error, in code units, of cells programmed to codes g of `levels` levels."""
        st, p = self.structure, inputs.params
        amp = _amplitudes(p, inputs.strength)
        g_min = p[_P["g_min"]]
        span = 1.0 - g_min
        top = levels - 1.0
        ideal = g_min + g / top * span
        target = ideal
        if st.cell_bits is not None and 2 ** st.cell_bits < levels:
            device_top = float(2 ** st.cell_bits - 1)
            target = g_min + tf.round(g / top * device_top) / device_top * span
        shape = g.shape.as_list()

        def normal(kind: int) -> tf.Tensor:
            return _normal(shape, self._seed(group, kind, inputs), inputs.table, inputs.fused)

        conductance = target
        if "lognormal_sigma" in st.components:
            conductance = conductance * self._lognormal(shape, group, amp[_P["lognormal_sigma"]],
                                                        inputs)
        if "additive_sigma" in st.components:
            conductance = conductance + amp[_P["additive_sigma"]] * normal(_ADDITIVE)
        if "stuck" in st.components:
            # Φ(z) of a standard normal z is uniform, so Φ(z) < p ⇔ z < Φ⁻¹(p): the
            # thresholds are scalars (±inf for p = 1 or 0) and no per-cell CDF is needed.
            z = normal(_STUCK)
            p0, p1 = amp[_P["stuck_at_0"]], amp[_P["stuck_at_1"]]
            t0, t1 = tf.math.ndtri(p0), tf.math.ndtri(tf.minimum(p0 + p1, 1.0))
            conductance = tf.where(z < t0, g_min, tf.where(z < t1, 1.0, conductance))
        if "drift" in st.components:
            nu = tf.maximum(p[_P["drift_nu"]] + p[_P["drift_nu_std"]] * normal(_DRIFT), 0.0)
            conductance = conductance * tf.exp(-nu * p[_P["drift_log_time"]])
        if "read_sigma" in st.components:
            conductance = conductance + amp[_P["read_sigma"]] * normal(_READ)
        conductance = tf.maximum(conductance, 0.0)
        # Exactly 0 when every amplitude is 0: x·exp(0) = x, x + 0·n = x, x·exp(−ν·0) = x.
        return (conductance - ideal) * (top / span)


def install(model: keras.Model, state: VariationState, device: DeviceModel,
            at_inference: bool = False, jit_compile: bool = False
            ) -> list[tuple[WeightQuantizer, Any]]:
    """Set a `CellNoise` hook on every quantized kernel of `model` (arguments as `CellNoise`).

    Returns:
        ``(quantizer, previous hook)`` pairs for `uninstall`.

    Raises:
        ValueError: the model has no tfxbar-quantized kernels, or two kernels share one
            quantizer object (their noise could not be told apart).
    """
    kernels = quantized_kernels(model)
    if not kernels:
        raise ValueError("the model has no tfxbar-quantized kernels; quantize it with "
                         "tfxbar.quantize_model first")
    quantizers = [k.quantizer for k in kernels]
    if len({id(q) for q in quantizers}) != len(quantizers):
        owners: dict[int, list[str]] = {}
        for k in kernels:
            owners.setdefault(id(k.quantizer), []).append(k.layer.name)
        shared = ", ".join(" and ".join(names) for names in owners.values() if len(names) > 1)
        raise ValueError(f"layers {shared} share one quantizer object, so their noise could not be told "
                         "apart; give each layer its own quantizer instance")
    saved = [(q, q.cell_noise) for q in quantizers]
    for index, q in enumerate(quantizers):
        q.cell_noise = CellNoise(state, device, index, at_inference, jit_compile)
    return saved


def uninstall(saved: list[tuple[WeightQuantizer, Any]]) -> None:
    """Restore the hooks `install` replaced."""
    for quantizer, previous in saved:
        quantizer.cell_noise = previous


def remove_variation(model: keras.Model) -> int:
    """Take every device-noise hook off `model`'s quantized kernels and drop its compiled
    train/test/predict functions (the next call traces clean ones).

    tf_keras does not call `on_train_end` when `fit` raises (an error in a callback or the data,
    or a KeyboardInterrupt), so a `DeviceVariation` interrupted that way leaves its hooks on the
    model; the next `DeviceVariation` fit removes them itself, anything else should call this.

    Returns:
        How many hooks were removed (0: the model was clean).
    """
    removed = 0
    for kernel in quantized_kernels(model):
        if isinstance(kernel.quantizer.cell_noise, CellNoise):
            kernel.quantizer.cell_noise = None
            removed += 1
    if removed:
        model.train_function = model.test_function = model.predict_function = None
    return removed
