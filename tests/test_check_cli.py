"""The tfxbar CLI (in-process `main([...])`) and the checker on converted models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from export_toys import pixel_codes, trained
from toys import tiny_cnn, toy_data

import tfxbar
from tfxbar.check import check_program, observe, program_bounds
from tfxbar.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("cli")
    model = trained("w4a3", epochs=1)
    paths = {"model": str(folder / "w4a3.h5"), "program": str(folder / "w4a3.xbar"),
             "codes": str(folder / "codes.npy"), "labels": str(folder / "labels.npy"),
             "folder": str(folder)}
    model.save(paths["model"])  # .h5: a .keras file of this model does not load back (see report)
    codes, _ = pixel_codes(64)
    np.save(paths["codes"], codes)
    np.save(paths["labels"], toy_data(64, seed=1)[1])
    return paths


def test_export_info_check_run(files, capsys) -> None:  # noqa: ANN001
    assert main(["export", files["model"], "-o", files["program"], "--tile-rows", "16", "--tile-cols", "8",
                 "--weight-mapping", "bit_sliced", "--cell-bits", "2", "--dac-bits", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    program = tfxbar.load_program(files["program"])
    assert program.ops[0]["attrs"]["dac_cycles"] == 4

    assert main(["info", files["program"]]) == 0
    out = capsys.readouterr().out
    assert "physical arrays" in out and "Conv2D" in out
    assert main(["info", files["program"], "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert 0 < info["utilization"] <= 1 and info["tiles"] == sum(c["tiles"] for c in info["crossbars"])

    need = max(program_bounds(program)[i].acc_bits for i in program_bounds(program))
    assert main(["check", files["program"], "--acc-bits", str(need)]) == 0
    assert "verdict: OK" in capsys.readouterr().out
    assert main(["check", files["program"], "--acc-bits", str(need - 1),
                 "--calibration-inputs", files["codes"]]) == 1
    captured = capsys.readouterr()
    assert "VIOLATION" in captured.out and "violation" in captured.err
    assert main(["check", files["program"], "--json", "-", "--per-column"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    assert main(["run", files["program"], "--inputs", files["codes"], "--labels", files["labels"],
                 "--mode", "hardware", "--acc-bits", "12"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "overflows" in out
    wrong = os.path.join(files["folder"], "wrong.npy")
    np.save(wrong, np.full(64, -1))  # no prediction matches: accuracy 0, below any --min-accuracy > 0
    assert main(["run", files["program"], "--inputs", files["codes"], "--labels", wrong,
                 "--min-accuracy", "0.5"]) == 1


def test_export_calibrated_defaults_to_a_train_slice(files, capsys, monkeypatch) -> None:  # noqa: ANN001
    from tfxbar import datasets

    requested = []

    def fake_load(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        requested.append((name, split))
        return pixel_codes(64)[0][..., 0], np.zeros(64, np.int64)  # (N, H, W) like MNIST

    monkeypatch.setattr(datasets, "load", fake_load)
    path = os.path.join(files["folder"], "calibrated.xbar")
    argv = ["export", files["model"], "-o", path, "--adc-range", "calibrated", "--adc-bits", "4",
            "--representative-dataset", "mnist", "--representative-limit", "32"]
    assert main(argv) == 0, capsys.readouterr().err
    assert requested == [("mnist", "train[:10000]")]  # calibration never looks at the test split
    assert tfxbar.load_program(path).header["options"]["adc_range"] == "calibrated"


@pytest.mark.parametrize("argv,message", [
    (["check", "missing.xbar"], "no such program file"),
    (["info", "{bad}"], "is not a tfxbar program file (expected a .xbar written by `tfxbar export`)"),
    (["export", "{program}", "-o", "{folder}/x.xbar"], "cannot load model"),
    (["check", "{program}", "--acc-bits", "99"], "2..64"),
    (["check", "{program}", "--policy", "data"], "needs --calibration"),
    (["run", "{program}", "--inputs", "{codes}"], "--labels"),
    (["run", "{program}", "--inputs", "{labels}", "--labels", "{labels}"], "shape"),
])
def test_errors_are_one_line_with_exit_2(files, capsys, argv: list[str], message: str) -> None:  # noqa: ANN001
    with open(os.path.join(files["folder"], "bad.xbar"), "wb") as handle:
        handle.write(b"not a zip")
    if not os.path.exists(files["program"]):
        assert main(["export", files["model"], "-o", files["program"]]) == 0
    names = {**files, "bad": os.path.join(files["folder"], "bad.xbar")}
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_export_of_unquantized_model_is_a_conversion_error(tmp_path, capsys) -> None:  # noqa: ANN001
    path = str(tmp_path / "float.h5")
    tiny_cnn().save(path)
    assert main(["export", path, "-o", str(tmp_path / "f.xbar")]) == 2
    assert "quantize" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys) -> None:  # noqa: ANN001
    assert main([]) == 2
    assert main(["check"]) == 2
    assert main(["--help"]) == 0
    assert "check" in capsys.readouterr().out


def test_checker_on_converted_offset_program_is_sound_and_matches_file() -> None:
    model = trained("w2a2-biased", epochs=1)
    program = tfxbar.CrossbarConverter.from_keras_model(model, tile_rows=16, tile_cols=8, dac_bits=1,
                                                        weight_mapping="bit_sliced").convert()
    codes, _ = pixel_codes(64)
    report = check_program(program, calibration=codes)
    assert report.ok and not report.notes
    for index, bounds in program_bounds(program).items():
        attrs, arrays = program.ops[index]["attrs"], program.op_arrays(index)
        np.testing.assert_array_equal(bounds.out_hi, arrays["acc_hi"])
        np.testing.assert_array_equal(bounds.out_lo, arrays["acc_lo"])
        assert bounds.acc_bits >= attrs["acc_bits_required"]
        seen = observe(program, codes)[index]
        assert np.all(seen.acc_hi <= bounds.acc_hi) and np.all(seen.out_lo >= bounds.out_lo)


def test_console_entry_point_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "tfxbar.cli", "--help"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "export" in result.stdout and "exit codes" in result.stdout
