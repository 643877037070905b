"""Per-layer energy breakdown as a stacked bar chart (PNG), dense beside sparsity-aware."""

from __future__ import annotations

import os

from tfxbar.atomic import write_atomically
from tfxbar.cost.energy import ENERGY_KINDS
from tfxbar.cost.summary import Summary, _gain, _unit

__all__ = ["plot_energy"]

_COLORS = {"adc": "#d62728", "dac": "#1f77b4", "cell": "#2ca02c", "shift_add": "#ff7f0e",
           "accumulate": "#9467bd", "compare": "#8c564b"}


def plot_energy(report: Summary, path: str | os.PathLike[str], *, title: str | None = None) -> str:
    """Write a PNG of the energy per inference of each layer, stacked by operation kind.

    With measured data each layer has two bars: dense (every conversion) and sparsity-aware
    (hatched). Uses matplotlib's non-interactive Agg backend.

    Arguments:
        report: a `Summary` from `tfxbar.summary`.
        path: the PNG file to write.
        title: the figure title (default: totals and, if measured, the efficiency gain).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [layer.name for layer in report.layers]
    variants = [False, True] if report.measured else [False]
    width = 0.8 / len(variants)
    totals = report.totals
    unit, scale = _unit(sum(totals["energy_dense"].values()))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(names) + 2), 4.5))
    for v, sparse in enumerate(variants):
        bottoms = [0.0] * len(names)
        xs = [i + (v - (len(variants) - 1) / 2) * width for i in range(len(names))]
        for kind in ENERGY_KINDS:
            values = [report.layer_energy(layer, sparse)[kind] / scale for layer in report.layers]
            ax.bar(xs, values, width, bottom=bottoms, color=_COLORS[kind],
                   hatch="//" if sparse else None, edgecolor="white" if sparse else None,
                   label=kind if v == 0 else None)
            bottoms = [b + x for b, x in zip(bottoms, values, strict=True)]
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(f"energy per inference ({unit})")
    if title is None:
        title = f"dense {sum(totals['energy_dense'].values()) / scale:,.2f} {unit}/inference"
        if report.measured:
            title += (f"; sparsity-aware (hatched) {sum(totals['energy_sparse'].values()) / scale:,.2f} "
                      f"{unit}, "
                      f"ADC −{totals['adc_reduction'] * 100:.0f}%, {_gain(totals['efficiency_gain'])}")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return write_atomically(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    finally:
        plt.close(fig)
