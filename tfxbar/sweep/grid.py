"""A sweep's configuration and its grid of design points (numpy-free, JSON)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from tfxbar.export.config import ADC_RANGES

__all__ = ["AXES", "FINETUNE_AUGMENT", "FINETUNE_BATCHNORM", "FINETUNE_FIELDS", "FINETUNE_KINDS",
           "FINETUNE_OPTIMIZERS", "FINETUNE_SCHEDULES", "SweepConfig", "point_id"]

#: Grid axes: converter options (`ConverterConfig` fields), the device σ of the chips and the
#: fine-tune of the model before conversion.
AXES = ("adc_bits", "adc_range", "dac_bits", "tile_size", "cell_bits", "weight_mapping", "sigma",
        "accumulator_bits", "finetune")

#: Values of the ``finetune`` axis: none; plain QAT (ideal crossbars); ADC-aware (hardware mode).
FINETUNE_KINDS = ("none", "qat", "adc_aware")

#: Config fields of the fine-tunes; every fine-tuned row records them (and a resumed sweep
#: refuses a table whose fine-tuned rows were made with other values).
FINETUNE_FIELDS = ("finetune_epochs", "finetune_steps", "finetune_lr", "finetune_batch_size",
                   "finetune_batchnorm", "finetune_optimizer", "finetune_schedule", "finetune_augment",
                   "finetune_data", "seed")

#: Batch norm during fine-tunes: ``"frozen"`` (inference mode: moving statistics, fixed γ / β)
#: or ``"train"`` (Keras' default: batch statistics, moving averages updated).
FINETUNE_BATCHNORM = ("frozen", "train")

#: Fine-tune optimizers: Adam, or SGD with Nesterov momentum 0.9 (steps proportional to the
#: gradient: weights with small gradients stay on their side of a rounding threshold).
FINETUNE_OPTIMIZERS = ("adam", "sgd")

#: Learning-rate schedules: constant, or cosine decay to 0 over the fine-tune's steps.
FINETUNE_SCHEDULES = ("constant", "cosine")

#: Training-image augmentation: none, or a random crop of the image zero-padded by 4 pixels and a
#: random horizontal flip (the usual CIFAR-10 recipe; not for digits).
FINETUNE_AUGMENT = ("none", "crop_flip")


def _key_value(value: Any) -> Any:
    # A table can give 0.0 back for a grid's 0 (Parquet columns are typed): one key for both.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def point_id(point: dict[str, Any], axes: Sequence[str] = AXES) -> str:
    """A stable key of one grid point (what a resumed sweep skips).

    Arguments:
        point: a grid point or a table row (keys other than `axes` are ignored).
        axes: the axes that make the key (a sweep's `SweepConfig.axes`).

    Returns:
        JSON of every axis in `axes` (None when absent; a missing ``finetune`` is ``"none"``).

    Example:
        >>> point_id({"adc_bits": 4}) == point_id({"adc_bits": 4.0, "finetune": "none"})
        True
    """
    key = {a: _key_value(point.get(a)) for a in axes}
    if key.get("finetune", "none") in (None, ""):
        key["finetune"] = "none"
    return json.dumps(key, sort_keys=True)


def _positive_int(name: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "a positive integer or null" if optional else "a positive integer"
        raise ValueError(f"sweep config field {name} must be {what}, got {value!r}")


@dataclasses.dataclass
class SweepConfig:
    """What to sweep and where to write it.

    Arguments:
        model: path of a `tfxbar.quantize_model` model (``.keras``).
        data: path of an ``.npz`` with ``x`` (program input codes, e.g. uint8 pixels) and ``y``
            (integer labels); the first `representative` of ``x`` calibrate the ADC steps.
        grid: ``{axis: [values]}`` for axes in `AXES`, or a list of such grids (their union: e.g.
            ADC-aware fine-tunes only at the low ADC resolutions); missing axes take the converter
            defaults (σ = 0: no chips; ``finetune``: ``"none"``).
        table: the table the rows go to: CSV, or Parquet if it ends in ``.parquet`` (rewritten
            atomically point by point; existing rows are skipped).
        plot: the Pareto plot (accuracy vs energy), PNG; None: none.
        trials: chips per point when σ > 0.
        seed: seed of the chips and of the fine-tunes (initial shuffles, dropout).
        representative: calibration images: the first `representative` of `representative_data`.
        representative_data: ``.npz`` with ``x`` (input codes, as `data`) the ADC steps are
            chosen on; None: `data` itself (slightly optimistic: the measured images calibrate
            their own ADCs). Rows record it as ``calibration`` (the file name, or ``"data"``).
        adc_range: ADC range policy of every point with `adc_bits` (``"calibrated"`` or
            ``"mse"``: steps chosen on the `representative` images; they need nothing more),
            unless the grid has an ``adc_range`` axis. Every row records the policy it used.
        finetune_data: ``.npz`` with ``x`` (input codes, as `data`) and ``y`` the fine-tunes train
            on; required when the grid has ``"qat"`` or ``"adc_aware"``.
        finetune_epochs: epochs of every fine-tune.
        finetune_steps: batches per epoch (the first ``finetune_steps · finetune_batch_size``
            examples of `finetune_data`); None: all of them.
        finetune_lr: (initial) learning rate of the fine-tunes.
        finetune_batch_size: fine-tune batch size.
        finetune_batchnorm: ``"frozen"``: batch-norm layers run in inference mode while
            fine-tuning, so the training forward pass is the deployed one (in hardware mode the
            batch statistics of ADC-distorted partial sums differ from the moving averages a
            short fine-tune leaves, and the trained weights then fit statistics the deployed
            model does not use); ``"train"``: Keras' default.
        finetune_optimizer: ``"adam"`` or ``"sgd"`` (Nesterov momentum 0.9). Adam moves every
            weight by about the learning rate per step whatever its gradient, which flips low-bit
            codes of a converged model at their rounding thresholds; SGD moves them in proportion.
        finetune_schedule: ``"constant"`` or ``"cosine"`` (decay to 0 at the last step, as a
            QAT schedule ends).
        finetune_augment: ``"none"`` or ``"crop_flip"`` (4-pixel padded random crops and
            horizontal flips of ``(N, H, W, C)`` images, as CIFAR-10 training does).

    Raises:
        ValueError: a field is invalid; the message names it.

    Example:
        >>> SweepConfig.load("docs/sweeps/p4_mnist.json").points()[:2]
    """

    model: str
    data: str
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]]
    table: str = "sweep.csv"
    plot: str | None = "sweep.png"
    trials: int = 5
    seed: int = 0
    representative: int = 256
    representative_data: str | None = None
    adc_range: str = "calibrated"
    finetune_data: str | None = None
    finetune_epochs: int = 1
    finetune_steps: int | None = None
    finetune_lr: float = 3e-4
    finetune_batch_size: int = 64
    finetune_batchnorm: str = "frozen"
    finetune_optimizer: str = "adam"
    finetune_schedule: str = "constant"
    finetune_augment: str = "none"

    def __post_init__(self) -> None:
        grids = self.grid if isinstance(self.grid, list) else [self.grid]
        if not grids or not all(isinstance(g, dict) for g in grids):
            raise ValueError("sweep config field grid must be {axis: [values]} or a non-empty list of them, "
                             f"got {self.grid!r}")
        for grid in grids:
            unknown = sorted(set(grid) - set(AXES))
            if unknown:
                raise ValueError(f"unknown sweep axes {unknown} in grid; axes: {list(AXES)}")
            for axis, values in grid.items():
                if not isinstance(values, list) or not values:
                    raise ValueError(f"grid.{axis} must be a non-empty list, got {values!r}")
            bad = [v for v in grid.get("finetune", []) if v not in FINETUNE_KINDS]
            if bad:
                raise ValueError(f"grid.finetune: unknown values {bad}; use {list(FINETUNE_KINDS)}")
            bad = [v for v in grid.get("adc_range", []) if v not in ADC_RANGES]
            if bad:
                raise ValueError(f"grid.adc_range: unknown values {bad}; use {list(ADC_RANGES)}")
        for name in ("trials", "representative", "finetune_epochs", "finetune_batch_size"):
            _positive_int(name, getattr(self, name))
        _positive_int("finetune_steps", self.finetune_steps, optional=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"sweep config field seed must be a non-negative integer, got {self.seed!r}")
        lr = self.finetune_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"sweep config field finetune_lr must be a positive number, got {lr!r}")
        if self.finetune_batchnorm not in FINETUNE_BATCHNORM:
            raise ValueError("sweep config field finetune_batchnorm must be one of "
                             f"{list(FINETUNE_BATCHNORM)}, got {self.finetune_batchnorm!r}")
        for name, allowed in (("adc_range", ADC_RANGES), ("finetune_optimizer", FINETUNE_OPTIMIZERS),
                              ("finetune_schedule", FINETUNE_SCHEDULES),
                              ("finetune_augment", FINETUNE_AUGMENT)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"sweep config field {name} must be one of {list(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        if self.finetunes and not self.finetune_data:
            raise ValueError("sweep config field finetune_data is required when grid.finetune has "
                             "'qat' or 'adc_aware': an .npz with x (input codes) and y (labels) to train on")

    @property
    def finetunes(self) -> bool:
        """Whether some point fine-tunes the model."""
        return any(p.get("finetune", "none") != "none" for p in self.points())

    @property
    def axes(self) -> list[str]:
        """The axes some grid sweeps, in `AXES` order."""
        grids = self.grid if isinstance(self.grid, list) else [self.grid]
        return [a for a in AXES if any(a in g for g in grids)]

    def finetune_settings(self) -> dict[str, Any]:
        """The fine-tune fields every fine-tuned row records (`FINETUNE_FIELDS`; the data by file name)."""
        values = {name: getattr(self, name) for name in FINETUNE_FIELDS}
        values["finetune_seed"] = values.pop("seed")
        if values["finetune_data"]:
            values["finetune_data"] = os.path.basename(values["finetune_data"])
        return values

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SweepConfig:
        """Read a JSON config; relative paths in it are relative to the config's folder.

        Raises:
            ValueError: the JSON is not an object, a field is unknown, missing or invalid
                (the message names it).
        """
        with open(path, encoding="utf-8") as handle:
            fields = json.load(handle)
        if not isinstance(fields, dict):
            raise ValueError(f"sweep config {path}: expected a JSON object of fields")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise ValueError(f"sweep config {path}: unknown fields {unknown}; fields: {known}")
        missing = [name for name in ("model", "data", "grid") if name not in fields]
        if missing:
            raise ValueError(f"sweep config {path}: missing required fields {missing}")
        base = os.path.dirname(os.path.abspath(path))
        for key in ("model", "data", "table", "plot", "finetune_data", "representative_data"):
            if isinstance(fields.get(key), str) and not os.path.isabs(fields[key]):
                fields[key] = os.path.join(base, fields[key])
        try:
            return cls(**fields)
        except ValueError as exc:
            raise ValueError(f"sweep config {path}: {exc}") from None

    def points(self) -> list[dict[str, Any]]:
        """Every grid point once, in a fixed order (per grid, the cartesian product of its axes in
        `AXES` order; a point of several grids comes where it comes first)."""
        points, seen = [], set()
        for grid in self.grid if isinstance(self.grid, list) else [self.grid]:
            axes = [a for a in AXES if a in grid]
            for values in itertools.product(*(grid[a] for a in axes)):
                point = dict(zip(axes, values, strict=True))
                if point_id(point) not in seen:
                    seen.add(point_id(point))
                    points.append(point)
        return points
