"""Model and data of the P4 requirement sweep (docs/sweeps/p4_mnist.json): ADC bits × DAC bits.

Trains the narrow W4A3 MNIST CNN of examples/adc_aware_training.py (same recipe and seed) and
writes it with the first `--test` MNIST test images (uint8 codes and labels) to `--out`; then

    tfxbar sweep docs/sweeps/p4_mnist.json --workers 2

converts it at every grid point and writes docs/sweeps/p4_mnist.csv and docs/p4_sweep.png.

Usage (seeded):
    TFXBAR_DATA_DIR=/work/shared/data python examples/p4_sweep_setup.py --out out/p4_sweep
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

import tfxbar  # noqa: E402
from tfxbar import datasets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/p4_sweep")
    parser.add_argument("--train", type=int, default=12000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    x_train, y_train = datasets.load("mnist", f"train[:{args.train}]")
    x_test, y_test = datasets.load("mnist", "test")
    xf = datasets.normalize(x_train)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = tfxbar.models.mnist_cnn((8, 16), 64)
    model.compile(keras.optimizers.Adam(1e-3), loss)
    model.fit(xf, y_train, batch_size=64, epochs=3, verbose=0)
    qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=xf[:1000])
    qmodel.compile(keras.optimizers.Adam(1e-3), loss)
    qmodel.fit(xf, y_train, batch_size=64, epochs=2, verbose=0)
    os.makedirs(args.out, exist_ok=True)
    qmodel.save(os.path.join(args.out, "model.keras"))
    # The sweep calibrates the ADC steps on the first `representative` of these images and measures on all.
    np.savez(os.path.join(args.out, "data.npz"), x=x_test[:args.test], y=y_test[:args.test])
    print(f"wrote {args.out}/model.keras and data.npz ({args.test} test images)")


if __name__ == "__main__":
    main()
