"""P1's 1-bit dense-layer input: x_b = v·[x > θ], θ chosen from the input distribution."""

from __future__ import annotations

from typing import Any

import numpy as np
import tf_keras as keras

from tfxbar.export.finite import check_finite
from tfxbar.quantizers.activation import ClippedRound, mse_step

__all__ = ["InputBinarizer"]

_RULES = ("mse", "mean", "median")


@keras.utils.register_keras_serializable(package="tfxbar")
class InputBinarizer(ClippedRound):
    """1-bit input quantizer for dense layers whose threshold is calibrated on data (P1).

    It is `ClippedRound` with one bit: the output is 0 below the threshold θ and v = 2θ above
    it, so the crossbar row is either driven or not (a 1-bit DAC). The threshold comes from
    samples of this layer's inputs, collected by `tfxbar.calibrate`:

    - ``"mse"`` (default): θ and v minimise E[(x − x_b)²] — the 1-bit Lloyd–Max quantizer with
      one level pinned at 0 (ReLU outputs have a point mass there and a zero input draws no
      current). At the optimum v = E[x | x > θ] and θ = v/2, which the 2θ tie satisfies. For a
      weighted sum of many inputs with independent errors, the output error variance is the
      weighted sum of the per-input squared errors, so minimising it per input is the natural
      target.
    - ``"mean"``: θ = mean(x). ``"median"``: θ = median of the non-zero x.

    Arguments:
        rule: ``"mse"``, ``"mean"`` or ``"median"``.
        init_step: v before calibration (θ = v/2).

    References:
        Zhang et al., Quantization considerations of dense layers in CNNs for resistive
        crossbars, MOCAST 2020 (P1). Lloyd, Least squares quantization in PCM, 1982.
    """

    def __init__(self, rule: str = "mse", init_step: float | None = 1.0, **kwargs: Any) -> None:
        if rule not in _RULES:
            raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")
        kwargs.pop("bits", None)
        kwargs.pop("step", None)
        super().__init__(bits=1, step="calibrated", init_step=init_step)
        self.rule = rule

    @property
    def threshold_fraction(self) -> float:
        """θ / v: the binarization threshold is half the output level."""
        return 0.5

    def calibrated_step(self, values: np.ndarray) -> float:
        values = check_finite(values, "calibration values", "drop or replace the samples that produce them")
        x = np.maximum(np.asarray(values, np.float32).ravel(), 0.0)
        if self.rule == "mse":
            return mse_step(x, 1, candidates=256)
        if self.rule == "mean":
            theta = float(x.mean()) if x.size else 0.5
        else:
            nonzero = x[x > 0]
            theta = float(np.median(nonzero)) if nonzero.size else 0.5
        return 2.0 * max(theta, 1e-6)

    def get_config(self) -> dict[str, Any]:
        return {"rule": self.rule, "init_step": self.init_step}
