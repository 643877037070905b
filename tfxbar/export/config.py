"""Converter options: tiles, weight mapping, DAC, ADC and accumulator (numpy-free, validated)."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["ADC_RANGES", "ACCUMULATOR_MODES", "DATA_ADC_RANGES", "MAPPINGS", "ConverterConfig"]

#: Weight mappings: ``auto`` follows the quantizer's cell view.
MAPPINGS = ("auto", "differential", "offset", "bit_sliced")
#: ADC range policies.
ADC_RANGES = ("lossless", "clip", "calibrated", "mse")
#: ADC range policies whose steps are chosen on representative data.
DATA_ADC_RANGES = ("calibrated", "mse")
#: What the digital accumulator does when a sum leaves its range.
ACCUMULATOR_MODES = ("saturate", "wrap")


@dataclasses.dataclass
class ConverterConfig:
    """Hardware options of a conversion.

    Arguments:
        tile_rows: crossbar rows per tile (inputs).
        tile_cols: crossbar columns per tile (outputs, including a reference column when the
            mapping needs one).
        weight_mapping: ``"differential"`` (a pair of cells g⁺ − g⁻ per weight), ``"offset"``
            (one non-negative cell per weight and a reference column giving Σx; the offset is
            subtracted digitally), ``"bit_sliced"`` (the polarity scheme of the quantizer, codes
            split across cells of `cell_bits` bits and recombined by shift-add), or ``"auto"``
            (differential for signed codes, offset for biased/offset codes).
        cell_bits: bits per cell; codes needing more are bit-sliced. None: one cell holds a
            whole code (per polarity); with ``"bit_sliced"`` None means 1.
        dac_bits: input bits applied per DAC cycle; fewer than the input bits streams the input
            bit-serially (shift-add over cycles). None: the whole input in one cycle.
        adc_bits: ADC resolution per tile column. None with ``"lossless"``: as many as the
            worst-case partial sum needs.
        adc_range: ``"lossless"`` (never clips), ``"clip"`` (unit step, saturates at
            2^adc_bits − 1), ``"calibrated"`` (a power-of-two step per tile column chosen on
            `representative_data` so the largest observed partial sum fits) or ``"mse"`` (the
            power-of-two step per tile column with the least squared ADC error on
            `representative_data`, clipping rare peaks to round common sums more finely; better
            for 3–5-bit ADCs, see `tfxbar.export.passes.calibrate_adc`).
        accumulator_bits: width of the signed digital accumulator.
        accumulator_mode: ``"saturate"`` or ``"wrap"`` on overflow (hardware mode).
        representative_data: uint8/integer input codes for ``"calibrated"`` and ``"mse"`` ADC ranges.

    Raises:
        ValueError: on an invalid option (by `validate`).
    """

    tile_rows: int = 128
    tile_cols: int = 128
    weight_mapping: str = "auto"
    cell_bits: int | None = None
    dac_bits: int | None = None
    adc_bits: int | None = None
    adc_range: str = "lossless"
    accumulator_bits: int = 32
    accumulator_mode: str = "saturate"
    representative_data: Any = dataclasses.field(default=None, repr=False)

    def validate(self) -> ConverterConfig:
        """Check every option; returns self. Raises ValueError naming the option."""
        for name in ("tile_rows", "tile_cols"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 2 <= value <= 65536:
                raise ValueError(f"{name} must be an int in 2..65536, got {value!r}")
        if self.weight_mapping not in MAPPINGS:
            raise ValueError(f"weight_mapping must be one of {MAPPINGS}, got {self.weight_mapping!r}")
        if self.cell_bits is not None and not (isinstance(self.cell_bits, int) and 1 <= self.cell_bits <= 8):
            raise ValueError(f"cell_bits must be None or an int in 1..8, got {self.cell_bits!r}")
        if self.dac_bits is not None and not (isinstance(self.dac_bits, int) and 1 <= self.dac_bits <= 16):
            raise ValueError(f"dac_bits must be None or an int in 1..16, got {self.dac_bits!r}")
        if self.adc_range not in ADC_RANGES:
            raise ValueError(f"adc_range must be one of {ADC_RANGES}, got {self.adc_range!r}")
        if self.adc_bits is not None and not (isinstance(self.adc_bits, int) and 1 <= self.adc_bits <= 32):
            raise ValueError(f"adc_bits must be None or an int in 1..32, got {self.adc_bits!r}")
        if self.adc_range != "lossless" and self.adc_bits is None:
            raise ValueError(f"adc_range={self.adc_range!r} needs adc_bits")
        if self.adc_range in DATA_ADC_RANGES and self.representative_data is None:
            raise ValueError(f"adc_range={self.adc_range!r} needs representative_data (input codes)")
        if not isinstance(self.accumulator_bits, int) or not 2 <= self.accumulator_bits <= 64:
            raise ValueError(f"accumulator_bits must be an int in 2..64, got {self.accumulator_bits!r}")
        if self.accumulator_mode not in ACCUMULATOR_MODES:
            raise ValueError(
                f"accumulator_mode must be one of {ACCUMULATOR_MODES}, got {self.accumulator_mode!r}")
        return self

    def header(self) -> dict[str, Any]:
        """The options as written to a program header (without the data)."""
        fields = dataclasses.asdict(self)
        fields.pop("representative_data")
        return fields
