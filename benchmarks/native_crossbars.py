"""The MNIST CNN's native crossbars in hardware mode and the inputs they see (kernel benchmarks).

Shared by benchmarks/kernel_ab.py and benchmarks/crossbar_costs.py: the model from
`examples/mnist_w4a3.py --save`, converted as benchmarks/hardware_throughput.py converts it
(128 × 128 tiles, 1-bit DAC, 6-bit calibrated ADCs).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

import tfxbar
from tfxbar import datasets
from tfxbar.hardware import HardwareCrossbar, HardwareMode


def native_crossbars(model_path: str, images: int) -> tuple[HardwareMode, dict[str, HardwareCrossbar],
                                                            dict[str, tf.Tensor]]:
    """(the installed mode, its crossbars that run the native kernel by name, each one's layer
    input for the first `images` MNIST test images)."""
    x_test, _ = datasets.load("mnist", "test")
    x_train, _ = datasets.load("mnist", "train[:512]")
    tfxbar.register_keras_objects()
    model = keras.models.load_model(model_path, compile=False)
    program = tfxbar.CrossbarConverter.from_keras_model(
        model, dac_bits=1, adc_bits=6, adc_range="calibrated", representative_data=x_train[:256]).convert()
    mode = HardwareMode(model, program=program, engine="native").install()
    crossbars = {name: c for name, c in mode.crossbars.items() if c.simulation.uses_native}
    x = (x_test[:images] / 255.0).astype(np.float32)
    taps = keras.Model(model.inputs, [c.kernel.wrapper.input for c in crossbars.values()])
    return mode, crossbars, dict(zip(crossbars, taps(x), strict=True))
