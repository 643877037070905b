"""Edge cases of issue #16 without TensorFlow: interpreter arguments, empty batches, non-finite
and negative inputs, what Program.save does to existing files, and the CLI (exit codes, no
traceback, no TensorFlow import)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from check_toys import make_program

import tfxbar.atomic
from tfxbar.cli import main
from tfxbar.export.format import Program, load_program
from tfxbar.export.interpreter import Interpreter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def program() -> Program:
    return make_program(np.arange(-6, 6).reshape(4, 3), tile_rows=2, tile_cols=2)


@pytest.fixture()
def saved(program: Program, tmp_path: Path) -> Path:
    path = tmp_path / "p.xbar"
    program.save(path)
    return path


@pytest.mark.parametrize("bits", [0, 1, 65, 200, -3, 2.5, True, "16"])
def test_interpreter_refuses_impossible_accumulators(program: Program, bits: object) -> None:
    with pytest.raises(ValueError, match="accumulator_bits must be an integer in 2..64"):
        Interpreter(program, "hardware", accumulator_bits=bits)  # type: ignore[arg-type]


def test_interpreter_accepts_2_and_64_bit_accumulators(program: Program) -> None:
    x = np.ones((2, 4), np.int64)
    assert Interpreter(program, "hardware", accumulator_bits=64).run(x).shape == (2, 3)
    assert Interpreter(program, "hardware", accumulator_bits=2).accumulator_bits == 2


def test_interpreter_takes_a_path(program: Program, saved: Path) -> None:
    x = np.arange(8).reshape(2, 4) % 8
    expected = Interpreter(program).run(x)
    np.testing.assert_array_equal(Interpreter(saved).run(x), expected)
    np.testing.assert_array_equal(Interpreter(str(saved)).run(x), expected)
    with pytest.raises(TypeError, match="a tfxbar Program or a program file's path, got dict"):
        Interpreter(program.header)  # type: ignore[arg-type]


def test_empty_batches_and_empty_programs(program: Program) -> None:
    interpreter = Interpreter(program)
    empty = np.zeros((0, 4), np.int64)
    assert interpreter.run(empty).shape == (0, 3)
    assert interpreter.predict(empty).shape == (0,)
    hollow = Program(dict(program.header, ops=[]), {}, validate=False)
    with pytest.raises(ValueError, match="the program has no ops"):
        Interpreter(hollow)


def test_quantize_input_refuses_nan_and_warns_on_negative_values(program: Program) -> None:
    with pytest.raises(ValueError, match=r"x has 1 NaN/Inf value\(s\) \(first at index \[1, 2\]"):
        program.quantize_input(np.array([[0.0, 1, 2, 3], [0, 1, np.nan, 3]]))
    with pytest.raises(ValueError, match="NaN/Inf"):
        program.quantize_input(np.array([np.inf, 0, 0, 0]))
    with pytest.warns(UserWarning, match=r"25.0% of the values are below 0 .* clips them to 0"):
        codes = program.quantize_input(np.array([[-1.0, 1, 2, 3]]))
    assert codes.min() == 0


def test_save_keeps_the_mode_of_an_existing_file(program: Program, saved: Path) -> None:
    os.chmod(saved, 0o600)
    program.save(saved)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600


def test_save_writes_through_a_symlink(program: Program, saved: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.xbar"
    link.symlink_to(saved)
    before = saved.stat().st_ino
    program.save(link)
    assert link.is_symlink() and os.readlink(link) == str(saved)
    assert saved.stat().st_ino != before   # replaced atomically, not rewritten in place
    load_program(link)


def test_save_refuses_a_fifo(program: Program, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.xbar"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="not a regular file") as info:
        program.save(fifo)
    assert info.value.filename == str(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_save_removes_stale_temporary_files_only(program: Program, tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".tfxbar-killed.tmp", tmp_path / ".tfxbar-running.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    old = time.time() - tfxbar.atomic.STALE_SECONDS - 10
    os.utime(stale, (old, old))
    program.save(tmp_path / "p.xbar")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tfxbar-running.tmp", "p.xbar"]


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    code = ("import sys; from tfxbar.cli import main; rc = main(sys.argv[1:]); "
            "print('TF' if 'tensorflow' in sys.modules else 'no TF'); sys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_info_check_run_never_import_tensorflow(saved: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((3, 4), np.uint8))
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    data = ["--inputs", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy")]
    for args in (["info", str(saved)], ["check", str(saved), "--acc-bits", "16"], ["run", str(saved), *data]):
        result = _cli(args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("no TF"), args


def test_cli_exit_codes_without_tracebacks(saved: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    damaged = tmp_path / "bad.xbar"
    damaged.write_bytes(saved.read_bytes()[:-30])
    os.mkfifo(tmp_path / "pipe.xbar")
    cases = {("info", str(damaged)): 2, ("check", str(tmp_path / "pipe.xbar")): 2, ("info", str(tmp_path)): 2,
             ("check", str(saved), "--acc-bits", "1"): 2, ("check", str(saved), "--acc-bits", "2"): 1,
             ("info", str(saved)): 0, ("run", str(saved)): 2}
    for args, code in cases.items():
        assert main(list(args)) == code, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and (code == 0 or err.strip()), (args, err)


def test_cli_reports_an_unexpected_error_in_one_line(saved: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr("tfxbar.cli.info.program_info", broken)
    assert main(["info", str(saved)]) == 2
    assert "internal error: KeyError: 'boom'" in capsys.readouterr().err
    monkeypatch.setenv("TFXBAR_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["info", str(saved)])
