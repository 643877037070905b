"""`evaluate_under_variation`: accuracy of a quantized model on simulated chips."""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfxbar.compat import require_tf_keras
from tfxbar.export.finite import check_finite
from tfxbar.pipelines import inference_batches
from tfxbar.variation.cells import VariationState, _Structure, install, uninstall
from tfxbar.variation.devices import DeviceModel

__all__ = ["VariationResult", "evaluate_under_variation"]


@dataclasses.dataclass(frozen=True)
class VariationResult:
    """Per-chip accuracies of one model under one device model.

    Arguments:
        accuracies: accuracy of each simulated chip (trial), in trial order.
        device: the device model.
        seed: the seed the chips were drawn with.
    """

    accuracies: np.ndarray
    device: DeviceModel
    seed: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    @property
    def min(self) -> float:
        return float(np.min(self.accuracies))

    @property
    def max(self) -> float:
        return float(np.max(self.accuracies))

    def to_dict(self) -> dict[str, Any]:
        return {"accuracies": self.accuracies.tolist(), "mean": self.mean, "std": self.std,
                "min": self.min, "max": self.max, "device": self.device.to_dict(),
                "seed": self.seed}

    def __str__(self) -> str:
        return (f"accuracy {self.mean:.4f} ± {self.std:.4f} (min {self.min:.4f}) over "
                f"{len(self.accuracies)} chips")


class _Evaluator:
    """Noise state and a traced evaluation step for one model and one noise structure."""

    def __init__(self, model: keras.Model, device: DeviceModel) -> None:
        self.model = model
        self.structure = _Structure.of(device)
        self.device = device
        self.state = VariationState(device)
        self.step = tf.function(self._step, reduce_retracing=True)

    def _step(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        self.state.reads.assign_add(1)  # a new read of the same chip for every batch
        pred = self.model(x, training=False)
        if pred.shape.rank is None or pred.shape[-1] in (None, 1):
            raise ValueError("evaluate_under_variation needs a classifier with one output per "
                             f"class, got output shape {pred.shape}")
        if y.shape.rank == pred.shape.rank and y.shape[-1] == pred.shape[-1]:
            y = tf.argmax(y, axis=-1)  # one-hot labels
        labels = tf.cast(tf.reshape(y, [-1]), tf.int64)
        hits = tf.equal(tf.argmax(tf.reshape(pred, [-1, pred.shape[-1]]), axis=-1), labels)
        # A NaN output's argmax is class 0: an accuracy would come out of NaN inputs or weights.
        # Inputs are checked themselves: clipping ops may turn a NaN into a number (whether
        # max(NaN, 0) is NaN depends on the CPU kernel), so a NaN input need not reach the output.
        finite_x = tf.reduce_all(tf.math.is_finite(tf.cast(x, tf.float32)))
        finite = tf.reduce_all(tf.math.is_finite(tf.cast(pred, tf.float32)))
        return tf.reduce_sum(tf.cast(hits, tf.int64)), tf.size(labels, out_type=tf.int64), finite_x, finite


_EVALUATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_EMPTY = "evaluate_under_variation: the dataset is empty; give at least one (x, y) example"


def _evaluator(model: keras.Model, device: DeviceModel, hardware: Any = None) -> _Evaluator:
    # Reuse the traced step across calls (σ sweeps): only the noise structure forces a new one
    # (and the hardware mode, whose layers trace differently).
    cache = _EVALUATORS.setdefault(model, {})
    key = (_Structure.of(device), id(hardware) if hardware is not None else None)
    if key not in cache:
        cache[key] = _Evaluator(model, device)
    return cache[key]


def _as_dataset(data: Any, batch_size: int) -> tf.data.Dataset:
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, tuple | list) and len(data) == 2:
        x = check_finite(data[0], "evaluate_under_variation: x", "drop or replace those examples")
        if len(x) == 0:
            raise ValueError(_EMPTY)
        return inference_batches(x, data[1], batch_size)
    raise TypeError("dataset must be a tf.data.Dataset of (x, y) batches or an (x, y) tuple")


