"""``tfxbar run --engine keras``: the Keras hardware mode from the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
from export_toys import pixel_codes, trained

import tfxbar
from tfxbar.cli import main


def _hardware_files(tmp_path, n: int, adc_bits: int, seed: int = 1,
                    acc_bits: int | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """``(run argv in hardware mode, ["--model", M.keras], labels)`` of a tiny trained model, its
    program (8 × 8 tiles, 1-bit DACs, calibrated ADCs) and `n` inputs whose labels are the clean
    hardware program's own answers."""
    qmodel = trained("w4a3", epochs=1)
    codes, _ = pixel_codes(n, seed=seed)
    program = tfxbar.CrossbarConverter.from_keras_model(
        qmodel, tile_rows=8, tile_cols=8, dac_bits=1, adc_bits=adc_bits, adc_range="calibrated",
        representative_data=codes).convert()
    paths = {name: str(tmp_path / name) for name in ("m.keras", "p.xbar", "x.npy", "y.npy")}
    qmodel.save(paths["m.keras"])
    program.save(paths["p.xbar"])
    labels = tfxbar.Interpreter(program, "hardware", accumulator_bits=acc_bits).predict(codes)
    np.save(paths["x.npy"], codes)
    np.save(paths["y.npy"], labels)
    base = ["run", paths["p.xbar"], "--inputs", paths["x.npy"], "--labels", paths["y.npy"],
            "--mode", "hardware"] + (["--acc-bits", str(acc_bits)] if acc_bits else [])
    return base, ["--model", paths["m.keras"]], labels


def test_keras_engine_matches_the_interpreter(tmp_path, capsys) -> None:
    base, model, _ = _hardware_files(tmp_path, 48, adc_bits=3, acc_bits=12)
    assert main([*base, "--engine", "keras", *model, "--batch-size", "16"]) == 0
    keras_out = capsys.readouterr().out
    assert main(base) == 0
    interp_out = capsys.readouterr().out
    assert "accuracy 1.0000" in keras_out
    counters = re.compile(r"(\d+) ADC clips of (\d+) conversions, (\d+) accumulator overflows")
    assert counters.findall(keras_out) == counters.findall(interp_out)


def _small_run(tmp_path) -> list[str]:
    """``run PROGRAM --inputs X --labels Y`` of a default-converted tiny model (8 examples)."""
    codes, _ = pixel_codes(8)
    program = tfxbar.CrossbarConverter.from_keras_model(trained("w4a3", epochs=1)).convert()
    program.save(str(tmp_path / "p.xbar"))
    np.save(str(tmp_path / "x.npy"), codes)
    np.save(str(tmp_path / "y.npy"), np.zeros(len(codes), np.int64))
    return ["run", str(tmp_path / "p.xbar"), "--inputs", str(tmp_path / "x.npy"), "--labels",
            str(tmp_path / "y.npy")]


def test_keras_engine_needs_a_model(tmp_path, capsys) -> None:
    assert main([*_small_run(tmp_path), "--engine", "keras"]) == 2
    assert "--engine keras needs --model" in capsys.readouterr().err


# -- simulated chips (--chips / --sigma / --seed) -------------------------------------------------

_CHIPS = re.compile(r"accuracy (\S+) ± (\S+) \(worst (\S+)\) over (\d+) chips, (\d+) examples each "
                    r"\(hardware mode, (\w+), lognormal σ (\S+), seed (\d+), \d+ img/s\)")


def _per_chip(out: str) -> np.ndarray:
    line = next(row for row in out.splitlines() if row.startswith("  per chip: "))
    return np.array([float(v) for v in line.split(":", 1)[1].split()])


