"""`DeviceVariation` under `tf.distribute.MirroredStrategy` on two logical CPU devices.

Logical devices must be configured before TensorFlow initialises its devices, which the rest
of the test session has already done, so the check runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_keras as keras
    import tfxbar
    sys.path.insert(0, "tests")
    from toys import toy_data

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    x, y = toy_data(64, (8, 8, 1))
    device = tfxbar.DeviceModel(lognormal_sigma=0.3, read_sigma=0.02, stuck_at_0=0.02)

    def build(lr):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = tfxbar.quantize_model(keras.Sequential([
                keras.layers.Flatten(input_shape=(8, 8, 1)),
                keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)]), "w4a3")
            model.compile(keras.optimizers.Adam(lr),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    model = build(0.0)
    before = model.get_weights()
    dv = tfxbar.DeviceVariation(device, seed=3)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[dv])
    assert history.history["variation_weight_error"][0] > 0.05
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))
    assert len(dv.state.strength.values) == 2  # mirrored on both replicas

    model = build(1e-2)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                        callbacks=[tfxbar.DeviceVariation(device, schedule=tfxbar.variation.ramp(1))])
    assert history.history["variation_strength"] == [0.75, 1.0]  # per batch: 3/4 at the end
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), before))
    print("DISTRIBUTED-OK")
""")


def test_device_variation_under_mirrored_strategy():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert "DISTRIBUTED-OK" in run.stdout, run.stdout[-3000:] + run.stderr[-5000:]
