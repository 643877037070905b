"""Layer-by-layer fidelity of a converted program with the Keras model it came from.

The program computes the *exact* real-valued model: integer accumulators, and per-channel
thresholds found in float64 so that every code is clip(round_half_even(v / step)) of the exact
pre-activation v. Keras evaluates the same model in float32. Where the exact v / step lies
within float32 rounding error of a rounding boundary k + ½, the two may legitimately give
codes one apart, and one such difference propagates to every activation downstream of it.
`measure` therefore reports, for every quantized layer (every program tap):

- ``raw``: program activations (end to end) ≠ Keras activations — the plain figure;
- ``local``: the exact layer, fed with *Keras's* input codes, ≠ Keras — differences made in
  this layer, not inherited from an earlier one;
- ``float32_ties``: the local differences whose exact v / step lies within an a-priori bound
  of Keras's float32 error of a rounding boundary (`float32_error_bound`) — float32
  artifacts of Keras, not errors of the program; ``local - float32_ties`` are unexplained;
- ``program_exact``: program activations ≠ the exact model fed with the program's own input
  codes — a converter or interpreter bug if not 0;
- ``tie_window``: activations (of the exact layer on Keras's inputs) that lie within the bound
  of a rounding boundary, i.e. where a float32 tie *could* occur — the bound is a worst case
  and therefore loose, and this count says how permissive the tie criterion is;
- ``largest_tie_distance``: the largest |v/step − (k + ½)| / |v/step| over the local
  differences — how close to a boundary they actually were (float32 noise is ~1e−7).

The exact model is evaluated here independently of the interpreter (numpy int64/float64 from
the converter's lowered graph), so the comparison also checks the program's cells and
thresholds.

The float32 error bound (absolute, per activation, in units of the quantizer step) follows
the forward pass: a dot product of K float32 products carries at most
(K + 2)·u·Σ|x_k·w_k| to first order (Higham, *Accuracy and Stability of Numerical
Algorithms*, §3.1; the +2 covers rounding the stored inputs and weights), u = 2^−24, whatever
the summation order (blocked, pairwise or FMA); every affine stage a·x + b (bias, each half
of a BatchNormalization, which the converter lowers as (x − mean)·a + beta, in Keras's order)
adds 8·u·(|a·x| + |b|) and scales the incoming error by |a|; ReLU is 1-Lipschitz; an average pool
adds k·u·Σ|x|; the final division by the step adds u·|v / step|; a max-pool takes the largest
error of its window.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tfxbar.export.elementwise import Affine, Relu
from tfxbar.export.ir import Graph
from tfxbar.pipelines import inference_batches

__all__ = ["Fidelity", "LayerFidelity", "float32_error_bound", "measure"]

#: Unit roundoff of float32.
U32 = 2.0 ** -24
#: Rounding errors of one float32 affine stage a·x + b, in units of u·(|a·x| + |b|): computing
#: a (BN: var + ε, a reciprocal square root of a few ulps, ·γ), the product and the sum.
_AFFINE_ULPS = 8


@dataclasses.dataclass(frozen=True)
class LayerFidelity:
    """Activation agreement of one quantized layer (see the module docstring)."""

    layer: str
    size: int
    raw: int
    local: int
    float32_ties: int
    program_exact: int
    tie_window: int = 0
    largest_tie_distance: float = 0.0

    @property
    def unexplained(self) -> int:
        """Local differences that are not float32 ties."""
        return self.local - self.float32_ties

    @property
    def raw_agreement(self) -> float:
        return 1.0 - self.raw / max(self.size, 1)

    @property
    def local_agreement(self) -> float:
        return 1.0 - self.local / max(self.size, 1)

    @property
    def tie_adjusted_agreement(self) -> float:
        """Local agreement counting float32 ties as agreeing."""
        return 1.0 - self.unexplained / max(self.size, 1)


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """Fidelity of a program on one data set."""

    layers: list[LayerFidelity]
    keras_pred: np.ndarray
    program_pred: np.ndarray

    @property
    def top1_agreement(self) -> float:
        return float(np.mean(self.keras_pred == self.program_pred))

    def total(self, field: str) -> int:
        return sum(getattr(layer, field) for layer in self.layers)

    @property
    def size(self) -> int:
        return self.total("size")

    def worst(self, field: str = "raw") -> LayerFidelity:
        """The layer with the most `field` differences relative to its size."""
        return max(self.layers, key=lambda layer: getattr(layer, field) / max(layer.size, 1))


def _windows(x: np.ndarray, pool: list[int], strides: list[int], pads: list[int],
             fill: float) -> np.ndarray:
    """``(B, Ho, Wo, ph, pw, C)`` windows of an NHWC array padded with `fill`."""
    pt, pb, pl, pr = pads
    if any(pads):
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(x, tuple(pool), axis=(1, 2))  # B, Ho', Wo', C, ph, pw
    view = view[:, ::strides[0], ::strides[1]]
    return view.transpose(0, 1, 2, 4, 5, 3)


def _patches(x: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    if attrs["layer_type"] == "Dense":
        return x.reshape(len(x), -1)
    w = _windows(x, attrs["kernel"], attrs["strides"], attrs["pads"], 0)
    return w.reshape(*w.shape[:3], -1)


def _exact_matmul(p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact integer product (float64 BLAS when every partial sum is below 2^53)."""
    bound = float(np.abs(p).max(initial=0)) * float(np.abs(w).sum(axis=0).max(initial=0))
    if bound < 2.0 ** 53:
        return p.astype(np.float64) @ w.astype(np.float64)
    return (p.astype(np.int64) @ w.astype(np.int64)).astype(np.float64)