def test_both_engines_run_the_same_chips(tmp_path, capsys) -> None:
    base, model, labels = _hardware_files(tmp_path, 96, adc_bits=4, seed=2)
    chips = ["--chips", "3", "--sigma", "0.3", "--seed", "3"]
    assert main([*base, *chips]) == 0
    interp = capsys.readouterr().out
    assert main([*base, *model, "--engine", "keras", "--batch-size", "32", *chips]) == 0
    keras_out = capsys.readouterr().out
    assert main([*base, "--chips", "3", "--sigma", "0.3", "--seed", "4"]) == 0
    other_seed = capsys.readouterr().out
    summary_i, summary_k = _CHIPS.search(interp).groups(), _CHIPS.search(keras_out).groups()
    assert summary_i[3:] == ("3", "96", "interpreter", "0.3", "3")
    assert summary_k[3:] == ("3", "96", "keras", "0.3", "3")
    a_i, a_k = _per_chip(interp), _per_chip(keras_out)
    # The same conductances (program_chip) in both; the Keras device ADC rounds in float32, the
    # interpreter's in float64, so a half-step tie could flip one answer (none seen here).
    assert len(a_i) == 3 and np.abs(a_i - a_k).max() <= 1 / len(labels) + 1e-9, (a_i, a_k)
    assert a_i.min() < 1.0                         # σ 0.3 changes answers: the chips are real
    assert not np.array_equal(_per_chip(other_seed), a_i)
    counters = re.compile(r"(\d+) ADC clips of (\d+) conversions, (\d+) accumulator overflows "
                          r"\(all 3 chips\)")
    found_i, found_k = counters.findall(interp), counters.findall(keras_out)
    assert len(found_i) == len(found_k) == 3
    for (ci, ni, oi), (ck, nk, ok) in zip(found_i, found_k, strict=True):
        assert ni == nk and oi == ok and abs(int(ci) - int(ck)) <= max(1, int(ci) // 1000)


def test_chip_min_accuracy_exit_codes(tmp_path, capsys) -> None:
    base, _, _ = _hardware_files(tmp_path, 96, adc_bits=4, seed=2)
    chips = [*base, "--chips", "2", "--sigma", "0.3"]
    assert main([*chips, "--min-accuracy", "0.0"]) == 0
    assert main([*chips, "--min-accuracy", "1.0"]) == 1
    assert "mean chip accuracy" in capsys.readouterr().out
    # σ = 0: ideal cells, which give the labels (the clean program's answers)
    assert main([*base, "--chips", "2", "--sigma", "0", "--min-accuracy", "1.0"]) == 0


def test_bad_chip_options_name_the_flag(tmp_path, capsys) -> None:
    base = _small_run(tmp_path)
    cases = [
        (["--mode", "hardware", "--chips", "2"], "--chips needs --sigma"),
        (["--mode", "hardware", "--sigma", "0.1"], "--sigma goes with --chips"),
        (["--mode", "hardware", "--sigma", "0.1", "--seed", "1"], "--sigma and --seed go with --chips"),
        (["--chips", "2", "--sigma", "0.1"], "--chips only applies to --mode hardware"),
        (["--mode", "hardware", "--chips", "2", "--sigma", "-1"], "--sigma: expected a lognormal σ"),
        (["--mode", "hardware", "--chips", "0", "--sigma", "0.1"], "--chips: expected an integer at least 1"),
        (["--acc-bits", "12", "--acc-mode", "wrap"], "--acc-bits and --acc-mode only apply to --mode"),
        (["--mode", "hardware", "--chips", "2", "--sigma", "0.1", "--seed", "-3"], "--seed: expected"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)


def test_keras_engine_loads_a_saved_model_in_a_fresh_process(tmp_path) -> None:
    # The CLI imports tfxbar before tf_keras: the Keras objects must be registered before loading.
    base, model, _ = _hardware_files(tmp_path, 16, adc_bits=4)
    root = os.path.dirname(os.path.dirname(os.path.abspath(tfxbar.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [sys.executable, "-m", "tfxbar.cli", *base, *model, "--engine", "keras", "--chips", "1",
            "--sigma", "0.1"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "over 1 chips" in result.stdout
