"""The loader's container checks (tfxbar/export/container.py) and the validator's run-safety checks:
a corpus of crafted files (one per failure class of issue #16) and a bounded hypothesis fuzz.
Numpy-only programs (tests/check_toys.py), so no TensorFlow and a few seconds in all."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from check_toys import make_program
from fuzz_files import INT64_MIN, corpus, mutate_bytes, mutate_content, npy_bytes, pack, zip_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfxbar.export.errors import FormatError
from tfxbar.export.format import Program, load_program
from tfxbar.export.interpreter import Interpreter


def _with_threshold(program: Program) -> Program:
    """`program` with a 2-bit threshold op between its crossbar and its dequantize."""
    header = json.loads(json.dumps(program.header))
    arrays = dict(program.arrays)
    xbar, out = header["ops"]
    n = xbar["out_shape"][0]
    threshold = {"name": "q", "kind": "threshold", "inputs": [xbar["name"]], "in_shape": [n],
                 "out_shape": [n], "out_max": 3, "tap": None, "attrs": {"bits": 2}}
    header["ops"] = [xbar, threshold, dict(out, in_shape=[n], inputs=["q"])]
    arrays["op1.thresholds"] = np.tile(np.array([-5, 0, 5], np.int64), (n, 1))
    arrays["op1.direction"] = np.ones(n, np.int8)
    arrays["op2.stage0.a"], arrays["op2.stage0.b"] = arrays.pop("op1.stage0.a"), arrays.pop("op1.stage0.b")
    return Program(header, arrays)


@pytest.fixture(scope="module")
def programs() -> dict[str, Program]:
    rng = np.random.default_rng(0)
    codes = rng.integers(-7, 8, (9, 5))
    return {"differential": _with_threshold(make_program(codes, tile_rows=4, tile_cols=3)),
            "offset": make_program(np.abs(codes), mapping="offset", offset_num=rng.integers(-3, 4, 5),
                                   offset_shift=1, pool=3, tile_rows=4, tile_cols=3, dac_bits=1, adc_bits=3)}


@pytest.fixture(scope="module")
def blob(programs: dict[str, Program], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("base") / "base.xbar"
    programs["differential"].save(path)
    return path.read_bytes()


def _load(tmp_path: Path, data: bytes, **limits: int) -> Program:
    path = tmp_path / "case.xbar"
    path.write_bytes(data)
    return load_program(path, **limits)


def _runs(program: Program) -> None:
    spec = program.header["input"]
    x = np.random.default_rng(0).integers(0, 2 ** spec["bits"], (3, *spec["shape"]))
    for mode in ("ideal", "hardware"):
        out = Interpreter(program, mode, workers=1).run(x)
        assert out.shape[0] == 3 and np.all(np.isfinite(out))


@pytest.fixture(scope="module")
def cases(blob: bytes) -> dict[str, bytes]:
    return corpus(blob)


def test_corpus_is_refused_fast_and_small(cases: dict[str, bytes], tmp_path: Path) -> None:
    """Each crafted file raises FormatError before reading much: < 0.5 s and < 32 MB traced.
    (numpy.load raised MemoryError, TokenError, NotImplementedError, RuntimeError,
    AttributeError, RecursionError on these, or loaded the duplicate and the 2^31-byte member.)"""
    tracemalloc.start()
    try:
        for name, data in cases.items():
            tracemalloc.reset_peak()
            start = time.perf_counter()
            with pytest.raises(FormatError) as info:
                _load(tmp_path, data)
            seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
            assert seconds < 0.5 and peak < 32 * 2 ** 20, (name, seconds, peak, str(info.value))
    finally:
        tracemalloc.stop()
    assert len(cases) >= 20


@pytest.mark.parametrize(("case", "words"), [
    ("npy_shape_1e12", "declares shape (1000000000000,)"), ("npy_broken_literal", "npy header is not"),
    ("npy_object_dtype", "'|O' is not a little-endian numeric dtype"), ("zip_method_99", "method 99"),
    ("zip_encrypted", "encrypted"), ("member_not_npy", "not an npy array"), ("duplicate_member", "twice"),
    ("many_members", "more than the loader's limit 20000"), ("nested_json", "nested too deeply"),
    ("bomb_wrong_shape", "dtype must be"), ("bomb_header", "more than the limit"),
    ("zip_size_2GiB", "sizes"), ("member_in_folder", "not a plain"),
])
def test_corpus_messages_name_the_problem(cases: dict[str, bytes], tmp_path: Path, case: str,
                                          words: str) -> None:
    with pytest.raises(FormatError) as info:
        _load(tmp_path, cases[case])
    assert words in str(info.value)


def test_limits_are_arguments(blob: bytes, tmp_path: Path) -> None:
    members = len(zipfile.ZipFile(io.BytesIO(blob)).infolist())
    _load(tmp_path, blob, max_members=members)
    limit = f"{members} archive members, more than the loader's limit {members - 1}"
    with pytest.raises(FormatError, match=limit):
        _load(tmp_path, blob, max_members=members - 1)
    with pytest.raises(FormatError, match="more than the loader's limit of 100 bytes"):
        _load(tmp_path, blob, max_bytes=100)


def test_deflated_and_fortran_members_load(programs: dict[str, Program], tmp_path: Path) -> None:
    """What numpy.savez_compressed and Fortran-ordered arrays write is still a valid program."""
    program = programs["offset"]
    arrays = {k: np.asfortranarray(v) for k, v in program.arrays.items()}
    buffer = io.BytesIO()
    raw = json.dumps(program.header).encode()
    np.savez_compressed(buffer, header=np.frombuffer(raw, np.uint8), **arrays)
    loaded = _load(tmp_path, buffer.getvalue())
    for key, value in program.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)
    _runs(loaded)


def test_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe.xbar"
    os.mkfifo(fifo)   # opening it for reading would block forever
    with pytest.raises(FormatError, match="not a regular file"):
        load_program(fifo)


def test_threshold_of_int64_min_is_refused(programs: dict[str, Program]) -> None:
    """The interpreter computes T − 1 (wraps to INT64_MAX: 'array is too big'); the loader refuses."""
    program = programs["differential"]
    arrays = dict(program.arrays)
    arrays["op1.thresholds"] = program.arrays["op1.thresholds"].copy()
    arrays["op1.thresholds"][0, 0] = INT64_MIN
    with pytest.raises(FormatError, match=r"op1.thresholds: value -9223372036854775808 out of range"):
        Program(program.header, arrays)


def test_lossless_adc_with_a_shift_is_refused(programs: dict[str, Program]) -> None:
    program = programs["differential"]
    assert program.ops[0]["attrs"]["adc_range"] == "lossless"
    arrays = dict(program.arrays)
    arrays["op0.tile0.adc_shift"] = program.arrays["op0.tile0.adc_shift"] + np.uint8(1)
    with pytest.raises(FormatError, match=r"op0.tile0.adc_shift: value 1 out of range \[0, 0\]"):
        Program(program.header, arrays)


def test_duplicate_header_member_is_refused(blob: bytes, tmp_path: Path) -> None:
    members = zipfile.ZipFile(io.BytesIO(blob))
    content = [(info.filename, members.read(info)) for info in members.infolist()]
    other = npy_bytes(np.frombuffer(b'{"format": "x"}', np.uint8))
    with pytest.raises(FormatError, match="header: the archive holds this member twice"):
        _load(tmp_path, zip_of(content + [("header.npy", other)]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32 - 1), content=st.booleans(),
       which=st.sampled_from(["differential", "offset"]))
def test_fuzz_loads_and_runs_or_raises_format_error(programs: dict[str, Program], tmp_path: Path, seed: int,
                                                    content: bool, which: str) -> None:
    """A damaged file raises FormatError or loads and then runs in both modes — nothing else."""
    rng = np.random.default_rng(seed)
    program = programs[which]
    if content:
        header, arrays = json.loads(json.dumps(program.header)), dict(program.arrays)
        for _ in range(int(rng.integers(1, 3))):
            mutate_content(header, arrays, rng)
        data = pack(header, arrays)
    else:
        data = mutate_bytes(pack(program.header, program.arrays), rng)[1]
    try:
        loaded = _load(tmp_path, data)
    except FormatError:
        return
    _runs(loaded)
