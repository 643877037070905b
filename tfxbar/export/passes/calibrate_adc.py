"""Data-chosen ADC ranges: size each tile column's ADC step on representative inputs.

The program is run in ideal mode on `representative_data` (integer input codes), replaying each
crossbar's patches through its tiles, one DAC cycle at a time. Every tile column's ADC step is a
power of two 2^shift (docs/format.md §4.1); the policy decides which:

- ``"calibrated"``: the smallest step whose range holds the column's largest observed partial
  sum, peak ≤ (2^adc_bits − 1)·2^shift: nothing clips on the representative data, and a few
  ADC bits spend most of their codes on rare peaks;
- ``"mse"``: the step with the least squared ADC error Σ (2^shift · code − partial sum)² over
  every observed partial sum, clipping included: rare peaks saturate so that the common small
  sums get a finer step (the usual rule for low-resolution ADCs and activation clipping).

Either way larger partial sums on other data saturate the ADC (hardware mode counts them). The
reference column of offset mappings gets its step by the same rule.
"""

from __future__ import annotations

import numpy as np

from tfxbar.export.crossbar import exact_gemm
from tfxbar.export.format import Program
from tfxbar.export.interpreter import Interpreter
from tfxbar.export.ir import Graph
from tfxbar.export.writer import write_program

__all__ = ["adc_errors", "adc_steps", "calibrate_adc", "partial_sum_peaks"]


def _observe(program: Program, x: np.ndarray, batch_size: int, visit) -> None:  # noqa: ANN001
    """Call ``visit(op_index, tile_index, polarity, slice or None, partial sums (M, c))`` for every
    DAC cycle's partial sums of every tile column on input codes `x` (slice None: the reference
    column, (M, 1)). One thread, batch order (the interpreter's hook contract)."""
    interpreter = Interpreter(program, "ideal")

    def observe(index: int, patches: np.ndarray) -> None:
        xbar = interpreter.crossbars[index]
        dac = xbar.attrs["dac_bits"]
        for t, tile in enumerate(xbar.tiles):
            cells = tile.cells
            for j in range(xbar.attrs["dac_cycles"]):
                plane = (patches[:, tile.rows] >> (dac * j)) & ((1 << dac) - 1)
                for p in range(cells.shape[0]):
                    for s in range(cells.shape[1]):
                        visit(index, t, p, s, exact_gemm(plane, cells[p, s], True))
                if tile.ref_shift is not None:
                    visit(index, t, 0, None, plane.sum(axis=1, dtype=np.int64)[:, None])

    interpreter.crossbar_hook = observe
    interpreter.run(np.asarray(x), batch_size=batch_size)


def _tiles(program: Program) -> dict[int, list[tuple[tuple[int, ...], bool]]]:
    """Per crossbar op, per tile: the ADC shift array's shape and whether it has a reference column."""
    out = {}
    for index, op in enumerate(program.ops):
        if op["kind"] == "crossbar":
            arrays = program.op_arrays(index)
            out[index] = [(arrays[f"tile{t}.adc_shift"].shape, f"tile{t}.ref_shift" in arrays)
                          for t in range(len(op["attrs"]["tiles"]))]
    return out


def partial_sum_peaks(program: Program, x: np.ndarray, batch_size: int = 256) -> dict[int, list[tuple]]:
    """Largest partial sum of every tile column over one DAC cycle, on input codes `x`.

    Returns:
        ``{op_index: [(peaks (polarity, slice, cols), reference_peak or None) per tile]}``.
    """
    peaks = {i: [[np.zeros(shape, np.int64), 0 if ref else None] for shape, ref in tiles]
             for i, tiles in _tiles(program).items()}

    def visit(index: int, t: int, p: int, s: int | None, sums: np.ndarray) -> None:
        tile = peaks[index][t]
        peak = sums.max(axis=0, initial=0)
        if s is None:
            tile[1] = max(tile[1], int(peak[0]))
        else:
            tile[0][p, s] = np.maximum(tile[0][p, s], peak)

    _observe(program, x, batch_size, visit)
    return {i: [tuple(t) for t in tiles] for i, tiles in peaks.items()}


def _adc_error(sums: np.ndarray, shift: int, top: int) -> np.ndarray:
    """Σ over rows of (2^shift · ADC code − partial sum)², per column (the ADC rounds half up and
    saturates at `top`, as docs/format.md §4.1)."""
    code = np.minimum((sums + ((1 << shift) >> 1)) >> shift, top)
    error = ((code << shift) - sums).astype(np.float64)
    return np.einsum("mc,mc->c", error, error)


