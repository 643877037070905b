"""EnergyModel: cited defaults, the ADC law, file overrides with errors naming the field, and
energies of the hand-counted program (see tests/test_cost_counts.py for its counts)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cost_toys import W_4x3, dense_program

import tfxbar
from tfxbar.cost import EnergyModel


def test_defaults_are_the_isaac_and_horowitz_derivations() -> None:
    e = EnergyModel()
    # ISAAC Table 6: 8 ADCs (8 bit, 1.2 GS/s) = 16 mW → 2 mW / 1.2e9 conv/s = 1.6667 pJ.
    assert e.adc_pj(8) == pytest.approx(1.6667, abs=1e-4)
    # 8 × 128 1-bit DACs = 4 mW, 100 ns read cycle → 0.3906 pJ per drive.
    assert e.dac_pj == pytest.approx(0.390625)
    # 8 arrays of 128 × 128 = 2.4 mW → 0.3 mW · 100 ns / 16384 cells = 1.831 fJ.
    assert e.cell_read_pj == pytest.approx(1.8310546875e-3)
    assert e.shift_add_pj == e.accumulate_pj == e.compare_pj == 0.1    # Horowitz 32-bit add


def test_walden_law_doubles_per_bit() -> None:
    e = EnergyModel(adc_fom_pj=0.01)
    assert [e.adc_pj(b) for b in (1, 4, 10)] == pytest.approx([0.02, 0.16, 10.24])


def test_table_law() -> None:
    e = EnergyModel(adc_law="table", adc_table_pj={"3": 1.5, 8: 4.0})
    assert e.adc_pj(3) == 1.5 and e.adc_pj(8) == 4.0
    with pytest.raises(ValueError, match="no entry for 5-bit"):
        e.adc_pj(5)
    with pytest.raises(ValueError, match="'adc_table_pj' is required"):
        EnergyModel(adc_law="table")


@pytest.mark.parametrize("fields, message", [
    ({"adc_fom": 1.0}, "unknown energy field 'adc_fom'"),
    ({"dac_pj": -1}, "'dac_pj' must be finite and ≥ 0"),
    ({"cell_read_pj": "big"}, "'cell_read_pj' must be a number"),
    ({"compare_pj": True}, "'compare_pj' must be a number"),
    ({"adc_law": "murmann"}, "'adc_law' must be"),
    ({"adc_table_pj": {"x": 1.0}}, "'adc_table_pj.x'"),
    ({"adc_table_pj": {"4": float("nan")}}, "'adc_table_pj.4' must be finite"),
])
def test_invalid_fields_are_named(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        EnergyModel.from_dict(fields)


def test_from_json_and_toml_files(tmp_path) -> None:
    (tmp_path / "e.json").write_text(json.dumps({"adc_fom_pj": 0.002, "dac_pj": 0.05}))
    e = EnergyModel.from_file(tmp_path / "e.json")
    assert (e.adc_fom_pj, e.dac_pj, e.cell_read_pj) == (0.002, 0.05, EnergyModel().cell_read_pj)
    (tmp_path / "e.toml").write_text('adc_law = "table"\n[adc_table_pj]\n6 = 0.5\n')
    assert EnergyModel.from_file(tmp_path / "e.toml").adc_pj(6) == 0.5
    (tmp_path / "bad.toml").write_text("adc_fom_pj = \n")
    with pytest.raises(ValueError, match="not valid"):
        EnergyModel.from_file(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match=".json or .toml"):
        EnergyModel.from_file(tmp_path / "e.yaml")
    assert EnergyModel.from_dict(e.to_dict()) == e


def test_energy_of_the_hand_counted_layer() -> None:
    # Counts (tests/test_cost_counts.py): dense 24 conversions, 32 drives, 48 cell reads;
    # for x = [0, 2, 0, 0]: 2 conversions, 8 drives, 12 cell reads. The ADC is 3-bit lossless.
    program = dense_program(W_4x3, tile_rows=2, tile_cols=2, input_bits=2, dac_bits=1)
    e = EnergyModel(adc_law="table", adc_table_pj={3: 1.0}, dac_pj=0.5, cell_read_pj=0.25,
                    shift_add_pj=0.125, accumulate_pj=7.0, compare_pj=7.0)
    s = tfxbar.summary(program, data=np.array([[0, 2, 0, 0]]), energy=e)
    (layer,) = s.layers
    assert layer.adc_bits == 3
    assert s.layer_energy(layer) == {"adc": 24.0, "dac": 16.0, "cell": 12.0, "shift_add": 3.0,
                                     "accumulate": 0.0, "compare": 0.0}
    assert s.layer_energy(layer, sparse=True) == {"adc": 2.0, "dac": 4.0, "cell": 3.0,
                                                  "shift_add": 0.25, "accumulate": 0.0, "compare": 0.0}
    t = s.totals
    assert t["adc_reduction"] == pytest.approx(1 - 2 / 24)
    assert t["efficiency_gain"] == pytest.approx(55 / 9.25)
