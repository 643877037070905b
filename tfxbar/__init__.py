"""tfxbar: train, stress and deploy tf_keras CNNs for resistive-crossbar accelerators.

`import tfxbar` does not import TensorFlow by itself, so the numpy-only parts (program files,
interpreter, checker, cost model, the `tfxbar info/check/run` commands) start in a fraction of a
second. The Keras side (quantizers, schemes, converter, variation) is imported, and every tfxbar
object (and tfmot's wrappers) registered as Keras-serializable, as soon as tf_keras was imported
before tfxbar or any of its names is used — so `tf_keras.models.load_model` restores quantized
models without custom-object scopes after ``import tf_keras as keras; import tfxbar``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

# Public name -> module. Names in _NUMPY_ONLY come without importing TensorFlow.
_NAMES = {
    "PRESETS": "tfxbar.scheme", "CrossbarConfig": "tfxbar.scheme", "CrossbarScheme": "tfxbar.scheme",
    "LayerSpec": "tfxbar.scheme", "OutputConfig": "tfxbar.scheme", "Preset": "tfxbar.scheme",
    "QuantizationPlan": "tfxbar.scheme", "plan_quantization": "tfxbar.scheme",
    "ConversionError": "tfxbar.export", "ConverterConfig": "tfxbar.export",
    "CrossbarConverter": "tfxbar.export",
    "FormatError": "tfxbar.export", "Interpreter": "tfxbar.export", "Program": "tfxbar.export",
    "load_program": "tfxbar.export",
    "BitwidthPlan": "tfxbar.check.planner", "a2q_l1_bound": "tfxbar.check.planner",
    "plan_bitwidths": "tfxbar.check.planner",
    "CheckReport": "tfxbar.check", "check_program": "tfxbar.check",
    "EnergyModel": "tfxbar.cost", "summary": "tfxbar.cost",
    "calibrate": "tfxbar.calibration", "require_tf_keras": "tfxbar.compat",
    "QuantizedKernel": "tfxbar.introspect", "QuantizedOutput": "tfxbar.introspect",
    "quantized_kernels": "tfxbar.introspect", "quantized_outputs": "tfxbar.introspect",
    "quantize_model": "tfxbar.quantize",
    "DeviceModel": "tfxbar.variation", "DeviceVariation": "tfxbar.variation",
    "evaluate_under_variation": "tfxbar.variation", "plot_robustness": "tfxbar.variation",
    "inference_batches": "tfxbar.pipelines",
}
_NUMPY_ONLY = {"ConversionError", "FormatError", "Interpreter", "Program", "load_program", "CheckReport",
               "check_program", "EnergyModel", "summary"}
_SUBMODULES = ("check", "hardware", "models", "quantizers", "sweep")
_REGISTERING = ("check", "models", "quantizers")   # submodules that define Keras objects

__all__ = sorted(_NAMES) + list(_SUBMODULES) + ["register_keras_objects"]


def register_keras_objects() -> None:
    """Import every Keras-side module (TensorFlow), registering tfxbar's and tfmot's objects with
    Keras. Automatic when tf_keras is imported before tfxbar or a Keras-side name is used; call it
    before `tf_keras.models.load_model` otherwise."""
    for module in sorted(set(_NAMES.values()) | {f"tfxbar.{m}" for m in _REGISTERING}):
        importlib.import_module(module)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"tfxbar.{name}")
    if name not in _NAMES:
        raise AttributeError(f"module 'tfxbar' has no attribute {name!r}")
    if name not in _NUMPY_ONLY:
        register_keras_objects()
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value   # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if "tf_keras" in sys.modules:   # Keras is loaded already: register everything now, as before
    register_keras_objects()
