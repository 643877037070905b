"""Simulated chips for the hardware mode: a `DeviceModel`'s conductances of a program's cells.

The draws are those of `tfxbar.variation` (the same `CellNoise` chain, exact Philox draws keyed
by seed, chip, layer and tile), applied to the program's physical cells: every slice and
polarity is its own cell with its own levels. A cell of the program holds ``slice_bits`` bits
(its op's attrs), so its conductance range is divided into ``2^slice_bits`` levels; everything
a chip needs is in the program file, so the numpy interpreter (``tfxbar run --chips`` without a
Keras model) and the Keras hardware mode draw the same chip. Read noise is drawn once per chip
here (a chip is programmed once), not per batch as in `evaluate_under_variation`'s ideal mode.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfxbar.export.format import Program
from tfxbar.variation.cells import CellNoise, VariationState, _Inputs
from tfxbar.variation.devices import DeviceModel

__all__ = ["device_chip", "program_chip"]

_TILES = 4096   # tiles per layer in the key of a tile's random streams


def program_chip(program: Program, device: DeviceModel, seed: int = 0,
                 chip: int = 0) -> Callable[[str, int, np.ndarray], np.ndarray]:
    """Conductances ``(layer, tile, cells) -> float array`` (code units) of chip `chip` of a program.

    Arguments:
        program: the crossbar program (its crossbar ops, in order, key the layers' streams).
        device: the device model.
        seed: base seed; (seed, chip) fixes the chip.
        chip: index of the chip.

    Returns:
        A callable for `tfxbar.Interpreter(conductances=...)` or `HardwareMode.set_chip`.

    Example:
        >>> chip = program_chip(program, tfxbar.DeviceModel.lognormal(0.2), seed=0, chip=3)
        >>> tfxbar.Interpreter(program, "hardware", conductances=chip).predict(codes)
    """
    crossbars = [op for op in program.ops if op["kind"] == "crossbar"]
    index = {op["name"]: i for i, op in enumerate(crossbars)}
    levels = {op["name"]: float(2 ** op["attrs"]["slice_bits"]) for op in crossbars}
    state = VariationState(device, seed)
    inputs = _Inputs(tf.constant(device.parameter_vector()), tf.constant(1.0),
                     tf.constant(int(seed), tf.int64), tf.constant(int(chip), tf.int64),
                     tf.constant(int(chip) * 2 ** 32, tf.int64), None)

    def conductances(name: str, tile: int, cells: np.ndarray) -> np.ndarray:
        if name not in index:
            raise ValueError(f"{name!r} is not a crossbar op of the program")
        noise = CellNoise(state, device, index[name] * _TILES + tile)
        g = tf.constant(cells, tf.float32)
        return (g + noise._cell_delta(g, levels[name], 0, inputs)).numpy()  # noqa: SLF001

    return conductances


def device_chip(hardware: object, device: DeviceModel, seed: int = 0,
                chip: int = 0) -> Callable[[str, int, np.ndarray], np.ndarray]:
    """`program_chip` of a `HardwareMode`'s program (the chip `evaluate_under_variation` runs).

    Arguments:
        hardware: the `HardwareMode`.
        device: the device model.
        seed: base seed; (seed, chip) fixes the chip.
        chip: index of the chip.

    Returns:
        A callable for `HardwareMode.set_chip` or `tfxbar.Interpreter(conductances=...)`.

    Example:
        >>> hw.set_chip(device_chip(hw, tfxbar.DeviceModel.lognormal(0.2), seed=0, chip=3))
    """
    return program_chip(hardware.program, device, seed, chip)   # type: ignore[attr-defined]
