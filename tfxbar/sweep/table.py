"""The sweep table (CSV, rewritten atomically after every point) and its Pareto plot."""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from tfxbar.atomic import write_atomically

__all__ = ["pareto", "plot_pareto", "read_rows", "write_rows"]


def read_rows(path: str) -> list[dict[str, Any]]:
    """Rows already in the table (values as written: JSON-ish strings are left to the reader)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: str, rows: list[dict[str, Any]]) -> None:
    """Write every row (the union of their keys as columns), atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda f: f.write(text.getvalue().encode()))


def pareto(rows: list[dict[str, Any]], accuracy: str = "accuracy_hardware") -> list[dict[str, Any]]:
    """Rows not dominated in (lower energy, higher accuracy), by increasing energy."""
    front, best = [], -1.0
    for row in sorted(rows, key=lambda r: (float(r["energy_pj"]), -float(r[accuracy]))):
        if float(row[accuracy]) > best:
            front.append(row)
            best = float(row[accuracy])
    return front


def plot_pareto(rows: list[dict[str, Any]], path: str, accuracy: str = "accuracy_hardware") -> None:
    """Accuracy vs energy per inference, every point and the Pareto front, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([float(r["energy_pj"]) / 1e3 for r in rows], [float(r[accuracy]) for r in rows],
               s=14, color="0.6", label="design points")
    front = pareto(rows, accuracy)
    ax.plot([float(r["energy_pj"]) / 1e3 for r in front], [float(r[accuracy]) for r in front],
            "o-", color="C3", label="Pareto front")
    ax.set_xlabel("energy per inference (nJ, dense)")
    ax.set_ylabel(accuracy.replace("_", " "))
    ax.legend()
    fig.tight_layout()
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
