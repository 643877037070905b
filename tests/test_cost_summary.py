"""`tfxbar.summary`: table snapshot, JSON, inputs it accepts, the PNG.

Snapshot: the table of a fixed hand-built program (tests/cost_toys.py) is compared with
tests/snapshots/<name>.txt. After an intended change of the table, regenerate with

    TFXBAR_UPDATE_SNAPSHOTS=1 /work/venv/bin/python -m pytest tests/test_cost_summary.py -q

and review the diff of tests/snapshots/ before committing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from cost_toys import W_4x3, dense_program

import tfxbar

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("TFXBAR_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    assert path.exists(), f"missing snapshot {path}; run with TFXBAR_UPDATE_SNAPSHOTS=1"
    assert text + "\n" == path.read_text(encoding="utf-8")


@pytest.fixture()
def program() -> tfxbar.Program:
    return dense_program(W_4x3, tile_rows=2, tile_cols=2, input_bits=2, dac_bits=1)


def test_static_table_snapshot(program) -> None:
    _check_snapshot("summary_static", str(tfxbar.summary(program)))


def test_measured_table_snapshot(program) -> None:
    s = tfxbar.summary(program, data=np.array([[0, 2, 0, 0], [3, 3, 3, 3]]))
    _check_snapshot("summary_measured", str(s))


def test_offset_table_snapshot() -> None:
    program = dense_program(np.array([[1, -1], [0, -1]]), tile_rows=2, tile_cols=2, input_bits=1,
                            dac_bits=1, mapping="offset", offset=1, threshold_bits=2)
    _check_snapshot("summary_offset", str(tfxbar.summary(program, data=np.array([[0, 0], [1, 0]]))))


def test_json_and_program_path(program, tmp_path) -> None:
    path = tmp_path / "p.xbar"
    program.save(path)
    s = tfxbar.summary(str(path), data=np.array([[0, 2, 0, 0]]))
    d = json.loads(s.to_json())
    assert d["layers"][0]["adc_conversions"] == 24
    assert d["layers"][0]["measured"]["adc_conversions"] == 2
    assert d["totals"]["adc_skipped_zero_input"] == 18
    assert d["energy_model"]["adc_law"] == "walden"
    assert not tfxbar.summary(program).measured and "energy_sparse" not in tfxbar.summary(program).totals


def test_keras_model_is_converted_with_config() -> None:
    import tf_keras as keras

    model = keras.Sequential([keras.layers.Dense(3, input_shape=(5,)), keras.layers.ReLU(),
                              keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((16, 5)).astype(np.float32)
    qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=x)
    s = tfxbar.summary(qmodel, config={"tile_rows": 4, "tile_cols": 4, "dac_bits": 1}, data=x)
    assert [layer.weights for layer in s.layers] == ["uniform4", "uniform4"]
    assert [layer.tiles for layer in s.layers] == [2, 1]      # 5 rows → 2 row tiles; 3 rows → 1
    assert s.outputs.shape == (16, 2) and s.measured


def test_png(program, tmp_path) -> None:
    s = tfxbar.summary(program, data=np.array([[0, 2, 0, 0]]))
    path = tfxbar.cost.plot_energy(s, tmp_path / "e.png")
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_all_zero_inputs_give_valid_json_and_a_readable_table() -> None:
    """No energy spent on the data: the efficiency gain is undefined (null), not JSON's invalid
    Infinity."""
    program = dense_program(W_4x3, tile_rows=2, tile_cols=2, input_bits=2, dac_bits=1)
    report = tfxbar.summary(program, data=np.zeros((4, 4), np.int64))
    strict = json.loads(report.to_json(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    totals = strict["totals"]
    assert totals["efficiency_gain"] is None
    assert "spent no energy" in str(report)
