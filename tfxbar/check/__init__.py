"""Accumulator-bound checking (P5, A2Q): static and data-driven bounds of crossbar programs.

`check_program`, the bounds and the report are numpy-only, so a program file can be checked
where TensorFlow is not installed. `plan_bitwidths` and `A2QWeights` (which work on Keras
models) are imported lazily.
"""

from __future__ import annotations

from typing import Any

from tfxbar.check.bounds import CrossbarBounds, attaining_input, crossbar_bounds, program_bounds
from tfxbar.check.data_bounds import ObservedBounds, observe
from tfxbar.check.report import CheckReport, Row, check_program

__all__ = ["A2QWeights", "BitwidthPlan", "CheckReport", "CrossbarBounds", "LayerBitwidths",
           "ObservedBounds", "Row", "a2q_l1_bound", "attaining_input", "check_program",
           "crossbar_bounds", "fits", "observe", "plan_bitwidths", "program_bounds"]

_LAZY = {
    "plan_bitwidths": "tfxbar.check.planner",
    "BitwidthPlan": "tfxbar.check.planner",
    "LayerBitwidths": "tfxbar.check.planner",
    "a2q_l1_bound": "tfxbar.check.planner",
    "fits": "tfxbar.check.planner",
    "A2QWeights": "tfxbar.check.a2q",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfxbar.check' has no attribute {name!r}")
