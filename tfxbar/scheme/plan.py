"""Decide, layer by layer, what a preset quantizes — and report what it could not."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.compat import require_tf_keras
from tfxbar.export.errors import ConversionError
from tfxbar.export.handlers import handler_for
from tfxbar.quantizers import ClippedRound, WeightQuantizer
from tfxbar.scheme.configs import CROSSBAR_LAYERS, CrossbarConfig, OutputConfig
from tfxbar.scheme.presets import LayerSpec, Preset, get_preset

__all__ = ["LayerDecision", "QuantizationPlan", "plan_quantization"]

_QuantizeConfig = tfmot_api.QuantizeConfig


def _clone(quantizer: Any) -> Any:
    return None if quantizer is None else type(quantizer).from_config(quantizer.get_config())


@dataclasses.dataclass
class LayerDecision:
    """What happens to one layer: its weight quantizer, its output quantizer, and why."""

    name: str
    kind: str
    weights: WeightQuantizer | None = None
    output: ClippedRound | None = None
    custom_config: _QuantizeConfig | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    float_weights: bool = False

    def quantize_config(self) -> _QuantizeConfig | None:
        if self.custom_config is not None:
            return self.custom_config
        if self.weights is not None:
            return CrossbarConfig(self.weights, self.output)
        if self.output is not None:
            return OutputConfig(self.output)
        return None


@dataclasses.dataclass
class QuantizationPlan:
    """The per-layer decisions of a preset on one model; ``str(plan)`` is the report table."""

    preset: Preset
    layers: dict[str, LayerDecision]
    input_quantizer: ClippedRound | None = None
    #: Layers the converter would reject, by name: why, and what to do (`ConversionError` text).
    unconvertible: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def float_layers(self) -> list[str]:
        """Layers with trainable weights that stay float (no crossbar mapping, or spec says so)."""
        return [d.name for d in self.layers.values() if d.float_weights]

    def config_for(self, name: str) -> _QuantizeConfig | None:
        decision = self.layers.get(name)
        return decision.quantize_config() if decision else None

    def __str__(self) -> str:
        rows = [("layer", "type", "weights", "output quantizer", "notes")]
        if self.input_quantizer is not None:
            rows.append(("(model input)", "QuantizeLayer", "-", repr(self.input_quantizer), ""))
        for d in self.layers.values():
            weights = repr(d.weights) if d.weights is not None else ("FLOAT" if d.float_weights else "-")
            rows.append((d.name, d.kind, weights, repr(d.output) if d.output else "-",
                         "; ".join(d.notes)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"tfxbar quantization plan — preset {self.preset.name!r}: {self.preset.description}"]
        for i, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
            if i == 0:
                lines.append("-" * (sum(widths) + 8 + len("notes")))
        if self.float_layers:
            lines.append(f"NOT quantized (left float): {', '.join(self.float_layers)}")
        if self.unconvertible:
            lines.append("The converter would reject:")
            lines.extend(f"  {reason}" for reason in self.unconvertible.values())
        return "\n".join(lines)


#: Averaging a real-valued ReLU output is not an integer operation, so a crossbar input that
#: comes through average pooling is quantized *before* the pooling (the exporter then sums
#: integer codes and folds 1/k into the next layer). Shape-only layers between them are skipped.
_AVERAGING = (keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
              keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D)
_VALUE_PRESERVING = (keras.layers.Dropout, keras.layers.Flatten, keras.layers.Reshape,
                     keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.UpSampling2D)
#: Zero padding commutes with quantization (code 0 is value 0), so the quantizer goes before
#: it and the program pads codes (MobileNet's ReLU → ZeroPadding2D → strided depthwise).
_ZERO_PADDING = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D)


def _quantization_point(consumer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer whose output quantizer realizes `consumer`'s input quantizer."""
    point = _producer(consumer)
    if any(isinstance(p, _AVERAGING) for p in _upstream(point)):
        while isinstance(point, _AVERAGING + _VALUE_PRESERVING + _ZERO_PADDING):
            point = _producer(point)
    while isinstance(point, _ZERO_PADDING):
        point = _producer(point)
    return point


