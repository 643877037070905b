"""Two builds of the native crossbar kernel side by side in one process: per-crossbar product time.

Between separate benchmark runs on a shared 2-CPU machine the noise (other tenants, tf.data's
autotuner) is larger than a kernel change worth having (5–10 %). This compares two versions of
`tfxbar/hardware/crossbar_*` — git revisions, or ``worktree`` for the files on disk — in one
process: each is compiled with its op and C++ namespace renamed (so both load), the MNIST CNN's
hardware mode calls each crossbar's product with one then the other, alternating for `--reps`
rounds on the same inputs, and the best time of each is kept. The two must give identical
outputs (checked), or the comparison stops.

Usage (the model from `examples/mnist_w4a3.py --save`, as for hardware_throughput.py):

    TFXBAR_DATA_DIR=/work/shared/data PYTHONPATH=. python benchmarks/kernel_ab.py \\
        --model out/bench/mnist_w4a3.keras --base HEAD~1 --head worktree

Prints the CPU (lscpu flags), µs per image of every native crossbar for both, and head / base.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from interpreter_throughput import cpu_flags  # noqa: E402
from native_crossbars import native_crossbars  # noqa: E402

from tfxbar.hardware import native  # noqa: E402

_REPO = Path(__file__).resolve().parent.parent
_FILES = [native._SOURCE, *native._HEADERS]  # noqa: SLF001


def _sources(revision: str, into: Path) -> None:
    """The kernel's files at a git revision (``worktree``: on disk) into `into`."""
    for path in _FILES:
        if revision == "worktree":
            text = path.read_text()
        else:
            relative = path.relative_to(_REPO).as_posix()
            done = subprocess.run(["git", "-C", str(_REPO), "show", f"{revision}:{relative}"],
                                  capture_output=True, text=True)
            if done.returncode != 0 and path != native._SOURCE:  # noqa: SLF001
                continue   # a header this revision does not have (nor include)
            if done.returncode != 0:
                raise SystemExit(f"kernel_ab: no {relative} at revision {revision!r}: {done.stderr.strip()}")
            text = done.stdout
        (into / path.name).write_text(text)


def _build(revision: str, tag: str, workdir: Path, flags: str = "") -> types.SimpleNamespace:
    """Compile the kernel of `revision` as op TfxbarCrossbar<tag> in namespace tfxbar_<tag>, with
    `flags` after the build's own; its op function as ``module.tfxbar_crossbar`` (what
    `CrossbarSimulation` calls)."""
    src = workdir / tag
    src.mkdir()
    _sources(revision, src)
    kernel = src / native._SOURCE.name  # noqa: SLF001
    kernel.write_text(kernel.read_text().replace('"TfxbarCrossbar"', f'"TfxbarCrossbar{tag}"'))
    out = src / "kernel.so"
    try:
        native.compile_kernel(os.environ.get("CXX", "g++"), kernel, out,
                              (f"-Dtfxbar=tfxbar_{tag}", *flags.split()))
    except native.NativeKernelError as exc:
        raise SystemExit(f"kernel_ab: {revision!r} does not build: {exc}") from exc
    library = tf.load_op_library(str(out))
    snake = "tfxbar_crossbar_" + re.sub(r"(?<!^)(?=[A-Z])", "_", tag).lower()
    return types.SimpleNamespace(tfxbar_crossbar=getattr(library, snake))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained tfxbar-quantized mnist_cnn() (.keras)")
    parser.add_argument("--base", default="HEAD", help="git revision (or 'worktree')")
    parser.add_argument("--head", default="worktree", help="git revision (or 'worktree')")
    parser.add_argument("--base-flags", default="", help="compiler flags after the build's own for base "
                        "(e.g. --base-flags=-ftree-pre to undo one of them)")
    parser.add_argument("--head-flags", default="", help="the same for head")
    default = os.environ.get("TFXBAR_KERNEL_METHOD", "dense")
    parser.add_argument("--base-method", default=default, choices=native.KERNEL_METHODS,
                        help="the kernel method base runs (default $TFXBAR_KERNEL_METHOD, else dense)")
    parser.add_argument("--head-method", default=default, choices=native.KERNEL_METHODS,
                        help="the same for head")
    parser.add_argument("--images", type=int, default=250)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    methods = {"base": args.base_method, "head": args.head_method}

    with tempfile.TemporaryDirectory() as tmp:
        builds = {"base": _build(args.base, "Base", Path(tmp), args.base_flags),
                  "head": _build(args.head, "Head", Path(tmp), args.head_flags)}
    mode, crossbars, inputs = native_crossbars(args.model, args.images)
    products, outputs = {}, {}
    for side, module in builds.items():
        for name, crossbar in crossbars.items():
            crossbar.simulation.native = module
            crossbar.simulation._attrs["method"] = methods[side]  # noqa: SLF001
            crossbar._native = tf.function(crossbar._native_product, reduce_retracing=True)  # noqa: SLF001
            products[side, name] = tf.function(crossbar.product)
            outputs[side, name] = [np.asarray(t) for t in products[side, name](inputs[name], False)]
    for name in crossbars:
        for base, head in zip(outputs["base", name], outputs["head", name], strict=True):
            if not np.array_equal(base, head):
                raise SystemExit(f"kernel_ab: {name}: the two builds' outputs differ")
    best = dict.fromkeys(products, float("inf"))
    for _ in range(args.reps):
        for key, product in products.items():
            start = time.perf_counter()
            product(inputs[key[1]], False)[0].numpy()
            best[key] = min(best[key], time.perf_counter() - start)
    mode.remove()

    print(f"CPU: {cpu_flags()}; {os.cpu_count()} CPUs visible; TF {tf.__version__}; "
          f"base {args.base} {args.base_flags} method {args.base_method}, "
          f"head {args.head} {args.head_flags} method {args.head_method}; "
          f"{args.images} images, best of {args.reps} alternations; outputs identical")
    print("| crossbar | base µs/img | head µs/img | head / base |")
    print("|---|---|---|---|")
    total = {"base": 0.0, "head": 0.0}
    for name in [*crossbars, "total"]:
        if name == "total":
            b, h = total["base"], total["head"]
        else:
            b, h = (best[side, name] / args.images * 1e6 for side in ("base", "head"))
            total["base"] += b
            total["head"] += h
        print(f"| {name} | {b:.0f} | {h:.0f} | {h / b:.3f} |")


if __name__ == "__main__":
    main()
