"""Noise-strength schedules for `DeviceVariation`: a factor on the device's noise amplitudes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

__all__ = ["Schedule", "as_schedule", "constant", "per_epoch", "ramp"]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Strength of the device noise as a function of training progress.

    The strength multiplies the device's σ values and fault rates (not drift or on/off
    ratio); 1 means the device model as given.

    Arguments:
        fn: maps the fractional epoch (epoch + batch / steps_per_epoch) to the strength.
        per_batch: re-evaluate before every batch (one scalar assignment; no retracing),
            otherwise once per epoch.
        name: for reprs and logs.
    """

    fn: Callable[[float], float]
    per_batch: bool = False
    name: str = "schedule"

    def __call__(self, epoch: float) -> float:
        return float(self.fn(epoch))


def constant(value: float = 1.0) -> Schedule:
    """The same strength throughout."""
    return Schedule(lambda _: value, False, f"constant({value})")


def ramp(epochs: float, start: float = 0.0, end: float = 1.0, per_batch: bool = True) -> Schedule:
    """Linear ramp from `start` to `end` over the first `epochs` epochs, then `end`.

    Ramping lets the network first fit the clean task, then adapt to growing noise.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    return Schedule(lambda e: start + (end - start) * min(1.0, e / epochs), per_batch,
                    f"ramp({epochs}, {start}, {end})")


def per_epoch(values: Sequence[float]) -> Schedule:
    """``values[epoch]`` at each epoch; the last value holds afterwards."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("per_epoch needs at least one value")
    return Schedule(lambda e: values[min(int(e), len(values) - 1)], False, f"per_epoch({values})")


def as_schedule(schedule: Schedule | float | Sequence[float] | Callable[[int], float] | None
                ) -> Schedule:
    """A `Schedule` from None (constant 1), a number, a per-epoch list or a callable(epoch)."""
    if schedule is None:
        return constant(1.0)
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, int | float):
        return constant(float(schedule))
    if callable(schedule):
        fn = schedule
        return Schedule(lambda e: fn(int(e)), False, getattr(fn, "__name__", "callable"))
    return per_epoch(schedule)
