"""The training recipe the example scripts share: data splits, float training, then QAT.

Validation is the last 5,000 training images; the test set is only evaluated at the end, so
no choice in any script is tuned on it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tf_keras as keras

import tfxbar
from tfxbar import datasets

VALIDATION = 5000


@dataclasses.dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_splits(name: str = "mnist") -> Splits:
    """Train (minus validation), validation and test splits, images scaled to [0, 1]."""
    x_train, y_train = datasets.load(name, f"train[:-{VALIDATION}]")
    x_val, y_val = datasets.load(name, f"train[-{VALIDATION}:]")
    x_test, y_test = datasets.load(name, "test")
    return Splits(datasets.normalize(x_train), y_train, datasets.normalize(x_val), y_val,
                  datasets.normalize(x_test), y_test)


def compile_model(model: keras.Model, lr: float, epochs: int, train_size: int,
                  batch_size: int) -> None:
    """Adam with cosine decay over the whole run, logits loss, accuracy metric."""
    steps = max(1, epochs * -(-train_size // batch_size))
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])


def fit(model: keras.Model, data: Splits, epochs: int, lr: float, batch_size: int = 128,
        callbacks: list | None = None, verbose: int = 2) -> None:
    if epochs <= 0:
        return
    compile_model(model, lr, epochs, len(data.x_train), batch_size)
    model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs,
              validation_data=(data.x_val, data.y_val), callbacks=callbacks, verbose=verbose)


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    logits = model.predict(tfxbar.inference_batches(x, batch_size=512), verbose=0)
    return float(np.mean(np.argmax(logits, 1) == y))


def quantize_and_fit(model: keras.Model, data: Splits, preset: str | tfxbar.Preset, epochs: int,
                     lr: float = 1e-3, layer_specs: Mapping[str, tfxbar.LayerSpec] | None = None,
                     batch_size: int = 128, callbacks: list | None = None) -> keras.Model:
    """Quantize a (float-trained) model, calibrate on 2,000 training images, fine-tune."""
    qmodel = tfxbar.quantize_model(model, preset, layer_specs,
                                   calibration_data=data.x_train[:2000])
    fit(qmodel, data, epochs, lr, batch_size, callbacks)
    return qmodel


def report(record: dict[str, Any], start: float) -> None:
    """Print one JSON line per result (the docs tables are made from these)."""
    record = {**record, "minutes": round((time.time() - start) / 60, 1)}
    print("RESULT " + json.dumps(record), flush=True)
