"""The tfmot names tfxbar uses, in one place (QuantizeLayer is not exported by tfmot 0.8)."""

import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (
    QuantizeLayer,
)

_keras = tfmot.quantization.keras
_graph = _keras.graph_transformations

QuantizeConfig = _keras.QuantizeConfig
QuantizeLayoutTransform = _keras.QuantizeLayoutTransform
QuantizeRegistry = _keras.QuantizeRegistry
QuantizeScheme = _keras.QuantizeScheme
QuantizeWrapper = _keras.QuantizeWrapper
QuantizeWrapperV2 = _keras.QuantizeWrapperV2
Quantizer = _keras.quantizers.Quantizer
quantize_annotate_layer = _keras.quantize_annotate_layer
quantize_annotate_model = _keras.quantize_annotate_model
quantize_apply = _keras.quantize_apply
ModelTransformer = _graph.model_transformer.ModelTransformer
LayerNode = _graph.transforms.LayerNode
LayerPattern = _graph.transforms.LayerPattern
Transform = _graph.transforms.Transform

__all__ = [
    "LayerNode",
    "LayerPattern",
    "ModelTransformer",
    "QuantizeConfig",
    "QuantizeLayer",
    "QuantizeLayoutTransform",
    "QuantizeRegistry",
    "QuantizeScheme",
    "QuantizeWrapper",
    "QuantizeWrapperV2",
    "Quantizer",
    "Transform",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
]

# tfmot's wrapper layers are only known inside `quantize_scope()`; make them global so a saved
# quantized model loads with plain `load_model` (every Keras-side tfxbar module imports this one).
for _cls in (QuantizeWrapperV2, QuantizeWrapper, QuantizeLayer):
    keras.utils.get_custom_objects().setdefault(_cls.__name__, _cls)
