"""`Interpreter`: runs a crossbar program bit-exactly with numpy alone (no TensorFlow).

Modes:

- ``"ideal"``: lossless converters, unbounded (int64) accumulation — the mathematically exact
  integer program. Each crossbar is one GEMM with the integer weights rebuilt from the tiles.
- ``"hardware"``: tile by tile, bit-serial DAC cycles, an ADC per tile column with the file's
  resolution and range (step 2^adc_shift, round half up, saturating at 2^adc_bits − 1), and a
  signed digital accumulator of ``accumulator_bits`` that saturates or wraps; `stats` counts
  ADC clips and accumulator overflows per layer. With lossless ADCs and no overflow it equals
  ideal mode exactly.

Speed without giving up exactness (docs/benchmarks.md): integers travel as float32/float64
wherever every partial sum is provably exact there, so each crossbar (ideal) or tile (hardware)
is one BLAS GEMM (`tfxbar.export.crossbar`), with up to four images per float64 lane word in the
ideal convolutions and the following threshold looked up straight from the lane fields; other
thresholds are one table lookup, after a following max-pool; provably overflow-free
accumulations are summed at once; batches run on worker threads with single-threaded BLAS
(`tfxbar.export.blas`).

A device instance (e.g. from tfxbar.variation) can be applied in hardware mode through
`conductances`: a callable ``(layer_name, tile_index, cells) -> float array`` of the same
shape as the integer cells (polarity × slice × rows × cols), in units of one code step.

`crossbar_hook`, when set to a callable ``(op_index, patches) -> None``, sees the integer
input patches (one row per patch, K columns) of every crossbar op in either mode — what
`tfxbar.cost` counts sparsity-aware ADC conversions from.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tfxbar.export.adc import adc, float_adc
from tfxbar.export.blas import default_workers, single_threaded_blas
from tfxbar.export.crossbar import Crossbar, Tile, release_scratch
from tfxbar.export.format import Program
from tfxbar.export.kernels import FieldCodes, ThresholdTable, max_pool, run_plain_op

__all__ = ["Interpreter"]

_HARDWARE_BLOCK = 1 << 22   # bit-plane patch values per modelled-hardware GEMM call


class Interpreter:
    """Run a `Program` on integer input codes.

    Arguments:
        program: a `Program` (from `CrossbarConverter.convert` or `load_program`).
        mode: ``"ideal"`` or ``"hardware"``.
        accumulator_bits: hardware accumulator width (default: the program's option).
        accumulator_mode: ``"saturate"`` or ``"wrap"`` (default: the program's option).
        conductances: optional device instance for hardware mode (see the module docstring).
        workers: batches run concurrently, each on one BLAS thread (default: the usable CPUs,
            at most 4); 1 runs them in order with numpy's own BLAS threading. Results and
            counters do not depend on it.
        lanes: most images packed into one float64 per GEMM in ideal-mode convolutions (see
            `tfxbar.export.crossbar`; fewer when a layer's outputs need more bits); 1 disables
            the packing, and with it the thresholds fused into the unpacking. Results do not
            depend on it.

    Example:
        >>> interpreter = Interpreter(load_program("mnist.xbar"))
        >>> logits = interpreter.run(x_test_uint8)
    """

    def __init__(self, program: Program, mode: str = "ideal", *, accumulator_bits: int | None = None,
                 accumulator_mode: str | None = None,
                 conductances: Callable[[str, int, np.ndarray], np.ndarray] | None = None,
                 workers: int | None = None, lanes: int = 4) -> None:
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
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        self.crossbars = {i: Crossbar(op, self.arrays[i], lanes) for i, op in enumerate(self.ops)
                          if op["kind"] == "crossbar"}
        # The dataflow: which op produces each tensor, who reads it, and when it can be freed.
        self.producer = {op["name"]: i for i, op in enumerate(self.ops)}
        readers: dict[str, list[int]] = {}
        for i, op in enumerate(self.ops):
            for name in op["inputs"]:
                readers.setdefault(name, []).append(i)
        self.last_use = {name: max(found) for name, found in readers.items()}
        sole = {name: found[0] for name, found in readers.items() if len(found) == 1}
        self.thresholds = {i: ThresholdTable(self.arrays[i]["thresholds"], self.arrays[i]["direction"],
                                             self._bounds(op["inputs"][0]))
                           for i, op in enumerate(self.ops) if op["kind"] == "threshold"}
        # Fusions need the first op's output to be read by the second alone, and untapped.
        # A threshold reading a packed convolution alone is looked up from its lane fields.
        self.fused = {j: sole[op["name"]] for j, op in enumerate(self.ops)
                      if j in self.crossbars and self.crossbars[j].lanes > 1 and op["tap"] is None
                      and sole.get(op["name"]) in self.thresholds}
        self.field_codes = {i: self.thresholds[i].field_codes(self.crossbars[j].lo, self.crossbars[j].hi)
                            for j, i in self.fused.items()}
        # A threshold read by a max-pool alone runs after it (see _run_batch).
        self.pool_after = {i: sole[op["name"]] for i, op in enumerate(self.ops)
                           if i in self.thresholds and op["tap"] is None
                           and self.ops[sole.get(op["name"], i)]["kind"] == "max_pool"}
        # Per crossbar: can no accumulator step overflow (then the order of additions is free)?
        self.no_overflow = {i: self._cannot_overflow(xbar) for i, xbar in self.crossbars.items()}
        self.stats: dict[str, dict[str, int]] = {}
        self.crossbar_hook: Callable[[int, np.ndarray], None] | None = None
        self._devices: dict[tuple[int, int], np.ndarray] = {}
        self.workers = int(workers) if workers is not None else default_workers()
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._local = threading.local()   # per-thread counters of the batch being run

    # -- public ----------------------------------------------------------------------------
    def run(self, x: np.ndarray, batch_size: int = 96, taps: bool = False) -> Any:
        """Outputs (float64) for integer input codes `x` of shape ``(N, *input.shape)``.

        Arguments:
            x: integer codes (e.g. uint8 pixels) in [0, 2^input.bits − 1].
            batch_size: examples per internal batch (bounds memory; 96–144 was fastest,
                docs/benchmarks.md; a multiple of 12 fills every lane of a packed convolution
                with 3 or 4 lanes).
            taps: also return ``{keras_layer: int64 codes}`` for every op with a tap.

        Raises:
            ValueError: wrong shape, dtype or range of `x`, or `batch_size` below 1.
        """
        spec = self.program.header["input"]
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
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
        starts = range(0, len(x), batch_size)

        def one(start: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, dict[str, int]]]:
            self._local.stats = stats = {}
            try:
                # Codes of at most 16 bits are exact in float32, the dtype BLAS is fed with.
                out, found = self._run_batch(x[start:start + batch_size].astype(np.float32))
            finally:
                self._local.stats = None
            return out, found, stats

        # A crossbar hook is user code: it sees the batches in order, from this thread.
        if self.workers > 1 and len(starts) > 1 and self.crossbar_hook is None:
            self._prepare_devices()   # drawn once, here, not raced for by the workers
            with single_threaded_blas(), ThreadPoolExecutor(self.workers) as pool:
                results = list(pool.map(one, starts))   # the workers' buffers go with their threads
        else:
            try:
                results = [one(start) for start in starts]
            finally:
                release_scratch()
        for out, found, stats in results:   # in batch order: counters add up in any order
            outputs.append(out)
            for key, value in found.items():
                tapped.setdefault(key, []).append(value)
            for name, counts in stats.items():
                total = self._counters(name, self.stats)
                for key, value in counts.items():
                    total[key] += value
        result = np.concatenate(outputs) if outputs else np.zeros((0,), np.float64)
        if taps:
            return result, {k: self._as_codes(k, np.concatenate(v)) for k, v in tapped.items()}
        return result

    __call__ = run

    def predict(self, x: np.ndarray, batch_size: int = 96) -> np.ndarray:
        """Top-1 class indices."""
        return np.argmax(self.run(x, batch_size), axis=-1)

    def _bounds(self, tensor: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Static range of a tensor that is a crossbar's exact output (docs/format.md)."""
        i = self.producer.get(tensor)
        if i is None or self.ops[i]["kind"] != "crossbar":
            return None
        return self.arrays[i]["acc_lo"], self.arrays[i]["acc_hi"]

    def _as_codes(self, tap: str, value: np.ndarray) -> np.ndarray:
        """Tapped codes/accumulators as int64 (they travel as exact floats); dequantized outputs as is."""
        kinds = {op["kind"] for op in self.ops if op["tap"] == tap}
        return value if "dequantize" in kinds else value.astype(np.int64)

    # -- ops -------------------------------------------------------------------------------
    def _run_batch(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        env = {self.program.header["input"]["name"]: x}
        found: dict[str, np.ndarray] = {}
        exact: set[str] = set()   # tensors that are exact crossbar outputs, hence within static bounds
        done: set[int] = set()
        out = x
        for i, op in enumerate(self.ops):
            if i in done:
                continue
            kind, arrays = op["kind"], self.arrays[i]
            args = [env[name] for name in op["inputs"]]
            v, target = args[0], i
            if kind == "crossbar" and self._fusable(i, v):
                # Threshold fused into the packed convolution's unpacking: codes come out directly.
                target = self.fused[i]
                out = self._crossbar(i, v, self.field_codes[target])
            elif kind == "crossbar":
                out = self._crossbar(i, v)
                if self.mode == "ideal" or self._hardware_is_ideal(i):
                    exact.add(op["name"])
            elif kind == "threshold" and i in self.pool_after:
                # A threshold is monotone per channel (non-decreasing for direction +1), so the
                # max of thresholded values is the threshold of the max (of the min for −1):
                # pooling the accumulator first thresholds 1/(pool area) of the values.
                target = self.pool_after[i]
                pool = self.ops[target]["attrs"]
                mode = self.arrays[target]["mode"] * arrays["direction"]
                out = self.thresholds[i](max_pool(v, pool["pool"], pool["strides"], pool["pads"], mode),
                                         op["inputs"][0] in exact)
            elif kind == "threshold":
                out = self.thresholds[i](v, op["inputs"][0] in exact)
            else:
                out = run_plain_op(op, arrays, args)
            done.add(target)
            name = self.ops[target]["name"]
            env[name] = out
            if self.ops[target]["tap"] is not None:
                found[self.ops[target]["tap"]] = out
            for source in op["inputs"]:
                if self.last_use.get(source, -1) <= i:
                    env.pop(source, None)
        return out, found

    def _fusable(self, i: int, x: np.ndarray) -> bool:
        """Whether crossbar op `i` and the threshold reading it run fused (its sums unseen)."""
        j = self.fused.get(i)
        return (j is not None and self.field_codes.get(j) is not None
                and (self.mode == "ideal" or self._hardware_is_ideal(i)) and self.crossbars[i].packs(x))

    def _crossbar(self, index: int, x: np.ndarray, codes: FieldCodes | None = None) -> np.ndarray:
        xbar = self.crossbars[index]
        if self.crossbar_hook is not None:
            self.crossbar_hook(index, xbar.patches(x)[0])
        lead = xbar.lead(x)
        if self.mode == "ideal":
            acc = xbar.ideal(x, codes)
        elif self._hardware_is_ideal(index):
            # Lossless ADCs on every column and no possible overflow: the hardware result is
            # the ideal one exactly, and the counters are known without modelling anything.
            acc = xbar.ideal(x, codes)
            counters = self._counters(xbar.name)
            counters["adc_conversions"] += int(np.prod(lead)) * sum(t.conversions for t in xbar.tiles)
        else:
            # Rows (patches) are independent in hardware mode: a few images at a time keep the
            # stacked bit-plane patches (cycles × patches × K) within a few MB.
            per_image = xbar.attrs["dac_cycles"] * max(1, int(np.prod(lead[1:]))) * xbar.attrs["rows"]
            step = max(1, _HARDWARE_BLOCK // per_image)
            acc = np.concatenate([self._hardware(index, xbar, x[i:i + step]) for i in range(0, len(x), step)])
        return acc.reshape(*lead, xbar.attrs["cols"])

    def _counters(self, name: str, stats: dict[str, dict[str, int]] | None = None) -> dict[str, int]:
        """Counters of layer `name` in `stats` (default: those of the batch run by this thread)."""
        if stats is None:
            stats = getattr(self._local, "stats", None)
            stats = self.stats if stats is None else stats
        return stats.setdefault(name, {"adc_clips": 0, "adc_conversions": 0, "acc_overflows": 0})

    def _hardware_is_ideal(self, index: int) -> bool:
        xbar = self.crossbars[index]
        return (self.conductances is None and self.no_overflow[index]
                and all(t.identity and t.ref_identity for t in xbar.tiles))

    def _cannot_overflow(self, xbar: Crossbar) -> bool:
        """Static proof that no accumulator addition of `xbar` can leave the accumulator range.

        Every running sum is bounded by the sum of the largest magnitudes of all its terms (ADC
        outputs times their shifts). Bounds are float64 sums of non-negative terms, compared with
        a margin far above their rounding error, so the proof is conservative."""
        attrs = xbar.attrs
        d, b, top = attrs["dac_bits"], attrs["slice_bits"], (1 << attrs["adc_bits"]) - 1
        acc = np.zeros(attrs["cols"], np.float64)
        total = 0.0
        for tile in xbar.tiles:
            term = tile.term_max
            if self.conductances is not None:   # a device may add any partial sum: only the ADC bounds it
                term = np.broadcast_to(top * 2.0 ** tile.adc_shift.astype(np.float64), term.shape)
            weight = 2.0 ** (d * np.arange(attrs["dac_cycles"]))[:, None, None, None] * \
                2.0 ** (b * np.arange(attrs["slices"]))[None, None, :, None]
            np.add.at(acc, tile.cols, (term * weight).sum(axis=(0, 1, 2)))
            if tile.ref_shift is not None:
                total += float((tile.ref_max * 2.0 ** (d * np.arange(attrs["dac_cycles"]))).sum())
        final = acc * 2.0 ** xbar.shift + total * np.abs(xbar.offset.astype(np.float64))
        limit = float((1 << (self.accumulator_bits - 1)) - 1) * (1 - 1e-9)
        return bool(max(acc.max(initial=0), total, final.max(initial=0)) <= limit)

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
        value, clipped = adc(partial, shift, bits)
        counters["adc_clips"] += clipped
        counters["adc_conversions"] += value.size
        return value

    @staticmethod
    def _float_adc(partial: np.ndarray, inv_step: np.ndarray | None, top: int, signed: bool,
                   counters: dict[str, int]) -> np.ndarray:
        counters["adc_clips"] += float_adc(partial, inv_step, top, signed)
        counters["adc_conversions"] += partial.size
        return partial

    def _hardware(self, index: int, xbar: Crossbar, x: np.ndarray) -> np.ndarray:
        """Tile by tile: all DAC cycles stacked as rows and all polarities × slices as columns of
        one GEMM per tile; the ADC on the whole result; then the accumulator additions in the
        order of docs/format.md §4.1 (summed at once, as exact float64, when no addition can
        overflow). Bit-planes are cut from the activations before im2col (kh·kw times fewer
        values than the patches), and every step stays in float while that is exact."""
        attrs = xbar.attrs
        counters = self._counters(xbar.name)
        bits, dac, cycles = attrs["adc_bits"], attrs["dac_bits"], attrs["dac_cycles"]
        top = (1 << bits) - 1
        free = self.no_overflow[index]
        planes = self._planes(xbar, x)                  # (cycles · m, K) float32, exact
        m = len(planes) // cycles
        # Overflow-free sums are exact in float64 when the accumulator itself is below 2^53.
        summed = free and self.accumulator_bits <= 53
        acc = np.zeros((m, attrs["cols"]), np.float64 if summed else np.int64)
        total = np.zeros((m, 1), np.int64)
        for t, tile in enumerate(xbar.tiles):
            inputs = planes[:, tile.row_index]
            cond = self._device(index, t, xbar.name, tile.cells)
            p_, s_, c = tile.cells.shape[0], tile.cells.shape[1], len(tile.cols)
            if cond is not None:
                r = len(tile.rows)
                partial = inputs.astype(np.float64) @ cond.transpose(2, 0, 1, 3).reshape(r, -1)
                code = self._float_adc(partial, tile.inv_step, top, True, counters)
            elif tile.identity and tile.adc_dtype.kind == "f":
                code = inputs.astype(tile.dtype, copy=False) @ tile.stacked
                counters["adc_conversions"] += code.size
            elif tile.scaled is not None:
                code = self._float_adc(inputs.astype(tile.adc_dtype, copy=False) @ tile.scaled, None, top,
                                       False, counters)
            else:   # partial sums beyond float64's exact range: integer ADC
                shift = tile.adc_shift.reshape(-1).astype(np.int64)
                partial = inputs.astype(np.int64) @ tile.stacked.astype(np.int64)
                code = self._adc(partial, shift, bits, counters) >> shift
            code = code.reshape(cycles, m, p_ * s_, c)
            if summed:
                bound = tile.sum_bound if cond is None else tile.sum_bound_device
                dtype = np.float32 if bound < 2 ** 24 and code.dtype == np.float32 else np.float64
                coef = tile.coef.astype(dtype)
                current = code[0, :, 0] * coef[0, 0]
                for j in range(cycles):
                    for k in range(p_ * s_):
                        if j or k:
                            current += code[j, :, k] * coef[j, k]
                acc[:, tile.col_index] += current
            else:
                acc[:, tile.col_index] = self._accumulate(xbar, tile, code, acc[:, tile.col_index], free,
                                                          counters)
            if tile.ref_shift is not None:
                sums = inputs.reshape(cycles, m, -1).sum(axis=2, dtype=np.float64).astype(np.int64)
                for j in range(cycles):
                    total = total + (self._adc(sums[j][:, None], tile.ref_shift, bits, counters) << (dac * j))
                    if not free:
                        total = self._limit(total, counters)
        if summed:
            acc = acc.astype(np.int64)
        out = (acc << xbar.shift) - total * xbar.offset[None, :]
        return out if free else self._limit(out, counters)

    @staticmethod
    def _planes(xbar: Crossbar, x: np.ndarray) -> np.ndarray:
        """Patches of every DAC cycle's bit-plane, stacked cycle-major as rows, in float32."""
        attrs = xbar.attrs
        dac, cycles = attrs["dac_bits"], attrs["dac_cycles"]
        if cycles > 1:
            codes = x.astype(np.int32 if attrs["input_max"] < 2 ** 31 else np.int64)
            x = np.concatenate([(codes >> (dac * j)) & ((1 << dac) - 1) for j in range(cycles)])
        # float32 holds every plane value exactly below 2^24 (e.g. not a wide sum-pooled input).
        top = (1 << dac) - 1 if cycles > 1 else attrs["input_max"]
        return xbar.patches(x, np.float32 if top < 2 ** 24 else np.float64)[0]

    def _accumulate(self, xbar: Crossbar, tile: Tile, code: np.ndarray, current: np.ndarray, free: bool,
                    counters: dict[str, int]) -> np.ndarray:
        """Integer accumulation in the order of docs/format.md §4.1, saturating or wrapping after
        every addition unless no addition can overflow."""
        attrs = xbar.attrs
        dac, width, slices = attrs["dac_bits"], attrs["slice_bits"], attrs["slices"]
        shift = tile.adc_shift.reshape(-1, len(tile.cols)).astype(np.int64)
        code = code.astype(np.int64)
        for j in range(attrs["dac_cycles"]):
            for p, sign in enumerate(attrs["polarities"]):
                for s in range(slices):
                    k = p * slices + s
                    term = code[j, :, k] << (shift[k] + width * s + dac * j)
                    current = current + term if sign > 0 else current - term
                    if not free:
                        current = self._limit(current, counters)
        return current

    def _prepare_devices(self) -> None:
        if self.conductances is None or self.mode != "hardware":
            return
        for index, xbar in self.crossbars.items():
            if not self._hardware_is_ideal(index):
                for t, tile in enumerate(xbar.tiles):
                    self._device(index, t, xbar.name, tile.cells)

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
