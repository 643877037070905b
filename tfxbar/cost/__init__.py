"""Cost model of crossbar programs: operation counts, energy, sparsity-aware processing (P4).

- `static_counts` / `measure` (counts.py): cells, tiles, utilization, DAC cycles, ADC
  conversions per inference; conversions skipped on real data for all-zero input slices and
  all-zero columns.
- `EnergyModel` (energy.py): energy per operation with cited defaults, overridable from JSON
  or TOML.
- `summary` (summary.py): the per-layer table, ``tfxbar.summary``.
- `plot_energy` (plot.py): per-layer energy breakdown PNG (matplotlib, imported lazily).

See docs/cost_model.md.
"""

from tfxbar.cost.counts import LayerCounts, Measured, measure, static_counts
from tfxbar.cost.energy import ENERGY_KINDS, EnergyModel
from tfxbar.cost.summary import Summary, summary

__all__ = ["ENERGY_KINDS", "EnergyModel", "LayerCounts", "Measured", "Summary", "measure",
           "plot_energy", "static_counts", "summary"]


def plot_energy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """See `tfxbar.cost.plot.plot_energy` (imports matplotlib on first use)."""
    from tfxbar.cost.plot import plot_energy as _plot

    return _plot(*args, **kwargs)
