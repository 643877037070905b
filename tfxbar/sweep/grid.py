"""A sweep's configuration and its grid of design points (numpy-free, JSON)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import Any

__all__ = ["AXES", "SweepConfig", "point_id"]

#: Grid axes: converter options (`ConverterConfig` fields) plus the device σ of the chips.
AXES = ("adc_bits", "dac_bits", "tile_size", "cell_bits", "weight_mapping", "sigma", "accumulator_bits")


def point_id(point: dict[str, Any]) -> str:
    """A stable key of one grid point (what a resumed sweep skips)."""
    return json.dumps({k: point[k] for k in AXES if k in point}, sort_keys=True)


@dataclasses.dataclass
class SweepConfig:
    """What to sweep and where to write it.

    Arguments:
        model: path of a `tfxbar.quantize_model` model (``.keras``).
        data: path of an ``.npz`` with ``x`` (program input codes, e.g. uint8 pixels) and ``y``
            (integer labels); the first `representative` of ``x`` calibrate the ADC steps.
        grid: ``{axis: [values]}`` for axes in `AXES`; missing axes take the converter defaults
            (σ = 0: no chips).
        table: the CSV the rows go to (appended point by point; existing rows are skipped).
        plot: the Pareto plot (accuracy vs energy), PNG; None: none.
        trials: chips per point when σ > 0.
        seed: seed of the chips.
        representative: calibration images.
        adc_range: ADC range policy of every point (``"calibrated"`` needs nothing more).

    Example:
        >>> SweepConfig.load("sweep.json").points()[:2]
    """

    model: str
    data: str
    grid: dict[str, list[Any]]
    table: str = "sweep.csv"
    plot: str | None = "sweep.png"
    trials: int = 5
    seed: int = 0
    representative: int = 256
    adc_range: str = "calibrated"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.grid) - set(AXES))
        if unknown:
            raise ValueError(f"unknown sweep axes {unknown}; axes: {list(AXES)}")
        for axis, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{axis} must be a non-empty list, got {values!r}")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SweepConfig:
        """Read a JSON config; relative paths in it are relative to the config's folder."""
        with open(path, encoding="utf-8") as handle:
            fields = json.load(handle)
        base = os.path.dirname(os.path.abspath(path))
        for key in ("model", "data", "table", "plot"):
            if fields.get(key) is not None and not os.path.isabs(fields[key]):
                fields[key] = os.path.join(base, fields[key])
        try:
            return cls(**fields)
        except TypeError as exc:
            raise ValueError(f"sweep config {path}: {exc}") from None

    def points(self) -> list[dict[str, Any]]:
        """Every grid point, in a fixed order (the cartesian product of the axes in `AXES` order)."""
        axes = [a for a in AXES if a in self.grid]
        return [dict(zip(axes, values, strict=True))
                for values in itertools.product(*(self.grid[a] for a in axes))]
