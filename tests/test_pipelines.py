"""`tfxbar.inference_batches`: the arrays in order, in batches, with tf.data's autotuner off."""

from __future__ import annotations

import numpy as np
import tf_keras as keras

import tfxbar


def test_batches_are_the_arrays_in_order_without_the_autotuner() -> None:
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    y = np.arange(10) % 4
    data = tfxbar.inference_batches(x, y, batch_size=4)
    assert data.options().autotune.enabled is False
    got = list(data.as_numpy_iterator())
    assert [len(b[0]) for b in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), y)
    inputs_only = list(tfxbar.inference_batches(x, batch_size=4).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate(inputs_only), x)


def test_predict_on_them_equals_predict_on_the_arrays() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(37, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(tfxbar.inference_batches(x, batch_size=8), verbose=0),
                                  model.predict(x, batch_size=8, verbose=0))