def adc_errors(program: Program, x: np.ndarray, max_shift: dict[int, int],
               batch_size: int = 256) -> dict[int, list[tuple]]:
    """Squared ADC error of every tile column for each step 2^0 … 2^max_shift, on input codes `x`.

    Arguments:
        program: the program (its crossbars' `adc_shift` are not used; `adc_bits` are).
        x: integer input codes.
        max_shift: per crossbar op index, the largest step exponent tried.
        batch_size: images per interpreter batch.

    Returns:
        ``{op_index: [(errors (max_shift + 1, polarity, slice, cols), reference errors
        (max_shift + 1,) or None) per tile]}``, float64 sums over every partial sum seen.
    """
    errors = {i: [[np.zeros((max_shift[i] + 1, *shape)), np.zeros(max_shift[i] + 1) if ref else None]
                  for shape, ref in tiles] for i, tiles in _tiles(program).items()}
    tops = {i: (1 << program.ops[i]["attrs"]["adc_bits"]) - 1 for i in errors}

    def visit(index: int, t: int, p: int, s: int | None, sums: np.ndarray) -> None:
        tile = errors[index][t]
        for k in range(max_shift[index] + 1):
            e = _adc_error(sums, k, tops[index])
            if s is None:
                tile[1][k] += e[0]
            else:
                tile[0][k, p, s] += e

    _observe(program, x, batch_size, visit)
    return {i: [tuple(t) for t in tiles] for i, tiles in errors.items()}


def _shift(peak: np.ndarray, bits: int) -> np.ndarray:
    """The smallest power-of-two step exponent whose ADC range (2^bits − 1)·2^shift holds `peak`."""
    top = (1 << bits) - 1
    shift = np.zeros(np.shape(peak), np.int64)
    while np.any(top << shift < peak):
        shift = np.where(top << shift < peak, shift + 1, shift)
    return shift.astype(np.uint8)


def adc_steps(program: Program, data: np.ndarray, policy: str = "calibrated") -> dict[int, list[tuple]]:
    """The ADC step exponents `policy` chooses for every tile column on input codes `data`.

    Arguments:
        program: the program (its own ``adc_shift`` are not used).
        data: integer input codes.
        policy: ``"calibrated"`` (no observed peak clips) or ``"mse"`` (least squared ADC error);
            see the module docstring.

    Returns:
        ``{op_index: [(adc_shift (polarity, slice, cols) uint8, ref_shift (1,) uint8 or None)
        per tile]}``.

    Raises:
        ValueError: `policy` is not chosen from data.
    """
    if policy not in ("calibrated", "mse"):
        raise ValueError(f"adc_range {policy!r} is not chosen from data; use 'calibrated' or 'mse'")
    data = np.asarray(data)
    bits = {i: op["attrs"]["adc_bits"] for i, op in enumerate(program.ops) if op["kind"] == "crossbar"}
    shifts = {i: [(_shift(peak, bits[i]), None if ref is None else _shift(np.array([ref]), bits[i]))
                  for peak, ref in tiles] for i, tiles in partial_sum_peaks(program, data).items()}
    if policy == "calibrated":
        return shifts
    # A step above the one that holds the peak clips nothing and rounds more coarsely, so it
    # cannot have less error: the peaks bound the search.
    bound = {i: max(int(max(shift.max(initial=0), 0 if ref is None else ref[0])) for shift, ref in tiles)
             for i, tiles in shifts.items()}
    return {i: [(np.argmin(e, axis=0).astype(np.uint8),
                 None if r is None else np.array([np.argmin(r)], np.uint8)) for e, r in tiles]
            for i, tiles in adc_errors(program, data, bound).items()}


def calibrate_adc(graph: Graph, data: np.ndarray, policy: str = "calibrated") -> Graph:
    """Set ``tile<t>.adc_shift`` / ``ref_shift`` of every crossbar from `data` by `policy`
    (`adc_steps`), in place."""
    steps = adc_steps(write_program(graph), data, policy)
    for index, op in enumerate(graph.ops):
        for t, (shift, ref_shift) in enumerate(steps.get(index, [])):
            op.arrays[f"tile{t}.adc_shift"] = shift
            if ref_shift is not None:
                op.arrays[f"tile{t}.ref_shift"] = ref_shift
    return graph
