"""Shared fixtures: quiet TensorFlow, deterministic seeds, tiny models."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _seed_module() -> None:
    # Module-scoped fixtures (the toy models most files train once) are made before the first
    # test's `_seed`: without this their weights, and which cases clip, changed from run to run.
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.backend.clear_session()  # fresh layer names per test
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
