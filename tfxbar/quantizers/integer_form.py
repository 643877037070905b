"""The integer form of a quantized weight tensor: what the exporter programs into cells."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["CELL_VIEWS", "IntegerForm"]

#: How the integer codes of one weight are held by crossbar cells.
#: - ``differential``: two non-negative cells per weight, w ∝ g⁺ − g⁻ (codes are signed, offset 0).
#: - ``offset``: one non-negative cell per weight; a fixed offset b is subtracted once per column
#:   through a reference (bias) column, w = s·(c − b).
#: - ``biased``: like ``offset`` but b is *trained* per output channel (P2).
CELL_VIEWS = ("differential", "offset", "biased")


@dataclasses.dataclass(frozen=True)
class IntegerForm:
    """Integer codes, scale and offset of a quantized weight tensor: w = scale · (codes − offset).

    Arguments:
        codes: int32 array with the kernel's shape; every entry is in `levels`.
        scale: float32 array broadcastable to `codes` (per output channel or per tensor).
        offset: float32 array broadcastable to `codes`; zero for the differential view.
        levels: the sorted integer values a code may take.
        cell_view: one of `CELL_VIEWS`.
        channel_axis: the kernel axis that indexes output channels.

    Example:
        >>> form = IntegerForm(np.array([[1, -1]]), np.float32([[0.5, 0.5]]),
        ...                    np.zeros((1, 2), np.float32), (-1, 1), "differential", -1)
        >>> form.dequantize()
        array([[ 0.5, -0.5]], dtype=float32)
    """

    codes: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    levels: tuple[int, ...]
    cell_view: str
    channel_axis: int = -1

    def __post_init__(self) -> None:
        if self.cell_view not in CELL_VIEWS:
            raise ValueError(f"cell_view must be one of {CELL_VIEWS}, got {self.cell_view!r}")
        if not np.issubdtype(self.codes.dtype, np.integer):
            raise TypeError(f"codes must be integers, got {self.codes.dtype}")

    def dequantize(self) -> np.ndarray:
        """The real-valued weights, computed in float32 exactly as the Keras forward pass does."""
        return self.scale * (self.codes.astype(np.float32) - self.offset)

    @property
    def cells(self) -> tuple[np.ndarray, ...]:
        """Non-negative cell codes: ``(g_plus, g_minus)`` for differential pairs, else ``(c,)``."""
        if self.cell_view == "differential":
            return np.maximum(self.codes, 0), np.maximum(-self.codes, 0)
        return (self.codes,)

    @property
    def cell_levels(self) -> int:
        """Distinct conductance levels one cell needs (2 = a binary cell)."""
        if self.cell_view == "differential":
            return max(abs(min(self.levels)), abs(max(self.levels))) + 1
        return max(self.levels) - min(self.levels) + 1

    @property
    def cell_bits(self) -> int:
        """Bits per cell: ceil(log2(cell_levels))."""
        return max(1, int(np.ceil(np.log2(self.cell_levels))))
