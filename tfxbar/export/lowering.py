"""The lowering context: the primitives handlers call to turn Keras layers into IR ops.

The context tracks what the current tensor is, in integer terms:

- `Codes`: integer codes x ≥ 0 whose real value is ``scale · x`` (after a quantizer, the
  program input, or integer sum-pooling of codes);
- `Acc`: a crossbar's signed integer accumulator X per channel, whose real value is
  ``chain(X)`` for a per-channel chain of elementwise stages (bias, BN, ReLU …), plus max-pools
  and a flatten that are postponed until the output quantizer (they commute with it).

A quantizer turns `Acc` (or `Codes`) back into `Codes` through a `threshold` op.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfxbar.export.elementwise import Affine, Elementwise, Relu, Softmax
from tfxbar.export.errors import ConversionError
from tfxbar.export.ir import Graph, InputSpec, Op

__all__ = ["Acc", "Codes", "Lowering", "same_pads"]


@dataclasses.dataclass
class Codes:
    shape: tuple[int, ...]
    scale: float
    max: int


@dataclasses.dataclass
class Acc:
    shape: tuple[int, ...]
    chain: list[Elementwise]
    lo: np.ndarray
    hi: np.ndarray
    pools: list[tuple[Op, int]] = dataclasses.field(default_factory=list)
    flatten: bool = False

    @property
    def linear(self) -> bool:
        return all(isinstance(e, Affine) for e in self.chain)


def same_pads(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """``(pad_before, pad_after, out_size)`` of one spatial axis, TensorFlow's convention."""
    if padding == "valid":
        return 0, 0, (size - kernel) // stride + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class Lowering:
    """Collects ops while handlers walk the model, layer by layer."""

    def __init__(self, options: dict) -> None:
        self.options = options
        self.ops: list[Op] = []
        self.input: InputSpec | None = None
        self.state: Codes | Acc | None = None
        self._names: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------
    def _emit(self, op: Op) -> Op:
        base, i = op.name, 1
        while op.name in self._names:
            i += 1
            op.name = f"{base}_{i}"
        self._names.add(op.name)
        self.ops.append(op)
        return op

    def _shape(self) -> tuple[int, ...]:
        if self.state is None:
            raise ConversionError(None, None, "no quantized model input before the first crossbar",
                                  "quantize the model with tfxbar.quantize_model")
        return self.state.shape

    # -- primitives ------------------------------------------------------------------------
    def start(self, shape: tuple[int, ...], bits: int, scale: float, name: str) -> None:
        """The program input: integer codes of `bits` bits, real value codes·scale."""
        if self.state is not None:
            raise ConversionError(name, "QuantizeLayer", "a second model-input quantizer",
                                  "tfxbar converts single-input chain models")
        self.input = InputSpec(tuple(int(d) for d in shape), int(bits), float(scale), name)
        self.state = Codes(self.input.shape, float(scale), self.input.max)

    def crossbar(self, layer: str, kind: str, codes: np.ndarray, scale: np.ndarray,
                 offset: np.ndarray, bias: np.ndarray, out_shape: tuple[int, ...],
                 geometry: dict, levels: tuple[int, ...]) -> None:
        """A crossbar layer: integer GEMM of the current codes with `codes` (rows × channels).

        The real output is scale_in·scale·(Σ c·x − offset·Σx) + bias per channel.
        """
        if not isinstance(self.state, Codes):
            raise ConversionError(layer, kind, "its input is not integer codes",
                                  "attach an output quantizer to the layer that feeds it (tfxbar."
                                  "quantize_model does) and remove float stages in between")
        inputs = self.state
        codes = np.asarray(codes, np.int64)
        offset = np.asarray(offset, np.float64).ravel()
        for frac in range(25):
            big = offset * 2.0 ** frac
            if np.all(big == np.round(big)):
                break
        else:
            raise ConversionError(layer, kind, "the weight offset is not a fixed-point number",
                                  "use BiasedWeights(offset_frac_bits=8) or an integral offset")
        offset_num = np.round(big).astype(np.int64)
        weights = (codes << frac) - offset_num[None, :]
        pos = np.where(weights > 0, weights, 0).sum(0)
        neg = np.where(weights < 0, weights, 0).sum(0)
        op = self._emit(Op(layer, "crossbar", inputs.shape, tuple(out_shape), None,
                           attrs={"layer_type": kind, **geometry, "input_max": inputs.max},
                           meta={"codes": codes, "offset": offset, "levels": tuple(levels),
                                 "offset_num": offset_num,
                                 "offset_shift": frac, "weights": weights}))
        a = inputs.scale * np.asarray(scale, np.float64).ravel() / 2.0 ** frac
        lo, hi = neg * inputs.max, pos * inputs.max
        op.meta.update(acc_lo=lo, acc_hi=hi)
        self.state = Acc(tuple(out_shape), [Affine(a, bias)], lo, hi)

    def elementwise(self, layer: str, kind: str, stage: Elementwise) -> None:
        """A per-channel stage (BN, ReLU, activation) on the accumulator's real value."""
        state = self.state
        if isinstance(state, Codes):
            if isinstance(stage, Relu) and stage.threshold <= 0 and stage.max_value is None:
                return  # codes are already ≥ 0
            raise ConversionError(layer, kind, "a float stage after a quantizer",
                                  "move the output quantizer after this layer")
        if not isinstance(state, Acc):
            raise ConversionError(layer, kind, "float stage on the unquantized model input",
                                  "apply it before the model or quantize the input first")
        if state.flatten and not isinstance(stage, Softmax):
            if state.pools:
                raise ConversionError(layer, kind, "per-feature stage after MaxPool + Flatten",
                                      "put the quantizer on the Flatten or move this stage before it")
            self._flatten_acc(layer)
        state.chain.append(stage)

    def _flatten_acc(self, layer: str) -> None:
        state = self.state
        repeats = int(np.prod(state.shape[:-1]))
        size = int(np.prod(state.shape))
        self._emit(Op(f"{layer}_flatten", "flatten", state.shape, (size,), None))
        state.chain = [e.tiled(repeats) for e in state.chain]
        state.lo, state.hi = np.tile(state.lo, repeats), np.tile(state.hi, repeats)
        state.shape, state.flatten = (size,), False

    def max_pool(self, layer: str, kind: str, pool: tuple[int, int], strides: tuple[int, int],
                 padding: str) -> None:
        """MaxPooling2D: on codes directly, or postponed past the next quantizer."""
        shape = self._shape()
        if len(shape) != 3:
            raise ConversionError(layer, kind, f"expects an NHWC input, got shape {shape}")
        (pt, pb, oh), (pl, pr, ow) = (same_pads(shape[i], pool[i], strides[i], padding)[0:3]
                                      for i in range(2))
        op = Op(layer, "max_pool", shape, (oh, ow, shape[2]), None,
                attrs={"pool": list(pool), "strides": list(strides), "pads": [pt, pb, pl, pr]})
        if isinstance(self.state, Codes):
            op.arrays["mode"] = np.ones(shape[2], np.int8)
            op.out_max = self.state.max
            self._emit(op)
            self.state.shape = op.out_shape
        else:
            if self.state.flatten:
                raise ConversionError(layer, kind, "pooling after Flatten")
            self.state.pools.append((op, len(self.state.chain)))
            self.state.shape = op.out_shape

    def sum_pool(self, layer: str, kind: str, pool: tuple[int, int] | None,
                 strides: tuple[int, int] | None, padding: str) -> None:
        """Average pooling as an integer window sum; 1/k goes into the real-value map."""
        shape = self._shape()
        if len(shape) != 3:
            raise ConversionError(layer, kind, f"expects an NHWC input, got shape {shape}")
        if pool is None:
            k, out, attrs = shape[0] * shape[1], (shape[2],), {"global": True}
        else:
            pads = [same_pads(shape[i], pool[i], strides[i], padding) for i in range(2)]
            if any(p[0] or p[1] for p in pads):
                raise ConversionError(layer, kind, "'same' padding that pads (uneven divisors)",
                                      "use padding='valid' or sizes divisible by the pool")
            k, out = pool[0] * pool[1], (pads[0][2], pads[1][2], shape[2])
            attrs = {"global": False, "pool": list(pool), "strides": list(strides)}
        state = self.state
        if isinstance(state, Acc):
            if not state.linear or state.pools or state.flatten:
                raise ConversionError(layer, kind, "average pooling after a nonlinear stage (ReLU/"
                                      "MaxPool) of an unquantized crossbar output",
                                      "attach an output quantizer before the pooling")
            state.chain.insert(0, Affine(np.full(shape[2], 1.0 / k), 0.0))
            state.lo, state.hi = state.lo * k, state.hi * k
            self._emit(Op(layer, "sum_pool", shape, out, None, attrs=attrs))
        else:
            self._emit(Op(layer, "sum_pool", shape, out, state.max * k, attrs=attrs))
            state.scale, state.max = state.scale / k, state.max * k
        state.shape = out

    def flatten(self, layer: str, kind: str) -> None:
        shape = self._shape()
        if len(shape) == 1:
            return
        if isinstance(self.state, Acc):
            self.state.flatten = True
            return
        size = int(np.prod(shape))
        self._emit(Op(layer, "flatten", shape, (size,), self.state.max))
        self.state.shape = (size,)

    def quantize(self, layer: str, kind: str, step: float, bits: int) -> None:
        """The output quantizer of `layer`: emit the threshold op (and postponed pools)."""
        state = self._ensure_state(layer, kind)
        top = 2 ** bits - 1
        if isinstance(state, Codes):
            channels = state.shape[-1]
            chain: list[Elementwise] = [Affine(np.full(channels, state.scale), 0.0)]
            lo, hi = np.zeros(channels, np.int64), np.full(channels, state.max, np.int64)
            pools, flatten, shape = [], False, state.shape
        else:
            if not all(e.monotone for e in state.chain):
                raise ConversionError(layer, kind, "softmax before a quantizer")
            chain, lo, hi, pools, flatten = state.chain, state.lo, state.hi, state.pools, state.flatten
            shape = pools[0][0].in_shape if pools else state.shape
        threshold = Op(f"{layer}_threshold", "threshold", shape, shape, top,
                       attrs={"bits": bits},
                       meta={"chain": chain, "lo": lo, "hi": hi, "step": float(step)})
        last = self._emit(threshold)
        for op, index in pools:
            mode = np.ones(op.in_shape[-1], np.int8)
            for stage in chain[index:]:
                mode = mode * stage.slope_sign(len(mode))
            op.arrays["mode"] = mode
            op.out_max = top
            last = self._emit(op)
        out_shape = last.out_shape
        if flatten:
            size = int(np.prod(out_shape))
            last = self._emit(Op(f"{layer}_flatten", "flatten", out_shape, (size,), top))
            out_shape = (size,)
        last.tap = layer
        self.state = Codes(out_shape, float(step), top)

    def _ensure_state(self, layer: str, kind: str) -> Codes | Acc:
        if self.state is None:
            raise ConversionError(layer, kind, "quantizer on the float model input",
                                  "quantize the model input with a QuantizeLayer")
        return self.state

    def finish(self, name: str) -> Graph:
        """The model output: dequantize the accumulator (or codes) to float."""
        state = self.state
        if isinstance(state, Acc):
            if state.pools:
                raise ConversionError(name, "output", "MaxPool on the float model output",
                                      "end the model with a Dense/Conv layer or a quantizer")
            if state.flatten:
                self._flatten_acc(name)
            chain = state.chain
        elif isinstance(state, Codes):
            chain = [Affine(np.full(state.shape[-1], state.scale), 0.0)]
        else:
            raise ConversionError(None, None, "the model has no crossbar layer")
        self._emit(Op(f"{name}_dequantize", "dequantize", state.shape, state.shape, None,
                      meta={"chain": chain}))
        return Graph(self.input, self.ops, self.options)
