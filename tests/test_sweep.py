"""Sweeps: grid, resumable CSV, Pareto plot; a process pool and a real local Ray instance."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from export_toys import pixel_codes, trained
from toys import toy_data

import tfxbar
from tfxbar.sweep import SweepConfig, pareto, sweep
from tfxbar.sweep import run as sweep_run
from tfxbar.sweep.point import evaluate_point
from tfxbar.sweep.table import read_rows


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("sweep")
    qmodel = trained("w4a3", epochs=1)
    qmodel.save(str(folder / "m.keras"))
    codes, _ = pixel_codes(48, seed=4)
    _, labels = toy_data(48, seed=4)
    np.savez(folder / "d.npz", x=codes, y=labels)
    return {"model": str(folder / "m.keras"), "data": str(folder / "d.npz"), "folder": str(folder)}


def _config(files: dict[str, str], name: str, grid: dict) -> SweepConfig:
    path = os.path.join(files["folder"], f"{name}.json")
    with open(path, "w") as handle:
        json.dump({"model": "m.keras", "data": "d.npz", "grid": grid, "table": f"{name}.csv",
                   "plot": f"{name}.png", "trials": 2, "representative": 16}, handle)
    return SweepConfig.load(path)


def test_sweep_resumes_and_plots(files, monkeypatch) -> None:
    calls = []

    def in_process(todo, settings, workers):  # noqa: ANN001, ANN202
        for point in todo:
            calls.append(point)
            yield evaluate_point(point, settings)

    monkeypatch.setattr(sweep_run, "_local", in_process)
    config = _config(files, "a", {"adc_bits": [3, 6], "dac_bits": [1], "sigma": [0.0, 0.5]})
    rows = sweep(config, verbose=0)
    assert len(rows) == 4 and len(calls) == 4
    assert os.path.getsize(config.plot) > 0
    for row in rows:
        assert 0 <= row["accuracy_chips_worst"] <= row["accuracy_chips_mean"] <= 1
        assert row["tiles"] > 0 and row["energy_pj"] > 0 and row["accumulator_bits"] > 1
    quiet = [r for r in rows if r["sigma"] == 0.0]
    assert all(r["accuracy_chips_mean"] == r["accuracy_hardware"] for r in quiet)
    # More ADC bits cost more ADC energy (same tiles and conversions).
    by_bits = {r["adc_bits"]: r["energy_pj"] for r in quiet}
    assert by_bits[6] > by_bits[3]
    assert pareto(rows)[0]["energy_pj"] == min(r["energy_pj"] for r in rows)
    # Resume: an unchanged grid evaluates nothing; a new axis value only its own points.
    calls.clear()
    assert len(sweep(config, verbose=0)) == 4 and not calls
    bigger = _config(files, "a", {"adc_bits": [3, 6, 8], "dac_bits": [1], "sigma": [0.0, 0.5]})
    assert len(sweep(bigger, verbose=0)) == 6
    assert [p["adc_bits"] for p in calls] == [8, 8]
    assert len(read_rows(config.table)) == 6


def test_process_pool_sweep(files) -> None:
    config = _config(files, "b", {"adc_bits": [4]})
    rows = sweep(config, workers=1, verbose=0)
    assert len(rows) == 1 and rows[0]["accuracy_hardware"] >= 0


def test_ray_sweep_on_a_real_local_instance(files) -> None:
    pytest.importorskip("ray")
    config = _config(files, "c", {"adc_bits": [5]})
    rows = sweep(config, address="local", verbose=0)
    assert len(rows) == 1
    expected = evaluate_point({"adc_bits": 5}, {"model": files["model"], "data": files["data"], "trials": 2,
                                                "seed": 0, "representative": 16, "adc_range": "calibrated"})
    assert rows[0] == expected   # seeded and exact: the cluster computes what this process does


def test_unknown_axes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown sweep axes"):
        SweepConfig("m", "d", {"adc_bitz": [4]})
    assert tfxbar.sweep.AXES[0] == "adc_bits"
