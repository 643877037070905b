"""Atomic file writes: the content goes to a temporary file in the target's folder, which is
renamed over the target only when complete, so an error or an interrupt never leaves a partial
file (and an existing file stays as it was).

- An existing target keeps its permission bits (a 0600 file stays 0600); a new one gets
  0666 & ~umask.
- A symlink target is written through: its target file is replaced (atomically, in the target's
  folder) and the link stays. A FIFO, device or socket target is refused (FileExistsError).
- A process killed mid-write leaves its ``.tfxbar-*.tmp`` file behind (nothing can remove it);
  the next write in that folder deletes such files older than `STALE_SECONDS`. They are never
  read as programs (their names are dot files with a ``.tmp`` suffix).
"""

from __future__ import annotations

import errno
import glob
import os
import stat
import tempfile
import time
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["STALE_SECONDS", "write_atomically"]

STALE_SECONDS = 3600   # an hour: no write of ours takes that long
_PREFIX, _SUFFIX = ".tfxbar-", ".tmp"


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
    target = os.path.realpath(path)   # through symlinks: replace the file, keep the link
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, "is a directory; give a file name", path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"its folder {folder} does not exist", path)
    mode = _mode(target, path)
    _remove_stale(folder)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=_PREFIX, suffix=_SUFFIX)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write in {folder}: {exc.strerror}", path) from None
    try:
        # mkstemp creates the file readable by its owner only; keep the old file's mode, or
        # give a new one the usual mode.
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _mode(target: str, path: str) -> int:
    """Permission bits for the new file: the existing file's, else 0666 & ~umask.

    FileExistsError if `target` is a FIFO, device or socket (replacing one loses it; opening a
    FIFO blocks)."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return 0o666 & ~_umask()
    if not stat.S_ISREG(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a regular file (a FIFO, device or socket); "
                                            "give another file name", path)
    return stat.S_IMODE(mode)


def _remove_stale(folder: str) -> None:
    """Delete temporary files of killed writes (older than STALE_SECONDS) in `folder`."""
    now = time.time()
    for stale in glob.glob(os.path.join(glob.escape(folder), f"{_PREFIX}*{_SUFFIX}")):
        try:
            if now - os.lstat(stale).st_mtime > STALE_SECONDS:
                os.unlink(stale)
        except OSError:   # gone already, or not ours to delete: harmless either way
            pass


def _umask() -> int:
    """The process umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
