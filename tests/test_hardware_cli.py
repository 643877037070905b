"""``tfxbar run --engine keras``: the Keras hardware mode from the command line."""

from __future__ import annotations

import re

import numpy as np
from export_toys import pixel_codes, trained

import tfxbar
from tfxbar.cli import main


def test_keras_engine_matches_the_interpreter(tmp_path, capsys) -> None:
    qmodel = trained("w4a3", epochs=1)
    codes, _ = pixel_codes(48)
    program = tfxbar.CrossbarConverter.from_keras_model(
        qmodel, tile_rows=8, tile_cols=8, dac_bits=1, adc_bits=3, adc_range="calibrated",
        representative_data=codes).convert()
    paths = {name: str(tmp_path / name) for name in ("m.keras", "p.xbar", "x.npy", "y.npy")}
    qmodel.save(paths["m.keras"])
    program.save(paths["p.xbar"])
    labels = tfxbar.Interpreter(program, "hardware", accumulator_bits=12).predict(codes)   # its own answers
    np.save(paths["x.npy"], codes)
    np.save(paths["y.npy"], labels)
    base = ["run", paths["p.xbar"], "--inputs", paths["x.npy"], "--labels", paths["y.npy"],
            "--mode", "hardware", "--acc-bits", "12"]
    assert main([*base, "--engine", "keras", "--model", paths["m.keras"], "--batch-size", "16"]) == 0
    keras_out = capsys.readouterr().out
    assert main(base) == 0
    interp_out = capsys.readouterr().out
    assert "accuracy 1.0000" in keras_out
    counters = re.compile(r"(\d+) ADC clips of (\d+) conversions, (\d+) accumulator overflows")
    assert counters.findall(keras_out) == counters.findall(interp_out)


def test_keras_engine_needs_a_model(tmp_path, capsys) -> None:
    codes, _ = pixel_codes(8)
    program = tfxbar.CrossbarConverter.from_keras_model(trained("w4a3", epochs=1)).convert()
    program.save(str(tmp_path / "p.xbar"))
    np.save(str(tmp_path / "x.npy"), codes)
    np.save(str(tmp_path / "y.npy"), np.zeros(len(codes), np.int64))
    argv = ["run", str(tmp_path / "p.xbar"), "--inputs", str(tmp_path / "x.npy"), "--labels",
            str(tmp_path / "y.npy"), "--engine", "keras"]
    assert main(argv) == 2
    assert "--engine keras needs --model" in capsys.readouterr().err
