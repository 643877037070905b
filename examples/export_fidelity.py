"""Fidelity of the crossbar export on MNIST: Keras quantized model vs the numpy interpreter.

For every preset, a small CNN is trained briefly, quantized (QAT) and converted; on the MNIST
test set the ideal-mode interpreter's top-1 predictions and every quantized layer's integer
codes are compared with the Keras model (tfxbar.export.fidelity.measure). Also reports the
conversion time.

Columns: *raw* — program activations (end to end) equal to Keras's, and the worst layer;
*local* — per layer, the exact layer fed with Keras's own input codes vs Keras, i.e. without
differences inherited from earlier layers; *float32 ties* — local differences whose exact
pre-activation lies within Keras's float32 rounding error of a rounding boundary;
*largest tie distance* — max |v/step − (k + ½)| / |v/step| over the local differences;
*tie window* — share of activations within the (worst-case, loose) float32 bound of a
boundary; *unexplained* — local differences that are not ties; *program ≠ exact* — program codes vs the
exact model on the program's own inputs (0 = bit-exact integer program).

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
from tfxbar.export.fidelity import measure  # noqa: E402


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
    print("| preset | Keras acc | program acc | top-1 agreement | activation agreement, raw | "
          "worst layer, raw | local differences (float32 ties) | worst layer, local | largest tie distance | "
          "tie window | "
          "worst layer, ties counted as agreeing | unexplained | program ≠ exact | export s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for preset in args.presets:
        keras.utils.set_random_seed(0)
        qmodel = tfxbar.quantize_model(mnist_cnn(), preset, calibration_data=xf_train[:1000])
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        qmodel.compile(keras.optimizers.Adam(2e-3), loss)
        qmodel.fit(xf_train, y_train, batch_size=128, epochs=args.epochs, verbose=0)
        start = time.perf_counter()
        program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
        export_s = time.perf_counter() - start
        fid = measure(qmodel, program, xf_test, codes=x_test)
        raw, total = fid.total("raw"), fid.size
        worst, local, fair = fid.worst("raw"), fid.worst("local"), fid.worst("unexplained")
        print(f"| {preset} | {np.mean(fid.keras_pred == y_test):.4f} | "
              f"{np.mean(fid.program_pred == y_test):.4f} | {fid.top1_agreement * 100:.2f} % | "
              f"{(1 - raw / total) * 100:.4f} % ({raw} of {total}) | "
              f"{worst.layer if worst.raw else '(all layers)'} {worst.raw_agreement * 100:.4f} % | "
              f"{fid.total('local')} ({fid.total('float32_ties')}) | "
              f"{local.layer if local.local else '(all layers)'} {local.local_agreement * 100:.4f} % | "
              f"{max(layer.largest_tie_distance for layer in fid.layers):.1e} | "
              f"{fid.total('tie_window') / total * 100:.3f} % | "
              f"{fair.layer if fair.unexplained else '(all layers)'} "
              f"{fair.tie_adjusted_agreement * 100:.4f} % | "
              f"{fid.total('unexplained')} | "
              f"{fid.total('program_exact')} | {export_s:.3f} |", flush=True)


if __name__ == "__main__":
    main()
