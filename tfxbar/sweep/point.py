"""One design point: (fine-tune,) convert, run ideal / hardware / chips, cost (runs in a worker process)."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import numpy as np

from tfxbar.pipelines import inference_batches
from tfxbar.sweep.grid import FINETUNE_FIELDS

__all__ = ["calibration_name", "evaluate_point", "finetune"]

_CACHE: dict[str, Any] = {}
_TRAIN_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _load_model(model_path: str) -> Any:
    """A model read from its file (every call a new model)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")   # tf_keras, also on Ray workers
    import tf_keras as keras

    import tfxbar

    # The worker imported tfxbar (this module) before tf_keras: register explicitly.
    tfxbar.register_keras_objects()
    return keras.models.load_model(model_path, compile=False)


def _setup(model_path: str, data_path: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """The model and data, loaded once per worker process (the model is never trained)."""
    key = f"{model_path}|{data_path}"
    if key not in _CACHE:
        model = _load_model(model_path)
        with np.load(data_path) as data:
            x, y = data["x"], data["y"]
        _CACHE.clear()
        _CACHE[key] = (model, x, y)
    return _CACHE[key]


def calibration_name(path: str | None) -> str:
    """How a row names its calibration images: the file name of `representative_data`, or "data"."""
    return os.path.basename(path) if path else "data"


def _representative(path: str | None, x: np.ndarray, n: int) -> np.ndarray:
    """The first `n` calibration input codes: of the ``.npz`` at `path`, or of `x` (the measured data)."""
    if not path:
        return x[:n]
    with np.load(path) as data:
        if "x" not in data:
            raise ValueError(f"representative_data {path}: needs an array x (input codes), has "
                             f"{sorted(data.files)}")
        codes = data["x"][:n]
    if codes.shape[1:] != x.shape[1:]:
        raise ValueError(f"representative_data {path}: x has shape {codes.shape}, the data {x.shape}; "
                         "both must be input codes of the same model")
    return codes


def _training_data(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The fine-tune data, loaded once per worker process."""
    if path not in _TRAIN_CACHE:
        with np.load(path) as data:
            if "x" not in data or "y" not in data:
                raise ValueError(f"finetune_data {path}: needs arrays x (input codes) and y (labels), "
                                 f"has {sorted(data.files)}")
            _TRAIN_CACHE.clear()
            _TRAIN_CACHE[path] = (data["x"], data["y"])
    return _TRAIN_CACHE[path]


def _optimizer(settings: dict[str, Any], steps: int) -> Any:
    """The fine-tune's optimizer and learning-rate schedule (`SweepConfig` fields)."""
    import tf_keras as keras

    lr = settings["finetune_lr"]
    if settings["finetune_schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, steps)
    if settings["finetune_optimizer"] == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(lr)


def _crop_flip(x: np.ndarray, y: np.ndarray, batch: int, seed: int) -> Any:
    """Seeded shuffled batches of 4-pixel zero-padded random crops and random horizontal flips."""
    import tensorflow as tf

    if x.ndim != 4:
        raise ValueError("finetune_augment 'crop_flip' needs (N, H, W, C) images, the fine-tune data "
                         f"has shape {x.shape}; use finetune_augment 'none'")
    rng = tf.random.Generator.from_seed(seed)

    def augment(image: Any, label: Any) -> tuple[Any, Any]:
        seeds = rng.make_seeds(2)
        padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
        image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seeds[:, 0])
        return tf.image.stateless_random_flip_left_right(image, seed=seeds[:, 1]), label

    # One map call at a time: the generator's draws, and so the crops, follow the seed.
    return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
            .map(augment).batch(batch).prefetch(tf.data.AUTOTUNE))


def finetune(kind: str, program: Any, config: Any,
             settings: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tune a fresh copy of the sweep's model for one point and convert it for deployment.

    ``"qat"`` trains with ideal crossbars and converts with the point's options (ADC steps
    calibrated on the trained weights); ``"adc_aware"`` trains with `tfxbar.hardware.HardwareMode`
    of `program` installed (forward through the point's tiles, DACs, ADCs and accumulator,
    straight-through gradients) and deploys with the ADC steps it was trained against
    (`tfxbar.hardware.with_adc_steps`). ``settings["finetune_batchnorm"]`` ``"frozen"`` runs
    batch norm in inference mode while training; optimizer, schedule and augmentation follow
    ``finetune_optimizer`` / ``finetune_schedule`` / ``finetune_augment`` (see `SweepConfig`). Seeded with
    ``settings["seed"]``: both kinds see the same batches. The model is read from its file
    again, so the sweep's cached model is never changed.

    Arguments:
        kind: ``"qat"`` or ``"adc_aware"``.
        program: the point's program converted from the untrained model (its ADC steps).
        config: the point's `ConverterConfig`.
        settings: the sweep settings: ``model``, ``seed`` and the ``finetune_*`` fields of
            `SweepConfig` (``finetune_data`` a path).

    Returns:
        ``(trained model, deployed program, row fields)``: the fields are the fine-tune's settings,
        its final training loss and its wall time.

    Example:
        >>> tuned, deployed, fields = finetune("adc_aware", program, config, settings)
    """
    import tf_keras as keras

    import tfxbar
    from tfxbar.hardware import HardwareMode, with_adc_steps

    if kind not in ("qat", "adc_aware"):
        raise ValueError(f"finetune: unknown kind {kind!r}; use 'qat' or 'adc_aware'")
    start = time.perf_counter()
    x, y = _training_data(settings["finetune_data"])
    if settings["finetune_steps"] is not None:
        n = settings["finetune_steps"] * settings["finetune_batch_size"]
        x, y = x[:n], y[:n]
    xf = x.astype(np.float32) * np.float32(program.header["input"]["scale"])
    keras.utils.set_random_seed(settings["seed"])   # the same shuffles for every point and kind
    model = _load_model(settings["model"])
    if settings["finetune_batchnorm"] == "frozen":
        # A BN layer that is not trainable runs in inference mode in fit: the training forward
        # pass is then the deployed one (moving statistics), which ADC-aware training needs.
        for layer in model.layers:
            inner = getattr(layer, "layer", layer)   # inside a QuantizeWrapper
            if isinstance(inner, keras.layers.BatchNormalization):
                inner.trainable = False
    batch, epochs = settings["finetune_batch_size"], settings["finetune_epochs"]
    steps = epochs * -(-len(x) // batch)
    # tfxbar models end in logits (as tfxbar.models and the examples' training).
    model.compile(_optimizer(settings, steps), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if settings["finetune_augment"] == "crop_flip":
        data, fit = (_crop_flip(xf, y, batch, settings["seed"]),), {"epochs": epochs, "verbose": 0}
    else:
        data, fit = (xf, y), {"batch_size": batch, "epochs": epochs, "verbose": 0}
    with HardwareMode(model, program=program) if kind == "adc_aware" else contextlib.nullcontext():
        history = model.fit(*data, **fit)
    deployed = tfxbar.CrossbarConverter(model, config).convert()
    if kind == "adc_aware":
        deployed = with_adc_steps(deployed, program)
    fields = {k: settings[k] for k in FINETUNE_FIELDS if k not in ("finetune_data", "seed")}
    fields.update(finetune_data=os.path.basename(settings["finetune_data"]), finetune_seed=settings["seed"],
                  finetune_examples=len(x), finetune_loss=float(history.history["loss"][-1]),
                  finetune_seconds=round(time.perf_counter() - start, 1))
    return model, deployed, fields


def evaluate_point(point: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Accuracy (ideal, hardware, chips mean / worst), energy, tiles and required accumulator bits
    of one point.

    With ``point["finetune"]`` ``"qat"`` or ``"adc_aware"`` the figures are those of a fresh copy
    of the model fine-tuned for the point (`finetune`) and of its deployed program.

    Arguments:
        point: one grid point (`SweepConfig.points`).
        settings: ``model``, ``data``, ``trials``, ``seed``, ``representative``, ``adc_range``
            and, for fine-tunes, the ``finetune_*`` fields of `SweepConfig`.

    Returns:
        The point's values and its results, one table row (fine-tuned rows also hold the
        fine-tune's settings, final loss and seconds).

    Example:
        >>> evaluate_point({"adc_bits": 4, "finetune": "qat"}, settings)["accuracy_hardware"]
    """
    import tfxbar
    from tfxbar.hardware import HardwareMode

    model, x, y = _setup(settings["model"], settings["data"])
    options = {k: v for k, v in point.items() if k not in ("tile_size", "sigma", "finetune")}
    if "tile_size" in point:
        options["tile_rows"] = options["tile_cols"] = int(point["tile_size"])
    if "adc_range" not in point and settings["adc_range"] != "lossless" and \
            options.get("adc_bits") is not None:
        options["adc_range"] = settings["adc_range"]
    representative = _representative(settings.get("representative_data"), x, settings["representative"])
    config = tfxbar.ConverterConfig(**options, representative_data=representative)
    program = tfxbar.CrossbarConverter(model, config).convert()
    fields: dict[str, Any] = {}
    if point.get("finetune", "none") != "none":
        model, program, fields = finetune(point["finetune"], program, config, settings)
    scale = np.float32(program.header["input"]["scale"])
    xf = x.astype(np.float32) * scale
    ideal = float(np.mean(tfxbar.Interpreter(program).predict(x) == y))
    hardware = HardwareMode(model, program=program)
    with hardware:
        logits = model.predict(inference_batches(xf, batch_size=256), verbose=0)
        hw = float(np.mean(np.argmax(logits, -1) == y))
    sigma = float(point.get("sigma", 0.0))
    chips_mean = chips_worst = hw
    if sigma > 0:
        result = tfxbar.evaluate_under_variation(model, (xf, y), tfxbar.DeviceModel.lognormal(sigma),
                                                 trials=settings["trials"], seed=settings["seed"],
                                                 verbose=0, hardware=hardware)
        chips_mean, chips_worst = result.mean, result.min
    totals = tfxbar.summary(program).totals
    return {**point, "adc_range": config.adc_range,
            "calibration": calibration_name(settings.get("representative_data")),
            "accuracy_ideal": ideal, "accuracy_hardware": hw, "accuracy_chips_mean": chips_mean,
            "accuracy_chips_worst": chips_worst, "energy_pj": float(sum(totals["energy_dense"].values())),
            "tiles": int(totals["tiles"]),
            # Not "accumulator_bits": that is the axis (the hardware's width), this what the program needs.
            "acc_bits_required": max(op["attrs"]["acc_bits_required"] for op in program.ops
                                    if op["kind"] == "crossbar"),
            **fields}
