"""Device variation: ReRAM cell non-idealities for training (`DeviceVariation`) and evaluation
(`evaluate_under_variation`), acting on the same cells the exporter programs."""

from tfxbar.variation.callback import DeviceVariation
from tfxbar.variation.cells import CellNoise, VariationState, remove_variation
from tfxbar.variation.devices import DeviceModel
from tfxbar.variation.evaluate import VariationResult, evaluate_under_variation
from tfxbar.variation.plot import plot_robustness
from tfxbar.variation.schedules import Schedule, constant, per_epoch, ramp

__all__ = [
    "CellNoise",
    "DeviceModel",
    "DeviceVariation",
    "Schedule",
    "VariationResult",
    "VariationState",
    "constant",
    "evaluate_under_variation",
    "per_epoch",
    "plot_robustness",
    "ramp",
    "remove_variation",
]
