"""Shared helpers of the export tests: tiny trained quantized models and Keras-side codes."""

from __future__ import annotations

import numpy as np
import tf_keras as keras
from toys import tiny_cnn, toy_data

import tfxbar
from tfxbar.introspect import output_codes


def trained(preset: str, model: keras.Model | None = None, x: np.ndarray | None = None,
            y: np.ndarray | None = None, epochs: int = 2) -> keras.Model:
    """`model` (default: the tiny CNN) quantized with `preset` and trained briefly."""
    if x is None:
        x, y = toy_data(256)
    qmodel = tfxbar.quantize_model(model or tiny_cnn(), preset, calibration_data=x)
    qmodel.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qmodel.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return qmodel


def pixel_codes(n: int = 256, shape: tuple[int, ...] = (12, 12, 1),
                seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """uint8 codes and the float [0, 1] inputs the Keras model sees."""
    x, _ = toy_data(n, shape, seed=seed)
    codes = np.round(x * 255).astype(np.uint8)
    return codes, codes.astype(np.float32) / 255.0


def agreement(qmodel: keras.Model, program: tfxbar.Program, codes: np.ndarray,
              x: np.ndarray) -> tuple[float, float, int]:
    """(top-1 agreement, activation-code agreement, number of compared layers) in ideal mode."""
    logits, taps = tfxbar.Interpreter(program).run(codes, taps=True)
    reference = output_codes(qmodel, x, sorted(taps), batch_size=256)
    same = sum(int(np.sum(reference[k].reshape(v.shape) == v)) for k, v in taps.items())
    total = sum(v.size for v in taps.values())
    top1 = float(np.mean(np.argmax(qmodel.predict(x, verbose=0), -1) == np.argmax(logits, -1)))
    return top1, same / max(total, 1), len(taps)
