"""`plan_bitwidths`: the largest input and weight bit widths that fit an accumulator (P5).

P5 (de Bruin et al., 2020) quantizes for accumulator-constrained hardware by maximizing the
input and weight bit widths *subject to* the accumulator size, and only considers
configurations that use the accumulator fully. For a crossbar layer with fan-in K (the rows
of its weight matrix: Dense inputs, or kh·kw·C for Conv2D, kh·kw for DepthwiseConv2D; times
the window size k of any average pooling between the layer and its input quantizer, whose
integer window sums reach k·(2^N − 1)), we assume

- unsigned N-bit input codes, 0 ≤ x ≤ 2^N − 1 (tfxbar's ClippedRound after a ReLU; signed
  inputs, |x| ≤ 2^(N−1), with ``input_signed=True``);
- symmetric signed M-bit weight codes, |q| ≤ 2^(M−1) − 1 (tfxbar's UniformWeights);
- a signed P-bit accumulator, |X| ≤ 2^(P−1) − 1.

The worst case |Σ_k q_k·x_k| = K·x_max·q_max is attained (all weights at the top code, all
inputs at the top code), so (N, M) is *guaranteed* to fit iff

    K · (2^N − 1) · (2^(M−1) − 1) ≤ 2^(P−1) − 1.

The Pareto set holds, for each M, the largest such N (no bit can be added to either without
overflow) — exactly P5's "configurations that fully use the accumulator". One pair is chosen:
``objective="sum"`` maximizes N + M (ties: the more balanced pair), ``"balanced"`` maximizes
min(N, M). A2Q's bound (`a2q_l1_bound`) replaces K·q_max by the channel's actual ‖q‖₁, which
`A2QWeights` enforces during training. The bound concerns the signed products the accumulator
sums (differential mapping); an offset mapping accumulates non-negative cells and subtracts
the offset at the end, which can need one more bit — `tfxbar.check.check_program` reports the
exact figure for an exported program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.compat import require_tf_keras
from tfxbar.scheme.plan import _VALUE_PRESERVING, _producer

__all__ = ["BitwidthPlan", "LayerBitwidths", "a2q_l1_bound", "fits", "plan_bitwidths"]

_CROSSBAR = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv1D, keras.layers.DepthwiseConv2D)


def a2q_l1_bound(input_bits: int, accumulator_bits: int, input_signed: bool = False) -> float:
    """A2Q's per-channel L1 bound on integer weights: (2^(P−1) − 1)·2^(σ − N).

    Arguments:
        input_bits: N.
        accumulator_bits: P.
        input_signed: σ = 1 if the inputs are signed, else 0.
    """
    sigma = 1 if input_signed else 0
    return (2 ** (accumulator_bits - 1) - 1) * 2.0 ** (sigma - input_bits)


def _input_max(bits: int, signed: bool) -> int:
    return 2 ** (bits - 1) if signed else 2 ** bits - 1


def fits(fan_in: int, input_bits: int, weight_bits: int, accumulator_bits: int,
         input_signed: bool = False) -> bool:
    """Whether K·x_max·(2^(M−1) − 1) ≤ 2^(P−1) − 1 (see the module docstring)."""
    worst = fan_in * _input_max(input_bits, input_signed) * (2 ** (weight_bits - 1) - 1)
    return worst <= 2 ** (accumulator_bits - 1) - 1


@dataclasses.dataclass
class LayerBitwidths:
    """The plan of one crossbar layer.

    Attributes:
        name, kind, fan_in: the layer.
        pareto: the (input bits, weight bits) pairs that fit and use the accumulator fully.
        input_bits, weight_bits: the chosen pair (None when nothing fits).
        worst_case: K·x_max·q_max of the chosen pair.
    """

    name: str
    kind: str
    fan_in: int
    pareto: list[tuple[int, int]]
    input_bits: int | None
    weight_bits: int | None
    worst_case: int | None


@dataclasses.dataclass
class BitwidthPlan:
    """Per-layer bit widths for a P-bit accumulator; ``str(plan)`` is a table."""

    accumulator_bits: int
    objective: str
    input_signed: bool
    layers: dict[str, LayerBitwidths]

    def layer_specs(self, a2q: bool = False) -> dict[str, Any]:
        """`LayerSpec`s for ``tfxbar.quantize_model(model, preset, layer_specs=...)``.

        Arguments:
            a2q: use `A2QWeights` (per-channel L1 bound for the chosen input bits) instead of
                `UniformWeights`; with it, the accumulator fits by construction even for a
                wider weight width than the worst case allows.

        Raises:
            ValueError: a layer has no pair that fits.
        """
        from tfxbar.check.a2q import A2QWeights
        from tfxbar.quantizers import ClippedRound, UniformWeights
        from tfxbar.scheme import LayerSpec

        specs = {}
        for name, layer in self.layers.items():
            if layer.input_bits is None or layer.weight_bits is None:
                raise ValueError(f"layer {name!r} (fan-in {layer.fan_in}) cannot fit a "
                                 f"{self.accumulator_bits}-bit accumulator at any bit width")
            if a2q:
                weights = A2QWeights(layer.weight_bits, self.accumulator_bits, layer.input_bits,
                                     self.input_signed)
            else:
                weights = UniformWeights(layer.weight_bits)
            specs[name] = LayerSpec(weights, ClippedRound(layer.input_bits))
        return specs

    def __str__(self) -> str:
        rows = [("layer", "type", "fan-in", "input bits", "weight bits", "worst |acc|", "pareto (N, M)")]
        for layer in self.layers.values():
            rows.append((layer.name, layer.kind, str(layer.fan_in), str(layer.input_bits or "-"),
                         str(layer.weight_bits or "-"), str(layer.worst_case or "-"),
                         " ".join(f"({n},{m})" for n, m in layer.pareto) or "none fits"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"bit widths for a {self.accumulator_bits}-bit signed accumulator "
                 f"(|acc| ≤ {2 ** (self.accumulator_bits - 1) - 1}), objective {self.objective}"]
        for i, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if i == 0:
                lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
        return "\n".join(lines)


def _fan_in(layer: keras.layers.Layer) -> int:
    """Products one output sums: Dense inputs, kh·kw·C_in/groups for Conv2D (its kernel is
    already (kh, kw, C_in/groups, out)), k·C_in for Conv1D, kh·kw for DepthwiseConv2D."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return int(layer.depthwise_kernel.shape[0]) * int(layer.depthwise_kernel.shape[1])
    shape = [int(d) for d in layer.kernel.shape]
    fan_in = 1
    for d in shape[:-1]:
        fan_in *= d
    return fan_in


