"""`Interpreter`: runs a crossbar program bit-exactly with numpy alone (no TensorFlow).

Modes:

- ``"ideal"``: lossless converters, unbounded (int64) accumulation — the mathematically exact
  integer program. Each crossbar is one GEMM with the integer weights rebuilt from the tiles.
- ``"hardware"``: tile by tile, bit-serial DAC cycles, an ADC per tile column with the file's
  resolution and range (step 2^adc_shift, round half up, saturating at 2^adc_bits − 1), and a
  signed digital accumulator of ``accumulator_bits`` that saturates or wraps; `stats` counts
  ADC clips and accumulator overflows per layer. With lossless ADCs and no overflow it equals
  ideal mode exactly.

A device instance (e.g. from tfxbar.variation) can be applied in hardware mode through
`conductances`: a callable ``(layer_name, tile_index, cells) -> float array`` of the same
shape as the integer cells (polarity × slice × rows × cols), in units of one code step.

`crossbar_hook`, when set to a callable ``(op_index, patches) -> None``, sees the integer
input patches (one row per patch, K columns) of every crossbar op in either mode — what
`tfxbar.cost` counts sparsity-aware ADC conversions from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tfxbar.export.format import Program
from tfxbar.export.kernels import apply_thresholds, im2col, max_pool, sum_pool

__all__ = ["Interpreter"]

_EXACT_FLOAT64 = 2 ** 53
_EXACT_FLOAT32 = 2 ** 24


def _gemm(x: np.ndarray, w: np.ndarray, exact_float: bool) -> np.ndarray:
    """Exact integer product; float64 BLAS when every partial sum fits in 53 bits."""
    if exact_float:
        return np.rint(x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    return x.astype(np.int64) @ w.astype(np.int64)


def _float_gemm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact integer product with `w` already float32/float64 and |every partial sum| below
    2^24 / 2^53 respectively (integers are exact in float there, whatever the summation order)."""
    return np.rint(x.astype(w.dtype) @ w).astype(np.int64)


