"""Tiny models and a learnable toy task shared by the tests."""

from __future__ import annotations

import numpy as np
import tf_keras as keras


def tiny_cnn(input_shape: tuple[int, ...] = (12, 12, 1), classes: int = 4) -> keras.Model:
    """Conv → BN → ReLU → MaxPool → Flatten → Dense → BN → ReLU → Dense: every handled stage."""
    return keras.Sequential([
        keras.layers.Conv2D(4, 3, input_shape=input_shape),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(16),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(classes),
    ])


def toy_data(n: int = 256, shape: tuple[int, ...] = (12, 12, 1), classes: int = 4,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A learnable toy task: the class is which quadrant holds the bright blob."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.uniform(0, 0.3, (n, *shape)).astype(np.float32)
    h, w = shape[0] // 2, shape[1] // 2
    for i, label in enumerate(y):
        r, c = divmod(int(label) % 4, 2)
        x[i, r * h:(r + 1) * h, c * w:(c + 1) * w] += 0.7
    return np.clip(x, 0, 1), y.astype(np.int64)
