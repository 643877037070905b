"""Atomic file writes: the content goes to a temporary file in the target's folder, which is
renamed over the target only when complete, so an error or an interrupt never leaves a partial
file (and an existing file stays as it was)."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["write_atomically"]


def write_atomically(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> str:
    """Call `write(handle)` on a temporary binary file, then rename it to `path`.

    Arguments:
        path: the file to create or replace.
        write: writes the whole content to the handle it is given.

    Returns:
        `path` as a string.

    Raises:
        OSError: the file cannot be written; the error names `path` (not the temporary file) and
            nothing is left behind.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a directory; give a file name", path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"its folder {folder} does not exist", path)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tfxbar-", suffix=".tmp")
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write in {folder}: {exc.strerror}", path) from None
    try:
        # mkstemp creates the file readable by its owner only; give it the usual mode.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
