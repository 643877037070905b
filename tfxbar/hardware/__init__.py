"""Hardware mode in Keras: crossbar layers that compute the program's tiles, DACs, ADCs and
accumulator in TensorFlow, bit-exact with `tfxbar.Interpreter(program, "hardware")` and
trainable through straight-through gradients (docs/hardware_mode.md)."""

from tfxbar.hardware.model import HardwareCrossbar, HardwareMode
from tfxbar.hardware.simulate import Accumulator, CrossbarSimulation
from tfxbar.hardware.steps import with_adc_steps
from tfxbar.hardware.tiles import TileLayout

__all__ = ["Accumulator", "CrossbarSimulation", "HardwareCrossbar", "HardwareMode", "TileLayout",
           "with_adc_steps"]
