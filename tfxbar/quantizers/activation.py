"""Clipped-rounding activation quantizer: a = clip(round(x / s), 0, 2^k − 1) · s."""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.export.finite import check_finite
from tfxbar.quantizers.config_identity import ConfigIdentity
from tfxbar.quantizers.ste import round_ste
from tfxbar.quantizers.variable_order import inner_weights_first

__all__ = ["ActivationForm", "ClippedRound"]

_EPS = 1e-8
_STEP_MODES = ("learned", "calibrated", "fixed")
_CALIBRATION_SAMPLE = 200_000
_BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class ActivationForm:
    """Integer form of an activation quantizer: code = clip(round(x / step), 0, 2^bits − 1)."""

    step: np.float32
    bits: int

    @property
    def top(self) -> int:
        return 2 ** self.bits - 1

    def codes(self, x: np.ndarray) -> np.ndarray:
        """Integer codes of real values `x`, rounding half to even like the Keras forward pass."""
        v = np.clip(np.asarray(x, np.float32) / self.step, 0.0, float(self.top))
        return np.round(v).astype(np.int32)


def mse_step(values: np.ndarray, bits: int, candidates: int = 128) -> float:
    """Step that minimises E[(q(x) − relu(x))²] over `values` (a grid over clipping ranges).

    Raises ValueError for NaN/Inf values (np.maximum would keep a NaN and the step become NaN)."""
    values = check_finite(values, "calibration values", "drop or replace the samples that produce them")
    x = np.maximum(np.asarray(values, np.float32).ravel(), 0.0)
    if x.size > _CALIBRATION_SAMPLE:
        x = np.random.default_rng(0).choice(x, _CALIBRATION_SAMPLE, replace=False)
    top = 2 ** bits - 1
    hi = float(x.max()) if x.size else 0.0
    if hi <= 0.0:
        return 1.0
    best_step, best_err = hi / top, np.inf
    for clip in np.linspace(hi / candidates, hi, candidates, dtype=np.float32):
        step = clip / top
        err = float(np.mean((np.clip(np.round(x / step), 0, top) * step - x) ** 2))
        if err < best_err:
            best_step, best_err = float(step), err
    return best_step


@keras.utils.register_keras_serializable(package="tfxbar")
class ClippedRound(ConfigIdentity, tfmot_api.Quantizer):
    """Unsigned clipped rounding, the coalesced BN + activation + quantization stage of P2.

    a = clip(round(x / s), 0, 2^k − 1)·s. The clip at 0 is the ReLU, so a BN followed by this
    quantizer needs no separate activation; the exporter folds the BN and this quantizer into
    integer thresholds. Gradients pass straight through inside [0, (2^k − 1)·s].

    The step s is
    - ``"learned"``: trainable (in log space), with the LSQ straight-through gradient, which
      like PACT learns the clipping range from the loss; `tfxbar.calibrate` gives it a
      data-driven starting value;
    - ``"calibrated"``: set from data by `tfxbar.calibrate` (minimum squared error) and frozen;
    - ``"fixed"``: `init_step`, never changed (e.g. 1/255 for 8-bit pixels).

    Arguments:
        bits: k, from 1 to 8.
        step: ``"learned"``, ``"calibrated"`` or ``"fixed"``.
        init_step: starting (or fixed) step; default 3/(2^k − 1), i.e. clipping at 3.

    References:
        Wang and Lin, ACM JETC 2019 (P2, coalescing); Choi et al., PACT, arXiv:1805.06085;
        Esser et al., LSQ, ICLR 2020.

    Example:
        >>> q = ClippedRound(bits=3, step="fixed", init_step=0.5)
        >>> q.form({"step": 0.5}).codes(np.float32([-1.0, 0.74, 0.76, 9.0])).tolist()
        [0, 1, 2, 7]
    """

    #: At inference, ``op(x, step, top=…)`` in place of the TensorFlow ops, bit-identical to them;
    #: set while a `tfxbar.hardware.HardwareMode` is installed (`tfxbar.hardware.native_layers`).
    inference_op: Callable[..., tf.Tensor] | None = None

    def __init__(self, bits: int = 4, step: str = "learned", init_step: float | None = None) -> None:
        if not 1 <= int(bits) <= 8:
            raise ValueError(f"activation bits must be in 1..8, got {bits}")
        if step not in _STEP_MODES:
            raise ValueError(f"step must be one of {_STEP_MODES}, got {step!r}")
        self.num_bits = int(bits)
        self.step = step
        self.init_step = float(init_step) if init_step is not None else 3.0 / (2 ** int(bits) - 1)
        if self.init_step <= 0:
            raise ValueError(f"init_step must be > 0, got {init_step}")

    @property
    def top(self) -> int:
        return 2 ** self.num_bits - 1

    @property
    def calibratable(self) -> bool:
        return self.step != "fixed"

    def build(self, tensor_shape: tf.TensorShape, name: str, layer: Any) -> dict[str, Any]:
        inner_weights_first(layer)
        # tfmot's QuantizeLayer never marks itself built, so `.keras` loading builds it twice;
        # hand back the variables of the first build instead of creating a second set.
        built = _BUILT.setdefault(layer, {})
        if name not in built:
            built[name] = self._make_variables(name, layer)
        return built[name]

    def _make_variables(self, name: str, layer: Any) -> dict[str, Any]:
        if self.step == "learned":
            # Log-parametrised: Adam's steps are O(lr) whatever the gradient's scale, which
            # would push a small linear step (≈0.01 at 8 bits) through zero in a few updates.
            return {"log_step": layer.add_weight(
                f"{name}_log_step", shape=(), trainable=True,
                initializer=keras.initializers.Constant(math.log(self.init_step)))}
        return {"step": layer.add_weight(f"{name}_step", shape=(), trainable=False,
                                         initializer=keras.initializers.Constant(self.init_step))}

    def _step(self, weights: dict[str, Any]) -> tf.Tensor:
        if "log_step" in weights:
            return tf.maximum(tf.exp(tf.convert_to_tensor(weights["log_step"])), _EPS)
        return tf.maximum(tf.convert_to_tensor(weights["step"]), _EPS)

    def __call__(self, inputs: tf.Tensor, training: Any, weights: dict[str, Any],
                 **kwargs: Any) -> tf.Tensor:
        step = self._step(weights)
        if training is False and self.inference_op is not None and inputs.dtype == tf.float32:
            return self.inference_op(inputs, step, top=float(self.top))
        return round_ste(tf.clip_by_value(inputs / step, 0.0, float(self.top))) * step

    def form(self, weights: dict[str, Any]) -> ActivationForm:
        """The integer form, with the step computed by the same TensorFlow ops as the forward pass."""
        tensors = {k: tf.convert_to_tensor(np.asarray(v)) for k, v in weights.items()}
        return ActivationForm(step=np.float32(self._step(tensors).numpy()), bits=self.num_bits)

    def set_step(self, weights: dict[str, Any], step: float) -> None:
        """Assign `step` to this quantizer's variable (e.g. after calibration)."""
        if step <= 0:
            raise ValueError(f"step must be > 0, got {step}")
        if "log_step" in weights:
            weights["log_step"].assign(math.log(step))
        else:
            weights["step"].assign(step)

    def calibrated_step(self, values: np.ndarray) -> float:
        """The step chosen from samples of this quantizer's input (minimum squared error)."""
        return mse_step(values, self.num_bits)

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.num_bits, "step": self.step, "init_step": self.init_step}