def evaluate_under_variation(model: keras.Model, dataset: Any, device: DeviceModel,
                             trials: int = 10, seed: int = 0, *, batch_size: int = 256,
                             verbose: int = 1, hardware: Any = None) -> VariationResult:
    """Classification accuracy of `model` on `trials` simulated chips.

    Each trial is one chip: its programming variation, stuck-at faults and drift exponents are
    drawn once and the whole dataset is evaluated on it; read noise is drawn anew for every
    batch. The model's clean weights are never changed. The same seed gives the same chips and
    the same per-trial accuracies; changing only the device's values (e.g. σ) reuses the traced
    graph.

    Arguments:
        model: a tfxbar-quantized classifier (one output per class; sparse or one-hot labels).
        dataset: a `tf.data.Dataset` of ``(x, y)`` batches, or an ``(x, y)`` tuple of arrays.
        device: the `DeviceModel` of the chips.
        trials: number of chips.
        seed: seed of the chips; trial t of seed s is the same chip in every call.
        batch_size: batch size when `dataset` is a tuple.
        verbose: 1 shows a Keras progress bar over the chips, 0 is silent.
        hardware: a `tfxbar.hardware.HardwareMode` of `model`: each chip is the program's cells
            with this device's conductances (`tfxbar.hardware.chips.device_chip`), run through
            the program's tiles, DACs, ADCs and accumulator in TensorFlow; read noise is then drawn
            once per chip. None: ideal crossbars with noisy weights.

    Returns:
        A `VariationResult` with the per-chip accuracies and their mean, std, min and max.

    References:
        Liu et al., Vortex, DAC 2015 (Monte-Carlo chip instances); Rasch et al., IBM aihwkit,
        AICAS 2021.

    Example:
        >>> result = tfxbar.evaluate_under_variation(qmodel, (x_test, y_test),
        ...                                          tfxbar.DeviceModel.lognormal(0.2), trials=10)
        >>> result.mean, result.std, result.min
    """
    require_tf_keras(model)
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    data = _as_dataset(dataset, batch_size)
    if hardware is not None and hardware.model is not model:
        raise ValueError("hardware must be a tfxbar.hardware.HardwareMode of this model")
    ev = _evaluator(model, device, hardware)
    ev.state.set_device(device)
    ev.state.strength.assign(1.0)
    ev.state.seed.assign(int(seed))
    if hardware is not None:
        from tfxbar.hardware.chips import device_chip

        was_installed, saved = hardware.installed, []
        hardware.install()
    else:
        saved = install(model, ev.state, device, at_inference=True)
    progbar = keras.utils.Progbar(trials, verbose=verbose, unit_name="chip",
                                  stateful_metrics=["accuracy"])
    accuracies = []
    try:
        for trial in range(trials):
            if hardware is not None:
                hardware.set_chip(device_chip(hardware, device, seed, trial))
            ev.state.chip.assign(trial)
            ev.state.reads.assign(0)
            hits, total = 0, 0
            for batch, (x, y) in enumerate(data):
                h, n, finite_x, finite = ev.step(x, y)
                if not bool(finite_x):
                    raise ValueError(f"evaluate_under_variation: batch {batch} of the dataset has NaN/Inf "
                                     "values in x; drop or replace those examples")
                if not bool(finite):
                    raise ValueError(f"evaluate_under_variation: the model's output is NaN/Inf on chip "
                                     f"{trial}: NaN/Inf in the dataset or the weights")
                hits, total = hits + int(h), total + int(n)
            if total == 0:
                raise ValueError(_EMPTY)
            accuracies.append(hits / total)
            progbar.update(trial + 1, [("accuracy", accuracies[-1])])
    finally:
        uninstall(saved)
        if hardware is not None:
            hardware.set_chip(None)
            if not was_installed:
                hardware.remove()
    return VariationResult(np.asarray(accuracies, np.float64), device, int(seed))
