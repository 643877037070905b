"""Read the quantizers back out of a quantized model: one place that knows tfmot's wrappers."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.compat import require_tf_keras
from tfxbar.export.finite import require_finite_weights
from tfxbar.pipelines import inference_batches
from tfxbar.quantizers import ActivationForm, ClippedRound, IntegerForm, WeightQuantizer

__all__ = ["QuantizedKernel", "QuantizedOutput", "output_codes", "quantized_kernels", "quantized_outputs"]

_QuantizeWrapper = tfmot_api.QuantizeWrapper
_QuantizeLayer = tfmot_api.QuantizeLayer


@dataclasses.dataclass(frozen=True)
class QuantizedKernel:
    """A crossbar kernel in a quantized model: the clean variable, its quantizer and state."""

    wrapper: keras.layers.Layer
    kernel: Any
    quantizer: WeightQuantizer
    variables: dict[str, Any]

    @property
    def layer(self) -> keras.layers.Layer:
        """The wrapped Keras layer (Dense, Conv2D, DepthwiseConv2D)."""
        return self.wrapper.layer

    def integer_form(self) -> IntegerForm:
        """Integer codes, scale and offset of the kernel as the model currently holds it."""
        return self.quantizer.integer_form(
            self.kernel.numpy(), {k: v.numpy() for k, v in self.variables.items()})

    def fake_quantized(self) -> np.ndarray:
        """The kernel the forward pass uses, computed by the quantizer itself."""
        return self.quantizer(self.kernel, False, self.variables).numpy()


@dataclasses.dataclass(frozen=True)
class QuantizedOutput:
    """An activation quantizer: on a wrapped layer's output, or a `QuantizeLayer` on an input."""

    layer: keras.layers.Layer
    quantizer: ClippedRound
    variables: dict[str, Any]

    def form(self) -> ActivationForm:
        form = self.quantizer.form({k: v.numpy() for k, v in self.variables.items()})
        # A NaN training pixel makes a learned step NaN; thresholds folded from it are garbage.
        require_finite_weights(self.layer.name, type(self.layer).__name__,
                               **{"output quantizer step": form.step})
        return form

    def input_tensor(self) -> Any:
        """The symbolic tensor that enters this quantizer's layer."""
        return self.layer.input


def quantized_kernels(model: keras.Model) -> list[QuantizedKernel]:
    """Every tfxbar-quantized kernel of `model`, in layer order."""
    require_tf_keras(model)
    found = []
    for layer in model.layers:
        if isinstance(layer, _QuantizeWrapper):
            for weight, quantizer, variables in layer._weight_vars:  # noqa: SLF001
                if isinstance(quantizer, WeightQuantizer):
                    found.append(QuantizedKernel(layer, weight, quantizer, dict(variables)))
    return found


def quantized_outputs(model: keras.Model) -> list[QuantizedOutput]:
    """Every tfxbar activation quantizer of `model`, in layer (topological) order."""
    require_tf_keras(model)
    found = []
    for layer in model.layers:
        if isinstance(layer, _QuantizeWrapper):
            quantizers = layer._output_quantizers or []  # noqa: SLF001
            if quantizers and isinstance(quantizers[0], ClippedRound):
                found.append(QuantizedOutput(layer, quantizers[0],
                                             dict(layer._output_quantizer_vars)))  # noqa: SLF001
        elif isinstance(layer, _QuantizeLayer) and isinstance(layer.quantizer, ClippedRound):
            found.append(QuantizedOutput(layer, layer.quantizer, dict(layer.quantizer_vars)))
    return found


def output_codes(model: keras.Model, x: np.ndarray, names: list[str],
                 batch_size: int = 256) -> dict[str, np.ndarray]:
    """Integer codes that the named quantized layers' output quantizers produce on `x`.

    What the exported program's activations are compared with, layer by layer.

    Arguments:
        model: a quantized model.
        x: model inputs.
        names: names of layers that carry a tfxbar output quantizer.
        batch_size: batch size of the forward pass.

    Returns:
        ``{name: int64 codes}``.
    """
    outputs = {o.layer.name: o for o in quantized_outputs(model)}
    probe = keras.Model(model.inputs, [outputs[n].layer.output for n in names])
    values = probe.predict(inference_batches(x, batch_size=batch_size), verbose=0)
    values = values if isinstance(values, list) else [values]
    return {n: np.round(v / outputs[n].form().step).astype(np.int64)
            for n, v in zip(names, values, strict=True)}
