"""Damaged program files (numpy only): random mutations and a corpus of crafted attacks.

Shared by tests/test_loader_container.py and benchmarks/fuzz_loader.py. Every function takes
the bytes of a valid program file (as `Program.save` writes it: a stored, uncompressed .npz)
and returns the bytes of a damaged one.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable

import numpy as np

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_CD, _LOCAL, _EOCD = b"PK\x01\x02", b"PK\x03\x04", b"PK\x05\x06"


# -- the ZIP structure of a valid file ----------------------------------------------------------
def entries(blob: bytes) -> list[dict[str, int | str]]:
    """Central-directory entries: offsets of the entry, its local header and its data, name, sizes."""
    eocd = blob.rfind(_EOCD)
    (count,) = struct.unpack("<H", blob[eocd + 10:eocd + 12])
    (start,) = struct.unpack("<I", blob[eocd + 16:eocd + 20])
    out, at = [], start
    for _ in range(count):
        nlen, xlen, clen = struct.unpack("<HHH", blob[at + 28:at + 34])
        local = struct.unpack("<I", blob[at + 42:at + 46])[0]
        lnlen, lxlen = struct.unpack("<HH", blob[local + 26:local + 30])
        (size,) = struct.unpack("<I", blob[at + 24:at + 28])
        out.append({"cd": at, "local": local, "data": local + 30 + lnlen + lxlen,
                    "name": blob[at + 46:at + 46 + nlen].decode(), "size": size})
        at += 46 + nlen + xlen + clen
    return out


def _patch(blob: bytes, at: int, fmt: str, value: int) -> bytes:
    raw = struct.pack(fmt, value)
    return blob[:at] + raw + blob[at + len(raw):]


def _fix_crc(blob: bytes, entry: dict) -> bytes:
    """Recompute a stored member's CRC after its bytes changed (a crafted, not a corrupted, file)."""
    crc = zlib.crc32(blob[entry["data"]:entry["data"] + entry["size"]])
    return _patch(_patch(blob, entry["cd"] + 16, "<I", crc), entry["local"] + 14, "<I", crc)


def npy_header_span(blob: bytes, entry: dict) -> tuple[int, int]:
    """(start, length) of a stored member's npy header text (version 1.0, as numpy writes it)."""
    (length,) = struct.unpack("<H", blob[entry["data"] + 8:entry["data"] + 10])
    return entry["data"] + 10, length


def with_npy_header(blob: bytes, member: str, text: str, fix_crc: bool = True) -> bytes:
    """`blob` with member `member`'s npy header text replaced by `text` (padded to the same length)."""
    entry = next(e for e in entries(blob) if e["name"] == member)
    start, length = npy_header_span(blob, entry)
    raw = text.encode("latin1")[:length - 1].ljust(length - 1) + b"\n"
    blob = blob[:start] + raw + blob[start + length:]
    return _fix_crc(blob, entry) if fix_crc else blob