def _upstream(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """`layer` and the shape-only / averaging / padding layers directly above it."""
    chain = [layer]
    while isinstance(chain[-1], _AVERAGING + _VALUE_PRESERVING + _ZERO_PADDING):
        chain.append(_producer(chain[-1]))
    return chain


def _producer(layer: keras.layers.Layer) -> keras.layers.Layer:
    nodes = layer._inbound_nodes  # noqa: SLF001 - the functional graph is only reachable here
    if len(nodes) != 1:
        raise ValueError(
            f"layer {layer.name!r} is called {len(nodes)} times; tfxbar maps each crossbar layer "
            "to one set of arrays, so share weights by building separate layers instead")
    inbound = nodes[0].inbound_layers
    inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
    return inbound[0]


def plan_quantization(
    model: keras.Model,
    preset: str | Preset,
    layer_specs: Mapping[str, LayerSpec] | None = None,
    *,
    custom_configs: Mapping[str, _QuantizeConfig] | None = None,
    only: Iterable[str] | None = None,
) -> QuantizationPlan:
    """Decide how each layer of `model` is quantized under `preset`.

    Crossbar layers (Dense, Conv1D, Conv2D, DepthwiseConv2D) get the preset's weight quantizer;
    their input quantizer is attached to the layer producing their input (or to a
    `QuantizeLayer` after the model input), so every crossbar sees integer codes. Weighted
    layers without a crossbar mapping stay float and are listed in the report
    (`float_layers`), and so is every layer the converter would reject (`unconvertible`: no
    export handler for its type, float weights, or a float input to a crossbar), so a model
    that cannot be deployed is found before it is trained.

    Arguments:
        model: a built tf_keras Sequential or functional model.
        preset: a preset name from `tfxbar.PRESETS` or a `Preset`.
        layer_specs: per-layer overrides, by layer name.
        custom_configs: QuantizeConfigs the user attached with `quantize_annotate_layer`.
        only: restrict quantization to these layer names (the annotated ones).

    Returns:
        A `QuantizationPlan`; print it for the report table.

    Raises:
        ValueError: a name in `layer_specs` is not a crossbar layer of `model`.
        TypeError: `model` is not a tf_keras model.
    """
    require_tf_keras(model)
    preset = get_preset(preset)
    layer_specs = dict(layer_specs or {})
    custom_configs = dict(custom_configs or {})
    names = {layer.name for layer in model.layers}
    unknown = sorted(set(layer_specs) - names)
    if unknown:
        raise ValueError(f"layer_specs names layers that are not in the model: {unknown}; "
                         f"the model's layers are {sorted(names)}")
    misplaced = sorted(f"{layer.name} ({type(layer).__name__})" for layer in model.layers
                       if layer.name in layer_specs and type(layer) not in CROSSBAR_LAYERS)
    if misplaced:
        crossbars = ", ".join(sorted(t.__name__ for t in CROSSBAR_LAYERS))
        raise ValueError(f"layer_specs name layers that are not crossbar layers: {', '.join(misplaced)}. "
                         f"A LayerSpec sets the weights and inputs of a {crossbars} layer; to quantize "
                         "another layer's output, give the LayerSpec of the crossbar layer it feeds an "
                         "`inputs` quantizer (or attach a QuantizeConfig with quantize_annotate_layer)")
    allowed = set(only) if only is not None else names
    plan = QuantizationPlan(preset, {})
    float_inputs: set[str] = set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        plan.layers[layer.name] = LayerDecision(layer.name, type(layer).__name__)

    def attach_input(consumer: keras.layers.Layer, quantizer: ClippedRound) -> None:
        producer = _quantization_point(consumer)
        if isinstance(producer, keras.layers.InputLayer):
            current = plan.input_quantizer
            if current is None:
                plan.input_quantizer = quantizer
            elif current != quantizer:
                plan.layers[consumer.name].notes.append(
                    f"input quantizer {quantizer!r} conflicts with {current!r}; kept the latter")
            return
        decision = plan.layers[producer.name]
        if decision.output is None:
            decision.output = quantizer
            skipped = _upstream(_producer(consumer))
            via = ("" if producer is _producer(consumer) else
                   " (before average pooling)" if any(isinstance(p, _AVERAGING) for p in skipped)
                   else " (before zero padding)")
            decision.notes.append(f"quantizes the input of {consumer.name}{via}")
        elif decision.output != quantizer:
            plan.layers[consumer.name].notes.append(
                f"wanted input {quantizer!r} but {producer.name} already has {decision.output!r}")

    for layer in model.layers:
        decision = plan.layers.get(layer.name)
        if decision is None:
            continue
        if type(layer) not in CROSSBAR_LAYERS:
            custom = custom_configs.get(layer.name)
            if custom is not None:
                decision.custom_config = custom
                decision.output = getattr(custom, "output_quantizer", None)
                decision.notes.append("user QuantizeConfig")
            if isinstance(layer, keras.layers.BatchNormalization):
                decision.notes.append("kept as BN; folded into integer thresholds at export")
            elif layer.trainable_weights:
                decision.float_weights = True
                decision.notes.append(f"{type(layer).__name__} has no crossbar mapping")
            continue
        if layer.name not in allowed:
            decision.float_weights = True
            decision.notes.append("not annotated for quantization")
            continue
        custom = custom_configs.get(layer.name)
        spec = layer_specs.get(layer.name, preset.spec_for(layer))
        if custom is not None:
            decision.custom_config = custom
            decision.weights = getattr(custom, "weight_quantizer", None)
            decision.notes.append("user QuantizeConfig")
        else:
            decision.weights = _clone(spec.weights)
            if decision.weights is None:
                decision.float_weights = True
                decision.notes.append("spec leaves the weights float")
        inputs = spec.inputs
        if layer.name not in layer_specs and isinstance(_quantization_point(layer), keras.layers.InputLayer):
            inputs = preset.model_input
        if inputs is not None:
            attach_input(layer, _clone(inputs))
        elif custom is None:
            float_inputs.add(layer.name)
    _find_unconvertible(model, plan, float_inputs)
    return plan


def _find_unconvertible(model: keras.Model, plan: QuantizationPlan, float_inputs: set[str]) -> None:
    """Fill `plan.unconvertible` before any training: layer types the exporter has no handler
    for (asked of its handler registry, so a newly registered handler counts), crossbar layers
    left with float weights, and crossbar layers whose input stays float."""
    for layer in model.layers:
        decision = plan.layers.get(layer.name)
        if decision is None:
            continue
        kind = type(layer).__name__
        try:
            handler_for(layer)
        except ConversionError as exc:
            reason = str(ConversionError(layer.name, kind, exc.problem,
                                         "replace the layer, or register an export handler for it "
                                         "with tfxbar.export.register_handler"))
        else:
            if type(layer) not in CROSSBAR_LAYERS:
                continue
            if decision.weights is None and decision.custom_config is None:
                reason = str(ConversionError(layer.name, kind, "its weights stay float",
                                             "give it a weight quantizer (preset or layer_specs)"))
            elif layer.name in float_inputs:
                reason = str(ConversionError(layer.name, kind, "its input stays float, and a crossbar "
                                             "reads integer codes", "give its LayerSpec an `inputs` "
                                             "quantizer"))
            else:
                continue
        plan.unconvertible[layer.name] = reason
        decision.notes.append("the converter would reject it")
