"""The program file, version 2: a numpy ``.npz`` with a JSON header (docs/format.md).

Numpy only — no TensorFlow, never pickle. `Program.save` validates and writes atomically;
`load_program` validates every field and raises `FormatError` naming the field.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfxbar.atomic import write_atomically
from tfxbar.export.errors import FormatError
from tfxbar.export.schema import check_header, expected_arrays, upgrade_header

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "NOT_A_PROGRAM", "Program", "load_program", "quantize_codes"]

FORMAT_NAME = "tfxbar-program"
# In the FormatError of a file that is no program at all (not a damaged one): callers test for it.
NOT_A_PROGRAM = "not a tfxbar program"
FORMAT_VERSION = 2
HEADER_KEY = "header"


class Program:
    """A converted crossbar program: a JSON-able header and named numpy arrays.

    Arguments:
        header: the header dict (see docs/format.md); a version-1 header is validated as such,
            then upgraded to version 2 in memory (each op reads the previous op's output).
        arrays: arrays named ``op<i>.<field>``.
        validate: check every field now (raises `FormatError`).
    """

    def __init__(self, header: dict[str, Any], arrays: Mapping[str, np.ndarray],
                 validate: bool = True) -> None:
        self.header = header
        self.arrays = dict(arrays)
        if validate:
            self.validate()
        if isinstance(header, dict) and header.get("version") == 1:
            self.header = upgrade_header(header)

    def validate(self) -> None:
        """Check the header and arrays against the schema; `FormatError` on failure."""
        check_header(self.header)
        expected = expected_arrays(self.header, self.arrays)
        missing = sorted(set(expected) - set(self.arrays))
        if missing:
            raise FormatError(missing[0], "missing array")
        extra = sorted(set(self.arrays) - set(expected))
        if extra:
            raise FormatError(extra[0], "unexpected array (not described by the header)")
        for name, check in expected.items():
            check(name, self.arrays[name])

    @property
    def ops(self) -> list[dict[str, Any]]:
        return self.header["ops"]

    def op_arrays(self, index: int) -> dict[str, np.ndarray]:
        """The arrays of op `index`, by field name."""
        prefix = f"op{index}."
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Integer input codes of real inputs `x`: clip(round(x / scale), 0, 2^bits − 1)."""
        spec = self.header["input"]
        return quantize_codes(x, spec["bits"], spec["scale"])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Validate, then write the program to `path` atomically (temp file + rename).

        Raises:
            FormatError: the program is malformed (nothing is written).
            OSError: the file cannot be written (no partial file is left).
        """
        self.validate()
        path = os.fspath(path)
        text = json.dumps(self.header, allow_nan=False, sort_keys=True)
        payload = {HEADER_KEY: np.frombuffer(text.encode("utf-8"), np.uint8)}
        payload.update(self.arrays)
        write_atomically(path, lambda handle: np.savez(handle, **payload))

    def summary(self) -> str:
        """One line per op: name, kind, shapes."""
        lines = [f"tfxbar program v{self.header['version']}: input {self.header['input']['shape']} "
                 f"({self.header['input']['bits']}-bit codes)"]
        for i, op in enumerate(self.ops):
            extra = f" tiles={len(op['attrs']['tiles'])}" if op["kind"] == "crossbar" else ""
            lines.append(f"  {i:2d} {op['kind']:10s} {op['name']:24s} {op['in_shape']} -> "
                         f"{op['out_shape']}{extra}  <- {', '.join(op['inputs'])}")
        return "\n".join(lines)


def quantize_codes(x: np.ndarray, bits: int, scale: float) -> np.ndarray:
    """clip(round(x / scale), 0, 2^bits − 1) in float32, as the model's input quantizer computes it."""
    v = np.clip(np.asarray(x, np.float32) / np.float32(scale), 0, 2 ** bits - 1)
    return np.round(v).astype(np.int64)


def load_program(path: str | os.PathLike[str]) -> Program:
    """Read and validate a program file.

    Raises:
        FormatError: the file is not a readable program (version 1 or 2); the message names the field.
    """
    try:
        with open(os.fspath(path), "rb") as handle:
            magic = handle.read(4)
        if magic not in (b"PK\x03\x04", b"PK\x05\x06"):   # a zip archive's first bytes (.npz)
            raise FormatError("file", f"{os.fspath(path)} is {NOT_A_PROGRAM} (expected the .npz archive "
                                      "that `tfxbar export` or Program.save writes)")
        with np.load(os.fspath(path), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (FileNotFoundError, IsADirectoryError, FormatError):
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise FormatError("file", f"not a readable .npz archive ({exc})") from None
    raw = arrays.pop(HEADER_KEY, None)
    if raw is None:
        raise FormatError(HEADER_KEY, f"missing: an .npz archive but {NOT_A_PROGRAM}")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise FormatError(HEADER_KEY, f"must be a 1-D uint8 array of UTF-8 JSON, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise FormatError(HEADER_KEY, f"not valid UTF-8 JSON ({exc})") from None
    return Program(header, arrays)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")
