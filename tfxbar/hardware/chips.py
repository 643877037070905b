"""Simulated chips for the hardware mode: a `DeviceModel`'s conductances of a program's cells.

The draws are those of `tfxbar.variation` (the same `CellNoise` chain, exact Philox draws keyed
by seed, chip, layer and tile), applied to the program's physical cells: every slice and
polarity is its own cell with its own levels. Read noise is drawn once per chip here (the Keras
hardware mode programs a chip once), not per batch as in `evaluate_under_variation`'s ideal mode.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfxbar.variation.cells import CellNoise, VariationState, _Inputs, cell_levels
from tfxbar.variation.devices import DeviceModel

__all__ = ["device_chip"]

_TILES = 4096   # tiles per layer in the key of a tile's random streams


def device_chip(hardware: object, device: DeviceModel, seed: int = 0,
                chip: int = 0) -> Callable[[str, int, np.ndarray], np.ndarray]:
    """Conductances ``(layer, tile, cells) -> float array`` (code units) of chip `chip`.

    Arguments:
        hardware: the `HardwareMode` (its crossbars give each layer's quantizer levels).
        device: the device model.
        seed: base seed; (seed, chip) fixes the chip.
        chip: index of the chip.

    Returns:
        A callable for `HardwareMode.set_chip` or `tfxbar.Interpreter(conductances=...)`.

    Example:
        >>> hw.set_chip(device_chip(hw, tfxbar.DeviceModel.lognormal(0.2), seed=0, chip=3))
    """
    names = list(hardware.crossbars)   # type: ignore[attr-defined]
    state = VariationState(device, seed)
    params = tf.constant(device.parameter_vector())

    def conductances(name: str, tile: int, cells: np.ndarray) -> np.ndarray:
        crossbar = hardware.crossbars[name]   # type: ignore[attr-defined]
        layout = crossbar.layout
        levels = 2 ** layout.slice_bits if layout.slices > 1 else cell_levels(crossbar.kernel.quantizer)
        noise = CellNoise(state, device, names.index(name) * _TILES + tile)
        inputs = _Inputs(params, tf.constant(1.0), tf.constant(int(seed), tf.int64),
                         tf.constant(int(chip), tf.int64), tf.constant(int(chip) * 2 ** 32, tf.int64), None)
        g = tf.constant(cells, tf.float32)
        return (g + noise._cell_delta(g, float(levels), 0, inputs)).numpy()  # noqa: SLF001

    return conductances
