"""The crossbar quantization scheme: configs, presets, planning, transform, registry."""

from tfxbar.scheme.configs import CROSSBAR_LAYERS, CrossbarConfig, OutputConfig
from tfxbar.scheme.plan import LayerDecision, QuantizationPlan, plan_quantization
from tfxbar.scheme.presets import PRESETS, LayerSpec, Preset, get_preset, pixel_input
from tfxbar.scheme.scheme import CrossbarScheme
from tfxbar.scheme.transforms import SplitSeparableConv

__all__ = [
    "CROSSBAR_LAYERS",
    "PRESETS",
    "CrossbarConfig",
    "CrossbarScheme",
    "LayerDecision",
    "LayerSpec",
    "OutputConfig",
    "Preset",
    "QuantizationPlan",
    "SplitSeparableConv",
    "get_preset",
    "pixel_input",
    "plan_quantization",
]
