"""The fused CPU kernel of the hardware mode (`crossbar_kernel.cc`), built on first use.

The kernel computes a crossbar's modelled hardware accumulator on program cells in one pass per
patch (docs/hardware_mode.md, "Engines"); the same library holds the in-place inference ops of
the layers between the crossbars (`layer_kernels.cc`, `tfxbar.hardware.native_layers`). It is
compiled against the installed TensorFlow with the machine's C++ compiler the first time a
`HardwareMode` needs it, and cached by a hash of the sources (the two .cc files and the
headers), TensorFlow's version and flags, the compiler and the
CPU (``-march=native``), so a later process only loads it. The build is written to a temporary
name and renamed into place (a half-written library is never loaded); a failed build leaves the
TF/XLA path in charge with one warning that says why.

Environment:
    TFXBAR_ENGINE: ``auto`` (default: native when it builds), ``native`` (fail loudly if it
        does not), ``tf`` (never build; the TF/XLA formulation).
    TFXBAR_CACHE: cache directory (default ``~/.cache/tfxbar``).
    CXX: the C++ compiler (default ``g++``).
    TFXBAR_KERNEL_METHOD: how the kernel forms partial sums: ``sparse`` (16/32-bit vector adds
        of the rows whose plane value is not 0; any CPU), ``dense`` (int8 dot products of
        every row: AMX tiles where the CPU, the OS and the build allow them, else AVX2
        ``vpmaddubsw``; needs cells of at most 8 bits with AMX, 7 bits with AVX2, else the op
        fails) or ``lut`` (AVX2 table lookups of four 1-bit rows at a time; needs 1-bit DACs,
        stride-1 convolutions or Dense layers and no reference column, else the op fails).
        ``auto`` (default): on CPUs with AVX2 but no AVX-512 lut, else dense (both faster than
        sparse there), sparse elsewhere (AMX's speed varied from round to round; the AVX2
        methods are not measured on AVX-512 CPUs), and sparse for a call neither can run
        exactly (docs/benchmarks.md, docs/hardware_mode.md "Engines"). The results are
        identical.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import tensorflow as tf

__all__ = ["ENGINES", "KERNEL_METHODS", "NativeKernelError", "compile_kernel", "dense_supported",
           "engine_choice", "kernel_method", "load", "method_supported"]

ENGINES = ("auto", "native", "tf")
KERNEL_METHODS = ("auto", "sparse", "dense", "lut")
_SOURCE = Path(__file__).with_name("crossbar_kernel.cc")
# Compiled into the same library: BatchNormalization and ClippedRound at inference.
_LAYER_SOURCE = Path(__file__).with_name("layer_kernels.cc")
# The headers it includes: the sparse, dense and lookup methods and the plan they share.
_HEADERS = tuple(Path(__file__).with_name(f"crossbar_{part}.h")
                 for part in ("plan", "sparse", "dense", "lut"))
_loaded: ModuleType | None = None
_failure: str | None = None


class NativeKernelError(RuntimeError):
    """The native kernel was required (``TFXBAR_ENGINE=native`` or ``engine="native"``) but
    could not be built or loaded."""


def engine_choice(engine: str | None = None) -> str:
    """The engine asked for: `engine` if given, else ``$TFXBAR_ENGINE``, else ``auto``."""
    choice = engine if engine is not None else os.environ.get("TFXBAR_ENGINE", "auto")
    if choice not in ENGINES:
        source = "engine" if engine is not None else "TFXBAR_ENGINE"
        raise ValueError(f"{source} must be one of {', '.join(ENGINES)}; got {choice!r}")
    return choice


def kernel_method() -> str:
    """The kernel's partial-sum method, ``$TFXBAR_KERNEL_METHOD`` (default ``auto``)."""
    method = os.environ.get("TFXBAR_KERNEL_METHOD", "auto")
    if method not in KERNEL_METHODS:
        raise ValueError(f"TFXBAR_KERNEL_METHOD must be one of {', '.join(KERNEL_METHODS)}; got {method!r}")
    return method


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler_version(cxx: str) -> str:
    done = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()[0] if done.stdout else cxx


# Tried in order: Eigen's AVX512-FP16 code does not compile with g++ 12 under -march=native
# on CPUs that have it; older compilers do not know -mno-avx512fp16.
_ARCH_FLAGS = (["-march=native", "-mno-avx512fp16", "-mprefer-vector-width=512"], ["-march=native"], [])
# No FMA contraction: the kernel's float64 steps must round as the TF path's.
_FLAGS = ["-shared", "-fPIC", "-O3", "-ffp-contract=off", "-w"]


def _tuning_flags(version: str) -> list[str]:
    """Flags for the compiler whose ``--version`` line is `version`: with GCC (``g++ (…)``,
    ``x86_64-linux-gnu-g++-12 (…)``, ``c++ (…)``), no tree-PRE (partial-redundancy elimination),
    under which its code for the dense method's register blocks ran ≈ 4 % slower on the MNIST
    crossbars (benchmarks/kernel_ab.py --base-flags=-ftree-pre, docs/benchmarks.md); other
    compilers get none."""
    gcc = re.match(r"\S*(g\+\+|gcc|c\+\+)(-\d+)? \(", version) and "clang" not in version.lower()
    return ["-fno-tree-pre"] if gcc else []


