"""`CrossbarScheme`: the tfmot `QuantizeScheme` of tfxbar."""

from __future__ import annotations

from collections.abc import Mapping

from tfxbar import tfmot_api
from tfxbar.scheme.presets import LayerSpec, Preset, get_preset
from tfxbar.scheme.registry import CrossbarRegistry
from tfxbar.scheme.transforms import CrossbarLayoutTransform

__all__ = ["CrossbarScheme"]


class CrossbarScheme(tfmot_api.QuantizeScheme):
    """Quantize for crossbars with `tfmot.quantization.keras.quantize_apply`.

    Unlike tfmot's default 8-bit scheme it does not fold BN into convolutions (BN stays a BN
    while training; the exporter folds it) and places each crossbar layer's input quantizer
    on the layer that produces that input. After `quantize_apply`, `scheme.plan` holds the
    per-layer decisions; print it for the report.

    Arguments:
        preset: a name from `tfxbar.PRESETS` or a `Preset`.
        layer_specs: per-layer `LayerSpec` overrides, by layer name.

    Example:
        >>> annotated = tfmot_api.quantize_annotate_model(model)
        >>> qmodel = tfmot_api.quantize_apply(annotated, CrossbarScheme("w4a3"))
    """

    def __init__(self, preset: str | Preset = "w4a3",
                 layer_specs: Mapping[str, LayerSpec] | None = None) -> None:
        self.preset = get_preset(preset)
        self.layer_specs = dict(layer_specs or {})
        self.plan = None

    def get_layout_transformer(self) -> CrossbarLayoutTransform:
        return CrossbarLayoutTransform(self)

    def get_quantize_registry(self) -> CrossbarRegistry:
        return CrossbarRegistry(self)
