"""Partition each crossbar's cell matrices into tiles of tile_rows × tile_cols.

Rows (inputs) are split into blocks of `tile_rows`, columns (output channels) into blocks of
`tile_cols` − 1 when the mapping needs a reference column (it takes the last physical column
of the tiles in column block 0) and `tile_cols` otherwise. A tile is one row block × one
column block and holds one physical array per polarity and slice. The row and column maps of
each tile index the layer's rows and output channels; partial sums of tiles are added
digitally. The DAC plan (bit-serial input cycles) is fixed here too.

A DepthwiseConv2D's weight matrix is block-diagonal (channel c's kh·kw rows feed only its own
columns): tiling it like a dense matrix would leave most tiles all zero. Its tiles instead hold
whole channels side by side, as many as fit in tile_rows and tile_cols, so only the diagonal
blocks take tiles (``utilization`` in `tfxbar.summary` reports the used cells).
"""

from __future__ import annotations

import numpy as np

from tfxbar.export.ir import Graph, Op

__all__ = ["partition_tiles"]


def _blocks(op: Op, options: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """(row map, column map) of every tile."""
    rows, cols = op.meta["cells"].shape[2:]
    ref = op.attrs["reference"]
    per_tile = options["tile_cols"] - (1 if ref else 0)
    groups = op.attrs.get("groups")
    if groups is None:
        return [(np.arange(r0, min(r0 + options["tile_rows"], rows), dtype=np.int32),
                 np.arange(c0, min(c0 + per_tile, cols), dtype=np.int32))
                for r0 in range(0, rows, options["tile_rows"]) for c0 in range(0, cols, per_tile)]
    window, mult = rows // groups, cols // groups
    # Channels per tile; a channel larger than a tile is split over row (column) blocks.
    fit = max(1, min(options["tile_rows"] // window, per_tile // mult))
    found = []
    for g0 in range(0, groups, fit):
        channels = np.arange(g0, min(g0 + fit, groups))
        r_all = np.sort((np.arange(window)[:, None] * groups + channels[None, :]).ravel()).astype(np.int32)
        c_all = (channels[:, None] * mult + np.arange(mult)[None, :]).ravel().astype(np.int32)
        for r0 in range(0, len(r_all), options["tile_rows"]):
            for c0 in range(0, len(c_all), per_tile):
                found.append((r_all[r0:r0 + options["tile_rows"]], c_all[c0:c0 + per_tile]))
    return found


def _partition(op: Op, options: dict) -> None:
    cells = op.meta["cells"]
    ref = op.attrs["reference"]
    tiles = []
    for r, c in _blocks(op, options):
        t = len(tiles)
        op.arrays[f"tile{t}.cells"] = np.ascontiguousarray(cells[:, :, r[:, None], c[None, :]])
        op.arrays[f"tile{t}.rows"] = r
        op.arrays[f"tile{t}.cols"] = c
        tiles.append({"reference": bool(ref and int(c[0]) == 0)})
    input_bits = max(1, int(op.attrs["input_max"]).bit_length())
    dac_bits = min(options["dac_bits"] or input_bits, input_bits)
    op.attrs.update(tiles=tiles, input_bits=input_bits, dac_bits=dac_bits,
                    dac_cycles=-(-input_bits // dac_bits))


def partition_tiles(graph: Graph) -> Graph:
    """Replace each crossbar's whole cell matrices by tiles with row and column maps."""
    for op in graph.crossbars():
        _partition(op, graph.options)
    return graph
