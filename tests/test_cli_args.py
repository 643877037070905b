"""CLI option validation: every bad value is a one-line error naming the option, exit code 2.

The programs are hand-built (numpy, no TensorFlow model); export errors are checked with a
placeholder model file, which also proves they are raised before the model is loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from cost_toys import W_4x3, dense_program

from tfxbar import datasets
from tfxbar.cli import build_parser, main


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A 4-input program, 10 inputs with matching and mismatching labels, a fake dataset and model."""
    dense_program(W_4x3, tile_rows=2, tile_cols=2, input_bits=2, dac_bits=1).save(tmp_path / "p.xbar")
    x = np.random.default_rng(0).integers(0, 4, (10, 4)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.zeros(10, np.int64))
    np.save(tmp_path / "y200.npy", np.zeros(200, np.int64))
    (tmp_path / "m.h5").write_bytes(b"")  # never loaded: every export error below comes first
    monkeypatch.setattr(datasets, "load", lambda name, split: (x, np.zeros(10, np.int64)))
    files = {"prog": "p.xbar", "x": "x.npy", "y": "y.npy", "y200": "y200.npy", "model": "m.h5", "dir": "."}
    return {key: str((tmp_path / name).resolve()) for key, name in files.items()}


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], work: dict[str, str]) -> str:
    """Run `argv` ({name} → work path); assert exit 2 and a one-line error; return it."""
    code = main([a.format(**work) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv,message", [
    # 1. data sources of `run`
    (["run", "{prog}", "--dataset", "mnist", "--inputs", "{x}"], "not allowed with argument"),
    (["run", "{prog}", "--dataset", "mnist", "--labels", "{y}"], "--labels goes with --inputs"),
    (["run", "{prog}", "--inputs", "{x}", "--labels", "{y200}"],
     "--labels {y200} has 200 labels but --inputs {x} has 10 examples"),
    (["report", "{prog}", "--inputs", "{prog}"], "--inputs: {prog} is an .npz archive; give one array"),
    (["run", "{prog}", "--inputs", "{x}", "--labels", "{y}", "--split", "train"],
     "--split selects part of --dataset"),
    (["report", "{prog}", "--dataset", "mnist", "--inputs", "{x}"], "not allowed with argument"),
    (["check", "{prog}", "--calibration-limit", "5"], "--calibration-limit given without data; add "
                                                      "--calibration-dataset NAME or --calibration-inputs"),
    # 2. --min-accuracy and hardware-only options of `run`
    (["run", "{prog}", "--dataset", "mnist", "--min-accuracy", "5"], "argument --min-accuracy: expected a "
                                                                         "fraction in [0, 1]"),
    (["run", "{prog}", "--dataset", "mnist", "--min-accuracy", "nan"], "argument --min-accuracy"),
    (["run", "{prog}", "--dataset", "mnist", "--acc-bits", "12"], "--acc-bits only applies to --mode hard"),
    (["run", "{prog}", "--dataset", "mnist", "--acc-mode", "wrap"], "--acc-mode only applies to --mode hard"),
    # 3. --batch-size
    (["report", "{prog}", "--inputs", "{x}", "--batch-size", "0"], "argument --batch-size: expected an "
                                                                           "integer at least 1, got 0"),
    (["report", "{prog}", "--inputs", "{x}", "--batch-size", "-1"], "argument --batch-size"),
    (["run", "{prog}", "--dataset", "mnist", "--batch-size", "-1"], "argument --batch-size"),
    # 4. --limit under its real name
    (["check", "{prog}", "--calibration-dataset", "mnist", "--calibration-limit", "0"],
     "argument --calibration-limit: expected an integer at least 1"),
    (["export", "{model}", "-o", "{dir}/o.xbar", "--adc-range", "calibrated", "--adc-bits", "6",
      "--representative-dataset", "mnist", "--representative-limit", "0"], "argument --representative-limit"),
    # 5. type errors do not leak function names
    (["export", "{model}", "-o", "{dir}/o.xbar", "--cell-bits", "foo"],
     "argument --cell-bits: expected an integer or 'auto', got 'foo'"),
    # 6. -o checked before the model is loaded
    (["export", "{model}", "-o", "{dir}/no/o.xbar"], "-o {dir}/no/o.xbar: folder {dir}/no does not exist"),
    (["export", "{model}", "-o", "{dir}"], "-o {dir} is a directory; give a file name"),
    # 7. converter options checked before the model is loaded, under their flag names
    (["export", "{model}", "-o", "{dir}/o.xbar", "--tile-rows", "1"], "--tile-rows must be an int in 2.."),
    (["export", "{model}", "-o", "{dir}/o.xbar", "--cell-bits", "0"], "--cell-bits must be 'auto' or an int"),
    (["export", "{model}", "-o", "{dir}/o.xbar", "--accumulator-bits", "0"], "--accumulator-bits must be"),
    (["export", "{model}", "-o", "{dir}/o.xbar", "--adc-range", "clip"], "--adc-range clip needs --adc-bits"),
    # 8. representative data without --adc-range calibrated, and calibrated without it
    (["export", "{model}", "-o", "{dir}/o.xbar", "--representative-dataset", "mnist"],
     "--representative-dataset: representative data is only used with --adc-range calibrated"),
    (["export", "{model}", "-o", "{dir}/o.xbar", "--representative-split", "test"],
     "--representative-split: representative data is only used with --adc-range calibrated"),
    (["export", "{model}", "-o", "{dir}/o.xbar", "--adc-range", "calibrated", "--adc-bits", "6"],
     "--adc-range calibrated needs --representative-dataset NAME or --representative-inputs FILE.npy"),
    (["export", "{model}", "-o", "{dir}/o.xbar", "--adc-range", "mse", "--adc-bits", "4"],
     "--adc-range mse needs --representative-dataset NAME or --representative-inputs FILE.npy"),
    # usage errors are one line too
    (["run", "{prog}", "--mode", "fast"], "argument --mode: invalid choice: 'fast'"),
])
def test_bad_option_is_one_line_error(work: dict[str, str], capsys: pytest.CaptureFixture[str],
                                      argv: list[str], message: str) -> None:
    assert message.format(**work) in _error(capsys, argv, work)


