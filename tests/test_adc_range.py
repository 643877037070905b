"""Data-chosen ADC ranges: ``calibrated`` holds every observed peak, ``mse`` has the least squared
ADC error (tfxbar/export/passes/calibrate_adc.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from check_toys import make_program
from export_toys import pixel_codes, trained

import tfxbar
from tfxbar.export.format import Program, load_program
from tfxbar.export.interpreter import Interpreter
from tfxbar.export.passes.calibrate_adc import adc_errors, adc_steps

RNG = np.random.default_rng(11)


def _with_steps(program: Program, steps: dict[int, list[tuple]]) -> Program:
    arrays = dict(program.arrays)
    for index, tiles in steps.items():
        for t, (shift, ref) in enumerate(tiles):
            arrays[f"op{index}.tile{t}.adc_shift"] = shift
            if ref is not None:
                arrays[f"op{index}.tile{t}.ref_shift"] = ref
    return Program(copy.deepcopy(program.header), arrays)


def _direct_errors(program: Program, x: np.ndarray, max_shift: int) -> list[tuple]:
    """Per tile, Σ (2^k · ADC code − partial sum)² for k = 0 … max_shift, value by value in
    float64 (round half up: floor(v / 2^k + 1/2), saturating at 2^bits − 1)."""
    index = next(i for i, op in enumerate(program.ops) if op["kind"] == "crossbar")
    attrs, arrays = program.ops[index]["attrs"], program.op_arrays(index)
    top, d = 2 ** attrs["adc_bits"] - 1, attrs["dac_bits"]

    def error(sums: np.ndarray, k: int) -> np.ndarray:
        code = np.minimum(np.floor(sums / 2.0 ** k + 0.5), top)
        return ((code * 2.0 ** k - sums) ** 2).sum(axis=0)

    out = []
    for t in range(len(attrs["tiles"])):
        cells, rows = arrays[f"tile{t}.cells"].astype(np.float64), arrays[f"tile{t}.rows"]
        errors = np.zeros((max_shift + 1, *cells.shape[:2], cells.shape[3]))
        ref = np.zeros(max_shift + 1) if f"tile{t}.ref_shift" in arrays else None
        for j in range(attrs["dac_cycles"]):
            plane = ((x[:, rows] >> (d * j)) & ((1 << d) - 1)).astype(np.float64)
            for k in range(max_shift + 1):
                for p in range(cells.shape[0]):
                    for s in range(cells.shape[1]):
                        errors[k, p, s] += error(plane @ cells[p, s], k)
                if ref is not None:
                    ref[k] += error(plane.sum(axis=1, keepdims=True), k)[0]
        out.append((errors, ref))
    return out


@pytest.mark.parametrize("case", [
    dict(codes=RNG.integers(-7, 8, (10, 5)), dac_bits=1, slice_bits=2, tile_rows=4, tile_cols=3),
    dict(codes=RNG.integers(0, 16, (9, 5)), mapping="offset", offset_num=RNG.integers(0, 9, 5), dac_bits=2,
         tile_rows=4, tile_cols=4),
])
def test_adc_errors_equal_a_value_by_value_computation(case: dict) -> None:
    program = make_program(input_bits=3, adc_bits=2, **case)
    x = RNG.integers(0, 8, (40, case["codes"].shape[0]))
    (index, got), = adc_errors(program, x, {0: 4}).items()
    assert index == 0 and program.ops[0]["kind"] == "crossbar"
    for (errors, ref), (want, want_ref) in zip(got, _direct_errors(program, x, 4), strict=True):
        np.testing.assert_allclose(errors, want, rtol=1e-12)
        assert (ref is None) == (want_ref is None)
        if ref is not None:
            np.testing.assert_allclose(ref, want_ref, rtol=1e-12)
    assert any(e[0].any() for e, _ in got)   # a 2-bit ADC at step 1 clips these sums


def test_mse_clips_a_rare_peak_for_a_finer_step_and_has_less_error() -> None:
    # Crafted: 300 sparse inputs give small partial sums; one input of all 7s gives each column
    # a peak ~10× larger. `calibrated` sizes the step for that peak, `mse` lets it clip.
    codes = RNG.integers(1, 4, (16, 4))
    program = make_program(codes, input_bits=3, adc_bits=3, dac_bits=3, tile_rows=16, tile_cols=8)
    x = np.where(RNG.random((300, 16)) < 0.1, RNG.integers(1, 3, (300, 16)), 0)
    x = np.concatenate([x, np.full((1, 16), 7)])
    (index, calibrated), = adc_steps(program, x, "calibrated").items()
    mse = adc_steps(program, x, "mse")[index]
    peak_shift, mse_shift = calibrated[0][0], mse[0][0]
    assert np.all(mse_shift <= peak_shift) and np.any(mse_shift < peak_shift)
    # The exact accumulator X = Σ W·x is the program's output; compare each policy's hardware run.
    ideal = Interpreter(program, "ideal").run(x)
    runs = {}
    for name, steps in (("calibrated", calibrated), ("mse", mse)):
        hardware = Interpreter(_with_steps(program, {index: steps}), "hardware")
        runs[name] = (hardware.run(x), hardware.stats["xbar"]["adc_clips"])
    assert runs["calibrated"][1] == 0 and runs["mse"][1] > 0
    squared = {name: float(((out - ideal) ** 2).sum()) for name, (out, _) in runs.items()}
    assert squared["mse"] < squared["calibrated"]


def test_unknown_policy_is_refused() -> None:
    program = make_program(RNG.integers(-3, 4, (4, 2)), adc_bits=3)
    with pytest.raises(ValueError, match="adc_range 'clip' is not chosen from data"):
        adc_steps(program, np.zeros((1, 4), np.int64), "clip")


def test_converter_mse_range_on_a_trained_model(tmp_path) -> None:
    qmodel = trained("w4a3", epochs=1)
    codes, _ = pixel_codes(64)
    programs = {policy: tfxbar.CrossbarConverter.from_keras_model(
        qmodel, dac_bits=1, adc_bits=3, adc_range=policy, representative_data=codes).convert()
        for policy in ("calibrated", "mse")}
    assert programs["mse"].header["options"]["adc_range"] == "mse"
    programs["mse"].save(tmp_path / "mse.xbar")
    loaded = load_program(tmp_path / "mse.xbar")   # the schema accepts "mse"
    assert loaded.ops[0]["attrs"]["adc_range"] == "mse"
    finer = 0
    for index, op in enumerate(programs["mse"].ops):
        if op["kind"] != "crossbar":
            continue
        for t in range(len(op["attrs"]["tiles"])):
            key = f"op{index}.tile{t}.adc_shift"
            mse, peak = programs["mse"].arrays[key], programs["calibrated"].arrays[key]
            assert np.all(mse <= peak), op["name"]
            finer += int(np.sum(mse < peak))
    assert finer > 0
    # On the representative codes (ideal activations) mse's steps have no more squared ADC error
    # than calibrated's in any column, and less in all.
    crossbars = [i for i, op in enumerate(programs["mse"].ops) if op["kind"] == "crossbar"]
    bound = {i: int(max(programs["calibrated"].arrays[f"op{i}.tile{t}.adc_shift"].max()
                        for t in range(len(programs["mse"].ops[i]["attrs"]["tiles"])))) for i in crossbars}
    totals = dict.fromkeys(programs, 0.0)
    for index, tiles in adc_errors(programs["mse"], codes, bound).items():
        for t, (errors, _) in enumerate(tiles):
            chosen = {policy: np.take_along_axis(
                errors, program.arrays[f"op{index}.tile{t}.adc_shift"][None].astype(np.int64), 0)[0]
                for policy, program in programs.items()}
            assert np.all(chosen["mse"] <= chosen["calibrated"])
            totals = {policy: totals[policy] + float(chosen[policy].sum()) for policy in totals}
    assert totals["mse"] < totals["calibrated"]


def test_config_needs_data_for_mse() -> None:
    with pytest.raises(ValueError, match="adc_range='mse' needs representative_data"):
        tfxbar.ConverterConfig(adc_range="mse", adc_bits=4).validate()
