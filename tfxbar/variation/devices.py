"""Device models: the non-idealities of the ReRAM cells behind each crossbar weight.

All conductances are normalised to G_max = 1; G_min = 1 / on_off_ratio. Typical values and
sources are in docs/variation.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import tf_keras as keras

__all__ = ["PARAMETERS", "DeviceModel"]

#: Order of the device's numeric parameters in the float vector the graph reads
#: (`DeviceModel.parameter_vector`). Changing a value never retraces; the first five are the
#: stochastic amplitudes that a `DeviceVariation` schedule scales.
PARAMETERS = ("lognormal_sigma", "additive_sigma", "read_sigma", "stuck_at_0", "stuck_at_1",
              "g_min", "drift_log_time", "drift_nu", "drift_nu_std")
SCHEDULED = PARAMETERS[:5]


@keras.utils.register_keras_serializable(package="tfxbar")
@dataclasses.dataclass(frozen=True)
class DeviceModel:
    """Non-idealities of the resistive cells that hold the integer codes of quantized weights.

    A weight's code is programmed as conductances (one cell, a differential pair, or bit slices;
    see `tfxbar.variation.cells`); a code c of a cell with L levels targets
    G = G_min + c/(L − 1)·(G_max − G_min), the noise below acts on G, and the crossbar reads
    back c' = (G' − G_min)/(G_max − G_min)·(L − 1). In order of application:

    1. finite levels: the cell holds only 2^cell_bits evenly spaced conductances; targets in
       between are rounded to the nearest one (deterministic);
    2. stuck-at faults (per chip): a cell is stuck at G_min (``stuck_at_0``, the high-resistance
       state) or at G_max (``stuck_at_1``) with these probabilities and ignores programming;
    3. programming variation (per chip): G ← G·exp(N(0, lognormal_sigma)) + N(0, additive_sigma)
       — cycle-to-cycle and device-to-device spread of write-verify programming;
    4. drift: G ← G·(t/t0)^(−ν), ν ~ N(drift_nu, drift_nu_std) per cell, clipped at 0;
    5. read noise (per read, i.e. per batch): G ← G + N(0, read_sigma);
    6. G ← max(G, 0): a conductance cannot be negative.

    Additive and read noise are fractions of G_max. Set every amplitude to 0 for ideal cells.

    Arguments:
        lognormal_sigma: σ of the multiplicative lognormal programming variation.
        additive_sigma: σ of the additive Gaussian programming variation, relative to G_max.
        read_sigma: σ of the additive Gaussian read noise, relative to G_max.
        stuck_at_0: probability that a cell is stuck at G_min.
        stuck_at_1: probability that a cell is stuck at G_max.
        on_off_ratio: G_max / G_min (``math.inf``: G_min = 0).
        cell_bits: bits a physical cell can hold (None: as many as the mapping needs).
        slice_bits: split each cell code into slices of this many bits, each on its own cell,
            recombined by shift-and-add (None: one cell per code); match the export config.
        drift_nu: mean drift exponent ν.
        drift_nu_std: spread of ν across cells.
        drift_time: time t since programming at which the chip is read.
        drift_t0: reference time t0 (programming ends), same unit as `drift_time`.

    References:
        Liu et al., Vortex: variation-aware training for memristor X-bar, DAC 2015 (lognormal
        variation); Joshi et al., Nature Communications 11:2473, 2020 (additive noise relative
        to G_max, drift); Chen et al., IEEE Trans. Computers 64(1), 2015 (stuck-at faults);
        Rasch et al., IBM aihwkit, AICAS 2021.

    Example:
        >>> DeviceModel(lognormal_sigma=0.1, stuck_at_0=0.01).with_sigma(0.2).lognormal_sigma
        0.2
    """

    lognormal_sigma: float = 0.0
    additive_sigma: float = 0.0
    read_sigma: float = 0.0
    stuck_at_0: float = 0.0
    stuck_at_1: float = 0.0
    on_off_ratio: float = 100.0
    cell_bits: int | None = None
    slice_bits: int | None = None
    drift_nu: float = 0.0
    drift_nu_std: float = 0.0
    drift_time: float = 1.0
    drift_t0: float = 1.0

    def __post_init__(self) -> None:
        for name in ("lognormal_sigma", "additive_sigma", "read_sigma", "drift_nu", "drift_nu_std"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("stuck_at_0", "stuck_at_1"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.stuck_at_0 + self.stuck_at_1 > 1:
            raise ValueError("stuck_at_0 + stuck_at_1 must not exceed 1")
        if not self.on_off_ratio > 1:
            raise ValueError(f"on_off_ratio must be > 1, got {self.on_off_ratio}")
        for name in ("cell_bits", "slice_bits"):
            value = getattr(self, name)
            if value is not None and not 1 <= int(value) <= 8:
                raise ValueError(f"{name} must be None or in 1..8, got {value}")
        if not (self.drift_time > 0 and self.drift_t0 > 0):
            raise ValueError("drift_time and drift_t0 must be > 0")

    # -- derived ---------------------------------------------------------------------------
    @property
    def g_min(self) -> float:
        """G_min / G_max."""
        return 0.0 if math.isinf(self.on_off_ratio) else 1.0 / self.on_off_ratio

    @property
    def components(self) -> frozenset[str]:
        """The noise stages this model uses; the graph only contains these (see `cells`)."""
        active = {name for name in ("lognormal_sigma", "additive_sigma", "read_sigma")
                  if getattr(self, name) > 0}
        if self.stuck_at_0 > 0 or self.stuck_at_1 > 0:
            active.add("stuck")
        if self.drift_nu > 0 or self.drift_nu_std > 0:
            active.add("drift")
        return frozenset(active)

    def parameter_vector(self) -> np.ndarray:
        """The numeric parameters in `PARAMETERS` order, as float32."""
        values = {**dataclasses.asdict(self), "g_min": self.g_min,
                  "drift_log_time": math.log(self.drift_time / self.drift_t0)}
        return np.array([values[name] for name in PARAMETERS], np.float32)

    def with_sigma(self, sigma: float) -> DeviceModel:
        """A copy with `lognormal_sigma` = sigma (the axis of robustness curves)."""
        return dataclasses.replace(self, lognormal_sigma=float(sigma))

    def replace(self, **changes: Any) -> DeviceModel:
        """A copy with some fields changed (`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    # -- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields (``inf`` on/off ratio is kept as a float)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> DeviceModel:
        return cls(**config)

    get_config = to_dict

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DeviceModel:
        return cls.from_dict(config)

    # -- typical devices -------------------------------------------------------------------
    @classmethod
    def lognormal(cls, sigma: float, **kwargs: Any) -> DeviceModel:
        """Only lognormal programming variation (Vortex's model), e.g. for σ sweeps."""
        return cls(lognormal_sigma=float(sigma), **kwargs)

    @classmethod
    def typical_reram(cls, **kwargs: Any) -> DeviceModel:
        """A mid-range HfOx/TaOx ReRAM after write-verify (values from docs/variation.md):
        σ_log 0.1, 1 % read noise, 1 % stuck-at-0, 1 % stuck-at-1, on/off 100."""
        values = {"lognormal_sigma": 0.1, "read_sigma": 0.01, "stuck_at_0": 0.01,
                  "stuck_at_1": 0.01, "on_off_ratio": 100.0, **kwargs}
        return cls(**values)