class _Crossbar:
    """Prepared arrays of one crossbar op."""

    def __init__(self, op: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        attrs = op["attrs"]
        self.name, self.attrs = op["name"], attrs
        self.tiles = [(arrays[f"tile{t}.cells"], arrays[f"tile{t}.rows"], arrays[f"tile{t}.cols"],
                       arrays[f"tile{t}.adc_shift"], arrays.get(f"tile{t}.ref_shift"))
                      for t in range(len(attrs["tiles"]))]
        self.offset = arrays["offset_num"]
        self.shift = attrs["offset_shift"]
        weights = np.zeros((attrs["rows"], attrs["cols"]), np.int64)
        for cells, rows, cols, _, _ in self.tiles:
            block = sum(sign * sum(cells[p, s].astype(np.int64) << (attrs["slice_bits"] * s)
                                   for s in range(attrs["slices"]))
                        for p, sign in enumerate(attrs["polarities"]))
            weights[np.ix_(rows, cols)] += block
        self.weights = (weights << self.shift) - self.offset[None, :]
        bound = int(np.abs(self.weights).sum(axis=0).max(initial=0)) * attrs["input_max"]
        self.exact_float = bound < _EXACT_FLOAT64
        # Ideal-mode GEMM operand: float32 when every partial sum is below 2^24, else float64.
        self.float_weights = (self.weights.astype(np.float32) if bound < _EXACT_FLOAT32
                              else self.weights.astype(np.float64) if self.exact_float else None)

    def patches(self, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        if self.attrs["layer_type"] == "Dense":
            return x, x.shape[:-1]
        p = im2col(x, self.attrs["kernel"], self.attrs["strides"], self.attrs["pads"])
        return p.reshape(-1, p.shape[-1]), p.shape[:-1]


class Interpreter:
    """Run a `Program` on integer input codes.

    Arguments:
        program: a `Program` (from `CrossbarConverter.convert` or `load_program`).
        mode: ``"ideal"`` or ``"hardware"``.
        accumulator_bits: hardware accumulator width (default: the program's option).
        accumulator_mode: ``"saturate"`` or ``"wrap"`` (default: the program's option).
        conductances: optional device instance for hardware mode (see the module docstring).

    Example:
        >>> interpreter = Interpreter(load_program("mnist.xbar"))
        >>> logits = interpreter.run(x_test_uint8)
    """

    def __init__(self, program: Program, mode: str = "ideal", *, accumulator_bits: int | None = None,
                 accumulator_mode: str | None = None,
                 conductances: Callable[[str, int, np.ndarray], np.ndarray] | None = None) -> None:
        if mode not in ("ideal", "hardware"):
            raise ValueError(f"mode must be 'ideal' or 'hardware', got {mode!r}")
        self.program, self.mode = program, mode
        options = program.header["options"]
        self.accumulator_bits = int(accumulator_bits or options["accumulator_bits"])
        self.accumulator_mode = accumulator_mode or options["accumulator_mode"]
        if self.accumulator_mode not in ("saturate", "wrap"):
            raise ValueError(f"accumulator_mode must be 'saturate' or 'wrap', got {self.accumulator_mode!r}")
        self.conductances = conductances
        self.ops = program.ops
        self.arrays = [program.op_arrays(i) for i in range(len(self.ops))]
        self.crossbars = {i: _Crossbar(op, self.arrays[i]) for i, op in enumerate(self.ops)
                          if op["kind"] == "crossbar"}
        self.stats: dict[str, dict[str, int]] = {}
        self.crossbar_hook: Callable[[int, np.ndarray], None] | None = None
        self._devices: dict[tuple[int, int], np.ndarray] = {}

    # -- public ----------------------------------------------------------------------------
    def run(self, x: np.ndarray, batch_size: int = 256, taps: bool = False) -> Any:
        """Outputs (float64) for integer input codes `x` of shape ``(N, *input.shape)``.

        Arguments:
            x: integer codes (e.g. uint8 pixels) in [0, 2^input.bits − 1].
            batch_size: examples per internal batch (bounds memory of im2col).
            taps: also return ``{keras_layer: int64 codes}`` for every op with a tap.

        Raises:
            ValueError: wrong shape, dtype or range of `x`.
        """
        spec = self.program.header["input"]
        x = np.asarray(x)
        if x.ndim != len(spec["shape"]) + 1 or list(x.shape[1:]) != spec["shape"]:
            raise ValueError(f"input must have shape (N, {', '.join(map(str, spec['shape']))}), "
                             f"got {x.shape}")
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"input must be integer codes (e.g. uint8 pixels), got {x.dtype}; "
                             "use program.quantize_input(x) for real-valued inputs")
        if x.size and (x.min() < 0 or x.max() > 2 ** spec["bits"] - 1):
            raise ValueError(f"input codes must be in [0, {2 ** spec['bits'] - 1}]")
        self.stats = {}
        outputs, tapped = [], {}
        for start in range(0, len(x), batch_size):
            out, found = self._run_batch(x[start:start + batch_size].astype(np.int64))
            outputs.append(out)
            for key, value in found.items():
                tapped.setdefault(key, []).append(value)
        result = np.concatenate(outputs) if outputs else np.zeros((0,), np.float64)
        if taps:
            return result, {k: np.concatenate(v) for k, v in tapped.items()}
        return result

    __call__ = run

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Top-1 class indices."""
        return np.argmax(self.run(x, batch_size), axis=-1)

    def partial_sum_peaks(self, x: np.ndarray, batch_size: int = 256) -> dict[int, list[tuple]]:
        """Largest partial sum of every tile column over one DAC cycle, on inputs `x` (ideal run).

        Returns:
            ``{op_index: [(peaks (polarity, slice, cols), reference_peak or None) per tile]}``,
            what ``adc_range="calibrated"`` sizes the ADC steps from.
        """
        self._peaks: dict[int, list[list]] = {}
        try:
            for start in range(0, len(x), batch_size):
                self._run_batch(np.asarray(x[start:start + batch_size]).astype(np.int64))
            return {i: [tuple(t) for t in tiles] for i, tiles in self._peaks.items()}
        finally:
            del self._peaks

    def _observe(self, index: int, xbar: _Crossbar, patches: np.ndarray) -> None:
        dac = xbar.attrs["dac_bits"]
        tiles = self._peaks.setdefault(index, [[np.zeros(t[3].shape, np.int64), None] for t in xbar.tiles])
        for t, (cells, rows, _, _, ref_shift) in enumerate(xbar.tiles):
            for j in range(xbar.attrs["dac_cycles"]):
                plane = (patches[:, rows] >> (dac * j)) & ((1 << dac) - 1)
                for p in range(cells.shape[0]):
                    for s in range(cells.shape[1]):
                        peak = _gemm(plane, cells[p, s], True).max(axis=0, initial=0)
                        tiles[t][0][p, s] = np.maximum(tiles[t][0][p, s], peak)
                if ref_shift is not None:
                    tiles[t][1] = max(tiles[t][1] or 0, int(plane.sum(axis=1).max(initial=0)))

    # -- ops -------------------------------------------------------------------------------
    def _run_batch(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        found = {}
        for i, op in enumerate(self.ops):
            kind, attrs, arrays = op["kind"], op["attrs"], self.arrays[i]
            if kind == "crossbar" and hasattr(self, "_peaks"):
                self._observe(i, self.crossbars[i], self.crossbars[i].patches(x)[0])
            if kind == "crossbar":
                x = self._crossbar(i, x)
            elif kind == "threshold":
                x = apply_thresholds(x, arrays["thresholds"], arrays["direction"])
            elif kind == "max_pool":
                x = max_pool(x, attrs["pool"], attrs["strides"], attrs["pads"], arrays["mode"])
            elif kind == "sum_pool":
                x = sum_pool(x, None if attrs["global"] else attrs["pool"], attrs.get("strides"))
            elif kind == "flatten":
                x = x.reshape(len(x), -1)
            elif kind == "dequantize":
                x = self._dequantize(x, attrs["chain"], arrays)
            if op["tap"] is not None:
                found[op["tap"]] = x
        return x, found

    def _crossbar(self, index: int, x: np.ndarray) -> np.ndarray:
        xbar = self.crossbars[index]
        patches, lead = xbar.patches(x)
        if self.crossbar_hook is not None:
            self.crossbar_hook(index, patches)
        if self.mode == "ideal":
            acc = (_float_gemm(patches, xbar.float_weights) if xbar.float_weights is not None
                   else _gemm(patches, xbar.weights, False))
        else:
            acc = self._hardware(index, xbar, patches)
        return acc.reshape(*lead, xbar.attrs["cols"])

    def _limit(self, value: np.ndarray, counters: dict[str, int]) -> np.ndarray:
        lo, hi = -(1 << (self.accumulator_bits - 1)), (1 << (self.accumulator_bits - 1)) - 1
        over = (value > hi) | (value < lo)
        count = int(over.sum())
        if not count:
            return value
        counters["acc_overflows"] += count
        if self.accumulator_mode == "saturate":
            return np.clip(value, lo, hi)
        return ((value - lo) & ((1 << self.accumulator_bits) - 1)) + lo

    @staticmethod
    def _adc(partial: np.ndarray, shift: np.ndarray, bits: int, counters: dict[str, int]) -> np.ndarray:
        top = (1 << bits) - 1
        shift = shift.astype(np.int64)
        if partial.dtype.kind == "f":
            code = np.floor(partial / (1 << shift) + 0.5).astype(np.int64)
        else:
            code = (partial + ((1 << shift) >> 1)) >> shift
        clipped = code > top
        counters["adc_clips"] += int(clipped.sum())
        counters["adc_conversions"] += code.size
        return np.clip(code, 0, top) << shift

    def _hardware(self, index: int, xbar: _Crossbar, patches: np.ndarray) -> np.ndarray:
        attrs = xbar.attrs
        counters = self.stats.setdefault(
            xbar.name, {"adc_clips": 0, "adc_conversions": 0, "acc_overflows": 0})
        bits = attrs["adc_bits"]
        dac, cycles = attrs["dac_bits"], attrs["dac_cycles"]
        width = attrs["slice_bits"]
        acc = np.zeros((len(patches), attrs["cols"]), np.int64)
        total = np.zeros((len(patches), 1), np.int64)
        for t, (cells, rows, cols, adc_shift, ref_shift) in enumerate(xbar.tiles):
            cond = self._device(index, t, xbar.name, cells)
            inputs = patches[:, rows]
            for j in range(cycles):
                plane = (inputs >> (dac * j)) & ((1 << dac) - 1)
                for p, sign in enumerate(attrs["polarities"]):
                    for s in range(attrs["slices"]):
                        if cond is None:
                            partial = _gemm(plane, cells[p, s], True)
                        else:
                            partial = plane.astype(np.float64) @ cond[p, s]
                        value = self._adc(partial, adc_shift[p, s], bits, counters)
                        acc[:, cols] = self._limit(acc[:, cols] + sign * (value << (width * s + dac * j)),
                                                   counters)
                if ref_shift is not None:
                    value = self._adc(plane.sum(axis=1, keepdims=True), ref_shift, bits, counters)
                    total = self._limit(total + (value << (dac * j)), counters)
        return self._limit((acc << xbar.shift) - total * xbar.offset[None, :], counters)

    def _device(self, index: int, tile: int, name: str, cells: np.ndarray) -> np.ndarray | None:
        if self.conductances is None:
            return None
        key = (index, tile)
        if key not in self._devices:
            g = np.asarray(self.conductances(name, tile, cells), np.float64)
            if g.shape != cells.shape:
                raise ValueError(f"conductances for {name} tile {tile} must have shape {cells.shape}")
            self._devices[key] = g
        return self._devices[key]

    @staticmethod
    def _dequantize(x: np.ndarray, chain: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> np.ndarray:
        v = x.astype(np.float64)
        for j, stage in enumerate(chain):
            if stage["kind"] == "affine":
                v = v * arrays[f"stage{j}.a"] + arrays[f"stage{j}.b"]
            elif stage["kind"] == "relu":
                y = np.where(v >= stage["threshold"], v, stage["negative_slope"] * (v - stage["threshold"]))
                v = y if stage["max_value"] is None else np.minimum(y, stage["max_value"])
            else:
                e = np.exp(v - v.max(axis=-1, keepdims=True))
                v = e / e.sum(axis=-1, keepdims=True)
        return v