def _cache_key(cxx: str) -> str:
    """What the library depends on: its sources (the .cc and its headers), TensorFlow's version
    and flags, the build flags, the compiler and the CPU."""
    compile_flags, link_flags = tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()
    sources = [path.read_text() for path in (_SOURCE, _LAYER_SOURCE, *_HEADERS)]
    version = _compiler_version(cxx)
    parts = [*sources, tf.__version__, *compile_flags, *link_flags, repr(_ARCH_FLAGS), *_FLAGS,
             *_tuning_flags(version), version, _cpu_flags()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _build(cxx: str) -> Path:
    """Compile the kernel (or find it in the cache); the path of the shared library."""
    key = _cache_key(cxx)
    cache = Path(os.environ.get("TFXBAR_CACHE", Path.home() / ".cache" / "tfxbar")) / "kernels"
    target = cache / f"crossbar_kernel-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        out = Path(tmp) / target.name
        compile_kernel(cxx, (_SOURCE, _LAYER_SOURCE), out)
        os.replace(out, target)   # atomic: another process sees the whole library or none
    return target


def compile_kernel(cxx: str, source: Path | Sequence[Path], out: Path, extra: tuple[str, ...] = ()) -> None:
    """Compile kernel sources (their headers beside them) into the shared library `out` with the
    build's flags, trying each `-march` choice in turn.

    Arguments:
        cxx: the C++ compiler.
        source: the .cc file(s).
        out: where the library goes.
        extra: more compiler flags (e.g. ``-Dtfxbar=...`` for a second copy in one process).

    Raises:
        NativeKernelError: no choice compiles; the first error line of each.
    """
    compile_flags, link_flags = tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()
    tuning = _tuning_flags(_compiler_version(cxx))
    sources = [str(source)] if isinstance(source, Path) else [str(path) for path in source]
    errors = []
    for arch in _ARCH_FLAGS:
        command = [cxx, *_FLAGS, *tuning, *arch, *extra, *compile_flags, *sources, "-o", str(out),
                   *link_flags]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode == 0:
            return
        lines = [line for line in done.stderr.splitlines() if "error" in line]
        errors.append(f"{' '.join(arch) or 'no -march'}: {(lines or [f'exit {done.returncode}'])[0]}")
    names = ", ".join(Path(path).name for path in sources)
    raise NativeKernelError(f"{cxx} failed on {names}: " + "; ".join(errors))


def load(engine: str | None = None) -> ModuleType | None:
    """The op module of the native kernel, or None for the TF/XLA path.

    Arguments:
        engine: ``auto``, ``native`` or ``tf`` (default: `engine_choice`).

    Returns:
        The loaded module (``module.tfxbar_crossbar``) or None: ``tf`` asked for, or ``auto``
        and the kernel cannot be built here (warned once, with the compiler's message).

    Raises:
        NativeKernelError: ``native`` asked for and the kernel cannot be built or loaded.
    """
    global _loaded, _failure
    choice = engine_choice(engine)
    if choice == "tf":
        return None
    if _loaded is None and _failure is None:
        cxx = os.environ.get("CXX", "g++")
        try:
            if shutil.which(cxx) is None:
                raise NativeKernelError(f"no C++ compiler {cxx!r} on PATH (set CXX)")
            _loaded = tf.load_op_library(str(_build(cxx)))
            # Forward only: ADC-aware training differentiates the ideal product (`straight_through`).
            for op in ("TfxbarCrossbar", "TfxbarChannelAffine", "TfxbarClippedRound"):
                tf.no_gradient(op)
        except (NativeKernelError, OSError, subprocess.SubprocessError, tf.errors.OpError) as exc:
            _failure = str(exc)
            if choice == "auto":
                warnings.warn("tfxbar: the native hardware-mode kernel is unavailable, using the "
                              f"slower TF/XLA path ({_failure.splitlines()[0]}); set "
                              "TFXBAR_ENGINE=tf to silence this", RuntimeWarning, stacklevel=2)
    if _loaded is None and choice == "native":
        raise NativeKernelError(f"the native hardware-mode kernel is unavailable: {_failure}")
    return _loaded


def method_supported(module: ModuleType, method: str) -> bool:
    """Whether the loaded kernel can run `method` on this machine (CPU, OS and build).

    Arguments:
        module: the loaded op module (`load`).
        method: ``dense`` (AMX or AVX2) or ``lut`` (AVX2); ``sparse`` and ``auto`` always run.

    Returns:
        True when a one-row probe with that method runs.
    """
    if method not in KERNEL_METHODS:
        raise ValueError(f"method must be one of {', '.join(KERNEL_METHODS)}; got {method!r}")
    try:
        module.tfxbar_crossbar(
            codes=tf.zeros([1, 4]), cells=tf.zeros([4, 1]), rows=tf.range(4), group_sizes=tf.constant([4]),
            shift=tf.zeros([1, 1], tf.int32), coef=tf.ones([1, 1, 1], tf.int64), ref_shift=tf.constant([-1]),
            offset_num=tf.zeros([1], tf.float64), scale=tf.zeros([0], tf.float64), step=tf.zeros([0]),
            Tout=tf.float64, offset_shift=0, conv=False, dac_bits=1, cycles=1, top=1, cols=1, method=method)
    except tf.errors.InvalidArgumentError:
        return False
    return True


def dense_supported(module: ModuleType) -> bool:
    """Whether the loaded kernel can take the dense path here: ``method_supported(module, "dense")``."""
    return method_supported(module, "dense")
