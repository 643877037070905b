"""Data-driven accumulator maxima: what calibration inputs actually reach (numpy only).

The program runs in ideal mode (so every layer sees the exact codes of the previous one); at
each crossbar the patches are replayed through the program's shift-add plan — tiles in file
order, bit-serial DAC cycles, polarities and slices, the program's ADCs (step 2^adc_shift,
round half up, saturating) and an *unbounded* digital accumulator — recording per tile column
the largest ADC partial sum and per output channel the extremes of the running accumulator,
the Σx register and the final X. With lossless ADCs these are the values the hardware
interpreter computes, so they never exceed the static bounds (`tfxbar.check.bounds`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfxbar.export.adc import adc
from tfxbar.export.format import Program
from tfxbar.export.interpreter import Interpreter

__all__ = ["ObservedBounds", "observe"]


@dataclasses.dataclass
class ObservedBounds:
    """Extremes observed on data for one crossbar op (same layout as `CrossbarBounds`).

    Attributes:
        index, name: the op.
        out_lo, out_hi: per output channel, extremes of the final accumulator X.
        acc_lo, acc_hi: per output channel, extremes of the running accumulator over all stages.
        tile_acc: per tile, ``(lo, hi)`` over that tile's stages for its columns.
        adc: per tile, the largest partial sum per (polarity, slice, tile column).
        ref: per tile, the largest reference partial sum (None without reference column).
        ref_total: per tile, the largest running Σx after it (None if not a reference tile).
        patches: how many input patches were seen.
    """

    index: int
    name: str
    out_lo: np.ndarray
    out_hi: np.ndarray
    acc_lo: np.ndarray
    acc_hi: np.ndarray
    tile_acc: list[tuple[np.ndarray, np.ndarray]]
    adc: list[np.ndarray]
    ref: list[int | None]
    ref_total: list[int | None]
    patches: int = 0


def _empty(index: int, name: str, attrs: dict, arrays: dict[str, np.ndarray]) -> ObservedBounds:
    n, big = attrs["cols"], np.iinfo(np.int64)
    tiles = range(len(attrs["tiles"]))
    return ObservedBounds(
        index, name, np.full(n, big.max), np.full(n, big.min), np.zeros(n, np.int64), np.zeros(n, np.int64),
        [(np.full(len(arrays[f"tile{t}.cols"]), big.max), np.full(len(arrays[f"tile{t}.cols"]), big.min))
         for t in tiles],
        [np.zeros(arrays[f"tile{t}.adc_shift"].shape, np.int64) for t in tiles],
        [0 if tile["reference"] else None for tile in attrs["tiles"]],
        [0 if tile["reference"] else None for tile in attrs["tiles"]])


def _replay(seen: ObservedBounds, attrs: dict, arrays: dict[str, np.ndarray], patches: np.ndarray) -> None:
    d, cycles, b, bits = attrs["dac_bits"], attrs["dac_cycles"], attrs["slice_bits"], attrs["adc_bits"]
    acc = np.zeros((len(patches), attrs["cols"]), np.int64)
    total = np.zeros(len(patches), np.int64)
    for t, tile in enumerate(attrs["tiles"]):
        cells = arrays[f"tile{t}.cells"].astype(np.float64)
        rows, cols = arrays[f"tile{t}.rows"], arrays[f"tile{t}.cols"]
        shift = arrays[f"tile{t}.adc_shift"]
        inputs = patches[:, rows]
        t_lo, t_hi = seen.tile_acc[t]
        for j in range(cycles):
            plane = (inputs >> (d * j)) & ((1 << d) - 1)
            for p, sign in enumerate(attrs["polarities"]):
                for s in range(attrs["slices"]):
                    partial = np.rint(plane.astype(np.float64) @ cells[p, s]).astype(np.int64)
                    seen.adc[t][p, s] = np.maximum(seen.adc[t][p, s], partial.max(axis=0, initial=0))
                    acc[:, cols] += sign * (adc(partial, shift[p, s], bits)[0] << (b * s + d * j))
                    t_lo[:] = np.minimum(t_lo, acc[:, cols].min(axis=0))
                    t_hi[:] = np.maximum(t_hi, acc[:, cols].max(axis=0))
            if tile["reference"]:
                ref = plane.sum(axis=1)
                seen.ref[t] = max(seen.ref[t], int(ref.max(initial=0)))
                total += adc(ref, arrays[f"tile{t}.ref_shift"][0], bits)[0] << (d * j)
        seen.acc_lo[cols] = np.minimum(seen.acc_lo[cols], t_lo)
        seen.acc_hi[cols] = np.maximum(seen.acc_hi[cols], t_hi)
        if tile["reference"]:
            seen.ref_total[t] = max(seen.ref_total[t], int(total.max(initial=0)))
    x = (acc << attrs["offset_shift"]) - total[:, None] * arrays["offset_num"][None, :]
    seen.out_lo = np.minimum(seen.out_lo, x.min(axis=0))
    seen.out_hi = np.maximum(seen.out_hi, x.max(axis=0))
    seen.patches += len(patches)


def observe(program: Program, x: np.ndarray, batch_size: int = 256) -> dict[int, ObservedBounds]:
    """Extremes of every crossbar's ADC partial sums and accumulators on inputs `x`.

    Arguments:
        program: a `Program`.
        x: integer input codes, shape ``(N, *input.shape)`` (e.g. uint8 pixels).
        batch_size: examples per internal batch.

    Returns:
        ``{op_index: ObservedBounds}`` for every crossbar op.

    Raises:
        ValueError: `x` has the wrong shape, dtype or range for the program.
    """
    interpreter = Interpreter(program, "ideal")
    seen = {i: _empty(i, op["name"], op["attrs"], interpreter.arrays[i])
            for i, op in enumerate(interpreter.ops) if op["kind"] == "crossbar"}

    def replay(index: int, patches: np.ndarray) -> None:
        # The interpreter calls its hook from one thread, in batch order: the in-place updates
        # of the running extremes need no lock.
        if len(patches):
            _replay(seen[index], interpreter.ops[index]["attrs"], interpreter.arrays[index], patches)

    interpreter.crossbar_hook = replay
    interpreter.run(x, batch_size=batch_size)
    return seen
