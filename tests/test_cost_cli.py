"""``tfxbar report``: through the `tfxbar.cli.main` entry point."""

from __future__ import annotations

import json

import numpy as np
from cost_toys import W_4x3, dense_program

from tfxbar.cli import main


def _program(tmp_path) -> str:
    path = str(tmp_path / "p.xbar")
    dense_program(W_4x3, tile_rows=2, tile_cols=2, input_bits=2, dac_bits=1).save(path)
    return path


def test_table_and_png(tmp_path, capsys) -> None:
    assert main(["report", _program(tmp_path), "--png", str(tmp_path / "e.png")]) == 0
    out = capsys.readouterr().out
    assert "ADC conv/inf" in out and "Total" in out
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_json_with_inputs(tmp_path, capsys) -> None:
    np.save(tmp_path / "x.npy", np.array([[0, 2, 0, 0], [3, 3, 3, 3], [1, 1, 1, 1]], np.uint8))
    argv = ["report", _program(tmp_path), "--inputs", str(tmp_path / "x.npy"), "--limit", "2", "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["totals"]["adc_conversions_sparse"] == 7     # (2 + 12) / 2, see test_cost_counts
    assert d["totals"]["examples"] == 2


def test_dataset_option(tmp_path, capsys, monkeypatch) -> None:
    from tfxbar import datasets

    def fake_load(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        assert (name, split) == ("mnist", "test[:2]")
        return np.array([[0, 2, 0, 0], [3, 3, 3, 3]], np.uint8), np.zeros(2, np.int64)

    monkeypatch.setattr(datasets, "load", fake_load)
    assert main(["report", _program(tmp_path), "--dataset", "mnist", "--split", "test[:2]"]) == 0
    assert "Sparsity-aware (2 inputs)" in capsys.readouterr().out


def test_errors_exit_2(tmp_path, capsys) -> None:
    (tmp_path / "bad.xbar").write_bytes(b"not a zip")
    assert main(["report", str(tmp_path / "bad.xbar")]) == 2
    assert "file" in capsys.readouterr().err
    (tmp_path / "e.json").write_text('{"dac": 1}')
    assert main(["report", _program(tmp_path), "--energy", str(tmp_path / "e.json")]) == 2
    assert "unknown energy field 'dac'" in capsys.readouterr().err
