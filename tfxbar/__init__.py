"""tfxbar: train, stress and deploy tf_keras CNNs for resistive-crossbar accelerators.

Importing tfxbar registers every tfxbar object (and tfmot's wrappers) as Keras-serializable,
so `tf_keras.models.load_model` restores quantized models without custom-object scopes.
"""

import tf_keras as keras

from tfxbar import check, hardware, models, quantizers, sweep, tfmot_api
from tfxbar.calibration import calibrate
from tfxbar.check import CheckReport, check_program
from tfxbar.check.planner import BitwidthPlan, a2q_l1_bound, plan_bitwidths
from tfxbar.compat import require_tf_keras
from tfxbar.cost import EnergyModel, summary
from tfxbar.export import (
    ConversionError,
    ConverterConfig,
    CrossbarConverter,
    FormatError,
    Interpreter,
    Program,
    load_program,
)
from tfxbar.introspect import QuantizedKernel, QuantizedOutput, quantized_kernels, quantized_outputs
from tfxbar.quantize import quantize_model
from tfxbar.scheme import (
    PRESETS,
    CrossbarConfig,
    CrossbarScheme,
    LayerSpec,
    OutputConfig,
    Preset,
    QuantizationPlan,
    plan_quantization,
)
from tfxbar.variation import DeviceModel, DeviceVariation, evaluate_under_variation, plot_robustness

__version__ = "0.1.0"

# tfmot's wrapper layers are only known inside `quantize_scope()`; make them global so a saved
# quantized model loads with plain `load_model`.
for _cls in (tfmot_api.QuantizeWrapperV2, tfmot_api.QuantizeWrapper,
             tfmot_api.QuantizeLayer):
    keras.utils.get_custom_objects().setdefault(_cls.__name__, _cls)

__all__ = [
    "PRESETS",
    "ConversionError",
    "ConverterConfig",
    "CrossbarConverter",
    "FormatError",
    "Interpreter",
    "Program",
    "BitwidthPlan",
    "CheckReport",
    "CrossbarConfig",
    "CrossbarScheme",
    "DeviceModel",
    "DeviceVariation",
    "EnergyModel",
    "LayerSpec",
    "OutputConfig",
    "Preset",
    "QuantizationPlan",
    "QuantizedKernel",
    "QuantizedOutput",
    "a2q_l1_bound",
    "calibrate",
    "check_program",
    "load_program",
    "evaluate_under_variation",
    "plan_bitwidths",
    "plan_quantization",
    "plot_robustness",
    "quantize_model",
    "quantized_kernels",
    "quantized_outputs",
    "check",
    "hardware",
    "models",
    "quantizers",
    "require_tf_keras",
    "summary",
    "sweep",
]
