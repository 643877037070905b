"""The ADC of hardware mode (docs/format.md §4.1): a tile column's partial sum becomes the code
round-half-up(partial / 2^shift), saturating at 2^bits − 1, worth code · 2^shift. One place for
the interpreter and the checker's data-driven replay (numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["adc", "float_adc"]


def adc(partial: np.ndarray, shift: np.ndarray | int, bits: int) -> tuple[np.ndarray, int]:
    """(code · 2^shift as int64, how many conversions saturated) for integer partial sums."""
    shift = np.asarray(shift, np.int64)
    code = (partial + ((1 << shift) >> 1)) >> shift
    top = (1 << bits) - 1
    return np.clip(code, 0, top) << shift, int(np.count_nonzero(code > top))


def float_adc(partial: np.ndarray, inv_step: np.ndarray | None, top: int, signed: bool) -> int:
    """The ADC on float partial sums (exact integers), in place, leaving the codes; returns how
    many saturated. round half up of partial · 2^−shift (`inv_step`; None: the weights were
    pre-scaled) is exact, a power-of-two scaling; codes saturate at `top`, and at 0 when a device
    can make sums negative (`signed`)."""
    if inv_step is not None:
        partial *= inv_step.astype(partial.dtype)
    partial += 0.5
    np.floor(partial, out=partial)
    clipped = int(np.count_nonzero(partial > top))
    np.minimum(partial, top, out=partial)
    if signed:
        np.maximum(partial, 0, out=partial)
    return clipped
