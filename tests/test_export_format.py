"""Program file format v1: round trip, every malformed-file class, a loader fuzz, atomic writes."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from export_toys import pixel_codes, trained
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfxbar
from tfxbar.export.format import Program, load_program


@pytest.fixture(scope="module")
def program() -> Program:
    return tfxbar.CrossbarConverter.from_keras_model(trained("w2a2-biased", epochs=1)).convert()


def _write(path: str, header: object, arrays: dict[str, np.ndarray]) -> None:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    np.savez(path, header=np.frombuffer(raw, np.uint8), **arrays)


def _copy(program: Program) -> tuple[dict, dict[str, np.ndarray]]:
    return json.loads(json.dumps(program.header)), {k: v.copy() for k, v in program.arrays.items()}


def test_round_trip(program: Program, tmp_path) -> None:
    path = tmp_path / "model.xbar"
    program.save(path)
    loaded = load_program(path)
    assert loaded.header == program.header
    assert set(loaded.arrays) == set(program.arrays)
    for key, value in program.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)
        assert loaded.arrays[key].dtype == value.dtype
    codes, _ = pixel_codes(64)
    np.testing.assert_array_equal(tfxbar.Interpreter(loaded).run(codes),
                                  tfxbar.Interpreter(program).run(codes))
    with zipfile.ZipFile(path) as archive:  # numpy arrays only, no pickles
        assert all(name.endswith(".npy") for name in archive.namelist())


def _first(program: Program, kind: str) -> int:
    return next(i for i, op in enumerate(program.ops) if op["kind"] == kind)


def _mutations(program: Program) -> dict[str, tuple]:
    """name → (mutate(header, arrays), expected field fragment of the FormatError)."""
    xbar, thr = _first(program, "crossbar"), _first(program, "threshold")

    return {
        "wrong version": ((lambda h, a: h.__setitem__("version", 3)), "version"),
        "version as string": ((lambda h, a: h.__setitem__("version", "1")), "version"),
        "wrong format name": ((lambda h, a: h.__setitem__("format", "tflite")), "format"),
        "missing header field": ((lambda h, a: h.pop("input")), "header.input"),
        "extra header field": ((lambda h, a: h.__setitem__("extra", 1)), "header.extra"),
        "extra op attr": ((lambda h, a: h["ops"][xbar]["attrs"].__setitem__("x", 1)), "attrs.x"),
        "missing op attr": ((lambda h, a: h["ops"][thr]["attrs"].pop("bits")), "attrs.bits"),
        "unknown kind": ((lambda h, a: h["ops"][thr].__setitem__("kind", "conv3d")), "kind"),
        "bad shape chain": ((lambda h, a: h["ops"][thr].__setitem__("in_shape", [1, 2, 3])), "in_shape"),
        "missing array": ((lambda h, a: a.pop(f"op{thr}.thresholds")), "thresholds"),
        "extra array": ((lambda h, a: a.__setitem__("op0.spare", np.zeros(1))), "op0.spare"),
        "wrong dtype": ((lambda h, a: a.__setitem__(
            f"op{thr}.thresholds", a[f"op{thr}.thresholds"].astype(np.float32))), "dtype"),
        "wrong shape": ((lambda h, a: a.__setitem__(f"op{thr}.thresholds",
                                                          a[f"op{thr}.thresholds"][:, :1])), "shape"),
        "code out of range": ((lambda h, a: a[f"op{xbar}.tile0.cells"].__setitem__((0, 0, 0, 0), 200)),
                              "tile0.cells"),
        "row map out of range": ((lambda h, a: a[f"op{xbar}.tile0.rows"].__setitem__(0, 10 ** 6)),
                                 "tile0.rows"),
        "duplicate tile rows": ((lambda h, a: a[f"op{xbar}.tile0.rows"].__setitem__(1, 0)), "tile0.rows"),
        # A repeated index hidden by an otherwise complete cover: rows [0, 0, …] in one tile.
        "repeated row in a tile": ((lambda h, a: a.__setitem__(f"op{xbar}.tile0.rows", np.concatenate(
            [a[f"op{xbar}.tile0.rows"][:1], a[f"op{xbar}.tile0.rows"][:-1]]).astype(np.int32))),
            "tile0.rows"),
        "float polarities": ((lambda h, a: h["ops"][xbar]["attrs"].__setitem__(
            "polarities", [float(v) for v in h["ops"][xbar]["attrs"]["polarities"]])), "polarities"),
        "empty input shape": ((lambda h, a: h["input"].__setitem__("shape", [])), "input.shape"),
        "weights beyond 62 bits": ((lambda h, a: h["ops"][xbar]["attrs"].update(slices=16, slice_bits=8)),
                                   "slices"),
        "offset beyond int64's safe range": ((lambda h, a: a[f"op{xbar}.offset_num"].__setitem__(0, 2 ** 62)),
                                             "offset_num: magnitudes must be below 2^62"),
        "lossless ADC below its bits": ((lambda h, a: h["ops"][xbar]["attrs"].update(
            adc_range="lossless", adc_bits=1, adc_bits_lossless=6)), "adc_bits"),
        "non-monotone thresholds": ((lambda h, a: a[f"op{thr}.thresholds"].__setitem__(
            (0, slice(None)), np.arange(3)[::-1])), "thresholds"),
        "bad direction": ((lambda h, a: a[f"op{thr}.direction"].__setitem__(0, 0)), "direction"),
        "negative scale": ((lambda h, a: h["input"].__setitem__("scale", -1.0)), "input.scale"),
        "bad option": ((lambda h, a: h["options"].__setitem__("accumulator_mode", "clamp")),
                       "accumulator_mode"),
        "bool as int": ((lambda h, a: h["ops"][thr]["attrs"].__setitem__("bits", True)), "bits"),
        # The interpreter trusts acc_lo/acc_hi (it skips clipping inside them): a file whose
        # offset or bounds disagree with its weights must not load (found by test_loader_fuzz).
        "offset outside the bounds": ((lambda h, a: a[f"op{xbar}.offset_num"].__setitem__(0, 10 ** 6)),
                                      f"op{xbar}.acc_hi"),
        "bounds too narrow": ((lambda h, a: a[f"op{xbar}.acc_hi"].__setitem__(
            0, a[f"op{xbar}.acc_lo"][0])), f"op{xbar}.acc_hi"),
    }


CASES = ["wrong version", "version as string", "wrong format name", "missing header field",
         "extra header field", "extra op attr", "missing op attr", "unknown kind", "bad shape chain",
         "missing array", "extra array", "wrong dtype", "wrong shape", "code out of range",
         "row map out of range", "duplicate tile rows", "non-monotone thresholds", "bad direction",
         "negative scale", "bad option", "bool as int", "offset outside the bounds", "bounds too narrow",
         "repeated row in a tile", "float polarities", "empty input shape", "weights beyond 62 bits",
         "offset beyond int64's safe range",
         "lossless ADC below its bits"]


@pytest.mark.parametrize("case", CASES)
def test_malformed_files_raise_format_error(program: Program, tmp_path, case: str) -> None:
    mutate, field = _mutations(program)[case]
    header, arrays = _copy(program)
    mutate(header, arrays)
    path = tmp_path / "bad.npz"
    _write(str(path), header, arrays)
    with pytest.raises(tfxbar.FormatError) as info:
        load_program(path)
    assert field in str(info.value)


def test_truncated_and_garbage_files(program: Program, tmp_path) -> None:
    path = tmp_path / "model.xbar"
    program.save(path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 5):
        (tmp_path / "cut.xbar").write_bytes(data[:cut])
        with pytest.raises(tfxbar.FormatError, match="file"):
            load_program(tmp_path / "cut.xbar")
    _write(str(tmp_path / "h.npz"), b"\xff\xfe{", {})
    with pytest.raises(tfxbar.FormatError, match="header"):
        load_program(tmp_path / "h.npz")
    np.savez(tmp_path / "noheader.npz", x=np.zeros(2))
    with pytest.raises(tfxbar.FormatError, match="header: missing"):
        load_program(tmp_path / "noheader.npz")
    np.savez(tmp_path / "nan.npz", header=np.frombuffer(b'{"version": NaN}', np.uint8))
    with pytest.raises(tfxbar.FormatError, match="header"):
        load_program(tmp_path / "nan.npz")


def test_other_files_are_not_programs(program: Program, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(tfxbar.FormatError, match="notes.txt is not a tfxbar program"):
        load_program(tmp_path / "notes.txt")
    with pytest.raises(IsADirectoryError):
        load_program(tmp_path)


def test_save_names_the_path_and_keeps_the_usual_file_mode(program: Program, tmp_path) -> None:
    old = os.umask(0o022)
    try:
        program.save(tmp_path / "a.xbar")
        os.umask(0o077)
        program.save(tmp_path / "b.xbar")
    finally:
        os.umask(old)
    assert (tmp_path / "a.xbar").stat().st_mode & 0o777 == 0o644   # not mkstemp's 0600
    assert (tmp_path / "b.xbar").stat().st_mode & 0o777 == 0o600
    missing = tmp_path / "no" / "such" / "p.xbar"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        program.save(missing)
    assert info.value.filename == str(missing)
    with pytest.raises(IsADirectoryError) as info:
        program.save(tmp_path)
    assert info.value.filename == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["a.xbar", "b.xbar"]


def test_pickled_arrays_are_rejected(tmp_path) -> None:
    np.savez(tmp_path / "p.npz", header=np.array([{"a": 1}], dtype=object))
    with pytest.raises(tfxbar.FormatError):
        load_program(tmp_path / "p.npz")


def test_atomic_write_leaves_no_partial_file(program: Program, tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.xbar"
    program.save(path)
    before = path.read_bytes()

    def explode(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(OSError, match="disk full"):
        program.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.xbar"]
    monkeypatch.undo()
    header, arrays = _copy(program)
    header["version"] = 7
    with pytest.raises(tfxbar.FormatError):
        Program(header, arrays, validate=False).save(tmp_path / "new.xbar")
    assert sorted(os.listdir(tmp_path)) == ["model.xbar"]


def _leaves(value: object, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, path + (k,))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, path + (i,))]
    return [path]


_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=False),
                  st.text(max_size=5), st.lists(st.integers(0, 5), max_size=3), st.dictionaries(
                      st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_loader_fuzz(program: Program, data: st.DataObject) -> None:
    """Random edits of a valid file either load (and then run) or raise FormatError — nothing else."""
    header, arrays = _copy(program)
    leaves = _leaves(header)
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["header", "array", "bytes"]))
        if what == "header":
            path = data.draw(st.sampled_from(leaves))
            node = header
            for key in path[:-1]:
                node = node[key]
            if path and isinstance(node, (dict, list)) and path[-1] in (node if isinstance(node, dict)
                                                                         else range(len(node))):
                node[path[-1]] = data.draw(_JUNK)
        elif what == "array":
            key = data.draw(st.sampled_from(sorted(arrays)))
            value = arrays[key]
            choice = data.draw(st.integers(0, 3))
            if choice == 0 and value.size:
                flat = value.reshape(-1).copy()
                junk = np.asarray(data.draw(st.integers(-2, 300))).astype(value.dtype)
                flat[data.draw(st.integers(0, flat.size - 1))] = junk
                arrays[key] = flat.reshape(value.shape)
            elif choice == 1:
                arrays[key] = value[..., :-1] if value.ndim else value
            elif choice == 2:
                arrays[key] = value.astype(data.draw(st.sampled_from(["int32", "int64", "uint8", "float64"])))
            else:
                del arrays[key]
    buffer = io.BytesIO()
    raw = json.dumps(header).encode()
    np.savez(buffer, header=np.frombuffer(raw, np.uint8), **arrays)
    blob = buffer.getvalue()
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(blob)))
        blob = blob[:cut]
    path = f"/tmp/tfxbar-fuzz-{os.getpid()}.npz"
    with open(path, "wb") as handle:
        handle.write(blob)
    try:
        loaded = load_program(path)
    except tfxbar.FormatError:
        return
    finally:
        os.unlink(path)
    codes, _ = pixel_codes(4)
    # An edited `input.bits` (e.g. 1) is a valid program of narrower inputs: feed codes it takes.
    codes = np.minimum(codes, 2 ** loaded.header["input"]["bits"] - 1).astype(codes.dtype)
    out = tfxbar.Interpreter(loaded).run(codes)  # a file that loads must run, and sensibly
    assert out.shape[0] == len(codes) and np.all(np.isfinite(out))


def test_differential_crossbar_with_an_offset_is_refused() -> None:
    """Without a reference column there is no Σx to subtract B·Σx from: ideal mode (which did)
    and hardware mode (which could not) disagreed on such a file."""
    from check_toys import make_program

    program = make_program(np.array([[1, -2], [3, 0]]))
    arrays = dict(program.arrays)
    index = _first(program, "crossbar")
    arrays[f"op{index}.offset_num"] = np.array([1, 0], np.int64)
    arrays[f"op{index}.acc_lo"] = arrays[f"op{index}.acc_lo"] - 100   # keep the bounds containing
    with pytest.raises(tfxbar.FormatError, match="offset_num: must be 0 without a reference column"):
        Program(program.header, arrays)
