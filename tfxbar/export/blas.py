"""BLAS threading for the interpreter: it runs batches on its own worker threads, each with a
single-threaded BLAS, because OpenBLAS's own thread hand-offs dominate small GEMMs and suffer
most on a busy machine (docs/benchmarks.md). Linux + OpenBLAS only; elsewhere BLAS is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["default_workers", "single_threaded_blas"]


def _blas_library() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the thread count of the OpenBLAS numpy is linked with, or None when it cannot
    be found (another BLAS, or no /proc: then the interpreter leaves BLAS alone)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                               ("openblas", "")):
            getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if getter is not None and setter is not None:
                return getter, setter
    return None


_BLAS: list[Any] = []           # [(get, set) or None], resolved on first use
_BLAS_LOCK = threading.Lock()
_BLAS_USERS = [0, 0]             # [runs inside single_threaded_blas, thread count to restore]


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """One BLAS thread per call while inside (restored after): the interpreter parallelises over
    batches instead, which avoids OpenBLAS's thread hand-offs on small GEMMs and on busy machines
    (docs/benchmarks.md: the 64 × 3136 × 128 dense GEMM took 92 ms with 2 BLAS threads on a
    loaded machine, 0.7 ms with one)."""
    with _BLAS_LOCK:
        if not _BLAS:
            _BLAS.append(_blas_library())
        blas = _BLAS[0]
        if blas is not None:
            if _BLAS_USERS[0] == 0:
                _BLAS_USERS[1] = blas[0]()
                blas[1](1)
            _BLAS_USERS[0] += 1
    try:
        yield
    finally:
        if blas is not None:
            with _BLAS_LOCK:
                _BLAS_USERS[0] -= 1
                if _BLAS_USERS[0] == 0:
                    blas[1](_BLAS_USERS[1])


def default_workers() -> int:
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:   # not Linux
        return max(1, min(4, os.cpu_count() or 1))
