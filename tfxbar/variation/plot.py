"""Robustness curves: accuracy versus device variation for several models, saved as a PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from tfxbar.atomic import write_atomically
from tfxbar.variation.evaluate import VariationResult

__all__ = ["plot_robustness"]


def plot_robustness(curves: Mapping[str, Mapping[float, VariationResult]
                                    | Sequence[tuple[float, VariationResult]]],
                    path: str | os.PathLike, *, xlabel: str = "lognormal σ (programming variation)",
                    title: str | None = None, percent: bool = True) -> str:
    """Save accuracy-vs-σ curves (mean, ±1 std band, worst chip dotted) as a PNG.

    Arguments:
        curves: for each model label, its results by σ: a mapping σ → `VariationResult` or a
            sequence of ``(σ, result)`` pairs.
        path: output file (PNG).
        xlabel: the x axis label.
        title: optional figure title.
        percent: plot accuracies in percent.

    Returns:
        `path` as a string.
    """
    # The object-oriented API, not pyplot: no global backend or figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    factor = 100.0 if percent else 1.0
    for label, points in curves.items():
        pairs = sorted((points.items() if isinstance(points, Mapping) else points),
                       key=lambda p: p[0])
        sigma = np.array([float(s) for s, _ in pairs])
        mean = np.array([r.mean for _, r in pairs]) * factor
        std = np.array([r.std for _, r in pairs]) * factor
        worst = np.array([r.min for _, r in pairs]) * factor
        (line,) = ax.plot(sigma, mean, marker="o", label=label)
        ax.fill_between(sigma, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.plot(sigma, worst, linestyle=":", color=line.get_color())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)" if percent else "accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(title="mean ± std; dotted: worst chip", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return write_atomically(path, lambda handle: fig.savefig(handle, format="png"))
