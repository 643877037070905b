"""`check_program`: the accumulator-bound report of a program (static bounds, optional data).

Each row is one bound of one crossbar layer:

- ``out``: the final accumulator X of an output channel (signed);
- ``acc``: the running digital accumulator over the stages of one tile (signed);
- ``ref``: the Σx register of the offset mapping after one reference tile (signed);
- ``adc``: the partial sum one DAC cycle feeds a tile column's ADC (unsigned code).

``bits`` is what the bound needs, ``budget`` what the hardware has (the accumulator width, or
the ADC resolution), ``margin = budget − bits``. A signed row with a negative margin is a
VIOLATION (the accumulator can overflow); an ADC row with a negative margin clips, which is a
violation only if the program claims lossless ADCs. With ``policy="data"`` the observed
maxima on calibration data decide instead of the static bounds (P5's empirical setting).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from tfxbar.check.bounds import CrossbarBounds, program_bounds, signed_bits, unsigned_bits
from tfxbar.check.data_bounds import ObservedBounds, observe
from tfxbar.export.format import Program

__all__ = ["CheckReport", "Row", "check_program"]

_SIGNED = ("out", "acc", "ref")


@dataclasses.dataclass
class Row:
    """One bound: layer, quantity, tile (None: whole layer), column (output channel; ``"ref"``:
    the tile's reference column)."""

    layer: str
    quantity: str
    tile: int | None
    column: int | str | None
    lo: int
    hi: int
    bits: int
    budget: int
    tight: bool
    observed_lo: int | None = None
    observed_hi: int | None = None
    observed_bits: int | None = None
    status: str = "ok"

    @property
    def margin(self) -> int:
        """Budget minus the bits the static bound needs (negative: can overflow or clip)."""
        return self.budget - self.bits

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "margin": self.margin}


