"""tf.data pipelines for inference that keep both cores on the model."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["inference_batches"]


def inference_batches(x: np.ndarray | tf.Tensor, y: np.ndarray | tf.Tensor | None = None,
                      batch_size: int = 256) -> tf.data.Dataset:
    """`x` (and `y`) in batches for inference, as a `tf.data.Dataset` without tf.data's autotuner.

    `model.predict(x)` on arrays, and any pipeline with tf.data's default options, run the
    autotuner; on a 2-CPU machine its thread takes a core from the model for a second or more at
    a time, and whole rounds of `predict` (or of a loop over the dataset) then run at one
    thread's speed: 1,580 vs 2,780–3,134 img/s for the MNIST CNN (`benchmarks/tfdata_autotune.py`,
    docs/benchmarks.md). Slices in batches have nothing to tune. tfxbar's own inference
    loops (`evaluate_under_variation` on arrays, sweeps, fidelity) use this.

    Arguments:
        x: inputs, first axis the examples.
        y: labels of the same length, or None for inputs only.
        batch_size: examples per batch (the last batch may be smaller).

    Returns:
        The batches of ``x``, or of ``(x, y)``, in order.

    Example:

    ```python
    logits = model.predict(tfxbar.inference_batches(x_test, batch_size=500), verbose=0)
    ```
    """
    data = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y)).batch(batch_size)
    options = tf.data.Options()
    options.autotune.enabled = False
    return data.with_options(options)
