"""`quantize_model`: one call from a float tf_keras model to a crossbar-aware QAT model."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.calibration import calibrate
from tfxbar.compat import require_tf_keras
from tfxbar.scheme import CrossbarScheme, LayerSpec, Preset

__all__ = ["quantize_model"]


def quantize_model(
    model: keras.Model,
    preset: str | Preset = "w4a3",
    layer_specs: Mapping[str, LayerSpec] | None = None,
    *,
    calibration_data: Any = None,
    strict: bool = False,
    verbose: bool = False,
) -> keras.Model:
    """Quantize a float tf_keras model for resistive crossbars (quantization-aware training).

    The model is annotated, planned with `preset` and built with tfmot's `quantize_apply` and
    `CrossbarScheme`; the result trains with `fit` like any Keras model. Weights of the float
    model are kept, so a pretrained model fine-tunes. The returned model is uncompiled.

    Arguments:
        model: a built tf_keras Sequential or functional model.
        preset: ``"binary-dense"`` (P1), ``"binary-mlp"`` (P3), ``"w2a2-biased"`` (P2),
            ``"w4a3"`` (P4), ``"w8a8"``, or a `tfxbar.Preset`.
        layer_specs: per-layer overrides, by layer name, e.g. an 8-bit first layer.
        calibration_data: inputs for `tfxbar.calibrate`; needed by calibrated quantizers
            (P1's input binarizer) and gives learned steps a data-driven start.
        strict: raise if any weighted layer stays float.
        verbose: print the quantization plan.

    Returns:
        The quantized model.

    Raises:
        TypeError: `model` is a Keras 3 model.
        ValueError: unknown preset or layer names; with `strict`, a layer left float.

    Example:
        >>> qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=x_train[:1000])
        >>> qmodel.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        >>> qmodel.fit(x_train, y_train, epochs=2)
    """
    require_tf_keras(model)
    if not model.built:
        raise ValueError("the model must be built before quantizing: give its first layer an "
                         "input_shape or call model.build(input_shape)")
    scheme = CrossbarScheme(preset, layer_specs)
    annotated = tfmot_api.quantize_annotate_model(model)
    quantized = tfmot_api.quantize_apply(annotated, scheme)
    plan = scheme.plan
    if verbose:
        print(plan)
    if strict and plan.float_layers:
        raise ValueError(f"layers left float under preset {plan.preset.name!r}: "
                         f"{plan.float_layers}\n{plan}")
    needs_data = any(q is not None and q.step == "calibrated"
                     for q in [plan.input_quantizer, *(d.output for d in plan.layers.values())])
    if calibration_data is not None:
        calibrate(quantized, calibration_data)
    elif needs_data:
        warnings.warn(
            f"preset {plan.preset.name!r} has calibrated input quantizers; pass "
            "calibration_data= or call tfxbar.calibrate(model, x) before training",
            stacklevel=2)
    return quantized
