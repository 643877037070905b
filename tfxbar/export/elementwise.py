"""Per-channel elementwise stages between a crossbar and its output quantizer (float64).

The handlers lower bias, BatchNormalization, ReLU and activations into a chain of these; the
threshold pass searches the chain for the accumulator values where the output code changes,
and the final `dequantize` op evaluates the chain on the accumulator. All of them act on the
last axis of an array whose first axis is the channel (`apply`) or on NHWC data (`on_last`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Affine", "Elementwise", "Relu", "Softmax"]


class Elementwise:
    """A per-channel function of real values."""

    monotone = True

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Evaluate on `x` with channels on axis 0 (any trailing axes)."""
        raise NotImplementedError

    def slope_sign(self, channels: int) -> np.ndarray:
        """+1 where the function is non-decreasing, −1 where it is non-increasing."""
        return np.ones(channels, np.int8)

    def tiled(self, repeats: int) -> Elementwise:
        """The same function after an NHWC flatten: per-channel parameters tiled `repeats` times."""
        return self

    def header(self) -> dict[str, Any]:
        """JSON fields (scalars) for the program header."""
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-channel arrays for the program file."""
        return {}


@dataclasses.dataclass
class Affine(Elementwise):
    """y = a·x + b per channel (a bias add, a folded BatchNormalization, a scale)."""

    a: np.ndarray
    b: np.ndarray

    def __post_init__(self) -> None:
        self.a = np.asarray(self.a, np.float64).ravel()
        self.b = np.broadcast_to(np.asarray(self.b, np.float64).ravel(), self.a.shape).copy()

    def apply(self, x: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (x.ndim - 1)
        return x * self.a.reshape(shape) + self.b.reshape(shape)

    def slope_sign(self, channels: int) -> np.ndarray:
        return np.where(self.a < 0, -1, 1).astype(np.int8)

    def tiled(self, repeats: int) -> Affine:
        return Affine(np.tile(self.a, repeats), np.tile(self.b, repeats))

    def then(self, other: Affine) -> Affine:
        """other ∘ self, composed exactly in float64."""
        return Affine(other.a * self.a, other.a * self.b + other.b)

    def header(self) -> dict[str, Any]:
        return {"kind": "affine"}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"a": self.a, "b": self.b}


@dataclasses.dataclass
class Relu(Elementwise):
    """Keras ReLU: x ≥ threshold → min(x, max_value); below → negative_slope·(x − threshold)."""

    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0

    def apply(self, x: np.ndarray) -> np.ndarray:
        y = np.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
        return y if self.max_value is None else np.minimum(y, self.max_value)

    def header(self) -> dict[str, Any]:
        return {"kind": "relu", "max_value": self.max_value, "negative_slope": self.negative_slope,
                "threshold": self.threshold}


@dataclasses.dataclass
class Softmax(Elementwise):
    """Softmax over the last axis; only allowed as the last stage of the model output."""

    monotone = False

    def apply(self, x: np.ndarray) -> np.ndarray:
        raise TypeError("softmax is not a per-channel function")

    def header(self) -> dict[str, Any]:
        return {"kind": "softmax"}
