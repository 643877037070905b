"""Set activation-quantizer steps (and P1's binarization thresholds) from data."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.export.finite import check_finite, warn_if_negative
from tfxbar.introspect import quantized_outputs

__all__ = ["calibrate"]


def _before_output_quantizer(wrapper: keras.layers.Layer, inputs: Any) -> Any:
    """The wrapped layer's output before its output quantizer, with its weights quantized as
    in the forward pass (a crossbar layer's kernel, or a ReLU's). The wrapper's own call does
    that; its output quantizers are hidden for the call (without Keras' attribute tracking)."""
    saved = wrapper._output_quantizers  # noqa: SLF001
    object.__setattr__(wrapper, "_output_quantizers", [])
    try:
        return wrapper.call(inputs, training=False)
    finally:
        object.__setattr__(wrapper, "_output_quantizers", saved)


def _as_array(data: Any, max_samples: int) -> np.ndarray:
    if isinstance(data, tf.data.Dataset):
        parts, count = [], 0
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            parts.append(np.asarray(x))
            count += len(parts[-1])
            if count >= max_samples:
                break
        if not parts:
            raise ValueError("calibration dataset is empty")
        data = np.concatenate(parts)
    elif isinstance(data, (tuple, list)):
        data = data[0]
    array = np.asarray(data)
    if array.size == 0:
        raise ValueError("calibration data is empty")
    # One NaN sample would make every step downstream NaN, silently.
    array = check_finite(array[:max_samples], "calibration data", "drop or replace those samples "
                         "(e.g. x[np.isfinite(x).all(axis=tuple(range(1, x.ndim)))])")
    warn_if_negative(array, "calibration data")
    return array


def calibrate(model: keras.Model, data: Any, *, max_samples: int = 2048,
              batch_size: int = 256, verbose: bool = False) -> dict[str, float]:
    """Choose every calibratable activation quantizer's step from `data`, in layer order.

    For each quantizer, in topological order, the tensor that enters it is computed on the
    calibration samples with the steps already chosen upstream, and the quantizer picks its
    step (`ClippedRound.calibrated_step`: minimum squared error; `InputBinarizer`: its rule).
    ``"learned"`` steps get a starting value, ``"calibrated"`` ones their final value,
    ``"fixed"`` ones are left alone.

    Arguments:
        model: a model quantized by `tfxbar.quantize_model` or `quantize_apply(…, CrossbarScheme)`.
        data: inputs as an array, an ``(x, y)`` tuple, or a `tf.data.Dataset` of x or (x, y).
        max_samples: how many examples to use at most.
        batch_size: batch size of the forward passes.
        verbose: print each chosen step.

    Returns:
        The chosen step per layer name.
    """
    x = _as_array(data, max_samples)
    chosen = {}
    for output in quantized_outputs(model):
        if not output.quantizer.calibratable:
            continue
        probe = keras.Model(model.inputs, output.input_tensor())
        wrapper = output.layer if isinstance(output.layer, tfmot_api.QuantizeWrapper) else None
        parts = []
        for start in range(0, len(x), batch_size):
            # Eager calls: one probe per quantizer would otherwise retrace a predict function.
            entering = probe(x[start:start + batch_size], training=False)
            if wrapper is not None:  # the quantizer sees the wrapped layer's output
                entering = _before_output_quantizer(wrapper, entering)
            parts.append(np.asarray(entering))
        entering = check_finite(np.concatenate(parts), f"the input of {output.layer.name!r}'s quantizer",
                                "the layers before it produce NaN/Inf: check their weights")
        step = float(output.quantizer.calibrated_step(entering))
        output.quantizer.set_step(output.variables, step)
        chosen[output.layer.name] = step
        if verbose:
            print(f"calibrated {output.layer.name}: step {step:.5g}")
    return chosen
