"""The crossbar scheme's `QuantizeRegistry`: answers from the plan its transform made."""

from __future__ import annotations

from typing import Any

import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.scheme.configs import CROSSBAR_LAYERS, CrossbarConfig

__all__ = ["CrossbarRegistry"]


class CrossbarRegistry(tfmot_api.QuantizeRegistry):
    """Configs for crossbar layers and for the layers that quantize their inputs.

    tfmot asks the registry about layers the user annotated without a config, and about the
    producers of annotated layers; both answers come from the scheme's plan when there is
    one, else from the preset.
    """

    def __init__(self, scheme: Any) -> None:
        self._scheme = scheme

    def supports(self, layer: keras.layers.Layer) -> bool:
        return self.get_quantize_config(layer) is not None

    def get_quantize_config(self, layer: keras.layers.Layer) -> Any:
        plan = self._scheme.plan
        if plan is not None and layer.name in plan.layers:
            return plan.config_for(layer.name)
        if type(layer) in CROSSBAR_LAYERS:
            spec = self._scheme.preset.spec_for(layer)
            if spec.weights is not None:
                weights = type(spec.weights).from_config(spec.weights.get_config())
                return CrossbarConfig(weights)
        return None
