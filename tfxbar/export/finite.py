"""Non-finite (NaN/Inf) and out-of-range checks for values entering tfxbar from outside (numpy only).

One NaN pixel, calibration sample or weight otherwise passes silently: rounding casts it to
INT64_MIN codes, a quantizer's step becomes NaN, the cell mapping fails an internal assertion.
These helpers raise a ValueError (or ConversionError) naming what holds the value and where.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tfxbar.export.errors import ConversionError

__all__ = ["check_finite", "require_finite_weights", "warn_if_negative"]


def _first_bad(values: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    """(count, index of the first) non-finite values of a float array, or None if all are finite."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    return int(bad.sum()), tuple(int(i) for i in np.argwhere(bad)[0])


def check_finite(values: Any, what: str, remedy: str) -> np.ndarray:
    """`values` as an array; ValueError naming `what`, the count and the first index of NaN/Inf."""
    array = np.asarray(values)
    if array.dtype.kind in "fc":
        found = _first_bad(array)
        if found is not None:
            count, index = found
            raise ValueError(f"{what} has {count} NaN/Inf value(s) (first at index {list(index)}, "
                             f"{array[index]}); {remedy}")
    elif array.dtype.kind not in "biu":
        raise ValueError(f"{what} must be numbers, got dtype {array.dtype}")
    return array


def require_finite_weights(layer: str, kind: str, **arrays: Any) -> None:
    """ConversionError naming the layer and the array (kernel, bias, scale, ...) holding NaN/Inf."""
    for name, values in arrays.items():
        array = np.asarray(values, np.float64)
        found = _first_bad(array)
        if found is not None:
            count, index = found
            raise ConversionError(layer, kind, f"its {name} has {count} NaN/Inf value(s) (first at index "
                                               f"{list(index)})",
                                  "the training diverged or the weights are corrupted: retrain (e.g. with a "
                                  "lower learning rate, finite training data) or fix the weights")


def warn_if_negative(values: np.ndarray, what: str) -> None:
    """Warn that an unsigned input quantizer clips the negative part of `values` to 0."""
    if values.size and values.dtype.kind in "fi" and values.min() < 0:
        share = float(np.mean(values < 0))
        warnings.warn(f"{what}: {share:.1%} of the values are below 0 (min {values.min():.4g}); the "
                      "program's input quantizer is unsigned and clips them to 0. Shift or rescale the "
                      "inputs to [0, 1] (e.g. tfxbar.datasets.normalize) before training and export",
                      UserWarning, stacklevel=3)