def zip_of(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    """A ZIP of the given (name, bytes) members, duplicates allowed."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", method) as archive:
        warnings.simplefilter("ignore")   # "Duplicate name": wanted here
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def members_of(blob: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def pack(header: object, arrays: dict[str, np.ndarray]) -> bytes:
    """A program file from a header (any JSON value) and arrays, as Program.save lays it out."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    buffer = io.BytesIO()
    np.savez(buffer, header=np.frombuffer(raw, np.uint8), **arrays)
    return buffer.getvalue()


# -- the corpus: one crafted file per failure class of issue #16 --------------------------------
def corpus(blob: bytes) -> dict[str, bytes]:
    """Crafted damaged files, by name; each must be refused with a FormatError, fast and small."""
    first = entries(blob)[-1]   # an array member (the header is written first)
    name = first["name"]
    cases: dict[str, bytes] = {}
    npy = "{'descr': %s, 'fortran_order': False, 'shape': %s"
    for label, text in {"npy_shape_1e12": npy % ("'<i8'", "(1000000000000,), }"),
                        "npy_broken_literal": npy % ("'<i8'", "(3,"),
                        "npy_object_dtype": npy % ("'|O'", "(1,), }"),
                        "npy_big_endian": npy % ("'>i8'", "(1,), }")}.items():
        cases[label] = with_npy_header(blob, name, text)
    cases["npy_bad_magic"] = _patch(blob, first["data"], "<B", 0x00)
    for label, (offset, fmt, value) in {"zip_method_99": (10, "<H", 99), "zip_version_99": (6, "<H", 99),
                                        "zip_encrypted": (8, "<H", 0x1),
                                        "zip_size_2GiB": (24, "<I", 2 ** 31)}.items():
        cases[label] = _patch(blob, first["cd"] + offset, fmt, value)
    cases["zip_entries_200000"] = _patch(_patch(blob, blob.rfind(_EOCD) + 8, "<H", 0xFFFF),
                                         blob.rfind(_EOCD) + 10, "<H", 0xFFFF)
    members = members_of(blob)
    cases["member_not_npy"] = zip_of([(n, b"not an npy file" if n == name else d) for n, d in members])
    cases["member_without_suffix"] = zip_of(members + [("op0.extra", b"\x93NUMPY")])
    cases["member_in_folder"] = zip_of(members + [("../op0.x.npy", npy_bytes(np.zeros(1)))])
    cases["duplicate_member"] = zip_of(members + [(name, dict(members)[name])])
    cases["many_members"] = zip_of(members + [(f"x{i}.npy", b"") for i in range(20_001)])
    cases["nested_json"] = pack(b"[" * 100_000 + b"]" * 100_000, {})
    cases["json_nan"] = pack(b'{"version": NaN}', {})
    cases["json_huge_int"] = pack(b'{"version": ' + b"9" * 5000 + b"}", {})
    cases["header_not_utf8"] = pack(b"\xff\xfe{", {})
    cases["header_not_uint8"] = zip_of([("header.npy", npy_bytes(np.zeros(3)))] + members[1:])
    # Zip bombs: a deflated member of zeros far larger than the file.
    zeros = np.zeros(10_000_000, np.int64)   # 80 MB inflated, 78 KB deflated
    cases["bomb_wrong_shape"] = zip_of([(n, npy_bytes(zeros) if n == name else d) for n, d in members],
                                       zipfile.ZIP_DEFLATED)
    tiny = npy_bytes(zeros)
    tiny = tiny[:8] + b"\x00\x00" + tiny[10:]   # npy header length 0: a reader must not read on
    cases["bomb_npy_header_length_0"] = zip_of([(n, tiny if n == name else d) for n, d in members],
                                               zipfile.ZIP_DEFLATED)
    cases["bomb_header"] = zip_of([("header.npy", npy_bytes(np.full(20_000_000, 32, np.uint8)))]
                                  + members[1:], zipfile.ZIP_DEFLATED)
    cases["truncated_half"] = blob[:len(blob) // 2]
    cases["truncated_no_end"] = blob[:-10]
    return cases


# -- random mutations ---------------------------------------------------------------------------
_JUNK_VALUES: list[object] = [
    None, True, False, 0, 1, -1, 2, 3, 7, 8, 16, 62, 63, 64, 65, 255, 256, 10 ** 12, INT64_MIN, INT64_MAX,
    2 ** 64, -(2 ** 62), 0.5, -0.0, 1e308, "", "x", "lossless", "clip", "offset", "differential",
    "dequantize", "crossbar", [], [1], [0, 0], [1, -1], [[[[]]]], {}, {"kind": "affine"}, {"reference": True}]
_ARRAY_VALUES = [0, 1, -1, 2, 62, 63, 64, 127, 128, 255, 2 ** 31 - 1, -(2 ** 31), 2 ** 62, -(2 ** 62),
                 INT64_MIN, INT64_MAX, float("nan"), float("inf"), -float("inf"), 1e300]


def _leaves(value: object, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _leaves(v, path + (k,))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaves(v, path + (i,))]
    return [path]


def mutate_content(header: dict, arrays: dict[str, np.ndarray], rng: np.random.Generator) -> str:
    """Edit the header's values or the arrays in place (a well-formed container, bad content)."""
    what = str(rng.choice(["header", "header", "value", "value", "dtype", "shape", "drop"]))
    if what == "header":
        paths = [p for p in _leaves(header) if p]
        path = paths[rng.integers(len(paths))]
        node: object = header
        for key in path[:-1]:
            node = node[key]  # type: ignore[index]
        old = node[path[-1]]  # type: ignore[index]
        if isinstance(old, int) and not isinstance(old, bool) and rng.random() < 0.5:
            new: object = old + int(rng.choice([-2, -1, 1, 2, old, -old]))   # near misses
        else:
            new = _JUNK_VALUES[rng.integers(len(_JUNK_VALUES))]
        node[path[-1]] = new  # type: ignore[index]
        return f"header {'.'.join(map(str, path))}"
    key = sorted(arrays)[rng.integers(len(arrays))]
    value = arrays[key]
    if what == "value" and value.size:
        flat = value.reshape(-1).copy()
        junk = _ARRAY_VALUES[rng.integers(len(_ARRAY_VALUES))]
        with np.errstate(invalid="ignore", over="ignore"):
            flat[rng.integers(flat.size)] = np.asarray(junk).astype(value.dtype)
        arrays[key] = flat.reshape(value.shape)
    elif what == "dtype":
        arrays[key] = value.astype(str(rng.choice(["int8", "uint8", "int32", "int64", "float64", "float32"])))
    elif what == "shape":
        arrays[key] = value[..., :-1] if value.ndim and rng.random() < 0.5 else np.concatenate(
            [value.reshape(-1), value.reshape(-1)[:1]])
    else:
        del arrays[key]
    return f"{what} {key}"


def mutate_bytes(blob: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """A random byte-, ZIP- or npy-level mutation of a saved program."""
    kinds: dict[str, Callable[[], bytes]] = {}
    size = len(blob)
    members = entries(blob)
    entry = members[rng.integers(len(members))]

    def flip() -> bytes:
        data = bytearray(blob)
        for at in rng.integers(0, size, rng.integers(1, 17)):
            data[at] = int(rng.integers(256))
        return bytes(data)

    def splice() -> bytes:
        at, length = int(rng.integers(size)), int(rng.integers(1, 64))
        return blob[:at] + rng.bytes(length) + blob[at + length:]

    def cut() -> bytes:
        return blob[:rng.integers(size)]

    def insert() -> bytes:
        at = int(rng.integers(size))
        return blob[:at] + rng.bytes(int(rng.integers(1, 16))) + blob[at:]

    def zip_field() -> bytes:
        fields = [(6, "<H"), (8, "<H"), (10, "<H"), (16, "<I"), (20, "<I"), (24, "<I"), (28, "<H"),
                  (42, "<I")]
        offset, fmt = fields[rng.integers(len(fields))]
        top = 0xFFFF if fmt == "<H" else 0xFFFFFFFF
        value = int(rng.choice([0, 1, 8, 12, 14, 20, 45, 63, 99, 0x41, top, int(rng.integers(top))]))
        base = entry["cd"] if rng.random() < 0.7 else entry["local"] - 2   # local fields sit 2 bytes earlier
        return _patch(blob, int(base) + offset, fmt, value)

    def eocd_field() -> bytes:
        at = blob.rfind(_EOCD) + int(rng.choice([4, 6, 8, 10, 12, 16, 20]))
        return _patch(blob, at, "<H", int(rng.integers(0x10000)))

    def npy_header() -> bytes:
        start, length = npy_header_span(blob, entry)
        text = blob[start:start + length].decode("latin1")
        choice = rng.integers(4)
        if choice == 0:   # a digit of the shape, the dtype or a flag
            at = int(rng.integers(len(text)))
            text = text[:at] + str(rng.choice(list("0123456789(),'OUbc>|TF "))) + text[at + 1:]
        elif choice == 1:
            extra = str(rng.choice(["1000000000000, ", "0, ", "9" * 30 + ", ", "-1, "]))
            text = text.replace("(", "(" + extra, 1)
        elif choice == 2:
            text = text[:rng.integers(len(text))]
        else:
            text = text.replace("<", str(rng.choice([">", "|", "=", "<U", "|O"])), 1)
        return with_npy_header(blob, str(entry["name"]), text, fix_crc=bool(rng.random() < 0.8))

    kinds.update(flip=flip, splice=splice, cut=cut, insert=insert, zip_field=zip_field, eocd_field=eocd_field,
                 npy_header=npy_header)
    name = str(rng.choice(sorted(kinds)))
    return name, kinds[name]()
