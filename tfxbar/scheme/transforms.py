"""The layout transform of the crossbar scheme: plan the layers, quantize the model input."""

from __future__ import annotations

from typing import Any

import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.quantizers import ClippedRound

__all__ = ["CrossbarLayoutTransform", "QuantizeModelInput"]

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


class CrossbarLayoutTransform(tfmot_api.QuantizeLayoutTransform):
    """Plans the model with the scheme's preset and fills `layer_quantize_map` accordingly.

    Layers that need no quantization are dropped from the map so tfmot leaves them unwrapped;
    user-supplied QuantizeConfigs are kept as they are.
    """

    def __init__(self, scheme: Any) -> None:
        self._scheme = scheme

    def apply(self, model: keras.Model, layer_quantize_map: dict) -> tuple[keras.Model, dict]:
        from tfxbar.scheme.plan import plan_quantization

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
