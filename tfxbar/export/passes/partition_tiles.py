"""Partition each crossbar's cell matrices into tiles of tile_rows × tile_cols.

Rows (inputs) are split into blocks of `tile_rows`, columns (output channels) into blocks of
`tile_cols` − 1 when the mapping needs a reference column (it takes the last physical column
of the tiles in column block 0) and `tile_cols` otherwise. A tile is one row block × one
column block and holds one physical array per polarity and slice. The row and column maps of
each tile index the layer's rows and output channels; partial sums of tiles are added
digitally. The DAC plan (bit-serial input cycles) is fixed here too.
"""

from __future__ import annotations

import numpy as np

from tfxbar.export.ir import Graph, Op

__all__ = ["partition_tiles"]


def _partition(op: Op, options: dict) -> None:
    cells = op.meta["cells"]
    rows, cols = cells.shape[2], cells.shape[3]
    ref = op.attrs["reference"]
    per_tile = options["tile_cols"] - (1 if ref else 0)
    tiles = []
    for r0 in range(0, rows, options["tile_rows"]):
        for c0 in range(0, cols, per_tile):
            r = np.arange(r0, min(r0 + options["tile_rows"], rows), dtype=np.int32)
            c = np.arange(c0, min(c0 + per_tile, cols), dtype=np.int32)
            t = len(tiles)
            op.arrays[f"tile{t}.cells"] = np.ascontiguousarray(cells[:, :, r[:, None], c[None, :]])
            op.arrays[f"tile{t}.rows"] = r
            op.arrays[f"tile{t}.cols"] = c
            tiles.append({"reference": bool(ref and c0 == 0)})
    input_bits = max(1, int(op.attrs["input_max"]).bit_length())
    dac_bits = min(options["dac_bits"] or input_bits, input_bits)
    op.attrs.update(tiles=tiles, input_bits=input_bits, dac_bits=dac_bits,
                    dac_cycles=-(-input_bits // dac_bits))


def partition_tiles(graph: Graph) -> Graph:
    """Replace each crossbar's whole cell matrices by tiles with row and column maps."""
    for op in graph.crossbars():
        _partition(op, graph.options)
    return graph
