"""``adc_range="calibrated"``: size each tile column's ADC step on representative inputs.

The program is run in ideal mode on `representative_data` (integer input codes); for every
tile column the largest partial sum of one DAC cycle is recorded, and the column's step is the
smallest power of two 2^shift with peak ≤ (2^adc_bits − 1)·2^shift. Larger partial sums on
other data saturate the ADC (hardware mode counts them).
"""

from __future__ import annotations

import numpy as np

from tfxbar.export.interpreter import Interpreter
from tfxbar.export.ir import Graph
from tfxbar.export.writer import write_program

__all__ = ["calibrate_adc"]


def _shift(peak: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    shift = np.zeros(np.shape(peak), np.int64)
    while np.any(top << shift < peak):
        shift = np.where(top << shift < peak, shift + 1, shift)
    return shift.astype(np.uint8)


def calibrate_adc(graph: Graph, data: np.ndarray) -> Graph:
    """Set ``tile<t>.adc_shift`` / ``ref_shift`` of every crossbar from `data` (in place)."""
    peaks = Interpreter(write_program(graph)).partial_sum_peaks(np.asarray(data))
    for index, op in enumerate(graph.ops):
        if op.kind != "crossbar":
            continue
        bits = op.attrs["adc_bits"]
        for t, (peak, ref_peak) in enumerate(peaks[index]):
            op.arrays[f"tile{t}.adc_shift"] = _shift(peak, bits)
            if ref_peak is not None:
                op.arrays[f"tile{t}.ref_shift"] = _shift(np.array([ref_peak]), bits)
    return graph