def test_run_limit_applies_to_inputs_and_labels(work: dict[str, str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", work["prog"], "--inputs", work["x"], "--labels", work["y"], "--limit", "3",
                 "--min-accuracy", "0"]) == 0
    assert "on 3 examples" in capsys.readouterr().out


def test_not_a_program_file(work: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    expected = "is not a tfxbar program file (expected a .xbar written by `tfxbar export`)"
    keras_like = Path(work["dir"]) / "model.keras"  # a .keras file is a zip without our header
    with zipfile.ZipFile(keras_like, "w") as archive:
        archive.writestr("config.json", "{}")
    assert f"{keras_like} {expected}" in _error(capsys, ["info", str(keras_like)], work)
    np.savez(Path(work["dir"]) / "other.npz", a=np.zeros(2))
    assert expected in _error(capsys, ["check", "{dir}/other.npz"], work)
    assert expected in _error(capsys, ["report", "{x}"], work)
    # A damaged program (a zip cut short) keeps the loader's own message.
    Path(work["dir"], "cut.xbar").write_bytes(Path(work["prog"]).read_bytes()[:100])
    assert expected not in _error(capsys, ["info", "{dir}/cut.xbar"], work)


def test_export_help_states_defaults() -> None:
    parser = build_parser()
    export = parser._subparsers._group_actions[0].choices["export"]  # noqa: SLF001
    helps = {a.option_strings[-1]: a.help or "" for a in export._actions if a.option_strings}  # noqa: SLF001
    for flag, default in (("--weight-mapping", "auto"), ("--adc-range", "lossless"),
                          ("--accumulator-bits", "32"), ("--accumulator-mode", "saturate"),
                          ("--representative-split", "train[:10000]")):
        assert f"default {default}" in helps[flag] or f"default: {default}" in helps[flag], flag
    assert parser.parse_args(["export", "m", "-o", "p"]).representative_split == "train[:10000]"


def test_dataset_pixels_become_the_programs_input_codes(work: dict[str, str]) -> None:
    """Dataset images are pixels: the codes of an 8-bit, 1/255-step input as they are, quantized
    from pixels / 255 for any other input quantizer (e.g. an MLP's 3-bit Flatten)."""
    from tfxbar.cli._common import load_inputs
    from tfxbar.export.format import quantize_codes

    args = build_parser().parse_args(["run", work["prog"], "--dataset", "mnist"])
    pixels, _ = datasets.load("mnist", "test")
    codes, labels = load_inputs(args, {"shape": [4], "bits": 8, "scale": 1 / 255})
    np.testing.assert_array_equal(codes, pixels)
    codes, _ = load_inputs(args, {"shape": [4], "bits": 3, "scale": 0.3})
    np.testing.assert_array_equal(codes, quantize_codes(pixels / 255.0, 3, 0.3))
    assert codes.max() <= 7 and len(labels) == len(codes)