def _window_sums(graph_layer: keras.layers.Layer) -> int:
    """How many quantized codes each input of `graph_layer` sums: average pooling between a
    crossbar layer and its input quantizer reaches the crossbar as integer window sums (the
    exporter folds 1/k into the scales), so its inputs go up to k·(2^N − 1)."""
    factor, node = 1, _producer(graph_layer)
    while True:
        inner = node.layer if isinstance(node, tfmot_api.QuantizeWrapper) else node
        if isinstance(inner, keras.layers.AveragePooling2D):
            factor *= int(inner.pool_size[0]) * int(inner.pool_size[1])
        elif isinstance(inner, keras.layers.GlobalAveragePooling2D):
            factor *= int(inner.input_shape[1]) * int(inner.input_shape[2])
        elif isinstance(inner, keras.layers.AveragePooling1D):
            factor *= int(inner.pool_size[0])
        elif isinstance(inner, keras.layers.GlobalAveragePooling1D):
            factor *= int(inner.input_shape[1])
        elif not isinstance(inner, _VALUE_PRESERVING):
            return factor
        node = _producer(node)


def _pareto(fan_in: int, accumulator_bits: int, signed: bool, input_range: range,
            weight_range: range) -> list[tuple[int, int]]:
    best: list[tuple[int, int]] = []
    for m in weight_range:
        ns = [n for n in input_range if fits(fan_in, n, m, accumulator_bits, signed)]
        if ns:
            best.append((max(ns), m))
    # Keep the pairs no other pair dominates.
    return [p for p in best if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in best)]


def plan_bitwidths(model: keras.Model, accumulator_bits: int = 16, *, objective: str = "sum",
                   input_bits: Mapping[str, int] | None = None, max_input_bits: int = 8,
                   max_weight_bits: int = 8, input_signed: bool = False) -> BitwidthPlan:
    """The largest (input bits N, weight bits M) per crossbar layer that cannot overflow.

    Arguments:
        model: a built tf_keras model, float or quantized (QuantizeWrappers are looked through).
        accumulator_bits: P, the signed accumulator width.
        objective: ``"sum"`` (max N + M) or ``"balanced"`` (max min(N, M)).
        input_bits: pin N for some layers by name (e.g. 8-bit pixels for the first layer);
            M is then maximized.
        max_input_bits, max_weight_bits: search limits (tfxbar's quantizers: N ≤ 8, 2 ≤ M ≤ 8).
        input_signed: inputs are signed (σ = 1) instead of unsigned codes.

    Returns:
        A `BitwidthPlan`; ``plan.layer_specs()`` feeds `tfxbar.quantize_model`.

    Raises:
        ValueError: bad `objective`/limits, or `input_bits` names a non-crossbar layer.
        TypeError: a Keras 3 model.
    """
    require_tf_keras(model)
    if objective not in ("sum", "balanced"):
        raise ValueError(f"objective must be 'sum' or 'balanced', got {objective!r}")
    if not 2 <= accumulator_bits <= 64 or max_input_bits < 1 or max_weight_bits < 2:
        raise ValueError("need 2 ≤ accumulator_bits ≤ 64, max_input_bits ≥ 1, max_weight_bits ≥ 2")
    pinned = dict(input_bits or {})
    layers: dict[str, LayerBitwidths] = {}
    for wrapper in model.layers:
        layer = wrapper.layer if isinstance(wrapper, tfmot_api.QuantizeWrapper) else wrapper
        if not isinstance(layer, _CROSSBAR):
            continue
        k = _fan_in(layer) * _window_sums(wrapper)
        inputs = range(pinned[layer.name], pinned[layer.name] + 1) if layer.name in pinned else range(
            1, max_input_bits + 1)
        pareto = _pareto(k, accumulator_bits, input_signed, inputs, range(2, max_weight_bits + 1))
        if objective == "sum":
            key = lambda p: (p[0] + p[1], -abs(p[0] - p[1]), p[1])  # noqa: E731
        else:
            key = lambda p: (min(p), p[0] + p[1], p[1])  # noqa: E731
        chosen = max(pareto, key=key) if pareto else (None, None)
        worst = (k * _input_max(chosen[0], input_signed) * (2 ** (chosen[1] - 1) - 1)
                 if pareto else None)
        layers[layer.name] = LayerBitwidths(layer.name, type(layer).__name__, k, pareto, chosen[0],
                                            chosen[1], worst)
    unknown = sorted(set(pinned) - set(layers))
    if unknown:
        raise ValueError(f"input_bits names layers that are not crossbar layers of the model: {unknown}")
    return BitwidthPlan(int(accumulator_bits), objective, bool(input_signed), layers)
