"""`HardwareMode`: a quantized Keras model whose crossbar layers compute what the program computes.

The model is converted once with a `ConverterConfig` (or a given program). Every crossbar
layer (a tfxbar-quantized Dense / Conv2D) then replaces its matrix product by the program's
hardware semantics (docs/format.md §4.1): tiles, DAC bit-slicing, per-tile-column ADCs with the
program's resolution and steps, shift-add and a saturating or wrapping accumulator
(`tfxbar.hardware.simulate`), on the integer codes of its input. Everything else — bias, batch
norm, activations, pooling, output quantizers — is the model's own layers, so whatever the
converter supports (and the model's later shape) is followed without re-implementing the op list;
at inference its BatchNormalization layers and output quantizers run on in-place native ops that
compute the same bits as TensorFlow's (`tfxbar.hardware.native_layers`).

What comes from where:

- from the program: the tile grid, mapping, slices, DAC plan, ADC bits and steps, the accumulator
  default; fixed while the mode is installed (ADC-aware training trains *against* them);
- from the current weights, every step: the cell codes and the digital offset, by the converter's
  mapping (`tfxbar.hardware.cells`); unchanged weights give exactly the program's cells;
- with `conductances` (one simulated chip): the device conductances of the program's cells,
  drawn once — a chip is programmed once, so weights trained afterwards do not reach it;
- with a `tfxbar.DeviceVariation` callback (its `CellNoise` hooks on the kernels' quantizers):
  the cells from the weights plus that pass's device noise, per physical cell (every polarity
  and slice), a fresh draw per training step — variation-aware and ADC-aware training at once.

Gradients are straight-through (`tfxbar.hardware.ste`): the forward pass is the hardware's, the
backward pass that of the ideal product, so ``fit`` trains against the ADCs and accumulator.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.compat import require_tf_keras
from tfxbar.export.config import ConverterConfig
from tfxbar.export.converter import CrossbarConverter, _inbound
from tfxbar.export.format import Program
from tfxbar.hardware import native as native_kernel
from tfxbar.hardware.cells import group_cells, weight_cells
from tfxbar.hardware.native_layers import NativeLayers
from tfxbar.hardware.products import dac_planes, pad
from tfxbar.hardware.simulate import Accumulator, CrossbarSimulation
from tfxbar.hardware.ste import straight_through
from tfxbar.hardware.tiles import TileLayout
from tfxbar.introspect import QuantizedKernel, quantized_kernels, quantized_outputs
from tfxbar.variation.cells import CellNoise

__all__ = ["HardwareCrossbar", "HardwareMode"]

# Layers whose output codes have the scale of their input's codes (at inference).
_SAME_SCALE = (keras.layers.Flatten, keras.layers.Dropout, keras.layers.MaxPooling2D,
               keras.layers.Reshape, keras.layers.ReLU)


def _input_step(model: keras.Model, wrapper: keras.layers.Layer) -> Callable[[], tf.Tensor]:
    """The real value of one input code of crossbar layer `wrapper`, as a function returning a
    tensor (a learned quantizer step changes while training): the step of the output quantizer
    upstream, through layers that keep codes (Flatten, MaxPool …) or sum them (average pools)."""
    outputs = {o.layer.name: o for o in quantized_outputs(model)}
    divisor, layer = 1, wrapper
    while True:
        inbound = _inbound(model, layer)
        if len(inbound) != 1:
            raise ValueError(f"layer {wrapper.name!r}: its input is not one quantized tensor; the "
                             "hardware mode needs an output quantizer upstream of every crossbar layer")
        layer = inbound[0]
        found = outputs.get(layer.name)
        if found is not None:
            quantizer, variables, k = found.quantizer, found.variables, float(divisor)
            return lambda: quantizer._step(variables) / k  # noqa: SLF001
        inner = layer.layer if isinstance(layer, tfmot_api.QuantizeWrapper) else layer
        if isinstance(inner, keras.layers.AveragePooling2D):
            divisor *= int(np.prod(inner.pool_size))
        elif isinstance(inner, keras.layers.GlobalAveragePooling2D):
            divisor *= int(np.prod(inner.input_shape[1:-1]))
        elif not isinstance(inner, _SAME_SCALE):
            raise ValueError(f"layer {wrapper.name!r}: no tfxbar output quantizer upstream (reached "
                             f"{layer.name!r}, a {type(inner).__name__}); quantize the model with "
                             "tfxbar.quantize_model")


class HardwareCrossbar:
    """The hardware replacement of one crossbar layer's `call` (see `HardwareMode`).

    Arguments:
        layout: the crossbar op's `TileLayout`.
        kernel: the layer's `QuantizedKernel`.
        input_step: returns the real value of one input code.
        accumulator: the digital accumulator.
        fixed_cells: per row group, fixed (device) cell matrices; None: from the current weights.
        native: the native kernel's op module (`tfxbar.hardware.native.load`) or None.
    """

    def __init__(self, layout: TileLayout, kernel: QuantizedKernel, input_step: Callable[[], tf.Tensor],
                 accumulator: Accumulator, fixed_cells: list[np.ndarray] | None = None,
                 native: ModuleType | None = None) -> None:
        self.layout, self.kernel, self.input_step = layout, kernel, input_step
        self.simulation = CrossbarSimulation(layout, accumulator, native=native)
        # Device cells are real numbers: their ADC also clamps at 0 (partial sums can be negative).
        self.device_simulation = CrossbarSimulation(layout, accumulator, device=True)
        self.fixed_cells: list[tf.Variable] | None = None
        self.use_fixed = False
        self.layer = kernel.layer
        # XLA fuses the ADC, shift-add and counters into the GEMMs' consumers (≈ 2.5× faster than
        # separate TF ops, docs/hardware_mode.md); every value is an exact integer in any order.
        # Not for one-by-one accumulation: XLA takes minutes to compile its unrolled additions.
        # The native kernel is no XLA op: its function runs as a plain graph.
        free = self.simulation.free and self.device_simulation.free
        self._compiled = tf.function(self._simulate, jit_compile=free and not self.simulation.uses_native,
                                     reduce_retracing=True)
        self._chip = tf.function(self._simulate, jit_compile=free, reduce_retracing=True)
        self._native = tf.function(self._native_product, reduce_retracing=True)
        # The cells the native kernel reads, as one XLA function (3× faster on a wide Dense layer).
        self._native_cells = tf.function(self._program_cells, jit_compile=True, reduce_retracing=True)
        self._linear = tf.function(self._linear_product, jit_compile=True, reduce_retracing=True)
        self._noisy = tf.function(self._simulate_noisy, jit_compile=free, reduce_retracing=True)
        self.attribute = "kernel"
        self.low = float(min(kernel.quantizer.levels))
        with tf.init_scope():   # counters outside any graph being traced; not model weights
            self.adc_clips = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.acc_overflows = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.adc_conversions = tf.Variable(0, dtype=tf.int64, trainable=False)
        if fixed_cells is not None:
            self.set_cells(fixed_cells)

    def set_cells(self, cells: list[np.ndarray] | None) -> bool:
        """Use fixed (device) cell matrices, one per row group, or None: cells from the weights.

        Returns:
            Whether traced functions must be traced again (the source of the cells changed);
            another chip only assigns the same variables, so functions traced for one chip
            serve every chip.
        """
        fixed = cells is not None
        changed = fixed != self.use_fixed
        self.use_fixed = fixed
        if not fixed:
            return changed
        dtype = self.device_simulation.cell_dtype()
        if self.fixed_cells is None:
            with tf.init_scope():
                self.fixed_cells = [tf.Variable(c, dtype=dtype, trainable=False) for c in cells]
            return True
        for variable, value in zip(self.fixed_cells, cells, strict=True):
            variable.assign(tf.cast(value, dtype))
        return changed

    def reset(self) -> None:
        """Zero the counters."""
        for v in (self.adc_clips, self.acc_overflows, self.adc_conversions):
            v.assign(0)

    def parts(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Current integer codes (K, N), per-column scale and offset (N,) of the kernel."""
        k = self.kernel
        codes, scale, offset = k.quantizer.parts(k.kernel, k.variables)
        n = self.layout.cols
        shape = tf.shape(codes)
        per_column = [tf.reshape(tf.broadcast_to(v, shape), [-1, n])[0] for v in (scale, offset)]
        return tf.reshape(codes, [-1, n]), per_column[0], per_column[1]

    def cell_noise(self, training: Any) -> CellNoise | None:
        """The kernel's device-noise hook (`tfxbar.DeviceVariation`) if it acts on this pass."""
        noise = self.kernel.quantizer.cell_noise
        return noise if isinstance(noise, CellNoise) and noise.active(training) else None

    def accumulate(self, codes: tf.Tensor,
                   training: Any = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """The hardware accumulator X for integer input codes (as floats) of the layer's input shape.

        Returns:
            ``(X (patches, N) exact integers, ADC clips, accumulator overflows, patches)``.
        """
        if self.use_fixed:   # a programmed chip already holds its device's conductances
            return self._chip(codes, None, None)
        w, _, offset = self.parts()
        noise = self.cell_noise(training)
        if noise is None:
            return self._compiled(codes, w, offset)
        # The noise goes on the physical cells the ADCs read, drawn outside the XLA function
        # (its random table windows would recompile it every step); the digital offset and the
        # reference column stay exact, as on a simulated chip.
        full, offset_num = weight_cells(self.layout, w, offset, int(self.low))
        full = full + noise.cell_deltas(full, float(2 ** self.layout.slice_bits), bool(training))
        cells = group_cells(self.layout, full, self.device_simulation.cell_dtype())
        return self._noisy(codes, cells, offset_num)

    def _program_cells(self, w: tf.Tensor, offset: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
        """The program's integer cells of every row group for weight codes `w`, and the digital
        offset B."""
        full, offset_num = weight_cells(self.layout, w, offset, int(self.low))
        return group_cells(self.layout, full, self.simulation.cell_dtype()), offset_num

    def _native_product(self, inputs: tf.Tensor, step: tf.Tensor, w: tf.Tensor, offset: tf.Tensor,
                        scale: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        # The kernel forms the codes round(inputs / step) as it reads the inputs.
        cells, offset_num = self._native_cells(w, offset)
        out, clips, overflows = self.simulation.from_codes(inputs, cells, offset_num, scale, step=step)
        return out, clips, overflows, tf.shape(out, out_type=tf.int64)[0]

    def _linear_product(self, codes: tf.Tensor, w: tf.Tensor, offset: tf.Tensor,
                        a: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        # An always-linear crossbar (no ADC rounding, no overflow): X and its real value in one
        # XLA function, so the float64 X never goes through memory.
        cells, _ = self._program_cells(w, offset)
        acc, clips, overflows = self.simulation.linear_from_codes(codes, cells)
        return tf.cast(acc * a[None, :], tf.float32), clips, overflows, tf.shape(acc, out_type=tf.int64)[0]

    def _simulate_noisy(self, codes: tf.Tensor, cells: list[tf.Tensor],
                        offset_num: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        layout = self.layout
        planes = pad(dac_planes(codes, layout.dac_bits, layout.cycles), layout)
        acc, clips, overflows = self.device_simulation(planes, cells, offset_num)
        return acc, clips, overflows, tf.shape(acc, out_type=tf.int64)[0]

    def _simulate(self, codes: tf.Tensor, w: tf.Tensor | None,
                  offset: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        layout = self.layout
        offset_num = None
        if w is None:
            planes = pad(dac_planes(codes, layout.dac_bits, layout.cycles), layout)
            cells = [tf.convert_to_tensor(c) for c in self.fixed_cells]
            acc, clips, overflows = self.device_simulation(planes, cells)
        else:
            cells, offset_num = self._program_cells(w, offset)
            if self.simulation.uses_native:
                acc, clips, overflows = self.simulation.from_codes(codes, cells, offset_num)
            elif self.simulation.always_linear:   # one product on the codes, no bit-planes
                acc, clips, overflows = self.simulation.linear_from_codes(codes, cells)
            else:
                planes = pad(dac_planes(codes, layout.dac_bits, layout.cycles), layout)
                acc, clips, overflows = self.simulation(planes, cells, offset_num)
        return acc, clips, overflows, tf.shape(acc, out_type=tf.int64)[0]

    def product(self, inputs: tf.Tensor,
                training: Any = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """The crossbar's real-valued product of the layer's (quantized) inputs, as the program
        computes it.

        Returns:
            ``(product (patches, N) float32, ADC clips, accumulator overflows, patches)``.
        """
        step = tf.cast(self.input_step(), tf.float32)
        w, scale, offset = self.parts()
        # Real product = step_in · scale · 2^−f · X: exact X, one float32 rounding.
        a = tf.cast(step * scale, tf.float64) * 2.0 ** -self.layout.offset_shift
        if self.simulation.uses_native and not self.use_fixed and self.cell_noise(training) is None:
            # The kernel writes the real product itself (no float64 X through memory) and forms
            # the codes from the inputs (no codes tensor either).
            return self._native(tf.stop_gradient(inputs), tf.stop_gradient(step), w, offset, a)
        codes = tf.round(tf.stop_gradient(inputs) / step)
        if self.simulation.always_linear and not self.use_fixed and self.cell_noise(training) is None:
            return self._linear(codes, w, offset, a)
        acc, clips, overflows, count = self.accumulate(codes, training)
        return tf.cast(tf.cast(acc, tf.float64) * a[None, :], tf.float32), clips, overflows, count

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        """What the crossbar layer computes: hardware product, then the layer's bias and activation."""
        layer, layout = self.layer, self.layout
        out, clips, overflows, count = self.product(inputs, training)
        if layout.layer_type == "Conv2D":
            (kh, kw), (sh, sw), (pt, pb, pl, pr) = (layout.attrs[k] for k in ("kernel", "strides", "pads"))
            oh = (inputs.shape[1] + pt + pb - kh) // sh + 1
            ow = (inputs.shape[2] + pl + pr - kw) // sw + 1
            out = tf.reshape(out, [-1, oh, ow, layout.cols])
        self.adc_clips.assign_add(clips)
        self.acc_overflows.assign_add(overflows)
        self.adc_conversions.assign_add(count * layout.conversions)
        if training is not False and training is not None:
            kernel = getattr(layer, self.attribute)   # the fake-quantized kernel the wrapper set
            ideal = layer.convolution_op(inputs, kernel) if layout.layer_type == "Conv2D" \
                else tf.matmul(inputs, kernel)
            out = straight_through(ideal, out)
        if getattr(layer, "use_bias", False):
            out = tf.nn.bias_add(out, layer.bias)
        return layer.activation(out) if layer.activation is not None else out


class HardwareMode:
    """Run (and train) a tfxbar-quantized model in the crossbar program's hardware mode.

    Installed (``with`` block, or `install` / `remove`), every crossbar layer computes the
    program's hardware semantics (module docstring); `predict`, `evaluate`, `fit` and
    `tfxbar.evaluate_under_variation` then see the hardware. With noise off it equals
    ``tfxbar.Interpreter(program, "hardware")`` (tests/test_hardware_exact.py).

    Arguments:
        model: a model from `tfxbar.quantize_model` (chain of layers, as the converter needs).
        config: the `ConverterConfig` to convert with (tiles, mapping, DAC, ADC, accumulator);
            ignored when `program` is given.
        program: an already converted program of this model (same weights).
        accumulator_bits: hardware accumulator width (default: the program's).
        accumulator_mode: ``"saturate"`` or ``"wrap"`` (default: the program's).
        conductances: one chip: ``(layer, tile, cells) -> float array`` of the cells' shape in
            code steps, as `tfxbar.Interpreter` takes it; drawn once for the program's cells.
        engine: ``"auto"`` (default, or ``$TFXBAR_ENGINE``): the fused native CPU kernel
            (`tfxbar.hardware.native`, built on first use) for program cells wherever it applies,
            else the TF/XLA formulation; ``"native"``: the same, but fail if it cannot be built;
            ``"tf"``: TF/XLA only. Both compute the same integers.
        native_layers: with the native library loaded (engine ``auto`` or ``native``), run the
            model's BatchNormalization layers and tfxbar output quantizers at inference on its
            in-place ops (`tfxbar.hardware.native_layers`), bit-identical to TensorFlow's and
            faster; False: TensorFlow's own ops.

    Raises:
        ValueError: a crossbar op has no quantized layer of its name in `model`, or an argument
            is invalid (the message names it).

    Example:
        >>> config = tfxbar.ConverterConfig(dac_bits=1, adc_bits=5, adc_range="calibrated",
        ...                                 representative_data=codes[:500])
        >>> with tfxbar.hardware.HardwareMode(qmodel, config) as hw:
        ...     qmodel.fit(x, y, epochs=1)            # ADC-aware training
        ...     print(qmodel.evaluate(x_test, y_test), hw.stats())
    """

    def __init__(self, model: keras.Model, config: ConverterConfig | None = None, *,
                 program: Program | None = None, accumulator_bits: int | None = None,
                 accumulator_mode: str | None = None,
                 conductances: Callable[[str, int, np.ndarray], np.ndarray] | None = None,
                 engine: str | None = None, native_layers: bool = True) -> None:
        require_tf_keras(model)
        native = native_kernel.load(engine)
        self.model = model
        self.program = program if program is not None else CrossbarConverter(model, config).convert()
        options = self.program.header["options"]
        self.accumulator = Accumulator(int(accumulator_bits or options["accumulator_bits"]),
                                       accumulator_mode or options["accumulator_mode"])
        kernels = {k.layer.name: k for k in quantized_kernels(model)}
        self.crossbars: dict[str, HardwareCrossbar] = {}
        for index, op in enumerate(self.program.ops):
            if op["kind"] != "crossbar":
                continue
            kernel = kernels.get(op["name"])
            if kernel is None:
                raise ValueError(f"crossbar op {op['name']!r} has no tfxbar-quantized layer of that name "
                                 "in the model; pass the program converted from this model")
            layout = TileLayout(op, self.program.op_arrays(index))
            self.crossbars[op["name"]] = HardwareCrossbar(layout, kernel, _input_step(model, kernel.wrapper),
                                                          self.accumulator, native=native)
        self.native_layers = NativeLayers(model, native) if native is not None and native_layers else None
        self.installed = False
        self.set_chip(conductances)

    def set_chip(self, conductances: Callable[[str, int, np.ndarray], np.ndarray] | None) -> None:
        """Program one chip: the device conductances of the program's cells (the callable
        `tfxbar.Interpreter` takes, e.g. `tfxbar.hardware.chips.device_chip`), or None for the
        cells of the current weights. Another chip of the same program only assigns variables
        (no retrace)."""
        retrace = False
        for crossbar in self.crossbars.values():
            layout = crossbar.layout
            cells = None if conductances is None else \
                [layout.program_cells(g, conductances) for g in layout.groups]
            retrace = crossbar.set_cells(cells) or retrace
        if retrace and self.installed:
            self._retrace()

    def install(self) -> HardwareMode:
        """Put the hardware crossbars into the model's layers; returns self."""
        if not self.installed:
            for crossbar in self.crossbars.values():
                crossbar.layer.call = crossbar.call   # the QuantizeWrapper calls `layer.call`
            if self.native_layers is not None:
                self.native_layers.install()
            self.installed = True
            self._retrace()
        return self

    def remove(self) -> None:
        """Restore the layers' own `call` (the model is as before)."""
        if self.installed:
            for crossbar in self.crossbars.values():
                del crossbar.layer.call
            if self.native_layers is not None:
                self.native_layers.remove()
            self.installed = False
            self._retrace()

    def __enter__(self) -> HardwareMode:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def _retrace(self) -> None:
        # Keras caches traced functions; the layers' calls changed, so they must be traced again.
        self.model.train_function = self.model.test_function = self.model.predict_function = None

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters since the last `reset_stats`, per crossbar layer, as `Interpreter.stats`."""
        return {name: {key: int(getattr(c, key).numpy())
                       for key in ("adc_clips", "adc_conversions", "acc_overflows")}
                for name, c in self.crossbars.items()}

    def reset_stats(self) -> None:
        """Zero every counter."""
        for crossbar in self.crossbars.values():
            crossbar.reset()

