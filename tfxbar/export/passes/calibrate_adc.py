"""``adc_range="calibrated"``: size each tile column's ADC step on representative inputs.

The program is run in ideal mode on `representative_data` (integer input codes); for every
tile column the largest partial sum of one DAC cycle is recorded, and the column's step is the
smallest power of two 2^shift with peak ≤ (2^adc_bits − 1)·2^shift. Larger partial sums on
other data saturate the ADC (hardware mode counts them).
"""

from __future__ import annotations

import numpy as np

from tfxbar.export.crossbar import exact_gemm
from tfxbar.export.format import Program
from tfxbar.export.interpreter import Interpreter
from tfxbar.export.ir import Graph
from tfxbar.export.writer import write_program

__all__ = ["calibrate_adc", "partial_sum_peaks"]


def partial_sum_peaks(program: Program, x: np.ndarray, batch_size: int = 256) -> dict[int, list[tuple]]:
    """Largest partial sum of every tile column over one DAC cycle, on input codes `x` (an
    ideal-mode run that replays each crossbar's patches through its tiles).

    Returns:
        ``{op_index: [(peaks (polarity, slice, cols), reference_peak or None) per tile]}``.
    """
    interpreter = Interpreter(program, "ideal")
    peaks: dict[int, list[list]] = {}

    def observe(index: int, patches: np.ndarray) -> None:
        # Called from one thread in batch order (the interpreter's hook contract): no lock.
        xbar = interpreter.crossbars[index]
        dac = xbar.attrs["dac_bits"]
        tiles = peaks.setdefault(index, [[np.zeros(t.adc_shift.shape, np.int64), None] for t in xbar.tiles])
        for t, tile in enumerate(xbar.tiles):
            cells = tile.cells
            for j in range(xbar.attrs["dac_cycles"]):
                plane = (patches[:, tile.rows] >> (dac * j)) & ((1 << dac) - 1)
                for p in range(cells.shape[0]):
                    for s in range(cells.shape[1]):
                        peak = exact_gemm(plane, cells[p, s], True).max(axis=0, initial=0)
                        tiles[t][0][p, s] = np.maximum(tiles[t][0][p, s], peak)
                if tile.ref_shift is not None:
                    tiles[t][1] = max(tiles[t][1] or 0, int(plane.sum(axis=1).max(initial=0)))

    interpreter.crossbar_hook = observe
    interpreter.run(np.asarray(x), batch_size=batch_size)
    return {i: [tuple(t) for t in tiles] for i, tiles in peaks.items()}


def _shift(peak: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    shift = np.zeros(np.shape(peak), np.int64)
    while np.any(top << shift < peak):
        shift = np.where(top << shift < peak, shift + 1, shift)
    return shift.astype(np.uint8)


def calibrate_adc(graph: Graph, data: np.ndarray) -> Graph:
    """Set ``tile<t>.adc_shift`` / ``ref_shift`` of every crossbar from `data` (in place)."""
    peaks = partial_sum_peaks(write_program(graph), np.asarray(data))
    for index, op in enumerate(graph.ops):
        if op.kind != "crossbar":
            continue
        bits = op.attrs["adc_bits"]
        for t, (peak, ref_peak) in enumerate(peaks[index]):
            op.arrays[f"tile{t}.adc_shift"] = _shift(peak, bits)
            if ref_peak is not None:
                op.arrays[f"tile{t}.ref_shift"] = _shift(np.array([ref_peak]), bits)
    return graph
