"""Model and data of the P4 requirement sweeps (docs/sweeps/p4_mnist.json, p4_cifar10.json):
ADC bits × DAC bits × fine-tune (none, plain QAT, ADC-aware).

MNIST: trains the narrow W4A3 MNIST CNN of examples/adc_aware_training.py (same recipe and seed).
CIFAR-10: copies a trained W4A3 ResNet-20 (``--model``, from
``examples/cifar10_resnet20.py --stage qat``, which writes out/resnet20/qat.keras).
Either way it writes to `--out`: ``model.keras``, ``data.npz`` (the first `--test` test images as
uint8 codes, and labels: the sweep calibrates the ADC steps on the first `representative` of them
and measures on all) and ``train.npz`` (the first `--finetune-train` training images: what the
sweep's fine-tunes train on); with `--validation` also ``val.npz`` (the last training images,
which neither the model nor the fine-tunes saw: for choosing a fine-tune recipe). Then

    tfxbar sweep docs/sweeps/p4_mnist.json --workers 2

converts (and fine-tunes) at every grid point and writes the table and the Pareto plot.

Usage (seeded):
    TFXBAR_DATA_DIR=/work/shared/data python examples/p4_sweep_setup.py --out out/p4_sweep
    TFXBAR_DATA_DIR=/work/shared/data python examples/p4_sweep_setup.py --dataset cifar10 \\
        --model out/resnet20/qat.keras --test 500 --finetune-train 1024 --out out/p4_cifar10
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

import tfxbar  # noqa: E402
from tfxbar import datasets  # noqa: E402


def _train_mnist(path: str, train: int, seed: int) -> None:
    """The narrow W4A3 MNIST CNN: 3 float + 2 QAT epochs on the first `train` images."""
    keras.utils.set_random_seed(seed)
    x_train, y_train = datasets.load("mnist", f"train[:{train}]")
    xf = datasets.normalize(x_train)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = tfxbar.models.mnist_cnn((8, 16), 64)
    model.compile(keras.optimizers.Adam(1e-3), loss)
    model.fit(xf, y_train, batch_size=64, epochs=3, verbose=0)
    qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=xf[:1000])
    qmodel.compile(keras.optimizers.Adam(1e-3), loss)
    qmodel.fit(xf, y_train, batch_size=64, epochs=2, verbose=0)
    qmodel.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    parser.add_argument("--model", default=None,
                        help="cifar10: the trained quantized model to copy (e.g. out/resnet20/qat.keras)")
    parser.add_argument("--out", default="out/p4_sweep")
    parser.add_argument("--train", type=int, default=12000, help="mnist: training images of the model")
    parser.add_argument("--test", type=int, default=500, help="test images the sweep measures on")
    parser.add_argument("--finetune-train", type=int, default=4000,
                        help="training images the sweep's fine-tunes may use (train.npz)")
    parser.add_argument("--validation", type=int, default=0,
                        help="also write val.npz: the last N training images (held out from the "
                             "fine-tunes; choose a fine-tune recipe on them, not on the test images)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "model.keras")
    if args.dataset == "mnist":
        _train_mnist(model_path, args.train, args.seed)
    else:
        if not args.model or not os.path.exists(args.model):
            parser.error("--dataset cifar10 needs --model, a trained quantized model "
                         "(examples/cifar10_resnet20.py --stage qat writes out/resnet20/qat.keras)")
        shutil.copyfile(args.model, model_path)
    x_test, y_test = datasets.load(args.dataset, "test")
    np.savez(os.path.join(args.out, "data.npz"), x=x_test[:args.test], y=y_test[:args.test])
    x_train, y_train = datasets.load(args.dataset, f"train[:{args.finetune_train}]")
    np.savez(os.path.join(args.out, "train.npz"), x=x_train, y=y_train)
    if args.validation:
        # The last training images: examples/common.py's validation split, unseen by the CIFAR-10
        # model's training (its first 45,000) and by the fine-tunes (the first --finetune-train).
        x_val, y_val = datasets.load(args.dataset, f"train[-{args.validation}:]")
        np.savez(os.path.join(args.out, "val.npz"), x=x_val, y=y_val)
    print(f"wrote {args.out}/model.keras, data.npz ({args.test} test images) and train.npz "
          f"({args.finetune_train} training images)"
          + (f", val.npz (the last {args.validation} training images)" if args.validation else ""))


if __name__ == "__main__":
    main()
