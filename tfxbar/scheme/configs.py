"""tfmot `QuantizeConfig`s for crossbar layers and for the layers that feed them."""

from __future__ import annotations

from typing import Any

import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.quantizers.activation import ClippedRound
from tfxbar.quantizers.base import WeightQuantizer

__all__ = ["CROSSBAR_LAYERS", "CrossbarConfig", "OutputConfig", "kernel_attribute"]

_QuantizeConfig = tfmot_api.QuantizeConfig

#: Layer types whose kernel maps onto crossbar arrays, with the kernel attribute and the
#: kernel axis of the output channels. Exact types: Conv2DTranspose subclasses Conv2D but
#: has no crossbar mapping here.
CROSSBAR_LAYERS: dict[type, tuple[str, int]] = {
    keras.layers.Dense: ("kernel", -1),
    keras.layers.Conv2D: ("kernel", -1),
    keras.layers.Conv1D: ("kernel", -1),
    keras.layers.DepthwiseConv2D: ("depthwise_kernel", -2),
}


def kernel_attribute(layer: keras.layers.Layer) -> tuple[str, int]:
    """``(attribute, channel_axis)`` of a crossbar layer's kernel; TypeError for other layers."""
    try:
        return CROSSBAR_LAYERS[type(layer)]
    except KeyError:
        supported = ", ".join(t.__name__ for t in CROSSBAR_LAYERS)
        raise TypeError(
            f"layer {layer.name!r} ({type(layer).__name__}) has no crossbar mapping; "
            f"supported: {supported}"
        ) from None


def _serialize(obj: Any) -> Any:
    if obj is None:
        return None
    return {"class_name": keras.utils.get_registered_name(type(obj)), "config": obj.get_config()}


def _deserialize(config: Any) -> Any:
    # Resolved by registered name ourselves: tf_keras' legacy (h5) deserializer only knows
    # bare class names, the v3 one only registered names.
    if config is None:
        return None
    name = config.get("registered_name") or config["class_name"]
    cls = keras.utils.get_registered_object(name)
    if cls is None and name.startswith("tfxbar>"):
        # tfxbar.check imports its Keras part (A2QWeights) lazily, so `import tfxbar` alone
        # has not registered it yet.
        import tfxbar.check.a2q  # noqa: F401

        cls = keras.utils.get_registered_object(name)
    if cls is None:
        raise ValueError(f"unknown quantizer {name!r} in a saved tfxbar config: import tfxbar "
                         "(and the module defining it) before loading the model")
    return cls.from_config(config["config"])


@keras.utils.register_keras_serializable(package="tfxbar")
class CrossbarConfig(_QuantizeConfig):
    """Quantizes the kernel of a Dense / Conv2D / DepthwiseConv2D layer for a crossbar.

    The bias and any fused activation stay float during training (the exporter folds them
    into integer thresholds). `output_quantizer`, when given, quantizes the layer's output —
    the input of the next crossbar layer.

    Arguments:
        weight_quantizer: a `WeightQuantizer` (binary, ternary, biased, uniform).
        output_quantizer: an optional `ClippedRound` for the layer's output.

    Example:
        >>> layer = tfmot.quantization.keras.quantize_annotate_layer(
        ...     keras.layers.Dense(10), CrossbarConfig(BinaryWeights()))
    """

    def __init__(self, weight_quantizer: WeightQuantizer,
                 output_quantizer: ClippedRound | None = None) -> None:
        if not isinstance(weight_quantizer, WeightQuantizer):
            raise TypeError(
                f"weight_quantizer must be a tfxbar WeightQuantizer, got {weight_quantizer!r}")
        self.weight_quantizer = weight_quantizer
        self.output_quantizer = output_quantizer

    def get_weights_and_quantizers(self, layer: keras.layers.Layer) -> list:
        attribute, axis = kernel_attribute(layer)
        self.weight_quantizer.channel_axis = axis
        return [(getattr(layer, attribute), self.weight_quantizer)]

    def set_quantize_weights(self, layer: keras.layers.Layer, quantize_weights: list) -> None:
        setattr(layer, kernel_attribute(layer)[0], quantize_weights[0])

    def get_activations_and_quantizers(self, layer: keras.layers.Layer) -> list:
        return []

    def set_quantize_activations(self, layer: keras.layers.Layer, quantize_activations: list) -> None:
        pass

    def get_output_quantizers(self, layer: keras.layers.Layer) -> list:
        return [self.output_quantizer] if self.output_quantizer is not None else []

    def get_config(self) -> dict[str, Any]:
        return {"weight_quantizer": _serialize(self.weight_quantizer),
                "output_quantizer": _serialize(self.output_quantizer)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CrossbarConfig:
        return cls(_deserialize(config["weight_quantizer"]), _deserialize(config.get("output_quantizer")))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()


@keras.utils.register_keras_serializable(package="tfxbar")
class OutputConfig(_QuantizeConfig):
    """Quantizes only the output of a layer (ReLU, BN, pooling, Flatten …) feeding a crossbar."""

    def __init__(self, output_quantizer: ClippedRound) -> None:
        if not isinstance(output_quantizer, ClippedRound):
            raise TypeError(f"output_quantizer must be a tfxbar ClippedRound, got {output_quantizer!r}")
        self.output_quantizer = output_quantizer

    def get_weights_and_quantizers(self, layer: keras.layers.Layer) -> list:
        return []

    def set_quantize_weights(self, layer: keras.layers.Layer, quantize_weights: list) -> None:
        pass

    def get_activations_and_quantizers(self, layer: keras.layers.Layer) -> list:
        return []

    def set_quantize_activations(self, layer: keras.layers.Layer, quantize_activations: list) -> None:
        pass

    def get_output_quantizers(self, layer: keras.layers.Layer) -> list:
        return [self.output_quantizer]

    def get_config(self) -> dict[str, Any]:
        return {"output_quantizer": _serialize(self.output_quantizer)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OutputConfig:
        return cls(_deserialize(config["output_quantizer"]))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()
