"""The sweep table (CSV, or Parquet for a ``.parquet`` path; rewritten atomically after every
point) and its Pareto plot."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from tfxbar.atomic import write_atomically

__all__ = ["cell_value", "pareto", "plot_pareto", "read_rows", "write_rows"]


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError("a .parquet sweep table needs pyarrow: pip install 'tfxbar[parquet]' "
                          "(or give the table a .csv name)") from None
    return pyarrow, pyarrow.parquet


def _parquet(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).endswith(".parquet")


def read_rows(path: str) -> list[dict[str, Any]]:
    """Rows already in the table: a CSV's cells as written (strings, see `cell_value`), a
    Parquet table's as typed values (None for missing).

    Raises:
        ImportError: a ``.parquet`` path without pyarrow installed.
    """
    if not os.path.exists(path):
        return []
    if _parquet(path):
        return _pyarrow()[1].read_table(path).to_pylist()
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: str, rows: list[dict[str, Any]]) -> None:
    """Write every row (the union of their keys as columns), atomically: Parquet if `path`
    ends in ``.parquet`` (the field's columnar format, typed columns), else CSV.

    Raises:
        ImportError: a ``.parquet`` path without pyarrow installed.
        ValueError: a Parquet column mixes types that have no common Arrow type.
    """
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    if _parquet(path):
        pa, pq = _pyarrow()
        arrays = {}
        for column in columns:
            try:
                arrays[column] = pa.array([row.get(column) for row in rows])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise ValueError(f"sweep table {path}: column {column!r} mixes types Parquet cannot hold "
                                 f"in one column ({exc}); use a .csv table") from None
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table(arrays), buffer)
        data = buffer.getvalue().to_pybytes()
        write_atomically(path, lambda f: f.write(data))
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda f: f.write(text.getvalue().encode()))


def cell_value(cell: Any) -> Any:
    """A table cell as the JSON value the grid had: CSV strings are parsed (numbers, null,
    strings); typed (Parquet) values are returned as they are.

    Example:
        >>> cell_value("4"), cell_value(""), cell_value("adc_aware"), cell_value(0.5)
        (4, None, 'adc_aware', 0.5)
    """
    if not isinstance(cell, str):
        return cell
    if cell == "":
        return None
    try:
        return json.loads(cell)
    except ValueError:
        return cell


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
