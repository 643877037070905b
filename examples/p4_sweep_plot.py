"""The P4 requirement study's figure and tables from its sweep tables (docs/sweeps/p4_*.csv).

Accuracy in the Keras hardware mode vs ADC bits, per DAC resolution, for the model as trained
(``none``), after a plain QAT fine-tune (``qat``) and after an ADC-aware fine-tune
(``adc_aware``), one column per net, energy per inference below; prints the docs/results.md
tables (Markdown).

Usage (after ``tfxbar sweep docs/sweeps/p4_mnist.json`` and ``… p4_cifar10.json``):
    python examples/p4_sweep_plot.py --out docs/p4_requirements.png \\
        docs/sweeps/p4_mnist.csv:MNIST docs/sweeps/p4_cifar10.csv:CIFAR-10
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tfxbar.atomic import write_atomically  # noqa: E402
from tfxbar.sweep.table import cell_value, read_rows  # noqa: E402

KINDS = {"none": ("as trained", "o", "-"), "qat": ("plain QAT fine-tune", "s", "--"),
         "adc_aware": ("ADC-aware fine-tune", "^", ":")}


def _rows(path: str) -> list[dict[str, Any]]:
    rows = [{k: cell_value(v) for k, v in row.items()} for row in read_rows(path)]
    if not rows:
        raise SystemExit(f"{path}: no rows; run its sweep first")
    for row in rows:
        row["finetune"] = row.get("finetune") or "none"
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per ADC resolution, per DAC the three hardware-mode accuracies (a
    fine-tuned model's ideal accuracy in brackets) and the energy."""
    dacs = sorted({r["dac_bits"] for r in rows})
    cell = {(r["adc_bits"], r["dac_bits"], r["finetune"]): r for r in rows}
    head = ["ADC bits"] + [f"DAC {d}: {name}" for d in dacs
                           for name in ("as trained", "plain QAT", "ADC-aware", "energy (nJ)")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for adc in sorted({r["adc_bits"] for r in rows}):
        out = [str(adc)]
        for dac in dacs:
            for kind in KINDS:
                row = cell.get((adc, dac, kind))
                if row is None:
                    out.append("–")
                elif kind == "none":
                    out.append(f"{100 * row['accuracy_hardware']:.1f} %")
                else:   # the fine-tuned model's own ideal accuracy beside: training also adds accuracy
                    out.append(f"{100 * row['accuracy_hardware']:.1f} % ({100 * row['accuracy_ideal']:.1f})")
            base = cell.get((adc, dac, "none"))   # energy of the program as trained
            out.append("–" if base is None else f"{base['energy_pj'] / 1e3:.0f}")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", help="TABLE:TITLE, one per net")
    parser.add_argument("--out", default="docs/p4_requirements.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(args.tables), figsize=(5.5 * len(args.tables), 7), squeeze=False,
                             sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for column, spec in enumerate(args.tables):
        path, _, title = spec.partition(":")
        rows = _rows(path)
        top, bottom = axes[0][column], axes[1][column]
        for kind, style, name in (("none", "-", "ideal, as trained"),
                                  ("qat", "--", "ideal, plain QAT fine-tune")):
            ideal = [r["accuracy_ideal"] for r in rows if r["finetune"] == kind]
            if ideal:   # the same at every point (neither depends on the ADC): the most common value
                top.axhline(max(set(ideal), key=ideal.count), color="0.5", lw=0.8, ls=style, label=name)
        for color, dac in zip(("C0", "C3"), sorted({r["dac_bits"] for r in rows}), strict=False):
            for kind, (name, marker, style) in KINDS.items():
                points = sorted((r["adc_bits"], r["accuracy_hardware"]) for r in rows
                                if r["dac_bits"] == dac and r["finetune"] == kind)
                if points:
                    top.plot(*zip(*points, strict=True), marker=marker, ls=style, color=color,
                             label=f"DAC {dac}-bit, {name}")
            energy = sorted((r["adc_bits"], r["energy_pj"] / 1e3) for r in rows
                            if r["dac_bits"] == dac and r["finetune"] == "none")
            if energy:
                bottom.plot(*zip(*energy, strict=True), "o-", color=color, label=f"DAC {dac}-bit")
        top.set_title(f"{title}: accuracy in hardware mode")
        top.set_ylabel("top-1 accuracy")
        top.legend(fontsize=7)
        bottom.set_xlabel("ADC bits")
        bottom.set_ylabel("energy / inference (nJ, dense)")
        bottom.legend(fontsize=7)
        print(f"## {title} ({path})\n\n{table(rows)}\n")
    fig.tight_layout()
    write_atomically(args.out, lambda f: fig.savefig(f, format="png", dpi=110))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
