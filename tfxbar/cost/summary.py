"""`tfxbar.summary`: per-layer crossbar cost table of a program or a quantized model.

In the spirit of ``larq.models.summary``: one row per crossbar layer with its weights, cells,
tiles, array utilization, ADC and accumulator resolution, DAC cycles and ADC conversions per
inference, then totals and an energy breakdown (`EnergyModel`). With `data`, the program runs
on it and the sparsity-aware counts (P4) and energies are added.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from tfxbar.cost.counts import LayerCounts, measure, static_counts
from tfxbar.cost.energy import ENERGY_KINDS, EnergyModel
from tfxbar.export.format import Program, load_program

__all__ = ["Summary", "summary"]

_SUMMED = ("cells", "capacity", "tiles", "arrays", "columns", "zero_columns", "adc_conversions",
           "dac_drives", "cell_reads", "shift_adds", "accumulates", "compares")


@dataclasses.dataclass
class Summary:
    """Cost report of a program: per-layer counts, energies and totals.

    Arguments:
        layers: one `LayerCounts` per crossbar layer.
        energy: the `EnergyModel` used.
        header: the program header (options, input).
        outputs: the program's outputs on the measured data, or None.
    """

    layers: list[LayerCounts]
    energy: EnergyModel
    header: dict[str, Any]
    outputs: np.ndarray | None = None

    @property
    def measured(self) -> bool:
        """Whether sparsity-aware counts were measured on data."""
        return bool(self.layers) and all(layer.measured is not None for layer in self.layers)

    def layer_energy(self, layer: LayerCounts, sparse: bool = False) -> dict[str, float]:
        """Energy (pJ per inference) of `layer` by kind; `sparse`: with sparsity-aware skipping."""
        per_op = self.energy.per_op(layer.adc_bits, layer.dac_bits)
        counts = layer.counts(sparse)
        return {kind: counts[kind] * per_op[kind] for kind in ENERGY_KINDS}

    @property
    def totals(self) -> dict[str, Any]:
        """Totals per inference; energies in pJ. With measured data also ``energy_sparse``,
        ``adc_conversions_sparse``, the skipped conversions, ``adc_reduction`` (1 − sparse/dense
        ADC energy) and ``efficiency_gain`` (dense / sparse total energy)."""
        out: dict[str, Any] = {key: sum(getattr(layer, key) for layer in self.layers) for key in _SUMMED}
        out["utilization"] = out["cells"] / out["capacity"] if out["capacity"] else 0.0
        out["energy_dense"] = _sum_kinds(self.layer_energy(layer) for layer in self.layers)
        if self.measured:
            out["energy_sparse"] = _sum_kinds(self.layer_energy(layer, True) for layer in self.layers)
            for key in ("adc_skipped_zero_input", "adc_skipped_zero_column", "tile_cycles",
                        "tile_cycles_zero"):
                out[key] = sum(getattr(layer.measured, key) for layer in self.layers)
            out["adc_conversions_sparse"] = sum(layer.measured.adc_conversions for layer in self.layers)
            dense, sparse = out["energy_dense"], out["energy_sparse"]
            out["adc_reduction"] = 1 - sparse["adc"] / dense["adc"] if dense["adc"] else 0.0
            total = sum(sparse.values())
            # None when the data spent no energy at all (all-zero inputs): JSON has no infinity.
            out["efficiency_gain"] = sum(dense.values()) / total if total else None
            out["examples"] = self.layers[0].measured.examples
        return out

    # -- output ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: options, energy model, layers (with energies) and totals."""
        layers = []
        for layer in self.layers:
            item = dataclasses.asdict(layer)
            item["utilization"] = layer.utilization
            item["energy_dense"] = self.layer_energy(layer)
            if layer.measured is not None:
                item["energy_sparse"] = self.layer_energy(layer, True)
            layers.append(item)
        return {"options": self.header["options"], "input": self.header["input"],
                "energy_model": self.energy.to_dict(), "energy_unit": "pJ per inference",
                "layers": layers, "totals": self.totals}

    def to_json(self, indent: int | None = 2) -> str:
        """`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def __str__(self) -> str:
        return _table(self)


def _sum_kinds(items: Any) -> dict[str, float]:
    total = dict.fromkeys(ENERGY_KINDS, 0.0)
    for item in items:
        for kind in ENERGY_KINDS:
            total[kind] += item[kind]
    return total


def _fmt(value: float) -> str:
    return f"{value:,.0f}"


def _unit(total_pj: float) -> tuple[str, float]:
    """A readable energy unit for a table whose largest value is `total_pj`."""
    for name, scale in (("µJ", 1e6), ("nJ", 1e3)):
        if total_pj >= 10 * scale:
            return name, scale
    return "pJ", 1.0


def _table(s: Summary) -> str:
    options, spec = s.header["options"], s.header["input"]
    t = s.totals
    unit, scale = _unit(sum(t["energy_dense"].values()))

    def _nj(value_pj: float) -> str:
        return f"{value_pj / scale:,.2f}"

    heads = ["Layer", "Type", "Weights", "P×L×b", "Cells", "Tiles", "Util", "ADC bits",
             "Acc bits", "DAC cyc", "ADC conv/inf", f"E {unit}/inf"]
    if s.measured:
        heads += ["ADC conv sparse", "skip in/col", f"E sparse {unit}"]
    rows = []
    for layer in s.layers:
        row = [layer.name, layer.layer_type, layer.weights,
               f"{layer.polarities}×{layer.slices}×{layer.slice_bits}b", _fmt(layer.cells),
               str(layer.tiles), f"{layer.utilization * 100:.1f}%",
               f"{layer.adc_bits_lossless}/{layer.adc_bits}", f"{layer.acc_bits_required}/{layer.acc_bits}",
               str(layer.dac_cycles), _fmt(layer.adc_conversions), _nj(sum(s.layer_energy(layer).values()))]
        if layer.measured is not None:
            m = layer.measured
            row += [_fmt(m.adc_conversions),
                    f"{_pct(m.adc_skipped_zero_input, layer.adc_conversions)}/"
                    f"{_pct(m.adc_skipped_zero_column, layer.adc_conversions)}",
                    _nj(sum(s.layer_energy(layer, True).values()))]
        rows.append(row)
    total = ["Total", "", "", "", _fmt(t["cells"]), str(t["tiles"]), f"{t['utilization'] * 100:.1f}%",
             "", "", "", _fmt(t["adc_conversions"]), _nj(sum(t["energy_dense"].values()))]
    if s.measured:
        total += [_fmt(t["adc_conversions_sparse"]),
                  f"{_pct(t['adc_skipped_zero_input'], t['adc_conversions'])}/"
                  f"{_pct(t['adc_skipped_zero_column'], t['adc_conversions'])}",
                  _nj(sum(t["energy_sparse"].values()))]
    widths = [max(len(r[i]) for r in [heads, *rows, total]) for i in range(len(heads))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "─" * len(line(heads))
    out = [f"tfxbar summary — input {spec['shape']} ({spec['bits']}-bit codes); tiles "
           f"{options['tile_rows']}×{options['tile_cols']}, mapping {options['weight_mapping']}, "
           f"ADC {options['adc_range']}", rule, line(heads), rule, *map(line, rows), rule, line(total), rule,
           "ADC bits: lossless/configured; Acc bits: needed/configured; P×L×b: polarities × slices × "
           "bits per cell", f"Energy model: {s.energy.name}"]
    kinds = "  ".join(f"{k} {_nj(v)}" for k, v in t["energy_dense"].items())
    out.append(f"Energy {unit}/inference (dense):  {kinds}")
    if s.measured:
        kinds = "  ".join(f"{k} {_nj(v)}" for k, v in t["energy_sparse"].items())
        skip_in = _pct(t["adc_skipped_zero_input"], t["adc_conversions"])
        skip_col = _pct(t["adc_skipped_zero_column"], t["adc_conversions"])
        out += [f"Energy {unit}/inference (sparse): {kinds}",
                f"Sparsity-aware ({t['examples']} inputs): ADC conversions skipped {skip_in} (zero input "
                f"slice) + {skip_col} (zero column); ADC energy −{t['adc_reduction'] * 100:.1f}%; "
                f"energy efficiency {_gain(t['efficiency_gain'])}"]
    return "\n".join(out)


def _pct(part: float, whole: float) -> str:
    return f"{part / whole * 100:.1f}%" if whole else "-"


def _as_program(model_or_program: Any, config: Any) -> tuple[Program, dict[str, str]]:
    """A `Program` and, for a Keras model, weight labels from its quantizers."""
    if isinstance(model_or_program, Program):
        return model_or_program, {}
    if isinstance(model_or_program, (str, os.PathLike)):
        return load_program(model_or_program), {}
    from tfxbar.export.config import ConverterConfig
    from tfxbar.export.converter import CrossbarConverter
    from tfxbar.introspect import quantized_kernels

    if isinstance(config, dict):
        config = ConverterConfig(**config)
    program = CrossbarConverter(model_or_program, config).convert()
    labels = {}
    for kernel in quantized_kernels(model_or_program):
        q = kernel.quantizer
        label = f"{type(q).__name__.removesuffix('Weights').lower()}{q.bits}"
        labels[kernel.wrapper.name] = labels[kernel.layer.name] = label
    return program, labels


def summary(model_or_program: Any, *, data: np.ndarray | None = None, energy: EnergyModel | None = None,
            config: Any = None, batch_size: int = 128) -> Summary:
    """Cost summary of a crossbar program: a printable table (`str`) and `to_json`.

    Arguments:
        model_or_program: a `Program`, a program file path, or a `tfxbar.quantize_model` model
            (converted with `CrossbarConverter` and `config`).
        data: optional input codes ``(N, *input.shape)`` (integers, e.g. uint8 pixels; real
            values are quantized with ``program.quantize_input``) to measure sparsity-aware
            skipping on.
        energy: the `EnergyModel` (default: `EnergyModel()`, ISAAC + Horowitz figures).
        config: a `ConverterConfig` or a dict of its fields, for a Keras model.
        batch_size: interpreter batch size when measuring.

    Returns:
        A `Summary`; ``print(summary(...))`` shows the table.

    References:
        Larq's ``larq.models.summary`` (the table's spirit); P4 (Bao et al., Frontiers in
        Electronics 2022) for sparsity-aware processing; docs/cost_model.md for the formulas.

    Example:
        >>> print(tfxbar.summary("mnist.xbar", data=x_test_uint8[:1000]))
    """
    program, labels = _as_program(model_or_program, config)
    layers = static_counts(program)
    for layer in layers:
        layer.weights = labels.get(layer.name, layer.weights)
    outputs = None
    if data is not None:
        data = np.asarray(data)
        if not np.issubdtype(data.dtype, np.integer):
            data = program.quantize_input(data)
        found, outputs = measure(program, data, batch_size=batch_size)
        for layer in layers:
            layer.measured = found[layer.name]
    return Summary(layers, energy or EnergyModel(), program.header, outputs)


def _gain(gain: float | None) -> str:
    return "– (the inputs spent no energy)" if gain is None else f"×{gain:.2f}"
