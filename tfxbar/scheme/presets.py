"""Named quantization presets, one per paper setting, and the per-layer spec they are made of."""

from __future__ import annotations

import dataclasses

import tf_keras as keras

from tfxbar.quantizers import (
    BiasedWeights,
    BinaryWeights,
    ClippedRound,
    InputBinarizer,
    UniformWeights,
    WeightQuantizer,
)

__all__ = ["PRESETS", "LayerSpec", "Preset", "get_preset", "pixel_input"]


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """How one crossbar layer is quantized.

    Arguments:
        weights: the kernel's quantizer; None leaves the layer float (reported as such).
        inputs: the quantizer of the layer's *input*. It is attached to the layer that produces
            that input (a ReLU, pooling, Flatten, BN or the previous crossbar layer), so the
            crossbar always receives integer codes; None leaves the input float.
    """

    weights: WeightQuantizer | None = None
    inputs: ClippedRound | None = None


def pixel_input() -> ClippedRound:
    """8-bit codes of [0, 1]-scaled pixels: step 1/255, never trained."""
    return ClippedRound(bits=8, step="fixed", init_step=1.0 / 255.0)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named setting: a `LayerSpec` for convolutions, one for dense layers, and the model input.

    Arguments:
        name: the preset's name.
        description: one line for reports.
        conv: spec for Conv2D and DepthwiseConv2D layers.
        dense: spec for Dense layers.
        model_input: input quantizer of a crossbar layer that reads the model input directly.
    """

    name: str
    description: str
    conv: LayerSpec
    dense: LayerSpec
    model_input: ClippedRound | None = dataclasses.field(default_factory=pixel_input)

    def spec_for(self, layer: keras.layers.Layer) -> LayerSpec:
        return self.dense if isinstance(layer, keras.layers.Dense) else self.conv


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "binary-dense",
            "P1: binary dense weights with 1-bit calibrated inputs; 8-bit convolutions",
            conv=LayerSpec(UniformWeights(8), ClippedRound(8)),
            dense=LayerSpec(BinaryWeights(), InputBinarizer()),
        ),
        Preset(
            "binary-mlp",
            "P3: binary weights on differential binary cells, 8-bit activations",
            conv=LayerSpec(BinaryWeights(), ClippedRound(8)),
            dense=LayerSpec(BinaryWeights(), ClippedRound(8)),
        ),
        Preset(
            "w2a2-biased",
            "P2: 2-bit trained-biased weights (one cell + bias column), 2-bit activations",
            conv=LayerSpec(BiasedWeights(2), ClippedRound(2)),
            dense=LayerSpec(BiasedWeights(2), ClippedRound(2)),
        ),
        Preset(
            "w4a3",
            "P4: 4-bit symmetric weights, 3-bit activations",
            conv=LayerSpec(UniformWeights(4), ClippedRound(3)),
            dense=LayerSpec(UniformWeights(4), ClippedRound(3)),
        ),
        Preset(
            "w8a8",
            "8-bit symmetric weights, 8-bit activations",
            conv=LayerSpec(UniformWeights(8), ClippedRound(8)),
            dense=LayerSpec(UniformWeights(8), ClippedRound(8)),
        ),
    )
}


def get_preset(preset: str | Preset) -> Preset:
    """The `Preset` named `preset` (or `preset` itself); ValueError listing the names otherwise."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown preset {preset!r}; choose one of {sorted(PRESETS)} or pass a tfxbar.Preset"
        ) from None
