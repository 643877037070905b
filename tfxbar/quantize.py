"""`quantize_model`: one call from a float tf_keras model to a crossbar-aware QAT model."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import tf_keras as keras

from tfxbar import tfmot_api
from tfxbar.calibration import calibrate
from tfxbar.compat import require_tf_keras
from tfxbar.export import ConversionError, CrossbarConverter
from tfxbar.scheme import CrossbarScheme, LayerSpec, Preset, QuantizationPlan

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
        strict: raise if any weighted layer stays float or if the converter would reject a
            layer (no export handler, float weights or float input to a crossbar, or an error
            of the converter's lowering of the quantized model). Without `strict`, one warning
            lists all of these — before training, not at export.
        verbose: print the quantization plan.

    Returns:
        The quantized model.

    Raises:
        TypeError: `model` is a Keras 3 model.
        ValueError: unknown preset or layer names; with `strict`, a layer left float or one
            the converter would reject (the message lists them all, each with its fix).

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
    problems = _problems(plan, quantized if strict else None)
    if strict and problems:
        raise ValueError(f"quantize_model(strict=True) under preset {plan.preset.name!r}:\n"
                         + "\n".join(problems) + f"\n{plan}")
    if problems:
        warnings.warn("\n".join(problems), stacklevel=2)
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


def _problems(plan: QuantizationPlan, quantized: keras.Model | None) -> list[str]:
    """The report lines of layers left float and of layers the converter would reject; with
    `quantized`, the converter's own lowering also runs (it sees the wiring, e.g. a float
    tensor reaching a merge), and its first error is added if it names a new layer."""
    lines = []
    if plan.float_layers:
        lines.append(f"{len(plan.float_layers)} layer(s) left float (not quantized):")
        lines.extend(f"  {name} ({plan.layers[name].kind}): {'; '.join(plan.layers[name].notes)}"
                     for name in plan.float_layers)
    unconvertible = dict(plan.unconvertible)
    if quantized is not None:
        try:
            CrossbarConverter(quantized).lower()
        except ConversionError as exc:
            # The converter names tfmot's wrappers ("quant_<layer>").
            name = (exc.layer or "(model)").removeprefix("quant_")
            if name not in unconvertible:
                unconvertible[name] = str(exc)
    if unconvertible:
        lines.append(f"{len(unconvertible)} layer(s) the crossbar converter would reject:")
        lines.extend(f"  {reason}" for reason in unconvertible.values())
    return lines
