"""Map each crossbar's integer weights onto non-negative cell codes.

Every crossbar computes the same signed integer accumulator per output channel,
``X = Σᵢ (2^f·cᵢ − B)·xᵢ`` (f, B: the fixed-point weight offset), realised as

``X = 2^f · Σ_p sign_p · Σ_l 2^(cell_bits·l) · Σᵢ cells[p, l, i]·xᵢ − B' · Σᵢ xᵢ``

- differential: p ∈ {+, −}, g⁺ = max(w, 0), g⁻ = max(−w, 0) for the signed integer weight
  w = c − B (needs an integral offset, f = 0); no reference column (B' = 0);
- offset: one polarity of non-negative cells u = c − min(levels); a reference column of ones
  gives Σx and B' = B − 2^f·min(levels) is subtracted digitally;
- bit-sliced: either of the above, each cell code split into slices of `cell_bits` bits.
"""

from __future__ import annotations

import numpy as np

from tfxbar.export.errors import ConversionError
from tfxbar.export.ir import Graph, Op

__all__ = ["map_cells"]


def _bits(value: int) -> int:
    return max(1, int(value).bit_length())


def _map(op: Op, mapping: str, cell_bits: int | None) -> None:
    meta = op.meta
    codes, offset_num, frac, levels = meta["codes"], meta["offset_num"], meta["offset_shift"], meta["levels"]
    signed = min(levels) < 0
    if "groups" in op.attrs:
        # A DepthwiseConv2D's tiles hold whole channels only: no reference column could sum
        # just one channel's rows, and its zeros must be zero cells (differential pairs).
        if mapping == "bit_sliced":
            cell_bits = cell_bits or 1
        mapping = "differential"
    if mapping == "bit_sliced":
        mapping = "differential" if signed or (frac == 0 and not offset_num.any()) else "offset"
        cell_bits = cell_bits or 1
    elif mapping == "auto":
        mapping = "differential" if frac == 0 and not offset_num.any() else "offset"
    if mapping == "differential":
        if frac != 0:
            raise ConversionError(op.name, op.attrs["layer_type"], "a fractional weight offset (trained "
                                  "biased weights) cannot be mapped to differential pairs",
                                  "use weight_mapping='offset'")
        w = codes - offset_num[None, :]
        cells = np.stack([np.maximum(w, 0), np.maximum(-w, 0)])
        top = max(abs(min(levels) - int(offset_num.max())), abs(max(levels) - int(offset_num.min())))
        signs, ref, new_offset = [1, -1], False, np.zeros_like(offset_num)
    else:
        low = min(levels)
        cells = (codes - low)[None]
        top = max(levels) - low
        signs, ref, new_offset = [1], True, offset_num - (low << frac)
    needed = _bits(top)
    cell_bits = cell_bits or needed
    slices = -(-needed // cell_bits)
    mask = (1 << cell_bits) - 1
    sliced = np.stack([(cells >> (cell_bits * s)) & mask for s in range(slices)], axis=1)
    rebuilt = sum(sign * sum(sliced[p, s] << (cell_bits * s) for s in range(slices))
                  for p, sign in enumerate(signs))
    if not np.array_equal((rebuilt << frac) - new_offset[None, :], meta["weights"]):
        raise AssertionError(f"{op.name}: cell mapping does not reproduce the integer weights")
    op.meta["cells"] = sliced.astype(np.uint8)
    op.arrays["offset_num"] = new_offset.astype(np.int64)
    op.attrs.update(mapping=mapping, polarities=signs, slices=slices, slice_bits=cell_bits,
                    offset_shift=int(frac), reference=ref)


def map_cells(graph: Graph) -> Graph:
    """Add cell codes (``meta['cells']``: polarity × slice × rows × cols) to every crossbar."""
    for op in graph.crossbars():
        _map(op, graph.options["weight_mapping"], graph.options["cell_bits"])
    return graph
