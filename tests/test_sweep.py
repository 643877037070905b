"""Sweeps: grid, resumable CSV / Parquet, Pareto plot, the fine-tune axis; a process pool and a real
local Ray instance."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from export_toys import pixel_codes, trained
from toys import toy_data

import tfxbar
from tfxbar.sweep import SweepConfig, pareto, sweep
from tfxbar.sweep import point as sweep_point
from tfxbar.sweep import run as sweep_run
from tfxbar.sweep.point import evaluate_point, finetune
from tfxbar.sweep.table import read_rows, write_rows


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("sweep")
    qmodel = trained("w4a3", epochs=1)
    qmodel.save(str(folder / "m.keras"))
    codes, _ = pixel_codes(48, seed=4)
    _, labels = toy_data(48, seed=4)
    np.savez(folder / "d.npz", x=codes, y=labels)
    train_codes, _ = pixel_codes(64, seed=5)
    _, train_labels = toy_data(64, seed=5)
    np.savez(folder / "t.npz", x=train_codes, y=train_labels)
    # Crafted: every label 0, so a fine-tune on it visibly changes what the model predicts.
    np.savez(folder / "zeros.npz", x=train_codes, y=np.zeros_like(train_labels))
    return {"model": str(folder / "m.keras"), "data": str(folder / "d.npz"), "folder": str(folder),
            "train": str(folder / "t.npz")}


def _config(files: dict[str, str], name: str, grid: dict | list, table: str | None = None,
            **fields: object) -> SweepConfig:
    path = os.path.join(files["folder"], f"{name}.json")
    with open(path, "w") as handle:
        json.dump({"model": "m.keras", "data": "d.npz", "grid": grid, "table": table or f"{name}.csv",
                   "plot": f"{name}.png", "trials": 2, "representative": 16, **fields}, handle)
    return SweepConfig.load(path)


def _in_process(monkeypatch, calls: list) -> None:  # noqa: ANN001
    def in_process(todo, settings, workers):  # noqa: ANN001, ANN202
        for point in todo:
            calls.append(point)
            yield evaluate_point(point, settings)

    monkeypatch.setattr(sweep_run, "_local", in_process)


def test_sweep_resumes_and_plots(files, monkeypatch) -> None:
    calls = []
    _in_process(monkeypatch, calls)
    config = _config(files, "a", {"adc_bits": [3, 6], "dac_bits": [1], "sigma": [0.0, 0.5]})
    rows = sweep(config, verbose=0)
    assert len(rows) == 4 and len(calls) == 4
    assert os.path.getsize(config.plot) > 0
    for row in rows:
        assert 0 <= row["accuracy_chips_worst"] <= row["accuracy_chips_mean"] <= 1
        assert row["tiles"] > 0 and row["energy_pj"] > 0 and row["acc_bits_required"] > 1
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
    config = _config(files, "c", {"adc_bits": [5], "finetune": ["none", "qat"]}, finetune_data="t.npz",
                     finetune_steps=1, finetune_batch_size=16)
    rows = sweep(config, address="local", verbose=0)
    assert len(rows) == 2
    by_kind = {r["finetune"]: r for r in rows}
    expected = evaluate_point({"adc_bits": 5, "finetune": "none"},
                              {"model": files["model"], "data": files["data"], "trials": 2, "seed": 0,
                               "representative": 16, "adc_range": "calibrated"})
    assert by_kind["none"] == expected   # seeded and exact: the cluster computes what this process does
    assert by_kind["qat"]["finetune_examples"] == 16 and by_kind["qat"]["finetune_data"] == "t.npz"


def _settings(files: dict[str, str], **changes: object) -> dict:
    return {"model": files["model"], "data": files["data"], "trials": 2, "seed": 0, "representative": 16,
            "adc_range": "calibrated", "finetune_data": files["train"], "finetune_epochs": 1,
            "finetune_steps": 2, "finetune_lr": 3e-3, "finetune_batch_size": 16,
            "finetune_batchnorm": "frozen", "finetune_optimizer": "adam", "finetune_schedule": "constant",
            "finetune_augment": "none", **changes}


def test_finetune_trains_a_fresh_copy_and_keeps_the_adc_steps(files) -> None:
    settings = _settings(files)
    base, x, _ = sweep_point._setup(files["model"], files["data"])
    before = [w.copy() for w in base.get_weights()]
    config = tfxbar.ConverterConfig(dac_bits=8, adc_bits=3, adc_range="calibrated",
                                    representative_data=x[:16])
    program = tfxbar.CrossbarConverter(base, config).convert()
    qat, qat_program, fields = finetune("qat", program, config, settings)
    aware, aware_program, _ = finetune("adc_aware", program, config, settings)
    # The cached model is untouched; both fine-tunes moved the weights, and differently (the
    # ADC-aware one trained against 3-bit ADCs with the same batches).
    assert all(np.array_equal(a, b) for a, b in zip(before, base.get_weights(), strict=True))
    assert qat is not base and aware is not base
    moved = lambda m: max(float(np.max(np.abs(a - b))) for a, b in zip(before, m.get_weights(), strict=True))  # noqa: E731
    assert moved(qat) > 0 and moved(aware) > 0
    assert any(not np.array_equal(a, b) for a, b in zip(qat.get_weights(), aware.get_weights(), strict=True))
    shifts = [k for k in program.arrays if k.endswith("adc_shift")]
    assert shifts and all(np.array_equal(aware_program.arrays[k], program.arrays[k]) for k in shifts)
    assert fields == {**fields, "finetune_epochs": 1, "finetune_steps": 2, "finetune_lr": 3e-3,
                      "finetune_batch_size": 16, "finetune_batchnorm": "frozen", "finetune_data": "t.npz",
                      "finetune_optimizer": "adam", "finetune_schedule": "constant",
                      "finetune_augment": "none", "finetune_seed": 0,
                      "finetune_examples": 32}
    # Seeded: the same fine-tune again gives the same weights.
    again, _, _ = finetune("qat", program, config, settings)
    assert all(np.array_equal(a, b) for a, b in zip(qat.get_weights(), again.get_weights(), strict=True))
    # Frozen batch norm keeps its moving statistics (inference mode in fit); "train" moves them.
    moving = lambda m: [w.numpy() for w in m.weights if "moving_mean" in w.name]  # noqa: E731
    trained_bn, _, _ = finetune("adc_aware", program, config, {**settings, "finetune_batchnorm": "train"})
    assert moving(base)
    assert all(np.array_equal(a, b) for a, b in zip(moving(base), moving(aware), strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(moving(base), moving(trained_bn), strict=True))


def test_finetune_recipe_sgd_cosine_and_crop_flip(files, tmp_path) -> None:
    base, x, _ = sweep_point._setup(files["model"], files["data"])
    config = tfxbar.ConverterConfig(dac_bits=8, adc_bits=4, adc_range="calibrated",
                                    representative_data=x[:16])
    program = tfxbar.CrossbarConverter(base, config).convert()
    recipe = _settings(files, finetune_optimizer="sgd", finetune_schedule="cosine", finetune_lr=0.05)
    plain, _, _ = finetune("qat", program, config, recipe)
    augmented, _, fields = finetune("qat", program, config, {**recipe, "finetune_augment": "crop_flip"})
    again, _, _ = finetune("qat", program, config, {**recipe, "finetune_augment": "crop_flip"})
    adam, _, _ = finetune("qat", program, config, _settings(files, finetune_lr=0.05))
    assert fields["finetune_optimizer"] == "sgd" and fields["finetune_augment"] == "crop_flip"
    assert type(plain.optimizer).__name__ == "SGD" and type(adam.optimizer).__name__ == "Adam"
    # Cosine decay reaches 0 at the fine-tune's last step (2 batches of 16 examples).
    schedule = plain.optimizer.get_config()["learning_rate"]
    assert int(plain.optimizer.iterations) == 2
    assert schedule["class_name"] == "CosineDecay" and schedule["config"]["decay_steps"] == 2
    differ = lambda a, b: any(not np.array_equal(u, v)  # noqa: E731
                              for u, v in zip(a.get_weights(), b.get_weights(), strict=True))
    # Augmentation changes what is learnt, seeded: the same crops and flips again.
    assert differ(plain, augmented) and differ(plain, adam) and not differ(augmented, again)
    flat = str(tmp_path / "flat.npz")
    np.savez(flat, x=np.zeros((32, 144), np.uint8), y=np.zeros(32, np.int64))
    with pytest.raises(ValueError, match=r"crop_flip' needs \(N, H, W, C\) images.*\(32, 144\)"):
        finetune("qat", program, config, {**recipe, "finetune_augment": "crop_flip", "finetune_data": flat})


def test_finetune_axis_rows_record_settings_and_resume(files, monkeypatch) -> None:
    calls = []
    _in_process(monkeypatch, calls)
    # Crafted: fine-tuned on labels that are all 0 with a large step, the model predicts 0 for
    # every image, so its accuracy is the share of label 0 (the untrained model's is not).
    grid = {"adc_bits": [6], "dac_bits": [8], "finetune": ["none", "qat", "adc_aware"]}
    config = _config(files, "f", grid, finetune_data="zeros.npz", finetune_steps=4,
                     finetune_batch_size=16, finetune_lr=0.05, finetune_epochs=2)
    rows = {r["finetune"]: r for r in sweep(config, verbose=0)}
    with np.load(files["data"]) as data:
        zeros = float(np.mean(data["y"] == 0))
    assert len(calls) == 3 and set(rows) == {"none", "qat", "adc_aware"}
    assert "finetune_lr" not in rows["none"]
    for kind in ("qat", "adc_aware"):
        assert rows[kind]["finetune_lr"] == 0.05 and rows[kind]["finetune_epochs"] == 2
        assert rows[kind]["finetune_data"] == "zeros.npz" and rows[kind]["finetune_examples"] == 64
        assert rows[kind]["accuracy_hardware"] == rows[kind]["accuracy_ideal"] == zeros
    assert rows["none"]["accuracy_ideal"] != zeros and rows["none"]["accuracy_hardware"] != zeros
    # Resume from the CSV: nothing again; a union of grids adds only its new point.
    calls.clear()
    assert len(sweep(config, verbose=0)) == 3 and not calls
    union = _config(files, "f", [grid, {"adc_bits": [5], "dac_bits": [8], "finetune": ["none"]}],
                    finetune_data="zeros.npz", finetune_steps=4, finetune_batch_size=16,
                    finetune_lr=0.05, finetune_epochs=2)
    assert len(sweep(union, verbose=0)) == 4 and calls == [{"adc_bits": 5, "dac_bits": 8, "finetune": "none"}]
    # Other fine-tune settings over the same table: refused, naming the field.
    other = _config(files, "f", grid, finetune_data="zeros.npz", finetune_steps=4, finetune_batch_size=16,
                    finetune_lr=0.01, finetune_epochs=2)
    with pytest.raises(ValueError, match="finetune_lr=0.05"):
        sweep(other, verbose=0)
    sgd = _config(files, "f", grid, finetune_data="zeros.npz", finetune_steps=4, finetune_batch_size=16,
                  finetune_lr=0.05, finetune_epochs=2, finetune_optimizer="sgd")
    with pytest.raises(ValueError, match="finetune_optimizer='adam'"):
        sweep(sgd, verbose=0)
    # A table from before the recipe fields existed: its rows used the defaults, so it resumes.
    old = [{k: v for k, v in row.items() if k not in ("finetune_optimizer", "finetune_schedule",
                                                      "finetune_augment")} for row in read_rows(config.table)]
    write_rows(config.table, old)
    calls.clear()
    assert len(sweep(config, verbose=0)) == 4 and not calls
    with pytest.raises(ValueError, match="finetune_optimizer=None"):
        sweep(sgd, verbose=0)


def test_adc_range_axis_rows_record_the_policy_and_resume_is_checked(files, monkeypatch) -> None:
    calls = []
    _in_process(monkeypatch, calls)
    grid = {"adc_bits": [3], "dac_bits": [1], "adc_range": ["calibrated", "mse"]}
    rows = {r["adc_range"]: r for r in sweep(_config(files, "r", grid), verbose=0)}
    assert set(rows) == {"calibrated", "mse"} and [p["adc_range"] for p in calls] == ["calibrated", "mse"]
    assert rows["mse"]["energy_pj"] == rows["calibrated"]["energy_pj"]   # same tiles and ADCs
    # Without the axis every row records the config's policy; resuming its table with another
    # policy is refused (the rows would be skipped as done and the table would mix two policies).
    calls.clear()
    plain = _config(files, "s", {"adc_bits": [3], "dac_bits": [1]})
    assert [r["adc_range"] for r in sweep(plain, verbose=0)] == ["calibrated"] and len(calls) == 1
    mse = _config(files, "s", {"adc_bits": [3], "dac_bits": [1]}, adc_range="mse")
    with pytest.raises(ValueError, match="converted with adc_range='calibrated'.*adc_range='mse'"):
        sweep(mse, verbose=0)


def test_representative_data_calibrates_and_is_recorded(files, monkeypatch, tmp_path) -> None:
    calls = []
    _in_process(monkeypatch, calls)
    grid = {"adc_bits": [3], "dac_bits": [1]}
    on_data, = sweep(_config(files, "cal", grid), verbose=0)
    held_out = _config(files, "cal2", grid, representative_data="t.npz")
    row, = sweep(held_out, verbose=0)
    assert on_data["calibration"] == "data" and row["calibration"] == "t.npz"
    # The row's hardware accuracy is that of a program calibrated on the first 16 images of t.npz
    # (whose steps differ from those of the data's first 16: the check can tell them apart).
    model = tfxbar.sweep.point._load_model(files["model"])
    with np.load(files["train"]) as train, np.load(files["data"]) as data:
        programs = [tfxbar.CrossbarConverter.from_keras_model(
            model, adc_bits=3, dac_bits=1, adc_range="calibrated", representative_data=codes[:16]).convert()
            for codes in (train["x"], data["x"])]
        x, y = data["x"], data["y"]
    assert any(np.any(programs[0].arrays[k] != programs[1].arrays[k]) for k in programs[0].arrays
               if k.endswith("adc_shift"))
    hardware = tfxbar.Interpreter(programs[0], "hardware").predict(x)
    assert row["accuracy_hardware"] == float(np.mean(hardware == y))
    # Resuming the table calibrated on the data with other calibration images is refused.
    other = _config(files, "cal", grid, representative_data="t.npz")
    with pytest.raises(ValueError, match="calibrated on 'data'.*'t.npz'"):
        sweep(other, verbose=0)
    bad = tmp_path / "flat.npz"
    np.savez(bad, x=np.zeros((4, 144), np.uint8))
    settings = {"model": files["model"], "data": files["data"], "trials": 1, "seed": 0, "representative": 16,
                "representative_data": str(bad), "adc_range": "calibrated"}
    with pytest.raises(ValueError, match=r"representative_data .*flat.npz: x has shape \(4, 144\)"):
        evaluate_point({"adc_bits": 3}, settings)


def test_parquet_table_round_trip_and_resume(files, monkeypatch, tmp_path) -> None:
    pytest.importorskip("pyarrow")
    rows = [{"adc_bits": 3, "sigma": 0, "finetune": "none", "accuracy_hardware": 0.5},
            {"adc_bits": 4, "sigma": 0.5, "finetune": "qat", "accuracy_hardware": 0.75, "finetune_lr": 3e-4}]
    path = str(tmp_path / "t.parquet")
    write_rows(path, rows)
    back = read_rows(path)
    assert [r["adc_bits"] for r in back] == [3, 4] and back[1]["finetune_lr"] == 3e-4
    assert back[0]["finetune_lr"] is None and back[1]["accuracy_hardware"] == 0.75
    with pytest.raises(ValueError, match="column 'mixed'"):
        write_rows(str(tmp_path / "u.parquet"), [{"mixed": 1}, {"mixed": "a"}])
    # A sweep resumes from it (σ 0 comes back as 0.0: still the same point).
    calls = []
    monkeypatch.setattr(sweep_run, "_local", lambda todo, settings, workers: (
        calls.append(p) or {**p, "accuracy_hardware": 0.5, "energy_pj": 1.0} for p in todo))
    config = _config(files, "p", {"adc_bits": [3, 4], "sigma": [0, 0.5]}, table="p.parquet", plot=None)
    assert len(sweep(config, verbose=0)) == 4 and len(calls) == 4
    assert len(sweep(config, verbose=0)) == 4 and len(calls) == 4
    assert len(read_rows(config.table)) == 4


def test_parquet_without_pyarrow_names_the_extra(monkeypatch, tmp_path) -> None:
    import builtins

    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ImportError, match=r"pip install 'tfxbar\[parquet\]'"):
        write_rows(str(tmp_path / "t.parquet"), [{"a": 1}])


def test_cli_sweep_prints_the_front_of_a_grid_union(files, monkeypatch, capsys) -> None:
    from tfxbar.cli import main

    monkeypatch.setattr(sweep_run, "_local", lambda todo, settings, workers: (
        {**p, "accuracy_hardware": p["adc_bits"] / 10, "energy_pj": 1e3 * p["adc_bits"]} for p in todo))
    config = _config(files, "cli", [{"adc_bits": [3, 4]}, {"adc_bits": [5], "finetune": ["qat"]}],
                     finetune_data="t.npz", plot=None)
    assert main(["sweep", os.path.join(files["folder"], "cli.json")]) == 0
    out = capsys.readouterr().out
    assert "3 points in" in out and "adc_bits=5, finetune=qat" in out and "adc_bits=3, finetune=None" in out
    assert len(read_rows(config.table)) == 3


def test_unknown_axes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown sweep axes"):
        SweepConfig("m", "d", {"adc_bitz": [4]})
    assert tfxbar.sweep.AXES[0] == "adc_bits"


@pytest.mark.parametrize(("fields", "message"), [
    ({"grid": {"finetune": ["qat"]}}, "finetune_data is required"),
    ({"grid": {"finetune": ["aware"]}}, "grid.finetune: unknown values"),
    ({"adc_range": "peak"}, "adc_range must be one of"),
    ({"grid": {"adc_range": ["peak"]}}, "grid.adc_range: unknown values"),
    ({"finetune_lr": 0}, "finetune_lr must be a positive number"),
    ({"finetune_lr": "fast"}, "finetune_lr must be a positive number"),
    ({"finetune_epochs": 0}, "finetune_epochs must be a positive integer"),
    ({"finetune_batchnorm": "moving"}, "finetune_batchnorm must be one of"),
    ({"finetune_optimizer": "rmsprop"}, "finetune_optimizer must be one of"),
    ({"finetune_schedule": "step"}, "finetune_schedule must be one of"),
    ({"finetune_augment": "flip"}, "finetune_augment must be one of"),
    ({"finetune_steps": 2.5}, "finetune_steps must be a positive integer or null"),
    ({"finetune_batch_size": True}, "finetune_batch_size must be a positive integer"),
    ({"trials": -1}, "trials must be a positive integer"),
    ({"seed": "0"}, "seed must be a non-negative integer"),
    ({"grid": []}, "field grid must be"),
    ({"grid": {"adc_bits": []}}, "grid.adc_bits must be a non-empty list"),
    ({"finetune_rate": 1e-3}, r"unknown fields \['finetune_rate'\]"),
    ({"model": None, "data": None}, r"missing required fields \['model', 'data'\]"),
])
def test_bad_config_fields_are_named(tmp_path, fields: dict, message: str) -> None:
    config = {"model": "m.keras", "data": "d.npz", "grid": {"adc_bits": [4]}, **fields}
    config = {k: v for k, v in config.items() if v is not None}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        SweepConfig.load(path)
