"""The layout transform of the crossbar scheme: plan the layers, quantize the model input."""

from __future__ import annotations

from typing import Any

import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.quantizers import ClippedRound

__all__ = ["CrossbarLayoutTransform", "QuantizeModelInput", "SplitSeparableConv"]

_QuantizeLayer = tfmot_api.QuantizeLayer


class QuantizeModelInput(tfmot_api.Transform):
    """InputLayer → InputLayer → QuantizeLayer(quantizer): the first crossbar reads codes."""

    def __init__(self, quantizer: ClippedRound) -> None:
        self.quantizer = quantizer

    def pattern(self) -> tfmot_api.LayerPattern:
        return tfmot_api.LayerPattern("InputLayer")

    def replacement(self, match_layer: tfmot_api.LayerNode) -> tfmot_api.LayerNode:
        layer = _QuantizeLayer(self.quantizer, name=f"{match_layer.layer['config']['name']}_codes")
        config = {"class_name": "QuantizeLayer", "config": layer.get_config(), "name": layer.name}
        return tfmot_api.LayerNode(config, input_layers=[match_layer])

    def custom_objects(self) -> dict[str, Any]:
        return {"QuantizeLayer": _QuantizeLayer}


def _node(layer: keras.layers.Layer, weights: dict[str, Any], inputs: list, metadata: dict
          ) -> tfmot_api.LayerNode:
    config = {"class_name": type(layer).__name__, "config": layer.get_config(), "name": layer.name}
    return tfmot_api.LayerNode(config, weights=weights, input_layers=inputs, metadata=metadata)


class SplitSeparableConv(tfmot_api.Transform):
    """SeparableConv2D → DepthwiseConv2D (``<name>_depthwise``) → 1×1 Conv2D (``<name>``).

    The two layers compute what the SeparableConv2D computed, with its weights, so a trained
    float model keeps its function; the split gives each its own crossbar and gives the
    pointwise conv an input quantizer on the depthwise output. That quantizer is unsigned,
    so from then on negative depthwise outputs clip to 0 (quantization-aware training adapts
    to it). The pointwise conv keeps the layer's name: its consumers and `layer_specs` still
    find it.
    """

    def pattern(self) -> tfmot_api.LayerPattern:
        return tfmot_api.LayerPattern("SeparableConv2D")

    def replacement(self, match_layer: tfmot_api.LayerNode) -> tfmot_api.LayerNode:
        config = match_layer.layer["config"]
        name = config["name"]
        common = {key: config[key] for key in ("trainable", "dtype", "data_format")}
        depthwise = keras.layers.DepthwiseConv2D(
            config["kernel_size"], strides=config["strides"], padding=config["padding"],
            depth_multiplier=config["depth_multiplier"], dilation_rate=config["dilation_rate"],
            use_bias=False, depthwise_initializer=config["depthwise_initializer"],
            depthwise_regularizer=config["depthwise_regularizer"],
            depthwise_constraint=config["depthwise_constraint"], name=f"{name}_depthwise", **common)
        pointwise = keras.layers.Conv2D(
            config["filters"], 1, activation=config["activation"], use_bias=config["use_bias"],
            kernel_initializer=config["pointwise_initializer"],
            kernel_regularizer=config["pointwise_regularizer"],
            kernel_constraint=config["pointwise_constraint"],
            bias_initializer=config["bias_initializer"], bias_regularizer=config["bias_regularizer"],
            bias_constraint=config["bias_constraint"],
            activity_regularizer=config["activity_regularizer"], name=name, **common)
        # Weights by their variable names without the layer scope ("depthwise_kernel:0").
        pairs = match_layer.weights.items() if match_layer.weights else match_layer.names_and_weights
        weights = {key.split("/")[-1].split(":")[0]: value for key, value in pairs}
        metadata = dict(match_layer.metadata or {})
        depthwise_node = _node(depthwise, {"depthwise_kernel:0": weights["depthwise_kernel"]},
                               match_layer.input_layers, metadata)
        pointwise_weights = {"kernel:0": weights["pointwise_kernel"]}
        if config["use_bias"]:
            pointwise_weights["bias:0"] = weights["bias"]
        return _node(pointwise, pointwise_weights, [depthwise_node], metadata)


class CrossbarLayoutTransform(tfmot_api.QuantizeLayoutTransform):
    """Plans the model with the scheme's preset and fills `layer_quantize_map` accordingly.

    Layers that need no quantization are dropped from the map so tfmot leaves them unwrapped;
    user-supplied QuantizeConfigs are kept as they are.
    """

    def __init__(self, scheme: Any) -> None:
        self._scheme = scheme

    def apply(self, model: keras.Model, layer_quantize_map: dict) -> tuple[keras.Model, dict]:
        from tfxbar.scheme.plan import plan_quantization

        if any(isinstance(layer, keras.layers.SeparableConv2D) for layer in model.layers):
            model, layer_quantize_map = tfmot_api.ModelTransformer(
                model, [SplitSeparableConv()], candidate_layers=set(layer_quantize_map),
                layer_metadata=layer_quantize_map).transform()
        custom = {name: meta["quantize_config"] for name, meta in layer_quantize_map.items()
                  if meta.get("quantize_config") is not None}
        # Sequential models keep their InputLayer out of `model.layers`.
        inputs = {layer.name for layer in model._input_layers}  # noqa: SLF001
        plan = plan_quantization(model, self._scheme.preset, self._scheme.layer_specs,
                                 custom_configs=custom, only=set(layer_quantize_map) - inputs)
        self._scheme.plan = plan
        quantize_map = {}
        for name, meta in layer_quantize_map.items():
            config = plan.config_for(name)
            if config is not None:
                quantize_map[name] = {**meta, "quantize_config": config}
            elif name in inputs:
                quantize_map[name] = meta
        if plan.input_quantizer is None:
            return model, quantize_map
        return tfmot_api.ModelTransformer(
            model, [QuantizeModelInput(plan.input_quantizer)],
            candidate_layers=set(quantize_map), layer_metadata=quantize_map,
        ).transform()
