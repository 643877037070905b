"""`DeviceVariation`: hardware-aware (noise-injection) training as a Keras callback."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tf_keras as keras

from tfxbar.introspect import quantized_kernels
from tfxbar.variation.cells import VariationState, install, remove_variation, uninstall
from tfxbar.variation.devices import DeviceModel
from tfxbar.variation.schedules import Schedule, as_schedule

__all__ = ["DeviceVariation"]

_MIN_TABLE = 2 ** 20


class DeviceVariation(keras.callbacks.Callback):
    """Train a quantized model with the device noise of the cells behind its weights.

    At `on_train_begin` every quantized kernel gets a `CellNoise` hook and the train function is
    rebuilt once so the hook is traced in. Each training step then draws fresh cell noise inside
    the graph (stateless RNG keyed by the optimizer's step counter), so forward and backward of
    a batch see the same noisy chip. The noise only changes what the forward pass reads: the
    gradient flows straight through it to the clean kernels, which are the only weights the
    model holds, so checkpoints written at any moment hold clean weights. σ and the schedule
    live in variables; changing them never retraces. At `on_train_end` the hooks are removed.
    tf_keras skips `on_train_end` when `fit` raises (KeyboardInterrupt included): the hooks then
    stay until the next `DeviceVariation` fit (which removes them, with a warning), `remove()`,
    or `tfxbar.variation.remove_variation(model)`.

    Inference (``training=False``, e.g. validation) stays clean unless `at_inference` is set;
    use `tfxbar.evaluate_under_variation` to measure accuracy on simulated chips.

    The current strength, the effective σ values and the mean relative weight error of one
    noise draw (‖w_noisy − w‖ / ‖w‖ over all kernels) are added to the epoch logs as
    ``variation_*``: History, CSVLogger and a TensorBoard callback listed *after* this one
    record them (TensorBoard as ``epoch_variation_*`` scalars).

    Arguments:
        device: the `DeviceModel`.
        schedule: strength factor on the device's noise amplitudes: a `Schedule`
            (`constant`, `ramp`, `per_epoch`), a number, a per-epoch list or callable(epoch).
        seed: base seed of the noise draws; the same seed and step give the same noise.
        at_inference: also perturb ``training=False`` passes (one chip per fit, read noise per
            batch).
        log_stats: add the ``variation_*`` statistics to the epoch logs.
        noise_table: draw the training noise as random windows of a fixed table of N(0, 1)
            samples (see `VariationState.normal`) instead of fresh Philox samples per cell;
            several times cheaper per step. Evaluation always uses exact draws.
        jit_compile: with `noise_table`, compile each kernel's noise chain with XLA into one
            fused loop over its cells (only the noise, not the rest of the train step).

    References:
        Joshi et al., Accurate deep neural network inference using computational phase-change
        memory, Nature Communications 11:2473, 2020 (noise-injection training); Liu et al.,
        Vortex, DAC 2015; Rasch et al., IBM aihwkit, AICAS 2021.

    Example:
        >>> device = tfxbar.DeviceModel.lognormal(0.2)
        >>> qmodel.fit(x, y, epochs=5, callbacks=[tfxbar.DeviceVariation(device, seed=1)])
    """

    def __init__(self, device: DeviceModel,
                 schedule: Schedule | float | Sequence[float] | Callable[[int], float] | None = None,
                 seed: int = 0, at_inference: bool = False, log_stats: bool = True,
                 noise_table: bool = True, jit_compile: bool = True) -> None:
        super().__init__()
        if not isinstance(device, DeviceModel):
            raise TypeError(f"device must be a tfxbar DeviceModel, got {device!r}")
        self.device = device
        self.schedule = as_schedule(schedule)
        self.seed = int(seed)
        self.at_inference = bool(at_inference)
        self.log_stats = bool(log_stats)
        self.noise_table = bool(noise_table)
        self.jit_compile = bool(jit_compile)
        self.state: VariationState | None = None
        self._saved: list[tuple[Any, Any]] = []
        self._epoch = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        model = self.model
        if getattr(model, "optimizer", None) is None:
            raise ValueError("DeviceVariation needs a compiled model")
        self.remove()
        stale = remove_variation(model)
        if stale:
            warnings.warn(f"removed the device-noise hooks of {stale} kernels left by an interrupted "
                          "fit (tf_keras skips on_train_end when fit raises)", stacklevel=2)
        with model.distribute_strategy.scope():
            self.state = VariationState(self.device, self.seed, model.optimizer.iterations)
            if self.noise_table:
                largest = max((int(np.prod(k.kernel.shape)) for k in quantized_kernels(model)),
                              default=0)
                # A per-batch schedule changes σ every step: a lognormal cache would be
                # recomputed (table-sized) at every step, dearer than the per-cell exp it saves.
                self.state.create_table(max(_MIN_TABLE, 4 * largest),
                                        lognormal_cache=not self.schedule.per_batch)
        self._saved = install(model, self.state, self.device, self.at_inference, self.jit_compile)
        # fit made (and may already have traced) its train function before this hook ran;
        # rebuild it so the cell noise is traced in. fit looks it up again on every step.
        model.make_train_function(force=True)
        if self.at_inference:
            model.test_function = None
            model.predict_function = None
        self._set_strength(0.0)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.remove()

    def remove(self) -> None:
        """Take this callback's noise hooks off the model (as `on_train_end` does; also after an
        interrupted `fit`, which skips it). Does nothing when none are installed."""
        if not self._saved:
            return
        uninstall(self._saved)
        self._saved = []
        model = self.model
        model.train_function = None  # the next fit traces a clean one
        if self.at_inference:
            model.test_function = None
            model.predict_function = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._set_strength(float(epoch))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.schedule.per_batch:
            steps = (self.params or {}).get("steps") or 0
            self._set_strength(self._epoch + (batch / steps if steps else 0.0))

    def on_test_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.at_inference and self.state is not None:
            self.state.reads.assign_add(1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.log_stats and logs is not None and self.state is not None:
            logs.update(self.statistics())

    # -- helpers -----------------------------------------------------------------------------
    def _set_strength(self, progress: float) -> None:
        if self.state is not None:
            self.state.strength.assign(self.schedule(progress))
            self.state.refresh_exp_table()

    def statistics(self) -> dict[str, float]:
        """Strength, effective σ values and the relative weight error of one noise draw."""
        state = self.state
        if state is None:
            return {}
        eff = state.effective()
        stats = {"variation_strength": float(state.strength.numpy())}
        for name in ("lognormal_sigma", "additive_sigma", "read_sigma", "stuck_at_0", "stuck_at_1"):
            if getattr(self.device, name) > 0:
                stats[f"variation_{name}"] = eff[name]
        errors, norms = 0.0, 0.0
        for k in quantized_kernels(self.model):
            codes, scale, offset = k.quantizer.parts(k.kernel, k.variables)
            clean = (scale * (codes - offset)).numpy()
            noisy = k.quantizer.cell_noise(k.quantizer, codes, scale, offset, True).numpy()
            errors += float(np.sum((noisy - clean) ** 2))
            norms += float(np.sum(clean ** 2))
        stats["variation_weight_error"] = float(np.sqrt(errors / max(norms, 1e-30)))
        return stats
