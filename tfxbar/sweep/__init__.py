"""Design-space sweeps: accuracy (ideal, hardware, chips), energy, tiles and accumulator bits
over a grid of ADC / DAC bits, tile sizes, cell bits, mappings, σ and accumulator widths, on a
process pool or a Ray cluster (docs/hardware_mode.md, *Sweeps*)."""

from tfxbar.sweep.grid import AXES, SweepConfig
from tfxbar.sweep.run import sweep
from tfxbar.sweep.table import pareto, plot_pareto

__all__ = ["AXES", "SweepConfig", "pareto", "plot_pareto", "sweep"]
