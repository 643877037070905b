"""Fidelity of the crossbar export on MNIST: Keras quantized model vs the numpy interpreter.

For every preset, a small CNN is trained briefly, quantized (QAT) and converted; on the MNIST
test set the ideal-mode interpreter's top-1 predictions and every quantized layer's integer
codes are compared with the Keras model. Also reports the conversion time.

Usage:
    TFXBAR_DATA_DIR=/work/shared/data python examples/export_fidelity.py [--train 10000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

import tfxbar  # noqa: E402
from tfxbar import datasets  # noqa: E402
from tfxbar.introspect import output_codes  # noqa: E402


def mnist_cnn() -> keras.Model:
    return keras.Sequential([
        keras.layers.Conv2D(8, 3, input_shape=(28, 28, 1)),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(64),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(10),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10000, help="training examples")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--presets", nargs="*", default=sorted(tfxbar.PRESETS))
    args = parser.parse_args()
    x_train, y_train = datasets.load("mnist", f"train[:{args.train}]")
    x_test, y_test = datasets.load("mnist", "test")
    xf_train, xf_test = datasets.normalize(x_train), datasets.normalize(x_test)
    print("| preset | Keras acc | interpreter acc | top-1 agreement | activation agreement | "
          "worst layer | export s |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        keras.utils.set_random_seed(0)
        qmodel = tfxbar.quantize_model(mnist_cnn(), preset, calibration_data=xf_train[:1000])
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        qmodel.compile(keras.optimizers.Adam(2e-3), loss)
        qmodel.fit(xf_train, y_train, batch_size=128, epochs=args.epochs, verbose=0)
        start = time.perf_counter()
        program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
        export_s = time.perf_counter() - start
        logits, taps = tfxbar.Interpreter(program).run(x_test, taps=True)
        reference = output_codes(qmodel, xf_test, sorted(taps), batch_size=500)
        k_pred = np.argmax(qmodel.predict(xf_test, batch_size=500, verbose=0), -1)
        i_pred = np.argmax(logits, -1)
        same = total = 0
        worst = (1.0, "")
        for name, codes in taps.items():
            equal = np.sum(reference[name].reshape(codes.shape) == codes)
            same, total = same + equal, total + codes.size
            worst = min(worst, (equal / codes.size, name))
        print(f"| {preset} | {np.mean(k_pred == y_test):.4f} | {np.mean(i_pred == y_test):.4f} | "
              f"{np.mean(k_pred == i_pred) * 100:.2f} % | "
              f"{same / total * 100:.4f} % ({total - same} of {total}) | "
              f"{worst[1]} {worst[0] * 100:.4f} % | {export_s:.3f} |", flush=True)


if __name__ == "__main__":
    main()
