"""`EnergyModel`: energy per operation of a crossbar accelerator, with cited defaults.

Every energy is in picojoules (pJ). The per-layer energy of a program is a sum of counts times
energies (docs/cost_model.md):

    E = N_adc·E_ADC(b_adc) + N_dac·d·e_dac + N_cell·e_cell + N_sa·e_sa + N_acc·e_acc + N_cmp·e_cmp

with E_ADC(b) = FoM_W · 2^b (Walden figure of merit, ``adc_law="walden"``) or a table of
energies per resolution (``adc_law="table"``).

Defaults (see docs/cost_model.md for the derivations and what is an assumption):

- ADC, DAC and cell read are derived from ISAAC's component table (Shafiee et al., ISCA 2016;
  per IMA eight 8-bit 1.2 GS/s ADCs at 16 mW, 8 × 128 1-bit DACs at 4 mW, eight
  128 × 128 arrays at 2.4 mW; 100 ns crossbar read): E_ADC(8) = 2 mW / 1.2 GS/s = 1.667 pJ,
  so FoM_W = 1.667 pJ / 2^8 = 6.51 fJ per conversion step; e_dac = 4 mW / 1024 · 100 ns =
  0.391 pJ per row drive; e_cell = 0.3 mW · 100 ns / 16384 = 1.83 fJ per cell per read.
- Digital operations use Horowitz (ISSCC 2014, "Computing's energy problem", 45 nm): a 32-bit
  integer add costs 0.1 pJ; a shift-add, an accumulate and a threshold comparison are each
  taken as one 32-bit add (assumption).

References:
    Shafiee et al., "ISAAC: A convolutional neural network accelerator with in-situ analog
    arithmetic in crossbars", ISCA 2016. Walden, "Analog-to-digital converter survey and
    analysis", IEEE JSAC 17(4), 1999. Murmann, "ADC performance survey 1997–present".
    Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import tomllib

__all__ = ["ENERGY_KINDS", "EnergyModel"]

#: Energy categories, in the order reports list them.
ENERGY_KINDS = ("adc", "dac", "cell", "shift_add", "accumulate", "compare")

_ISAAC_ADC_8BIT_PJ = 2.0e-3 / 1.2e9 * 1e12          # 16 mW / 8 ADCs at 1.2 GS/s → 1.667 pJ
_ISAAC_DAC_PJ = 4.0e-3 / (8 * 128) * 100e-9 * 1e12    # 0.391 pJ per 1-bit row drive
_ISAAC_CELL_PJ = 2.4e-3 / 8 * 100e-9 * 1e12 / (128 * 128)  # 1.83 fJ per cell per read
_HOROWITZ_ADD32_PJ = 0.1                              # 32-bit integer add, 45 nm


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """Energies per operation (pJ) and the ADC energy law.

    Arguments:
        adc_law: ``"walden"`` (E_ADC(b) = adc_fom_pj · 2^b per conversion) or ``"table"``
            (E_ADC(b) = adc_table_pj[b]).
        adc_fom_pj: Walden figure of merit, pJ per conversion step (default: ISAAC's 8-bit ADC,
            1.667 pJ / 256).
        adc_table_pj: ``{bits: pJ per conversion}`` for ``adc_law="table"``.
        dac_pj: one DAC driving one row for one DAC cycle, per input bit of the DAC (a d-bit
            DAC costs d·dac_pj per drive; the linear scaling in d is an assumption).
        cell_read_pj: one cell read in one DAC cycle.
        shift_add_pj: shifting one ADC result and adding it into its column's accumulator.
        accumulate_pj: one digital add outside the shift-add tree (offset correction B·Σx,
            sum pooling).
        compare_pj: one digital comparison (threshold search, max pooling).
        name: a label for reports.

    Raises:
        ValueError: a field is missing, unknown, negative or of the wrong type (the message
            names the field).
    """

    adc_law: str = "walden"
    adc_fom_pj: float = _ISAAC_ADC_8BIT_PJ / 2 ** 8
    adc_table_pj: Mapping[int, float] | None = None
    dac_pj: float = _ISAAC_DAC_PJ
    cell_read_pj: float = _ISAAC_CELL_PJ
    shift_add_pj: float = _HOROWITZ_ADD32_PJ
    accumulate_pj: float = _HOROWITZ_ADD32_PJ
    compare_pj: float = _HOROWITZ_ADD32_PJ
    name: str = "ISAAC (ISCA 2016) analog + Horowitz (ISSCC 2014) digital"

    def __post_init__(self) -> None:
        if self.adc_law not in ("walden", "table"):
            raise ValueError(f"energy field 'adc_law' must be 'walden' or 'table', got {self.adc_law!r}")
        for field in ("adc_fom_pj", "dac_pj", "cell_read_pj", "shift_add_pj", "accumulate_pj",
                      "compare_pj"):
            _check_energy(field, getattr(self, field))
        if self.adc_table_pj is not None:
            if not isinstance(self.adc_table_pj, Mapping):
                raise ValueError("energy field 'adc_table_pj' must be a mapping {bits: pJ}")
            table = {}
            for key, value in self.adc_table_pj.items():
                try:
                    bits = int(key)
                except (TypeError, ValueError):
                    raise ValueError(f"energy field 'adc_table_pj.{key}': keys must be integer "
                                     "ADC bits") from None
                if not 1 <= bits <= 32:
                    raise ValueError(f"energy field 'adc_table_pj.{key}': bits must be in 1..32")
                _check_energy(f"adc_table_pj.{key}", value)
                table[bits] = float(value)
            object.__setattr__(self, "adc_table_pj", table)
        elif self.adc_law == "table":
            raise ValueError("energy field 'adc_table_pj' is required when adc_law='table'")
        if not isinstance(self.name, str):
            raise ValueError(f"energy field 'name' must be a string, got {self.name!r}")

    # -- energies --------------------------------------------------------------------------
    def adc_pj(self, bits: int) -> float:
        """Energy of one conversion of a `bits`-bit ADC (pJ).

        Raises:
            ValueError: with ``adc_law="table"``, `bits` is not in the table.
        """
        if self.adc_law == "walden":
            return self.adc_fom_pj * 2.0 ** bits
        assert self.adc_table_pj is not None
        if bits not in self.adc_table_pj:
            raise ValueError(f"energy field 'adc_table_pj' has no entry for {bits}-bit ADCs "
                             f"(has {sorted(self.adc_table_pj)})")
        return self.adc_table_pj[bits]

    def per_op(self, adc_bits: int, dac_bits: int) -> dict[str, float]:
        """Energy of one operation of each kind in `ENERGY_KINDS` for one crossbar layer."""
        return {"adc": self.adc_pj(adc_bits), "dac": self.dac_pj * dac_bits,
                "cell": self.cell_read_pj, "shift_add": self.shift_add_pj,
                "accumulate": self.accumulate_pj, "compare": self.compare_pj}

    # -- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (table keys as strings)."""
        out = dataclasses.asdict(self)
        if self.adc_table_pj is not None:
            out["adc_table_pj"] = {str(k): v for k, v in sorted(self.adc_table_pj.items())}
        return out

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any], base: EnergyModel | None = None) -> EnergyModel:
        """Defaults (or `base`) overridden by `fields`.

        Raises:
            ValueError: an unknown field, or an invalid value (named in the message).
        """
        if not isinstance(fields, Mapping):
            raise ValueError(f"energy config must be a mapping of fields, got {type(fields).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in fields:
            if key not in known:
                raise ValueError(f"unknown energy field {key!r}; fields: {sorted(known)}")
        return dataclasses.replace(base or cls(), **dict(fields))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> EnergyModel:
        """Defaults overridden by a ``.json`` or ``.toml`` file of fields.

        Example (TOML)::

            adc_law = "walden"
            adc_fom_pj = 0.002     # 2 fJ/conv-step
            cell_read_pj = 0.001

        Raises:
            ValueError: unreadable file, unknown extension, or an invalid field.
        """
        path = os.fspath(path)
        try:
            if path.endswith(".toml"):
                with open(path, "rb") as handle:
                    fields = tomllib.load(handle)
            elif path.endswith(".json"):
                with open(path, encoding="utf-8") as handle:
                    fields = json.load(handle)
            else:
                raise ValueError(f"energy config {path!r} must be a .json or .toml file")
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"energy config {path!r} is not valid: {exc}") from None
        except OSError as exc:
            raise ValueError(f"cannot read energy config {path!r}: {exc.strerror or exc}") from None
        return cls.from_dict(fields)


def _check_energy(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"energy field {field!r} must be a number (pJ), got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"energy field {field!r} must be finite and ≥ 0 pJ, got {value!r}")
