"""Safe reading of the program container: a ZIP of ``.npy`` members (docs/format.md §1, §7).

`numpy.load` trusts the archive: a member's npy header may declare 10^12 elements, a deflated
member may inflate to gigabytes, 200,000 tiny members take seconds, and damaged archives escape
as MemoryError, NotImplementedError, RuntimeError, tokenize.TokenError... This reader checks,
before any array data is read:

1. the file is a regular file and its ZIP end record declares at most `max_members` entries;
2. every member is a plain (unencrypted, stored or deflated) ``<name>.npy`` with a unique name;
3. every npy header parses strictly (no `ast`), with a little-endian numeric dtype, and its
   shape × itemsize equals the member's declared uncompressed size;
4. the declared sizes add up to at most `max_bytes` (the program header member first, read
   alone and parsed as JSON);
5. the names, dtypes and shapes match those the validated JSON header implies.

Only then are the arrays read, each exactly its declared length (ZIP CRCs checked). Numpy
only, no TensorFlow; every failure is a `FormatError` naming the member or field.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from tfxbar.export.errors import FormatError
from tfxbar.export.schema import check_header, expected_arrays

__all__ = ["MAX_BYTES", "MAX_HEADER_BYTES", "MAX_MEMBERS", "NOT_A_PROGRAM", "Member", "read_program"]

# In the FormatError of a file that is no program at all (not a damaged one): callers test for it.
NOT_A_PROGRAM = "not a tfxbar program"
MAX_MEMBERS = 20_000           # a ResNet-18 on 128×128 tiles has ~3,000 arrays
MAX_BYTES = 2 ** 30            # total uncompressed array data (1 GiB)
MAX_HEADER_BYTES = 4 * 2 ** 20  # the JSON header member (a ResNet's is < 1 MB)
_MAX_NPY_HEADER = 65_536       # numpy writes < 200 bytes; its own reader allows 10,000
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]{0,199}\.npy")
# Little-endian (or byte-order-free) numeric dtypes, the only ones a program stores.
_DTYPES = {"|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4", "<f8"}
_ENTRY = (r"'(descr|fortran_order|shape)'\s*:\s*"
          r"('[^']{0,8}'|True|False|\(\s*(?:\d{1,19}\s*,\s*)*(?:\d{1,19})?\s*\))")
_NPY_DICT = re.compile(r"\{\s*" + _ENTRY + r"\s*,\s*" + _ENTRY + r"\s*,\s*" + _ENTRY + r"\s*,?\s*\}\s*")
_EOCD, _ZIP64_LOCATOR, _ZIP64_EOCD = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
_UNSUPPORTED_FLAGS = 0x1 | 0x20 | 0x40   # encrypted, compressed patch data, strong encryption


@dataclass(frozen=True)
class Member:
    """One ``.npy`` member, from its ZIP entry and npy header (nothing of its data read)."""

    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    offset: int    # bytes of npy magic + header before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_program(path: str | os.PathLike[str], header_key: str = "header", *, max_members: int = MAX_MEMBERS,
                 max_bytes: int = MAX_BYTES) -> tuple[Any, dict[str, np.ndarray]]:
    """(JSON header, arrays by name) of the program file at `path`, checked as the module says.

    The header is validated (`schema.check_header`) and the arrays' names, dtypes and shapes
    compared with those it implies; the array values are left to `Program.validate`.

    Raises:
        FormatError: anything wrong, named (`file`, `header`, `<member>`); the file is no zip
            archive at all, or has no header member: the problem contains `NOT_A_PROGRAM`.
        FileNotFoundError, IsADirectoryError, PermissionError: as `open` raises them.
    """
    path = os.fspath(path)
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a program file", path)
    if not stat.S_ISREG(mode):   # a FIFO or device would block or never end
        raise FormatError("file", f"{path} is not a regular file; give the .xbar file itself")
    try:
        handle = open(path, "rb")  # noqa: SIM115  (closed below)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except OSError as exc:
        raise FormatError("file", f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        if handle.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):   # a zip archive's first bytes (.npz)
            raise FormatError("file", f"{path} is {NOT_A_PROGRAM} (expected the .npz archive "
                                      "that `tfxbar export` or Program.save writes)")
        try:
            _check_entry_count(handle, max_members)
            with zipfile.ZipFile(handle) as archive:
                if f"{header_key}.npy" not in archive.NameToInfo:   # e.g. a .keras file (a zip too)
                    raise FormatError(header_key, f"missing: an .npz archive but {NOT_A_PROGRAM}")
                entries = _entries(archive, max_bytes)
                header_info = entries.pop(header_key)
                raw = _read(archive, _npy_header(archive, header_info, header_key), header_key,
                            MAX_HEADER_BYTES)
                header = _parse_header(raw, header_key)
                check_header(header)
                _match_names(header, entries)   # before opening each member
                members = {name: _npy_header(archive, info, name) for name, info in entries.items()}
                _match_layout(header, members)
                arrays = {name: _read(archive, m, name, max_bytes) for name, m in members.items()}
        except FormatError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
                struct.error, NotImplementedError, RuntimeError, OverflowError) as exc:
            # Damage the checks above cannot see (e.g. a bad CRC or a corrupt deflate stream).
            raise FormatError("file", f"not a readable .npz archive ({type(exc).__name__}: {exc})") from None
    return header, arrays


def _check_entry_count(handle: IO[bytes], max_members: int) -> None:
    """Refuse more than `max_members` entries from the end record, before zipfile lists them all."""
    size = handle.seek(0, os.SEEK_END)
    tail_start = max(0, size - 22 - 65_535)   # the end record is followed by ≤ 64 KiB of comment
    handle.seek(tail_start)
    tail = handle.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise FormatError("file", "not a readable .npz archive (no ZIP end-of-directory record; truncated?)")
    entries, directory = struct.unpack("<H4xI", tail[at + 10:at + 20])
    if entries == 0xFFFF or directory == 0xFFFFFFFF:   # ZIP64: the counts are in another record
        locator = tail[at - 20:at] if at >= 20 else b""
        if not locator.startswith(_ZIP64_LOCATOR):
            raise FormatError("file", "not a readable .npz archive (damaged ZIP64 end record)")
        (offset,) = struct.unpack("<Q", locator[8:16])
        handle.seek(min(offset, size))
        record = handle.read(56)
        if len(record) < 56 or not record.startswith(_ZIP64_EOCD):
            raise FormatError("file", "not a readable .npz archive (damaged ZIP64 end record)")
        entries, directory = struct.unpack("<QQ", record[32:48])
    if entries > max_members:
        raise FormatError("file", f"{entries} archive members, more than the loader's limit {max_members} "
                                  "(a program has a few per op; if real, pass max_members= to load_program)")
    if directory > max_members * 1024 or directory > size:
        raise FormatError("file", f"the ZIP directory declares {directory} bytes for {entries} members "
                                  f"in a {size}-byte file; the archive is damaged")


def _entries(archive: zipfile.ZipFile, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    """The ZIP entries by array name, checked from the central directory alone (nothing opened)."""
    entries: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in archive.infolist():
        name = info.filename
        if not _NAME.fullmatch(name):
            raise FormatError("file", f"member {name[:80]!r} is not a plain '<name>.npy' array")
        key = name[:-4]
        if key in entries:
            raise FormatError(key, "the archive holds this member twice; re-save the program")
        if info.flag_bits & _UNSUPPORTED_FLAGS:
            raise FormatError(key, "encrypted or patched archive members are not supported")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FormatError(key, f"ZIP compression method {info.compress_type} is not supported "
                                   "(only stored or deflated, as numpy.savez/savez_compressed write)")
        if info.extract_version > zipfile.MAX_EXTRACT_VERSION:
            raise FormatError(key, f"needs ZIP version {info.extract_version / 10:.1f} to extract; "
                                   f"at most {zipfile.MAX_EXTRACT_VERSION / 10:.1f} is supported")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise FormatError(key, "stored member with different compressed and uncompressed sizes")
        total += info.file_size
        if total > max_bytes:
            raise FormatError(key, f"the arrays declare more than the loader's limit of {max_bytes} bytes "
                                   "(pass max_bytes= to load_program if the program is really that large)")
        entries[key] = info
    return entries


def _match_names(header: Any, entries: dict[str, zipfile.ZipInfo]) -> None:
    expected = expected_arrays(header, {})   # names only: shapes need the row/column maps
    missing = sorted(set(expected) - set(entries))
    if missing:
        raise FormatError(missing[0], "missing array")
    extra = sorted(set(entries) - set(expected))
    if extra:
        raise FormatError(extra[0], "unexpected array (not described by the header)")


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> Member:
    """Parse one member's npy header without numpy's `ast`-based reader."""
    with archive.open(info) as stream:
        head = stream.read(12)
        if len(head) < 10 or head[:6] != b"\x93NUMPY":
            raise FormatError(key, "not an npy array (bad magic)")
        major = head[6]
        if major == 1:
            (length,), start = struct.unpack("<H", head[8:10]), 10
        elif major in (2, 3) and len(head) == 12:
            (length,), start = struct.unpack("<I", head[8:12]), 12
        else:
            raise FormatError(key, f"unsupported npy format version {major}.{head[7]}")
        if length > _MAX_NPY_HEADER:
            raise FormatError(key, f"npy header of {length} bytes (at most {_MAX_NPY_HEADER})")
        more = length - (len(head) - start)   # < 0 for a tiny header: read(-n) would read it all
        text = head[start:start + length] + (stream.read(more) if more > 0 else b"")
    if len(text) != length:
        raise FormatError(key, "npy header truncated")
    try:
        literal = text.decode("latin1" if major < 3 else "utf-8")
    except UnicodeDecodeError:
        raise FormatError(key, "npy header is not text") from None
    if not _NPY_DICT.fullmatch(literal):
        raise FormatError(key, f"npy header is not numpy's {{'descr', 'fortran_order', 'shape'}} dict: "
                               f"{literal[:80]!r}")
    fields = dict(re.findall(_ENTRY, literal))
    if len(fields) != 3:
        raise FormatError(key, "npy header repeats a key")
    descr = fields["descr"].strip("'")
    if descr not in _DTYPES:
        raise FormatError(key, f"dtype {descr!r} is not a little-endian numeric dtype (no objects)")
    if fields["fortran_order"] not in ("True", "False") or not fields["shape"].startswith("("):
        raise FormatError(key, "npy header field of the wrong type")
    shape = tuple(int(v) for v in fields["shape"].strip("()").replace(",", " ").split())
    member = Member(info, np.dtype(descr), shape, fields["fortran_order"] == "True", start + length)
    if member.offset + member.nbytes != info.file_size:
        raise FormatError(key, f"npy header declares shape {shape} of {descr} ({member.nbytes} bytes) but "
                               f"the member holds {info.file_size - member.offset} bytes of data")
    return member


def _read(archive: zipfile.ZipFile, member: Member, key: str, limit: int) -> np.ndarray:
    """The member's array: exactly its declared bytes, then the end (where zipfile checks the CRC)."""
    if member.nbytes > limit:
        raise FormatError(key, f"{member.nbytes} bytes, more than the limit of {limit}")
    with archive.open(member.info) as stream:
        stream.read(member.offset)
        data = bytearray(stream.read(member.nbytes))
        if len(data) != member.nbytes or stream.read(1):
            raise FormatError(key, "member data is not the size its header declares")
    array = np.frombuffer(data, member.dtype)   # a writable view of our own buffer: no copy
    return array.reshape(member.shape, order="F" if member.fortran else "C")