def _per_channel(stage_param: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.broadcast_to(stage_param, v.shape[-1:])


def _apply_stage(stage: Any, v: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One chain stage on NHWC values `v` with absolute error bounds `e`."""
    if isinstance(stage, Affine):
        a, b = _per_channel(stage.a, v), _per_channel(stage.b, v)
        return a * v + b, np.abs(a) * e + _AFFINE_ULPS * U32 * (np.abs(a * v) + np.abs(b))
    if isinstance(stage, Relu):
        out = np.moveaxis(stage.apply(np.moveaxis(v, -1, 0)), 0, -1)
        slope = stage.negative_slope
        return out, max(1.0, slope) * e + (U32 * np.abs(out) if slope else 0.0)
    raise TypeError(f"no float32 error model for {type(stage).__name__}")


def float32_error_bound(chain: list[Any], x: np.ndarray, e: np.ndarray,
                        step: float) -> tuple[np.ndarray, np.ndarray]:
    """``(v / step, bound)`` of accumulators `x` (channels last) with incoming bounds `e`."""
    v = x.astype(np.float64)
    for stage in chain:
        v, e = _apply_stage(stage, v, e)
    w = v / step
    return w, e / step + U32 * np.abs(w)


def _walk(graph: Graph, x: np.ndarray, forced: dict[str, np.ndarray]) -> dict:
    """Evaluate the lowered graph exactly on input codes `x`; after each tap continue from
    `forced[tap]`. Returns ``{tap: (v / step, float32 error bound)}``."""
    first = x.astype(np.float64)
    env = {graph.input.name: (first, np.zeros_like(first))}
    out: dict[str, Any] = {}
    for op in graph.ops:
        cur, err = env[op.inputs[0]]
        if op.kind == "crossbar":
            p = _patches(cur, op.attrs)
            weights = op.meta["weights"]
            err = (weights.shape[0] + 2) * U32 * _exact_matmul(p, np.abs(weights))
            cur = _exact_matmul(p, weights)
        elif op.kind == "sum_pool":
            k = int(np.prod(cur.shape[1:3]))
            if op.attrs["global"]:
                cur_sum, err_sum, abs_sum = (a.sum(axis=(1, 2)) for a in (cur, err, np.abs(cur)))
            else:
                k = int(np.prod(op.attrs["pool"]))
                cur_sum, err_sum, abs_sum = (
                    _windows(a, op.attrs["pool"], op.attrs["strides"], [0] * 4, 0).sum(axis=(3, 4))
                    for a in (cur, err, np.abs(cur)))
            cur, err = cur_sum, err_sum + k * U32 * abs_sum
        elif op.kind == "threshold":
            cur, err = float32_error_bound(op.meta["chain"], cur, err, op.meta["step"])
        elif op.kind == "max_pool":
            mode = op.arrays["mode"].astype(np.float64)
            args = (op.attrs["pool"], op.attrs["strides"], op.attrs["pads"], -np.inf)
            cur = _windows(cur * mode, *args).max(axis=(3, 4)) * mode
            err = _windows(err, *args).max(axis=(3, 4))
        elif op.kind in ("flatten", "reshape"):
            cur, err = cur.reshape(len(cur), *op.out_shape), err.reshape(len(err), *op.out_shape)
        elif op.kind == "pad":
            pt, pb, pl, pr = op.attrs["pads"]
            widths = ((0, 0), (pt, pb), (pl, pr), (0, 0))
            cur, err = np.pad(cur, widths), np.pad(err, widths)
        elif op.kind == "upsample":
            sh, sw = op.attrs["size"]
            cur, err = (np.repeat(np.repeat(a, sh, axis=1), sw, axis=2) for a in (cur, err))
        elif op.kind == "concat":
            cur = np.concatenate([env[t][0] for t in op.inputs], axis=-1)
            err = np.concatenate([env[t][1] for t in op.inputs], axis=-1)
        elif op.kind == "add":
            cur, err = _add(op, [env[t] for t in op.inputs])
        env[op.name] = (cur, err)
        if op.tap is not None and op.kind != "dequantize":
            out[op.tap] = (cur, err)
            forced_value = forced[op.tap].astype(np.float64)
            env[op.name] = (forced_value, np.zeros_like(forced_value))
    return out


def _add(op: Any, inputs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """An add's exact Z = Σ mᵢ·Xᵢ, and the float32 error bound of Keras's Σ chainᵢ(Xᵢ) in units of
    2^−E, plus the rounding of the multipliers (|aᵢ − mᵢ·2^−E|·|Xᵢ|)."""
    m = op.arrays["multipliers"]
    unit = 2.0 ** -op.meta["exponent"].astype(np.float64)
    z = sum(x.astype(np.int64) * m[i] for i, (x, _) in enumerate(inputs)).astype(np.float64)
    total_v, total_e = 0.0, 0.0
    for i, (x, e) in enumerate(inputs):
        v = x
        for stage in op.meta["chains"][i]:
            v, e = _apply_stage(stage, v, e)
        total_v = total_v + v
        total_e = total_e + e + np.abs(op.meta["slopes"][i] - m[i] * unit) * np.abs(x)
    return z, (total_e + U32 * np.abs(total_v)) / unit


def _codes(w: np.ndarray, top: int) -> np.ndarray:
    return np.clip(np.round(w), 0, top).astype(np.int64)


def _near_boundary(w: np.ndarray, bound: np.ndarray, top: int) -> np.ndarray:
    """Whether a rounding boundary k + ½ (k = 0 … top − 1) lies within `bound` of `w`."""
    boundary = np.clip(np.floor(w) + 0.5, 0.5, top - 0.5)
    return np.abs(w - boundary) <= bound


def measure(qmodel: Any, program: Any, x: np.ndarray, codes: np.ndarray | None = None,
            batch_size: int = 500) -> Fidelity:
    """Compare `program` (ideal mode) with `qmodel` on real inputs `x`, layer by layer.

    Arguments:
        qmodel: the tfxbar-quantized Keras model `program` was converted from.
        program: its `Program` (converted with the default pass pipeline).
        x: model inputs (float, as Keras takes them).
        codes: the program's input codes of `x` (default ``program.quantize_input(x)``).
        batch_size: examples per batch of the exact evaluation.

    Returns:
        A `Fidelity` with one `LayerFidelity` per program tap, in program order.
    """
    from tfxbar.export.converter import CrossbarConverter
    from tfxbar.export.interpreter import Interpreter
    from tfxbar.introspect import output_codes

    graph = CrossbarConverter.from_keras_model(qmodel).lower()
    codes = program.quantize_input(x) if codes is None else np.asarray(codes)
    logits, taps = Interpreter(program).run(codes, taps=True)
    names, tops = [], {}
    for op in graph.ops:
        if op.tap is not None and op.kind != "dequantize":
            names.append(op.tap)
            tops[op.tap] = op.out_max
    if sorted(names) != sorted(taps):
        raise ValueError(f"the program's taps {sorted(taps)} are not the model's {sorted(names)}")
    keras = output_codes(qmodel, x, names, batch_size=batch_size)
    keras = {n: keras[n].reshape(taps[n].shape) for n in names}
    counts = {n: np.zeros(5, np.int64) for n in names}
    distance = dict.fromkeys(names, 0.0)
    for start in range(0, len(codes), batch_size):
        part = slice(start, start + batch_size)
        own = _walk(graph, codes[part], {n: taps[n][part] for n in names})
        local = _walk(graph, codes[part], {n: keras[n][part] for n in names})
        for n in names:
            w, bound = local[n]
            differ = _codes(w, tops[n]) != keras[n][part]
            near = _near_boundary(w, bound, tops[n])
            counts[n] += [np.sum(taps[n][part] != keras[n][part]), np.sum(differ), np.sum(differ & near),
                          np.sum(_codes(own[n][0], tops[n]) != taps[n][part]), np.sum(near)]
            gap = np.abs(w - np.clip(np.floor(w) + 0.5, 0.5, tops[n] - 0.5)) / np.maximum(np.abs(w), 0.5)
            distance[n] = max(distance[n], float(gap[differ].max(initial=0.0)))
    layers = [LayerFidelity(n, int(taps[n].size), *(int(c) for c in counts[n]), distance[n])
              for n in names]
    keras_pred = np.argmax(qmodel.predict(inference_batches(x, batch_size=batch_size), verbose=0), -1)
    return Fidelity(layers, keras_pred, np.argmax(logits, -1))
