"""One design point: convert, run ideal / hardware / chips, cost (runs in a worker process)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["evaluate_point"]

_CACHE: dict[str, Any] = {}


def _setup(model_path: str, data_path: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """The model and data, loaded once per worker process."""
    key = f"{model_path}|{data_path}"
    if key not in _CACHE:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")   # tf_keras, also on Ray workers
        import tf_keras as keras

        import tfxbar

        # The worker imported tfxbar (this module) before tf_keras: register explicitly.
        tfxbar.register_keras_objects()
        model = keras.models.load_model(model_path, compile=False)
        with np.load(data_path) as data:
            x, y = data["x"], data["y"]
        _CACHE.clear()
        _CACHE[key] = (model, x, y)
    return _CACHE[key]


def evaluate_point(point: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Accuracy (ideal, hardware, chips mean / worst), energy, tiles and accumulator bits of one point.

    Arguments:
        point: one grid point (`SweepConfig.points`).
        settings: ``model``, ``data``, ``trials``, ``seed``, ``representative``, ``adc_range``.

    Returns:
        The point's values and its results, one table row.
    """
    import tfxbar
    from tfxbar.hardware import HardwareMode

    model, x, y = _setup(settings["model"], settings["data"])
    options = {k: v for k, v in point.items() if k not in ("tile_size", "sigma")}
    if "tile_size" in point:
        options["tile_rows"] = options["tile_cols"] = int(point["tile_size"])
    if settings["adc_range"] != "lossless" and options.get("adc_bits") is not None:
        options["adc_range"] = settings["adc_range"]
    config = tfxbar.ConverterConfig(**options, representative_data=x[:settings["representative"]])
    program = tfxbar.CrossbarConverter(model, config).convert()
    scale = np.float32(program.header["input"]["scale"])
    xf = x.astype(np.float32) * scale
    ideal = float(np.mean(tfxbar.Interpreter(program).predict(x) == y))
    hardware = HardwareMode(model, program=program)
    with hardware:
        hw = float(np.mean(np.argmax(model.predict(xf, batch_size=256, verbose=0), -1) == y))
    sigma = float(point.get("sigma", 0.0))
    chips_mean = chips_worst = hw
    if sigma > 0:
        result = tfxbar.evaluate_under_variation(model, (xf, y), tfxbar.DeviceModel.lognormal(sigma),
                                                 trials=settings["trials"], seed=settings["seed"],
                                                 verbose=0, hardware=hardware)
        chips_mean, chips_worst = result.mean, result.min
    totals = tfxbar.summary(program).totals
    return {**point, "accuracy_ideal": ideal, "accuracy_hardware": hw, "accuracy_chips_mean": chips_mean,
            "accuracy_chips_worst": chips_worst, "energy_pj": float(sum(totals["energy_dense"].values())),
            "tiles": int(totals["tiles"]),
            "accumulator_bits": max(op["attrs"]["acc_bits_required"] for op in program.ops
                                    if op["kind"] == "crossbar")}
