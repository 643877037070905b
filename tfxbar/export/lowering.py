"""The lowering context: the primitives handlers call to turn Keras layers into IR ops.

The context tracks what the current tensor is in integer terms (`tfxbar.export.states`):
`Codes` (real value scale·x) or an accumulator `Acc` (real value chain(X), with postponed
pools, padding and reshape). A quantizer turns `Acc` (or `Codes`) back into `Codes` through a
`threshold` op. Each state names the IR tensor that holds its integers; the converter keeps one
state per Keras tensor, so branches and merges (Add, Concatenate) lower like chains.
"""

from __future__ import annotations

import math

import numpy as np

from tfxbar.export.elementwise import Affine, Elementwise, Relu, Softmax
from tfxbar.export.errors import ConversionError
from tfxbar.export.ir import Graph, InputSpec, Op
from tfxbar.export.states import Acc, Codes, add_multipliers

__all__ = ["Acc", "Codes", "Lowering", "same_pads"]


def same_pads(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """``(pad_before, pad_after, out_size)`` of one spatial axis, TensorFlow's convention."""
    if padding == "valid":
        return 0, 0, (size - kernel) // stride + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class Lowering:
    """Collects ops while the converter walks the model's layers in topological order.

    `state` is the tensor the current handler works on (its input, then its output): the
    converter sets it to a copy of the layer's input state before the handler runs and reads
    it back afterwards. Multi-input layers get their input states from the converter.
    """

    def __init__(self, options: dict) -> None:
        self.options = options
        self.ops: list[Op] = []
        self.input: InputSpec | None = None
        self.state: Codes | Acc | None = None
        self._names: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------
    def _emit(self, op: Op, inputs: list[str] | None = None) -> Op:
        """Append `op` reading `inputs` (default: the current tensor); names stay unique."""
        op.inputs = list(inputs) if inputs is not None else [self.state.tensor]
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

    def _ensure_state(self, layer: str, kind: str) -> Codes | Acc:
        if self.state is None:
            raise ConversionError(layer, kind, "quantizer on the float model input",
                                  "quantize the model input with a QuantizeLayer")
        return self.state

    # -- primitives ------------------------------------------------------------------------
    def start(self, shape: tuple[int, ...], bits: int, scale: float, name: str) -> None:
        """The program input: integer codes of `bits` bits, real value codes·scale."""
        if self.input is not None:
            raise ConversionError(name, "QuantizeLayer", "a second model-input quantizer",
                                  "tfxbar converts single-input models")
        self.input = InputSpec(tuple(int(d) for d in shape), int(bits), float(scale), name)
        self._names.add(name)
        self.state = Codes(self.input.shape, float(scale), self.input.max, name)

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
        self.state = Acc(tuple(out_shape), [Affine(a, bias)], lo, hi, tensor=op.name)

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
        if state.reshape is not None and not isinstance(stage, Softmax):
            if state.pools:
                raise ConversionError(layer, kind, "per-feature stage after MaxPool + Flatten/Reshape",
                                      "put the quantizer on the Flatten or move this stage before it")
            self._reshape_acc(layer, state.reshape)
        if any(op.kind == "pad" for op, _ in state.pools):
            raise ConversionError(layer, kind, "a float stage after zero padding of an unquantized tensor "
                                  "(Keras pads real zeros, which the stage moves)",
                                  "quantize the output of the layer before the padding")
        state.chain.append(stage)

    def _reshape_acc(self, layer: str, shape: tuple[int, ...]) -> None:
        """Reshape the accumulator now; per-channel stages repeat along the new last axis."""
        state = self.state
        channels = state.shape[-1]
        if shape[-1] % channels:
            raise ConversionError(layer, "Reshape", f"reshapes an unquantized accumulator {state.shape} "
                                  f"to {shape}, splitting its channels",
                                  "quantize the output of the layer before the reshape")
        repeats = shape[-1] // channels
        kind = "flatten" if len(shape) == 1 else "reshape"
        op = self._emit(Op(f"{layer}_{kind}", kind, self.ops_shape(state.tensor), tuple(shape), None))
        state.chain = [e.tiled(repeats) for e in state.chain]
        state.lo, state.hi = np.tile(state.lo, repeats), np.tile(state.hi, repeats)
        state.shape, state.reshape, state.tensor = tuple(shape), None, op.name

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
        self._codes_op(layer, kind, op, np.ones(shape[2], np.int8))

    def _codes_op(self, layer: str, kind: str, op: Op, mode: np.ndarray | None) -> None:
        """An op on codes (max_pool, pad): emitted now, or postponed past the next quantizer."""
        if isinstance(self.state, Codes):
            if mode is not None:
                op.arrays["mode"] = mode
            op.out_max = self.state.max
            self._emit(op)
            self.state.shape, self.state.tensor = op.out_shape, op.name
        else:
            if self.state.reshape is not None:
                raise ConversionError(layer, kind, "pooling or padding after Flatten/Reshape",
                                      "quantize the output of the layer before the reshape")
            self.state.pools.append((op, len(self.state.chain)))
            self.state.shape = op.out_shape

    def pad(self, layer: str, kind: str, pads: tuple[int, int, int, int]) -> None:
        """ZeroPadding2D: zero codes (code 0 is the real value 0), postponed past a quantizer."""
        shape = self._shape()
        if len(shape) != 3:
            raise ConversionError(layer, kind, f"expects an NHWC input, got shape {shape}")
        pt, pb, pl, pr = pads
        op = Op(layer, "pad", shape, (shape[0] + pt + pb, shape[1] + pl + pr, shape[2]), None,
                attrs={"pads": [int(p) for p in pads]})
        self._codes_op(layer, kind, op, None)

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
            if not state.linear or state.pools or state.reshape is not None:
                raise ConversionError(layer, kind, "average pooling after a nonlinear stage (ReLU/"
                                      "MaxPool) of an unquantized crossbar output",
                                      "attach an output quantizer before the pooling")
            state.chain.insert(0, Affine(np.full(shape[2], 1.0 / k), 0.0))
            state.lo, state.hi = state.lo * k, state.hi * k
            op = self._emit(Op(layer, "sum_pool", shape, out, None, attrs=attrs))
        else:
            op = self._emit(Op(layer, "sum_pool", shape, out, state.max * k, attrs=attrs))
            state.scale, state.max = state.scale / k, state.max * k
        state.shape, state.tensor = out, op.name

    def reshape(self, layer: str, kind: str, shape: tuple[int, ...]) -> None:
        """Row-major reshape (Flatten, Reshape): codes now, an accumulator when it is quantized
        (or now, if its channels stay whole and nothing is pending)."""
        current = self._shape()
        shape = tuple(int(d) for d in shape)
        if int(np.prod(shape)) != int(np.prod(current)):
            raise ConversionError(layer, kind, f"cannot reshape {current} to {shape}")
        if shape == current:
            return
        state = self.state
        op_kind = "flatten" if len(shape) == 1 else "reshape"
        if isinstance(state, Acc):
            if state.pools or state.reshape is not None:
                state.reshape = shape
            elif shape[-1] == current[-1]:
                self._reshape_acc(layer, shape)
            else:
                state.reshape = shape
            if state.reshape is not None:
                state.shape = shape
            return
        op = self._emit(Op(layer, op_kind, current, shape, state.max))
        state.shape, state.tensor = shape, op.name

    def flatten(self, layer: str, kind: str) -> None:
        self.reshape(layer, kind, (int(np.prod(self._shape())),))

    def upsample(self, layer: str, kind: str, size: tuple[int, int]) -> None:
        """UpSampling2D (nearest): repeats rows and columns; codes or accumulators alike."""
        shape = self._shape()
        state = self.state
        if len(shape) != 3:
            raise ConversionError(layer, kind, f"expects an NHWC input, got shape {shape}")
        if isinstance(state, Acc) and (state.pools or state.reshape is not None):
            raise ConversionError(layer, kind, "upsampling after a pending MaxPool/padding/reshape",
                                  "quantize the output of the layer before the upsampling")
        out = (shape[0] * size[0], shape[1] * size[1], shape[2])
        top = state.max if isinstance(state, Codes) else None
        op = self._emit(Op(layer, "upsample", shape, out, top, attrs={"size": [int(s) for s in size]}))
        state.shape, state.tensor = out, op.name

    def add(self, layer: str, kind: str, states: list[Codes | Acc]) -> None:
        """Residual Add: one integer accumulator Z = Σᵢ mᵢ·Xᵢ per channel (docs/format.md).

        Codes of one shared step add as integers (mᵢ = 1). Otherwise each input's real value is
        the affine aᵢ·Xᵢ + bᵢ of its integer tensor (codes: a = step, b = 0; an accumulator:
        its linear chain), and mᵢ = round(aᵢ·2^E) with the largest E that keeps Σ|mᵢ·Xᵢ| below
        2^52 (so Z is exact in float64 too); the sum's real value is 2^−E·Z + Σbᵢ. The error of that
        rounding is ≤ 2^−(E+1)·|Xᵢ|, far below float32's; thresholds after the Add are folded
        exactly on Z.
        """
        shapes = {s.shape for s in states}
        if len(shapes) != 1:
            raise ConversionError(layer, kind, f"inputs of different shapes {sorted(shapes)}",
                                  "tfxbar adds tensors of one shape (no broadcasting)")
        shape = states[0].shape
        channels = shape[-1]
        if all(isinstance(s, Codes) for s in states) and len({s.scale for s in states}) == 1:
            top = sum(s.max for s in states)
            op = self._emit(Op(layer, "add", shape, shape, top,
                               arrays={"multipliers": np.ones((len(states), channels), np.int64)}),
                            [s.tensor for s in states])
            self.state = Codes(shape, states[0].scale, top, op.name)
            return
        slopes, offsets, lows, highs = [], [], [], []
        for i, s in enumerate(states):
            if isinstance(s, Codes):
                slopes.append(np.full(channels, s.scale))
                offsets.append(np.zeros(channels))
                lows.append(np.zeros(channels, np.int64))
                highs.append(np.full(channels, s.max, np.int64))
                continue
            if not s.linear or s.pools or s.reshape is not None:
                raise ConversionError(layer, kind, f"input {i} is an unquantized tensor after a "
                                      "nonlinear stage (ReLU, MaxPool, padding)",
                                      "attach an output quantizer to the layer feeding that input")
            total = s.affine()
            slopes.append(total.a)
            offsets.append(total.b)
            lows.append(np.asarray(s.lo, np.int64))
            highs.append(np.asarray(s.hi, np.int64))
        a = np.stack(slopes)                                   # (k, C)
        reach = np.maximum(np.abs(np.stack(lows)), np.abs(np.stack(highs))).astype(np.float64)
        if np.any(np.abs(a).max(axis=0) == 0):
            raise ConversionError(layer, kind, "an input channel has zero scale",
                                  "check the BatchNormalization/weights feeding the Add")
        m, exponent = add_multipliers(a, reach)
        lo = sum(np.minimum(m[i] * lows[i], m[i] * highs[i]) for i in range(len(states)))
        hi = sum(np.maximum(m[i] * lows[i], m[i] * highs[i]) for i in range(len(states)))
        op = self._emit(Op(layer, "add", shape, shape, None,
                           arrays={"multipliers": m},
                           meta={"slopes": a, "exponent": exponent, "acc_lo": lo, "acc_hi": hi,
                                 "chains": [s.chain if isinstance(s, Acc) else
                                            [Affine(np.full(channels, s.scale), 0.0)] for s in states]}),
                        [s.tensor for s in states])
        unit = 2.0 ** -exponent.astype(np.float64)
        self.state = Acc(shape, [Affine(unit, np.sum(offsets, axis=0))], lo, hi, tensor=op.name)

    def concat(self, layer: str, kind: str, states: list[Codes | Acc],
               step: float | None, bits: int | None) -> bool:
        """Concatenate on the channel axis. With the layer's output quantizer (`step`, `bits`),
        each input is thresholded with it first (exact; codes already on that grid pass as
        they are); without one the inputs must be codes of one step.

        Returns:
            Whether the output quantizer has been applied.
        """
        if len({s.shape[:-1] for s in states}) != 1:
            raise ConversionError(layer, kind, f"inputs of shapes {[s.shape for s in states]}",
                                  "only channel-axis concatenation is supported")
        parts: list[Codes] = []
        for s in states:
            if step is not None and not (isinstance(s, Codes) and s.scale == step and s.max <= 2 ** bits - 1):
                self.state = s
                self.quantize(layer, kind, step, bits, tap=False)
                s = self.state
            elif not isinstance(s, Codes):
                raise ConversionError(layer, kind, "an input is not integer codes",
                                      "quantize the Concatenate's output (tfxbar.quantize_model does "
                                      "when a crossbar reads it) or each of its inputs")
            parts.append(s)
        if len({p.scale for p in parts}) != 1:
            raise ConversionError(layer, kind, f"inputs with different steps {[p.scale for p in parts]}",
                                  "quantize the Concatenate's output so that one step applies")
        shape = parts[0].shape[:-1] + (sum(p.shape[-1] for p in parts),)
        top = max(p.max for p in parts)
        op = self._emit(Op(layer, "concat", parts[0].shape, shape, top), [p.tensor for p in parts])
        op.tap = layer if step is not None else None
        self.state = Codes(shape, parts[0].scale, top, op.name)
        return step is not None

    def quantize(self, layer: str, kind: str, step: float, bits: int, tap: bool = True) -> None:
        """The output quantizer of `layer`: emit the threshold op (and postponed ops)."""
        state = self._ensure_state(layer, kind)
        top = 2 ** bits - 1
        if isinstance(state, Codes):
            channels = state.shape[-1]
            chain: list[Elementwise] = [Affine(np.full(channels, state.scale), 0.0)]
            lo, hi = np.zeros(channels, np.int64), np.full(channels, state.max, np.int64)
            pools, reshape, shape = [], None, state.shape
        else:
            if not all(e.monotone for e in state.chain):
                raise ConversionError(layer, kind, "softmax before a quantizer")
            chain, lo, hi, pools, reshape = state.chain, state.lo, state.hi, state.pools, state.reshape
            shape = self.ops_shape(state.tensor)
        threshold = Op(f"{layer}_threshold", "threshold", shape, shape, top,
                       attrs={"bits": bits},
                       meta={"chain": chain, "lo": lo, "hi": hi, "step": float(step)})
        last = self._emit(threshold, [state.tensor])
        for op, index in pools:
            if op.kind == "max_pool":
                mode = np.ones(op.in_shape[-1], np.int8)
                for stage in chain[index:]:
                    mode = mode * stage.slope_sign(len(mode))
                op.arrays["mode"] = mode
            op.out_max = top
            last = self._emit(op, [last.name])
        out_shape = last.out_shape
        if reshape is not None:
            kind_ = "flatten" if len(reshape) == 1 else "reshape"
            last = self._emit(Op(f"{layer}_{kind_}", kind_, out_shape, reshape, top), [last.name])
            out_shape = reshape
        if tap:
            last.tap = layer
        self.state = Codes(out_shape, float(step), top, last.name)

    def ops_shape(self, tensor: str) -> tuple[int, ...]:
        """The shape of a tensor already emitted (or of the program input)."""
        if self.input is not None and tensor == self.input.name:
            return self.input.shape
        for op in reversed(self.ops):
            if op.name == tensor:
                return op.out_shape
        raise KeyError(tensor)

    def finish(self, name: str) -> Graph:
        """The model output: dequantize the accumulator (or codes) to float."""
        state = self.state
        if isinstance(state, Acc):
            if state.pools:
                raise ConversionError(name, "output", "MaxPool or padding on the float model output",
                                      "end the model with a Dense/Conv layer or a quantizer")
            if state.reshape is not None:
                self._reshape_acc(name, state.reshape)
            chain = state.chain
        elif isinstance(state, Codes):
            chain = [Affine(np.full(state.shape[-1], state.scale), 0.0)]
        else:
            raise ConversionError(None, None, "the model has no crossbar layer")
        self._emit(Op(f"{name}_dequantize", "dequantize", state.shape, state.shape, None,
                      meta={"chain": chain}))
        return Graph(self.input, self.ops, self.options)
