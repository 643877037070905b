"""Fuzz the program loader: ≥ 20,000 damaged files, each with a time and memory cap.

    TFXBAR_DATA_DIR=/work/shared/data python benchmarks/fuzz_loader.py --files 20000

Base programs: two small CNNs (conv → BN → ReLU → max-pool → dense, random weights) quantized
with ``w2a2-biased`` (offset mapping, reference columns) and ``w4a3`` (bit-sliced 2-bit cells,
1-bit DAC, clipping 4-bit ADCs), converted on 8 × 8 tiles, plus two hand-built numpy programs
(`tests/check_toys.py`). TensorFlow is used for the bases only, in this process.

Each damaged file is either a byte/ZIP/npy-level mutation of a saved base
(`tests/fuzz_files.mutate_bytes`), a content mutation (header values, array values, dtypes,
shapes, missing arrays: `mutate_content`), or one of the crafted corpus files (`corpus`: npy
headers declaring 10^12 elements, broken header literals, ZIP method 99, encryption flags, zip
bombs, 20,001 members, duplicate members, nested JSON, ...). Worker processes (spawned, without
TensorFlow; address space capped with RLIMIT_AS as a backstop) load each file with
`tfxbar.load_program`; a file that loads is also run by the interpreter in ideal and hardware
mode on 4 random inputs — the validator must reject whatever the interpreter cannot run.
Per file: wall time of the load (and of the run) and the peak of traced Python/numpy memory
(tracemalloc). Outcomes:

- ``format_error``: `FormatError` (expected for a damaged file);
- ``loaded_ran``: valid after all (e.g. a changed value that is still in range), and it ran;
- ``escaped:<type>``: another exception from `load_program` — a bug;
- ``run_failed:<type>``: loaded but the interpreter failed or returned non-finite output — a bug;
- ``over_1s`` / ``over_256MB``: the load exceeded the budget — a bug.

Prints the counts and the slowest and largest files, and exits 1 if any bug outcome occurred.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]   # the fuzz helpers live with the tests

TIME_BUDGET, MEMORY_BUDGET = 1.0, 256 * 2 ** 20
_HARD_SECONDS = 10   # SIGALRM backstop per file


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def build_bases(folder: str) -> list[str]:
    """Save the base programs in `folder`; returns their paths."""
    import tf_keras as keras
    from check_toys import make_program
    from graph_toys import depthwise, residual

    import tfxbar

    paths = []
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 10, 10, 1)).astype(np.float32)
    for preset, options in (("w2a2-biased", {}),
                            ("w4a3", {"weight_mapping": "bit_sliced", "cell_bits": 2, "dac_bits": 1,
                                      "adc_range": "clip", "adc_bits": 4})):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.layers.Conv2D(4, 3, input_shape=(10, 10, 1)),
                                  keras.layers.BatchNormalization(), keras.layers.ReLU(),
                                  keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                                  keras.layers.Dense(10)])
        qmodel = tfxbar.quantize_model(model, preset, calibration_data=x)
        config = tfxbar.ConverterConfig(tile_rows=8, tile_cols=8, **options)
        program = tfxbar.CrossbarConverter(qmodel, config).convert()
        paths.append(os.path.join(folder, f"{preset}.xbar"))
        program.save(paths[-1])
    for name, build in (("residual", residual), ("depthwise", depthwise)):   # graph ops (add, pad …)
        keras.utils.set_random_seed(1)
        qmodel = tfxbar.quantize_model(build((10, 10, 1)), "w4a3", calibration_data=x)
        paths.append(os.path.join(folder, f"{name}.xbar"))
        config = tfxbar.ConverterConfig(tile_rows=8, tile_cols=8)
        tfxbar.CrossbarConverter(qmodel, config).convert().save(paths[-1])
    codes = rng.integers(-7, 8, (9, 5))
    make_program(codes, tile_rows=4, tile_cols=3).save(os.path.join(folder, "differential.xbar"))
    make_program(np.abs(codes), mapping="offset", offset_num=rng.integers(-3, 4, 5), offset_shift=1, pool=3,
                 tile_rows=4, tile_cols=3, dac_bits=1, adc_bits=3).save(os.path.join(folder, "offset.xbar"))
    return paths + [os.path.join(folder, name) for name in ("differential.xbar", "offset.xbar")]


_BASES: list[bytes] = []
_CORPORA: list[dict[str, str]] = []   # per base: corpus file name -> path
_PARSED: dict[int, dict[str, np.ndarray]] = {}


def _init_worker(paths: list[str], corpora: list[dict[str, str]]) -> None:
    from tfxbar.export.format import load_program
    from tfxbar.export.interpreter import Interpreter

    _BASES.extend(open(p, "rb").read() for p in paths)   # noqa: SIM115
    _CORPORA.extend(corpora)
    for path in paths:   # warm up: first-call imports and caches are not a file's cost
        program = load_program(path)
        spec = program.header["input"]
        Interpreter(program, "hardware", workers=1).run(np.zeros((1, *spec["shape"]), np.int64))
    # A backstop only: the measured peak (tracemalloc) decides "over 256 MB".
    vm = _vm_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (vm + 4 * MEMORY_BUDGET, resource.RLIM_INFINITY))
    signal.signal(signal.SIGALRM, _alarm)
    tracemalloc.start()


def _vm_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _case(bases: list[bytes], seed: int) -> tuple[str, bytes]:
    """The damaged file number `seed` (deterministic)."""
    import io
    import json

    from fuzz_files import mutate_bytes, mutate_content, pack

    rng = np.random.default_rng(seed)
    b = int(rng.integers(len(bases)))
    roll = rng.random()
    if roll < 0.02:
        names = sorted(_CORPORA[b])
        name = names[rng.integers(len(names))]
        with open(_CORPORA[b][name], "rb") as handle:
            return f"corpus {name}", handle.read()
    if roll < 0.55:
        label, blob = mutate_bytes(bases[b], rng)
        return f"bytes {label}", blob
    if b not in _PARSED:
        with np.load(io.BytesIO(bases[b]), allow_pickle=False) as data:
            _PARSED[b] = {k: data[k] for k in data.files}
    arrays = dict(_PARSED[b])   # mutate_content replaces arrays, never edits them in place
    header = json.loads(arrays.pop("header").tobytes())
    labels = [mutate_content(header, arrays, rng) for _ in range(int(rng.integers(1, 3)))]
    return "content " + "; ".join(labels), pack(header, arrays)


def _one(job: tuple[int, str]) -> dict[str, Any]:
    seed, folder = job
    from tfxbar.export.errors import FormatError
    from tfxbar.export.format import load_program
    from tfxbar.export.interpreter import Interpreter

    label, blob = _case(_BASES, seed)
    path = os.path.join(folder, f"fuzz-{os.getpid()}.xbar")
    with open(path, "wb") as handle:
        handle.write(blob)
    result: dict[str, Any] = {"seed": seed, "case": label, "run_seconds": 0.0}
    tracemalloc.reset_peak()
    signal.alarm(_HARD_SECONDS)
    start, cpu = time.perf_counter(), time.process_time()
    program = None
    try:
        program = load_program(path)
        outcome = "loaded"
    except FormatError:
        outcome = "format_error"
    except _Timeout:
        outcome = "over_1s"
    except MemoryError:
        outcome = "over_256MB"
    except Exception as exc:   # noqa: BLE001  (what the fuzzer looks for)
        outcome = f"escaped:{type(exc).__name__}"
        result["message"] = str(exc)[:200]
    finally:
        signal.alarm(0)
    result["seconds"] = time.perf_counter() - start
    result["cpu"] = time.process_time() - cpu
    result["peak"] = tracemalloc.get_traced_memory()[1]
    if program is not None:
        outcome = "loaded_ran"
        run_start = time.perf_counter()
        signal.alarm(_HARD_SECONDS)
        try:
            spec = program.header["input"]
            x = np.random.default_rng(seed).integers(0, 2 ** spec["bits"], (4, *spec["shape"]))
            for mode in ("ideal", "hardware"):
                out = Interpreter(program, mode, workers=1).run(x)
                if out.shape[0] != len(x) or not np.all(np.isfinite(out)):
                    outcome = "run_failed:non_finite_or_shape"
        except Exception as exc:   # noqa: BLE001
            outcome = f"run_failed:{type(exc).__name__}"
            result["message"] = str(exc)[:200]
        finally:
            signal.alarm(0)
        result["run_seconds"] = time.perf_counter() - run_start
    if outcome in ("format_error", "loaded_ran"):
        if result["cpu"] > TIME_BUDGET:   # CPU, not wall: the machine is shared
            outcome = "over_1s"
        elif result["peak"] > MEMORY_BUDGET:
            outcome = "over_256MB"
    result["outcome"] = outcome
    os.unlink(path)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="first file's seed (files are seed, seed+1, ...)")
    args = parser.parse_args()
    from fuzz_files import corpus
    folder = tempfile.mkdtemp(prefix="tfxbar-fuzz-")
    paths = build_bases(folder)
    corpora = []
    for b, blob in enumerate(open(p, "rb").read() for p in paths):   # noqa: SIM115
        corpora.append({})
        for name, data in corpus(blob).items():
            corpora[b][name] = os.path.join(folder, f"corpus-{b}-{name}.xbar")
            with open(corpora[b][name], "wb") as handle:
                handle.write(data)
    jobs = [(seed, folder) for seed in range(args.seed, args.seed + args.files)]
    counts: collections.Counter[str] = collections.Counter()
    bad: list[dict[str, Any]] = []
    slowest: dict[str, Any] = {"seconds": 0.0, "cpu": 0.0}
    largest: dict[str, Any] = {"peak": 0}
    start = time.time()
    context = multiprocessing.get_context("spawn")   # workers without this process's TensorFlow
    with context.Pool(args.workers, initializer=_init_worker, initargs=(paths, corpora)) as pool:
        for i, result in enumerate(pool.imap_unordered(_one, jobs, chunksize=16)):
            counts[result["outcome"]] += 1
            if result["outcome"] not in ("format_error", "loaded_ran"):
                bad.append(result)
            slowest = max(slowest, result, key=lambda r: r["cpu"])
            largest = max(largest, result, key=lambda r: r["peak"])
            if (i + 1) % 2000 == 0:
                print(f"  {i + 1} files, {time.time() - start:.0f} s", flush=True)
    elapsed = time.time() - start
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"\nfuzz_loader: {args.files} files from {len(paths)} base programs, seeds {args.seed}.."
          f"{args.seed + args.files - 1}, {args.workers} workers, {elapsed:.0f} s "
          f"(commit {commit}, {platform.python_version()}, numpy {np.__version__})")
    print(f"{'outcome':32s} files")
    for outcome in ("format_error", "loaded_ran"):
        print(f"{outcome:32s} {counts.pop(outcome, 0)}")
    for outcome in ("over_1s", "over_256MB"):
        print(f"{outcome:32s} {counts.pop(outcome, 0)}")
    for outcome, n in sorted(counts.items()):
        print(f"{outcome:32s} {n}")
    escaped = sum(n for o, n in counts.items() if o.startswith("escaped"))
    print(f"{'non-FormatError (escaped)':32s} {escaped}")
    print(f"slowest load: {slowest['cpu'] * 1000:.1f} ms CPU, {slowest['seconds'] * 1000:.1f} ms wall "
          f"({slowest.get('case')}, "
          f"seed {slowest.get('seed')}); largest peak: {largest['peak'] / 2 ** 20:.1f} MiB "
          f"({largest.get('case')}, seed {largest.get('seed')})")
    for r in bad[:20]:
        print(f"  BUG seed {r['seed']}: {r['outcome']} {r['case']}: {r.get('message', '')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
