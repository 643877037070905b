"""``tfxbar info PROGRAM``: ops, tiles, array utilization and bit widths of a program."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tfxbar.cli import EXIT_OK
from tfxbar.cli._common import open_program
from tfxbar.cost.counts import static_counts
from tfxbar.export.format import Program

__all__ = ["program_info", "register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info", help="show a program's layers, tiles, utilization and bit widths",
        description="Per crossbar layer: shape, mapping, tiles and physical arrays, cell "
                    "utilization, input/DAC/ADC/accumulator bits.")
    parser.add_argument("program", help="program file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)
    return parser


def program_info(program: Program) -> dict[str, Any]:
    """Summary of `program`: options, input and one entry per crossbar layer.

    Utilization is used cells / physical cells (tiles × polarities × slices × tile_rows ×
    tile_cols), with the cost model's convention (`tfxbar.cost.LayerCounts`): a tile's
    reference column is one physical column of r cells per tile, counted as used — not one per
    polarity and slice — because the hardware converts it once per tile and DAC cycle.
    """
    options = program.header["options"]
    counts = {layer.op_index: layer for layer in static_counts(program)}
    layers = []
    for i, op in enumerate(program.ops):
        if op["kind"] != "crossbar":
            continue
        a, c = op["attrs"], counts[i]
        layers.append({"index": i, "name": op["name"], "type": a["layer_type"], "rows": a["rows"],
                       "cols": a["cols"], "mapping": a["mapping"], "polarities": len(a["polarities"]),
                       "slices": a["slices"], "slice_bits": a["slice_bits"], "tiles": c.tiles,
                       "arrays": c.arrays, "cells": c.cells, "capacity": c.capacity,
                       "utilization": c.utilization,
                       "input_bits": a["input_bits"], "dac_bits": a["dac_bits"],
                       "dac_cycles": a["dac_cycles"],
                       "adc_bits": a["adc_bits"], "adc_range": a["adc_range"],
                       "acc_bits_required": a["acc_bits_required"]})
    used, capacity = sum(c["cells"] for c in layers), sum(c["capacity"] for c in layers)
    return {"producer": program.header["producer"], "version": program.header["version"],
            "input": program.header["input"], "options": options, "ops": len(program.ops),
            "crossbars": layers, "tiles": sum(layer["tiles"] for layer in layers),
            "arrays": sum(layer["arrays"] for layer in layers),
            "utilization": used / capacity if capacity else 0.0}


def _table(info: dict[str, Any]) -> str:
    o, spec = info["options"], info["input"]
    lines = [f"{info['producer']} program v{info['version']}: input {spec['shape']} "
             f"{spec['bits']}-bit codes, "
             f"{info['ops']} ops, {len(info['crossbars'])} crossbar layers",
             f"tiles {o['tile_rows']}×{o['tile_cols']}, mapping {o['weight_mapping']}, ADC {o['adc_range']}, "
             f"accumulator {o['accumulator_bits']}-bit {o['accumulator_mode']}"]
    head = ("layer", "type", "K×N", "mapping", "cells", "tiles", "arrays", "util", "in/dac", "adc", "acc")
    rows = [head]
    for c in info["crossbars"]:
        rows.append((c["name"], c["type"], f"{c['rows']}×{c['cols']}", c["mapping"],
                     f"{c['polarities']}×{c['slices']}×{c['slice_bits']}b", str(c["tiles"]), str(c["arrays"]),
                     f"{100 * c['utilization']:.0f}%", f"{c['input_bits']}/{c['dac_bits']}×{c['dac_cycles']}",
                     f"{c['adc_bits']} {c['adc_range']}", str(c["acc_bits_required"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for i, r in enumerate(rows):
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
    lines.append(f"total: {info['tiles']} tiles, {info['arrays']} physical arrays, "
                 f"{100 * info['utilization']:.1f}% of their cells used")
    lines.append("cells = polarities × slices × bits per cell; in/dac = input bits / DAC bits × cycles; "
                 "acc = signed accumulator bits the layer needs")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = program_info(open_program(args.program))
    print(json.dumps(info, indent=2) if args.json else _table(info))
    return EXIT_OK