def _parse_header(raw: np.ndarray, key: str) -> Any:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise FormatError(key, f"must be a 1-D uint8 array of UTF-8 JSON, got {raw.dtype} {raw.shape}")
    try:
        return json.loads(raw.tobytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise FormatError(key, f"not valid UTF-8 JSON ({exc})") from None
    except RecursionError:
        raise FormatError(key, "JSON nested too deeply to be a program header") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _match_layout(header: Any, members: dict[str, Member]) -> None:
    """Dtypes and shapes of the members against those the header implies, data unread."""
    # Zero-stride stand-ins carry each member's dtype and shape at no memory cost: the schema
    # derives tile shapes from the row/column maps' lengths.
    stand_ins = {name: np.lib.stride_tricks.as_strided(np.zeros(1, m.dtype), m.shape, (0,) * len(m.shape))
                 for name, m in members.items()}
    for name, check in expected_arrays(header, stand_ins).items():
        # Checks without a layout fail whatever the values (e.g. a tile map too long): left to
        # Program.validate, after reading (bounded by max_bytes).
        layout: tuple[np.dtype, tuple[int, ...]] | None = getattr(check, "layout", None)
        if layout is None:
            continue
        dtype, shape = layout
        if members[name].dtype != dtype:
            raise FormatError(name, f"dtype must be {dtype}, got {members[name].dtype}")
        if members[name].shape != shape:
            raise FormatError(name, f"shape must be {shape}, got {members[name].shape}")
