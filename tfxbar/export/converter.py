"""`CrossbarConverter`: a tf_keras model quantized by tfxbar → a crossbar `Program`.

Shaped like ``tf.lite.TFLiteConverter``::

    converter = tfxbar.CrossbarConverter.from_keras_model(qmodel)
    converter.tile_rows = converter.tile_cols = 64
    converter.weight_mapping = "bit_sliced"
    program = converter.convert()
    program.save("model.xbar")
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.compat import require_tf_keras
from tfxbar.export.config import DATA_ADC_RANGES, ConverterConfig
from tfxbar.export.errors import ConversionError
from tfxbar.export.format import Program
from tfxbar.export.handlers import LayerContext, handler_for
from tfxbar.export.ir import Graph
from tfxbar.export.lowering import Lowering
from tfxbar.export.passes import PIPELINE
from tfxbar.export.writer import write_program
from tfxbar.introspect import quantized_kernels, quantized_outputs

__all__ = ["CrossbarConverter"]


def _inbound(model: keras.Model, layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers feeding `layer` inside `model` (a layer may also live in other models)."""
    keys = getattr(model, "_network_nodes", None)  # noqa: SLF001
    nodes = [node for i, node in enumerate(layer._inbound_nodes)  # noqa: SLF001
             if keys is None or f"{layer.name}_ib-{i}" in keys]
    if len(nodes) != 1:
        raise ConversionError(layer.name, type(layer).__name__, f"is called {len(nodes)} times",
                              "tfxbar converts models where each layer is used once (build "
                              "separate layers instead of sharing one)")
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _copy(state: Any) -> Any:
    return None if state is None else state.copy()


# Layers whose output is their input rearranged (at inference): a quantizer on one of them, right
# after the model input, quantizes the model input itself.
_RESHAPES = (keras.layers.Flatten, keras.layers.Dropout)


class CrossbarConverter:
    """Converts a tfxbar-quantized tf_keras model into a crossbar program.

    Every `ConverterConfig` field is also an attribute of the converter (``tile_rows``,
    ``weight_mapping``, ``dac_bits`` …), so it can be set like a TFLite converter option.

    Arguments:
        model: a model returned by `tfxbar.quantize_model` (trained or not).
        config: a `ConverterConfig` (default options when None).
    """

    def __init__(self, model: keras.Model, config: ConverterConfig | None = None) -> None:
        require_tf_keras(model)
        if not model.layers:   # lower() would fail with an IndexError on model.layers[-1]
            raise ConversionError(None, "model", "has no layers", "add layers (at least one Dense or Conv2D) "
                                  "and quantize it with tfxbar.quantize_model")
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "config", config or ConverterConfig())
        object.__setattr__(self, "passes", list(PIPELINE))

    @classmethod
    def from_keras_model(cls, model: keras.Model, config: ConverterConfig | None = None,
                         **options: Any) -> CrossbarConverter:
        """A converter for `model`; `options` set `ConverterConfig` fields."""
        config = dataclasses.replace(config or ConverterConfig(), **options)
        return cls(model, config)

    def __getattr__(self, name: str) -> Any:
        config = self.__dict__.get("config")
        if config is not None and name in {f.name for f in dataclasses.fields(config)}:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in {f.name for f in dataclasses.fields(ConverterConfig)}:
            setattr(self.config, name, value)
        elif name in ("model", "config", "passes"):
            object.__setattr__(self, name, value)
        else:
            raise AttributeError(f"unknown converter option {name!r}; options: "
                                 f"{[f.name for f in dataclasses.fields(ConverterConfig)]}")

    def lower(self) -> Graph:
        """Run the handlers: the model as an IR graph, before any pass.

        Layers are visited in the model's topological order; each Keras tensor keeps its integer
        state (codes or accumulator), which every consumer receives a copy of.
        """
        try:
            self.config.validate()
        except ValueError as exc:
            raise ConversionError(None, "converter option", str(exc)) from None
        model = self.model
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ConversionError(None, "model", f"{len(model.inputs)} inputs and {len(model.outputs)} "
                                  "outputs", "tfxbar converts single-input, single-output models")
        kernels = {k.wrapper.name: k for k in quantized_kernels(model)}
        outputs = {o.layer.name: o for o in quantized_outputs(model)}
        lowering = Lowering(self.config.header())
        states: dict[str, Any] = {}
        for layer in model.layers:
            inner = layer.layer if isinstance(layer, tfmot_api.QuantizeWrapper) else layer
            kind = type(inner).__name__
            handler = handler_for(inner)
            inbound = [] if isinstance(layer, keras.layers.InputLayer) else _inbound(model, layer)
            inputs = [_copy(states.get(source.name)) for source in inbound]
            lowering.state = inputs[0] if len(inputs) == 1 else None
            output = outputs.get(layer.name)
            form = output.form() if output is not None else None
            ctx = LayerContext(lowering, kernels.get(layer.name), layer, inputs,
                               None if form is None else (float(form.step), form.bits))
            if form is not None and lowering.state is None and isinstance(inner, _RESHAPES):
                # Input → Flatten (quantized) → Dense, as quantize_model leaves an MLP: elementwise
                # quantization commutes with the reshape, so the program takes the model input's
                # codes under that quantizer, then flattens them.
                lowering.start(tuple(model.inputs[0].shape[1:]), form.bits, float(form.step), layer.name)
                count = len(lowering.ops)
                handler(inner, ctx)
                if len(lowering.ops) > count:
                    lowering.ops[-1].tap = layer.name
                states[layer.name] = lowering.state
                continue
            handler(inner, ctx)
            if form is not None and not isinstance(layer, tfmot_api.QuantizeLayer) and not ctx.quantized:
                lowering.quantize(layer.name, kind, float(form.step), form.bits)
            states[layer.name] = lowering.state
        last = model.outputs[0]._keras_history.layer  # noqa: SLF001
        lowering.state = states.get(last.name)
        return lowering.finish(last.name)

    def convert(self) -> Program:
        """Lower, run the passes and write the program.

        Returns:
            A validated `Program`; ``.save(path)`` writes it.

        Raises:
            ConversionError: a layer cannot be converted (the message names it and says what to do).
        """
        graph = self.lower()
        for compiler_pass in self.passes:
            graph = compiler_pass(graph)
        if self.config.adc_range in DATA_ADC_RANGES:
            from tfxbar.export.passes.calibrate_adc import calibrate_adc

            graph = calibrate_adc(graph, self.config.representative_data, self.config.adc_range)
        from tfxbar import __version__

        return write_program(graph, producer=f"tfxbar {__version__}")
