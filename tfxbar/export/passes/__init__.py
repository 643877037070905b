"""Compiler passes, one per module, run in `PIPELINE` order on a `Graph`."""

from tfxbar.export.passes.check_bounds import check_bounds
from tfxbar.export.passes.fold_thresholds import fold_thresholds
from tfxbar.export.passes.map_cells import map_cells
from tfxbar.export.passes.partition_tiles import partition_tiles

#: The default pass pipeline; each pass takes and returns a `Graph` (rewritten in place).
PIPELINE = (fold_thresholds, map_cells, partition_tiles, check_bounds)

__all__ = ["PIPELINE", "check_bounds", "fold_thresholds", "map_cells", "partition_tiles"]
