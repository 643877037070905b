"""Static bounds: accumulator ranges, lossless ADC resolution, and the ADC plan per column.

For each crossbar this pass records the worst-case accumulator range per output channel
(``acc_lo``/``acc_hi``, over all inputs in [0, input_max]), the signed accumulator width that
holds it (``acc_bits_required``), and for every tile column the worst-case partial sum of
one DAC cycle, from which the lossless ADC resolution follows. It fixes the ADC step
(``adc_shift``: step = 2^shift) per tile column: 0 for ``lossless`` and ``clip`` (the
``calibrated`` pass overwrites it). A full checker comes later; this pass only rejects what
no hardware setting could run.
"""

from __future__ import annotations

import numpy as np

from tfxbar.export.errors import ConversionError
from tfxbar.export.ir import Graph, Op

__all__ = ["check_bounds", "signed_bits"]

_MAX_ACC = 2 ** 62


def signed_bits(lo: int, hi: int) -> int:
    """Bits of a two's-complement integer holding every value in [lo, hi]."""
    return max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0) + 1


def _check(op: Op, options: dict) -> None:
    kind = op.attrs["layer_type"]
    lo, hi = op.meta["acc_lo"], op.meta["acc_hi"]
    if max(-int(lo.min()), int(hi.max())) >= _MAX_ACC:
        raise ConversionError(op.name, kind, "the accumulator can exceed 2^62",
                              "use fewer input or weight bits")
    op.arrays["acc_lo"], op.arrays["acc_hi"] = lo.astype(np.int64), hi.astype(np.int64)
    op.attrs["acc_bits_required"] = signed_bits(int(lo.min()), int(hi.max()))
    plane = (1 << op.attrs["dac_bits"]) - 1
    worst = 0
    for t, tile in enumerate(op.attrs["tiles"]):
        cells = op.arrays[f"tile{t}.cells"].astype(np.int64)
        partial = cells.sum(axis=2) * plane
        worst = max(worst, int(partial.max(initial=0)))
        op.arrays[f"tile{t}.adc_shift"] = np.zeros(partial.shape, np.uint8)
        if tile["reference"]:
            worst = max(worst, cells.shape[2] * plane)
            op.arrays[f"tile{t}.ref_shift"] = np.zeros(1, np.uint8)
    lossless = max(1, worst.bit_length())
    bits = options["adc_bits"]
    if options["adc_range"] == "lossless":
        if bits is not None and bits < lossless:
            raise ConversionError(op.name, kind, f"adc_bits={bits} cannot be lossless: a tile column's "
                                  f"partial sum needs {lossless} bits",
                                  "raise adc_bits, use adc_range='clip' or smaller tiles/DAC steps")
        bits = lossless if bits is None else bits
    op.attrs.update(adc_range=options["adc_range"], adc_bits=int(bits), adc_bits_lossless=lossless)


def check_bounds(graph: Graph) -> Graph:
    """Record bounds and the ADC plan of every crossbar; ConversionError when impossible."""
    for op in graph.crossbars():
        _check(op, graph.options)
    return graph
