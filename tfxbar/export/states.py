"""Integer tensor states of the lowering: codes, or an accumulator with a pending real-value chain.

- `Codes`: integer codes x ≥ 0 whose real value is ``scale · x`` (after a quantizer, the
  program input, integer sum-pooling or an Add of codes of one step);
- `Acc`: a signed integer accumulator X per channel (a crossbar's, or an Add's), whose real
  value is ``chain(X)`` for a per-channel chain of elementwise stages (bias, BN, ReLU …), plus
  max-pools, zero padding and a reshape that are postponed until the next quantizer (they
  commute with it).

Each state names the IR tensor that holds its integers.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfxbar.export.elementwise import Affine, Elementwise
from tfxbar.export.ir import Op

__all__ = ["Acc", "Codes", "add_multipliers"]


@dataclasses.dataclass
class Codes:
    """Integer codes x ≥ 0 in tensor `tensor`; real value scale·x, x ≤ max."""

    shape: tuple[int, ...]
    scale: float
    max: int
    tensor: str = ""

    def copy(self) -> Codes:
        return dataclasses.replace(self)


@dataclasses.dataclass
class Acc:
    """A signed integer accumulator X in tensor `tensor` (static range [lo, hi] per channel),
    real value chain(X), with postponed ops: max-pools / zero pads (at chain position), and a
    reshape, emitted after the next quantizer (they commute with it)."""

    shape: tuple[int, ...]
    chain: list[Elementwise]
    lo: np.ndarray
    hi: np.ndarray
    pools: list[tuple[Op, int]] = dataclasses.field(default_factory=list)
    reshape: tuple[int, ...] | None = None
    tensor: str = ""

    @property
    def linear(self) -> bool:
        return all(isinstance(e, Affine) for e in self.chain)

    def copy(self) -> Acc:
        # Postponed ops are emitted by whichever consumer quantizes: each gets its own.
        pools = [(dataclasses.replace(op, attrs=dict(op.attrs), arrays=dict(op.arrays)), i)
                 for op, i in self.pools]
        return dataclasses.replace(self, chain=list(self.chain), pools=pools)

    def affine(self) -> Affine:
        """The chain as one per-channel affine map (it must be linear)."""
        channels = self.shape[-1]
        total = Affine(np.ones(channels), np.zeros(channels))
        for stage in self.chain:
            total = total.then(stage)
        return total


def add_multipliers(slopes: np.ndarray, reach: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer multipliers of an Add: the inputs' per-channel slopes aᵢ on one power-of-two grid.

    mᵢ = round(aᵢ·2^E) with, per channel, the largest E that keeps Σᵢ |mᵢ|·reachᵢ (and each |mᵢ|)
    below 2^52, then reduced by common factors of two (equal slopes give mᵢ = 1).

    Arguments:
        slopes: ``(k, C)`` float64 aᵢ of the k inputs (nonzero per channel).
        reach: ``(k, C)`` largest |Xᵢ| of each input.

    Returns:
        ``(m, E)``: int64 ``(k, C)`` multipliers and int64 ``(C,)`` exponents.
    """
    weight = (np.abs(slopes) * reach).sum(axis=0)
    peak = np.abs(slopes).max(axis=0)
    limit = np.minimum(2.0 ** 52 / np.maximum(weight, 1e-300), 2.0 ** 52 / peak)
    exponent = np.floor(np.log2(limit)).astype(np.int64)
    m = np.round(slopes * 2.0 ** exponent).astype(np.int64)
    while True:
        even = np.all(m % 2 == 0, axis=0) & np.any(m != 0, axis=0)
        if not even.any():
            return m, exponent
        m[:, even] //= 2
        exponent[even] -= 1
