"""Schema of the program file, the arrays: which arrays a valid header implies, each with a
check of its dtype, shape and values (run after `tfxbar.export.schema.check_header`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tfxbar.export.crossbar import static_bounds, weight_matrix
from tfxbar.export.errors import FormatError

__all__ = ["Check", "expected_arrays"]

Check = Callable[[str, np.ndarray], None]
# Magnitude limit of thresholds: the interpreter computes T − 1 and −T (direction −1) in int64,
# which INT64_MIN would wrap; accumulators are < 2^62 anyway (§4.1), so no threshold needs more.
_LIMIT = 2 ** 62


def _fail(field: str, problem: str) -> None:
    raise FormatError(field, problem)


def _array(dtype: str, shape: tuple[int, ...], lo: int | None = None, hi: int | None = None) -> Check:
    def check(name: str, value: np.ndarray) -> None:
        if not isinstance(value, np.ndarray) or value.dtype != np.dtype(dtype):
            _fail(name, f"dtype must be {dtype}, got {getattr(value, 'dtype', type(value).__name__)}")
        if value.shape != tuple(shape):
            _fail(name, f"shape must be {tuple(shape)}, got {value.shape}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            _fail(name, "values must be finite")
        if value.size and lo is not None and int(value.min()) < lo:
            _fail(name, f"value {int(value.min())} out of range [{lo}, {hi}]")
        if value.size and hi is not None and int(value.max()) > hi:
            _fail(name, f"value {int(value.max())} out of range [{lo}, {hi}]")
    check.layout = (np.dtype(dtype), tuple(shape))  # type: ignore[attr-defined]  # the loader's pre-read check
    return check


def _length(arrays: dict, name: str) -> int:
    value = arrays.get(name)
    return value.shape[0] if isinstance(value, np.ndarray) and value.ndim == 1 else -1


def _crossbar_arrays(p: str, op: dict, arrays: dict, options: dict) -> dict[str, Check]:
    attrs = op["attrs"]
    rows, cols = attrs["rows"], attrs["cols"]
    planes, slices = len(attrs["polarities"]), attrs["slices"]
    ref = 1 if attrs["reference"] else 0
    checks: dict[str, Check] = {
        f"{p}offset_num": _array("int64", (cols,)),
        f"{p}acc_lo": _array("int64", (cols,)),
        f"{p}acc_hi": _array("int64", (cols,)),
    }
    shift_max = 0 if attrs["adc_range"] == "lossless" else 62   # lossless ADCs have step 1 (§4.1)
    for t, tile in enumerate(attrs["tiles"]):
        r, c = _length(arrays, f"{p}tile{t}.rows"), _length(arrays, f"{p}tile{t}.cols")
        checks[f"{p}tile{t}.rows"] = _array("int32", (max(r, 0),), 0, rows - 1)
        checks[f"{p}tile{t}.cols"] = _array("int32", (max(c, 0),), 0, cols - 1)
        if not 1 <= r <= options["tile_rows"]:
            checks[f"{p}tile{t}.rows"] = _bad(f"length must be in 1..tile_rows={options['tile_rows']}")
        if not 1 <= c <= options["tile_cols"] - ref:
            checks[f"{p}tile{t}.cols"] = _bad(f"length must be in 1..{options['tile_cols'] - ref} "
                                              "(tile_cols minus the reference column)")
        checks[f"{p}tile{t}.cells"] = _array("uint8", (planes, slices, r, c), 0, 2 ** attrs["slice_bits"] - 1)
        checks[f"{p}tile{t}.adc_shift"] = _array("uint8", (planes, slices, c), 0, shift_max)
        if tile["reference"]:
            checks[f"{p}tile{t}.ref_shift"] = _array("uint8", (1,), 0, shift_max)
    # Last, once every row/column map has been checked on its own.
    checks[f"{p}acc_hi"] = _then(checks.pop(f"{p}acc_hi"), _coverage(p, attrs, arrays))
    return checks


def _bad(problem: str) -> Check:
    def check(name: str, value: np.ndarray) -> None:
        _fail(name, problem)
    return check


def _then(first: Check, second: Check) -> Check:
    def check(name: str, value: np.ndarray) -> None:
        first(name, value)
        second(name, value)
    check.layout = getattr(first, "layout", None)  # type: ignore[attr-defined]
    return check


def _coverage(p: str, attrs: dict, arrays: dict) -> Check:
    """Every (row, column) of the weight matrix lies in exactly one tile; acc_lo ≤ acc_hi."""
    def check(name: str, value: np.ndarray) -> None:
        if np.any(arrays[f"{p}acc_lo"] > value):
            _fail(name, "acc_hi must be >= acc_lo")
        count = np.zeros((attrs["rows"], attrs["cols"]), np.int32)
        for t in range(len(attrs["tiles"])):
            for axis in ("rows", "cols"):   # a repeated index would be counted once below
                index = arrays[f"{p}tile{t}.{axis}"]
                if len(np.unique(index)) != len(index):
                    _fail(f"{p}tile{t}.{axis}", "must not repeat an index")
            count[np.ix_(arrays[f"{p}tile{t}.rows"], arrays[f"{p}tile{t}.cols"])] += 1
        block = _block_mask(attrs)
        if np.any(count[block] != 1) or np.any(count > 1):
            which = " of the block diagonal (DepthwiseConv2D)" if "groups" in attrs else ""
            _fail(f"{p}tiles", f"the tiles' row/column maps must cover every weight{which} exactly once")
        if not attrs["reference"] and np.any(arrays[f"{p}offset_num"] != 0):
            _fail(f"{p}offset_num", "must be 0 without a reference column (the differential mapping "
                                    "has no Σx to subtract it from)")
        if attrs["reference"]:
            seen = np.zeros(attrs["rows"], np.int32)
            for t, tile in enumerate(attrs["tiles"]):
                if tile["reference"]:
                    seen[arrays[f"{p}tile{t}.rows"]] += 1
            if np.any(seen != 1):
                _fail(f"{p}tiles", "the reference columns must cover every row exactly once")
        # Every weight and the accumulator range must stay inside int64 (2^62, as the converter's
        # check_bounds), or the integer arithmetic below and in any reader would wrap.
        offset = arrays[f"{p}offset_num"]
        if np.any(np.abs(offset.astype(np.float64)) >= 2.0 ** 62):
            _fail(f"{p}offset_num", "magnitudes must be below 2^62")
        weights = weight_matrix(attrs, arrays, p)
        if np.any(weights[~block] != 0):
            _fail(f"{p}tiles", "a DepthwiseConv2D's weights outside its block diagonal must be 0")
        column_sum = float(np.abs(weights.astype(np.float64)).sum(axis=0).max(initial=0))
        if column_sum * attrs["input_max"] >= 2.0 ** 62:
            _fail(f"{p}tiles", "the accumulator range input_max·Σ|W| reaches 2^62; int64 would wrap")
        # The interpreter relies on these bounds (it skips clipping inside them), so they must
        # contain the true range of X = Σ W·x over all inputs x in [0, input_max].
        lo, hi = static_bounds(weights, attrs["input_max"])
        bad = np.flatnonzero((arrays[f"{p}acc_lo"] > lo) | (value < hi))
        if bad.size:
            n = int(bad[0])
            _fail(name, f"acc_lo/acc_hi of column {n} ([{int(arrays[f'{p}acc_lo'][n])}, {int(value[n])}]) "
                        f"must contain the static bounds [{int(lo[n])}, {int(hi[n])}] of the weights "
                        "the cells and offset_num encode; the file is inconsistent: re-export it")
    return check


def _block_mask(attrs: dict) -> np.ndarray:
    """Which (row, column) weights a crossbar has: all, or a DepthwiseConv2D's block diagonal
    (row (i, j, c) feeds the columns c·m … c·m + m − 1 of channel c)."""
    rows, cols = attrs["rows"], attrs["cols"]
    if "groups" not in attrs:
        return np.ones((rows, cols), bool)
    groups = attrs["groups"]
    return (np.arange(rows)[:, None] % groups) == (np.arange(cols)[None, :] // (cols // groups))


def _threshold_arrays(p: str, op: dict) -> dict[str, Check]:
    channels, top = op["in_shape"][-1], 2 ** op["attrs"]["bits"] - 1
    return {f"{p}direction": _array("int8", (channels,), -1, 1),
            f"{p}thresholds": _array("int64", (channels, top), -_LIMIT, _LIMIT)}


def expected_arrays(header: dict, arrays: dict) -> dict[str, Check]:
    """The arrays a valid header implies, each with its check (run after `check_header`)."""
    checks: dict[str, Check] = {}
    for i, op in enumerate(header["ops"]):
        p, kind = f"op{i}.", op["kind"]
        if kind == "crossbar":
            checks.update(_crossbar_arrays(p, op, arrays, header["options"]))
        elif kind == "threshold":
            checks.update(_threshold_arrays(p, op))
            checks[f"{p}thresholds"] = _then(checks[f"{p}thresholds"], _monotone(p, arrays))
        elif kind == "max_pool":
            checks[f"{p}mode"] = _then(_array("int8", (op["in_shape"][-1],), -1, 1), _nonzero)
        elif kind == "add":
            checks[f"{p}multipliers"] = _then(_array("int64", (len(op["inputs"]), op["in_shape"][-1]),
                                                     -(2 ** 52), 2 ** 52),
                                              _add_range(op, header, arrays, p))
        elif kind == "dequantize":
            for j, stage in enumerate(op["attrs"]["chain"]):
                if stage["kind"] == "affine":
                    checks[f"{p}stage{j}.a"] = _array("float64", (op["in_shape"][-1],))
                    checks[f"{p}stage{j}.b"] = _array("float64", (op["in_shape"][-1],))
    return checks


def _reach(header: dict, arrays: dict, until: str) -> float:
    """An upper bound of |value| of tensor `until` over all program inputs (for int64 safety),
    propagated forward through the ops before it."""
    spec = header["input"]
    reach = {spec["name"]: 2.0 ** spec["bits"] - 1}
    for i, op in enumerate(header["ops"]):
        p, kind, first = f"op{i}.", op["kind"], reach.get(op["inputs"][0], 0.0)
        if op["out_max"] is not None:
            value = float(op["out_max"])
        elif kind == "crossbar":
            value = float(max(np.abs(arrays[f"{p}acc_lo"].astype(np.float64)).max(initial=0),
                              np.abs(arrays[f"{p}acc_hi"].astype(np.float64)).max(initial=0)))
        elif kind == "add":
            m = np.abs(arrays[f"{p}multipliers"].astype(np.float64))
            value = float(sum(m[j].max(initial=0) * reach[t] for j, t in enumerate(op["inputs"])))
        elif kind == "sum_pool":
            shape = op["in_shape"]
            window = shape[0] * shape[1] if op["attrs"]["global"] else int(np.prod(op["attrs"]["pool"]))
            value = first * window
        else:
            value = first
        reach[op["name"]] = value
        if op["name"] == until:
            return value
    raise KeyError(until)


def _add_range(op: dict, header: dict, arrays: dict, p: str) -> Check:
    def check(name: str, value: np.ndarray) -> None:
        if op["out_max"] is not None and np.any(value != 1):
            _fail(name, "an add of codes (out_max set) has multipliers 1; give out_max null for an "
                        "accumulator")
        if _reach(header, arrays, op["name"]) >= 2.0 ** 62:
            _fail(name, "Σ|m·X| over the inputs' ranges reaches 2^62; int64 would wrap")
    return check


def _nonzero(name: str, value: np.ndarray) -> None:
    if np.any(value == 0):
        _fail(name, "values must be -1 or +1")


def _monotone(p: str, arrays: dict) -> Check:
    def check(name: str, value: np.ndarray) -> None:
        direction = arrays[f"{p}direction"]
        _array("int8", (value.shape[0],), -1, 1)(f"{p}direction", direction)
        _nonzero(f"{p}direction", direction)
        steps = np.diff(value, axis=1) * direction[:, None].astype(np.int64)
        if np.any(steps < 0):
            _fail(name, "thresholds must be non-decreasing in the level "
                  "(non-increasing where direction = -1)")
    return check