@dataclasses.dataclass
class CheckReport:
    """The checker's result: rows, the budget, and the verdict.

    Attributes:
        accumulator_bits: the signed accumulator budget checked against.
        policy: ``"static"`` or ``"data"``.
        rows: the table rows.
        layers: per crossbar layer, ``{"bits": static, "observed_bits": … or None}``.
        notes: inconsistencies between the file's recorded bounds and the recomputed ones.
        calibration_examples: how many calibration inputs were used (0: none).
    """

    accumulator_bits: int
    policy: str
    rows: list[Row]
    layers: dict[str, dict[str, Any]]
    notes: list[str] = dataclasses.field(default_factory=list)
    calibration_examples: int = 0

    @property
    def violations(self) -> list[Row]:
        return [r for r in self.rows if r.status == "VIOLATION"]

    @property
    def ok(self) -> bool:
        """No violation and no inconsistency in the file."""
        return not self.violations and not self.notes

    def to_dict(self) -> dict[str, Any]:
        return {"accumulator_bits": self.accumulator_bits, "policy": self.policy, "ok": self.ok,
                "calibration_examples": self.calibration_examples, "layers": self.layers,
                "notes": self.notes, "rows": [r.as_dict() for r in self.rows]}

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (every row, the verdict, the per-layer summary)."""
        return json.dumps(self.to_dict(), indent=indent, default=int)

    def __str__(self) -> str:
        observed = self.calibration_examples > 0
        head = ["layer", "quantity", "tile", "column", "bound", "bits"]
        head += ["observed", "obs bits"] if observed else []
        head += ["budget", "margin", "status"]
        table = [head]
        for r in self.rows:
            cells = [r.layer, r.quantity, "-" if r.tile is None else str(r.tile),
                     "-" if r.column is None else str(r.column),
                     f"[{r.lo}, {r.hi}]" + ("" if r.tight else "*"), str(r.bits)]
            if observed:
                seen = r.observed_hi is not None
                cells += [f"[{r.observed_lo}, {r.observed_hi}]" if seen else "-",
                          str(r.observed_bits) if seen else "-"]
            cells += [str(r.budget), f"{r.margin:+d}", r.status]
            table.append(cells)
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        lines = [f"tfxbar accumulator check: {self.accumulator_bits}-bit signed accumulator, "
                 f"policy {self.policy}" + (f", {self.calibration_examples} calibration inputs"
                                            if observed else "")]
        for i, row in enumerate(table):
            lines.append("  ".join(c.rjust(w) if 2 <= j < len(row) - 1 else c.ljust(w)
                                   for j, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
            if i == 0:
                lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
        lines.append("(* sound but not attained: the column passes a lossy ADC)"
                     if any(not r.tight for r in self.rows) else "")
        for name, info in self.layers.items():
            seen = "" if info["observed_bits"] is None else f", {info['observed_bits']} observed"
            lines.append(f"{name}: needs {info['bits']} accumulator bits{seen}")
        lines += [f"NOTE: {n}" for n in self.notes]
        verdict = "OK" if self.ok else f"VIOLATION ({len(self.violations)} rows)"
        lines.append(f"verdict: {verdict}")
        return "\n".join(line for line in lines if line)


def _worst(bits: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> int:
    """Index of the column needing the most bits (ties: the largest magnitude)."""
    key = bits.astype(np.float64) * 2.0 ** 64 + np.maximum(np.abs(hi), np.abs(lo)).astype(np.float64)
    return int(np.argmax(key))


def _signed_rows(b: CrossbarBounds, seen: ObservedBounds | None, budget: int,
                 program: Program, per_column: bool) -> list[dict[str, Any]]:
    attrs = program.ops[b.index]["attrs"]
    arrays = program.op_arrays(b.index)
    out = []

    def add(quantity: str, tile: int | None, cols: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            tight: np.ndarray, olo: np.ndarray | None, ohi: np.ndarray | None) -> None:
        bits = np.array([signed_bits(int(a), int(z)) for a, z in zip(lo, hi, strict=True)])
        picks = range(len(cols)) if per_column else [_worst(bits, hi, lo)]
        for i in picks:
            row = {"layer": b.name, "quantity": quantity, "tile": tile, "column": int(cols[i]),
                   "lo": int(lo[i]), "hi": int(hi[i]), "bits": int(bits[i]), "budget": budget,
                   "tight": bool(tight[i])}
            if olo is not None and ohi is not None:
                row.update(observed_lo=int(olo[i]), observed_hi=int(ohi[i]),
                           observed_bits=signed_bits(int(olo[i]), int(ohi[i])))
            out.append(row)

    n = attrs["cols"]
    add("out", None, np.arange(n), b.out_lo, b.out_hi, b.exact,
        None if seen is None else seen.out_lo, None if seen is None else seen.out_hi)
    for t, (lo, hi) in enumerate(b.tile_acc):
        cols = arrays[f"tile{t}.cols"]
        obs = None if seen is None else seen.tile_acc[t]
        add("acc", t, cols, np.minimum(lo, 0), np.maximum(hi, 0), b.exact[cols],
            None if obs is None else np.minimum(obs[0], 0), None if obs is None else np.maximum(obs[1], 0))
    for t, total in enumerate(b.ref_total):
        if total is not None:
            row = {"layer": b.name, "quantity": "ref", "tile": t, "column": None, "lo": 0, "hi": total,
                   "bits": signed_bits(0, total), "budget": budget, "tight": bool(b.exact.all())}
            if seen is not None:
                row.update(observed_lo=0, observed_hi=seen.ref_total[t],
                           observed_bits=signed_bits(0, seen.ref_total[t]))
            out.append(row)
    return out


def _adc_rows(b: CrossbarBounds, seen: ObservedBounds | None, program: Program,
              per_column: bool) -> list[dict[str, Any]]:
    arrays = program.op_arrays(b.index)
    out = []
    for t, (partial, codes) in enumerate(zip(b.adc, b.adc_codes, strict=True)):
        cols = arrays[f"tile{t}.cols"]
        top, code = partial.max(axis=(0, 1)), codes.max(axis=(0, 1))
        bits = np.array([unsigned_bits(int(c)) for c in code])
        picks = range(len(cols)) if per_column else [_worst(bits, top, np.zeros_like(top))]
        for i in picks:
            row = {"layer": b.name, "quantity": "adc", "tile": t, "column": int(cols[i]), "lo": 0,
                   "hi": int(top[i]), "bits": int(bits[i]), "budget": b.adc_bits, "tight": True}
            if seen is not None:   # bits of the observed ADC code, as the static bits: after the step
                shift = arrays[f"tile{t}.adc_shift"].astype(np.int64)
                observed = (seen.adc[t] + ((1 << shift) >> 1)) >> shift
                row.update(observed_lo=0, observed_hi=int(seen.adc[t].max(axis=(0, 1))[i]),
                           observed_bits=unsigned_bits(int(observed.max(axis=(0, 1))[i])))
            out.append(row)
        if b.ref[t] is not None:   # the reference column's own ADC (Σx of the tile's rows)
            step = int(arrays[f"tile{t}.ref_shift"][0])
            code = (b.ref[t] + ((1 << step) >> 1)) >> step
            row = {"layer": b.name, "quantity": "adc", "tile": t, "column": "ref", "lo": 0,
                   "hi": int(b.ref[t]), "bits": unsigned_bits(int(code)), "budget": b.adc_bits, "tight": True}
            if seen is not None and seen.ref[t] is not None:
                peak = int(seen.ref[t])
                row.update(observed_lo=0, observed_hi=peak,
                           observed_bits=unsigned_bits((peak + ((1 << step) >> 1)) >> step))
            out.append(row)
    return out


def _consistency(program: Program, b: CrossbarBounds) -> list[str]:
    arrays, attrs = program.op_arrays(b.index), program.ops[b.index]["attrs"]
    notes = []
    lo, hi = np.where(b.weights < 0, b.weights, 0).sum(0), np.where(b.weights > 0, b.weights, 0).sum(0)
    if np.any(arrays["acc_lo"] > lo * b.input_max) or np.any(arrays["acc_hi"] < hi * b.input_max):
        notes.append(f"{b.name}: the file's acc_lo/acc_hi understate the accumulator range of its weights")
    need = signed_bits(int((lo * b.input_max).min()), int((hi * b.input_max).max()))
    if attrs["acc_bits_required"] < need:
        notes.append(f"{b.name}: the file's acc_bits_required={attrs['acc_bits_required']} is below "
                     f"the {need} bits its weights need")
    return notes


def check_program(program: Program, accumulator_bits: int | None = None, calibration: Any = None, *,
                  policy: str = "static", per_column: bool = False, batch_size: int = 256) -> CheckReport:
    """Check every crossbar of `program` against a signed accumulator of `accumulator_bits`.

    Arguments:
        program: a `Program` (e.g. from `tfxbar.load_program`).
        accumulator_bits: the budget; None uses the program's ``options.accumulator_bits``.
        calibration: optional integer input codes ``(N, *input.shape)``; adds the observed
            maxima (`tfxbar.check.data_bounds.observe`).
        policy: ``"static"`` (violations from the worst-case bounds; sound) or ``"data"``
            (from the observed maxima; needs `calibration`).
        per_column: one row per tile column / output channel instead of the worst per tile.
        batch_size: batch size of the calibration run.

    Returns:
        A `CheckReport`; ``str(report)`` is the table, ``report.ok`` the verdict.

    Raises:
        ValueError: bad `accumulator_bits`/`policy`, ``policy="data"`` without calibration, or
            calibration inputs that do not fit the program.
    """
    default = program.header["options"]["accumulator_bits"]
    budget = int(default if accumulator_bits is None else accumulator_bits)   # 0 is an error, not "default"
    if not 2 <= budget <= 64:
        raise ValueError(f"accumulator_bits must be in 2..64, got {budget}")
    if policy not in ("static", "data"):
        raise ValueError(f"policy must be 'static' or 'data', got {policy!r}")
    if policy == "data" and calibration is None:
        raise ValueError("policy='data' needs calibration inputs")
    bounds = program_bounds(program)
    observed = observe(program, np.asarray(calibration), batch_size) if calibration is not None else {}
    lossless = program.header["options"]["adc_range"] == "lossless"
    rows, layers, notes = [], {}, []
    for index, b in bounds.items():
        seen = observed.get(index)
        seen = seen if seen is not None and seen.patches else None
        notes += _consistency(program, b)
        found = _signed_rows(b, seen, budget, program, per_column) + _adc_rows(b, seen, program, per_column)
        for row in found:
            r = Row(**row)
            need = r.observed_bits if policy == "data" and r.observed_bits is not None else r.bits
            if need > r.budget:
                r.status = "VIOLATION" if r.quantity in _SIGNED or lossless else "clips"
            rows.append(r)
        signed = [r for r in rows if r.layer == b.name and r.quantity in _SIGNED]
        layers[b.name] = {"bits": b.acc_bits,
                          "observed_bits": max((r.observed_bits for r in signed), default=None)
                          if seen is not None else None}
    examples = 0 if calibration is None else len(calibration)
    return CheckReport(budget, policy, rows, layers, notes, examples)
