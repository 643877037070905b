"""Would Winograd F(2×2, 3×3) speed up the interpreter's packed convolutions? (not a test)

Takes the reference network of the interpreter benchmarks (`tfxbar.models.mnist_cnn()`, w4a3,
100 Adam steps, seed 0) and, for its three 3 × 3 convolutions after the first:

1. the images per float64 word each method can prove exact for the exported integer weights:
   the interpreter's direct GEMM (`Crossbar.lanes`) and Winograd, whose transformed sums are
   larger (inputs Bᵀ·d·B up to 4×, integer weights 4·G·g·Gᵀ up to 9×);
2. the time of one batch of 96 images' arithmetic done as the interpreter does it — lane-packed
   float64 words, im2col and one GEMM — against Winograd in numpy: the input transform as 32
   elementwise passes over strided views, 16 GEMMs (one per transformed position), the output
   transform Aᵀ·m·A as 24 passes. Unpacking and thresholds are the same for both and are left
   out; the two results are checked equal first.

    TFXBAR_DATA_DIR=/work/shared/data PYTHONPATH=. python benchmarks/winograd_probe.py

Results in docs/benchmarks.md (interpreter section).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tf_keras as keras

import tfxbar
from tfxbar import datasets
from tfxbar.export.blas import single_threaded_blas
from tfxbar.export.kernels import patch_view

BATCH = 96
ROUNDS = 7
G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], np.float64)   # 2·G: integer
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def reference_program(steps: int) -> tfxbar.Program:
    """The interpreter benchmarks' program: mnist_cnn, w4a3, `steps` Adam steps, seed 0."""
    x_train, y_train = datasets.load("mnist", "train[:6400]")
    keras.utils.set_random_seed(0)
    qmodel = tfxbar.quantize_model(tfxbar.models.mnist_cnn(), "w4a3", calibration_data=x_train[:512] / 255.0)
    qmodel.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = min(steps, len(x_train) // 64)
    qmodel.fit(x_train[:64 * steps] / 255.0, y_train[:64 * steps], batch_size=64, epochs=1, verbose=0)
    return tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()


def winograd_lanes(g: np.ndarray, input_max: int, lane_bits: int) -> tuple[int, int]:
    """(bits of the largest transformed partial sum, images per float64 word) of Winograd on a
    (3, 3, C, N) integer kernel with inputs in [0, input_max]: every partial sum of the packed
    word Σ_f 2^(S·f)·t_f must stay below 2^53, as in `Crossbar._fit_lanes`."""
    u = np.abs(np.einsum("ai,ijcn,bj->abcn", G2, g, G2))                  # |4·G·g·Gᵀ|
    coef = np.einsum("ai,bj->abij", BT, BT)                                # Bᵀ·d·B per position
    v = np.maximum(np.clip(coef, 0, None).sum(axis=(2, 3)), -np.clip(coef, None, 0).sum(axis=(2, 3)))
    m = (v[:, :, None, None] * input_max * u).sum(axis=2)                 # |Σ_c U·V| per position
    y = np.einsum("pqab,abn->pqn", np.abs(np.einsum("pa,qb->pqab", AT, AT)), m)
    bound = float(max(m.max(), y.max()))
    lanes = 1
    while (lane_bits * (lanes + 1) <= 53
           and bound * sum(2.0 ** (lane_bits * f) for f in range(lanes + 1)) < 2 ** 53):
        lanes += 1
    return int(bound).bit_length(), lanes


def winograd_weights(g: np.ndarray) -> np.ndarray:
    """(16, C, N) transformed kernels 4·G·g·Gᵀ of a (3, 3, C, N) kernel: exact integers."""
    return np.einsum("ai,ijcn,bj->abcn", G2, g, G2).reshape(16, *g.shape[2:])


class Winograd:
    """F(2×2, 3×3) on a zero-padded NHWC batch with reused buffers; returns 4·(the convolution)."""

    def __init__(self, b: int, h: int, c: int, n: int) -> None:
        t = h // 2
        self.h, self.t = h, t
        self.rows = np.empty((4, 4, b, t, t, c))     # row-transformed tiles
        self.v = np.empty((16, b * t * t, c))          # transformed inputs, one GEMM operand per position
        self.m = np.empty((16, b * t * t, n))
        self.s = np.empty((2, 4, b, t, t, n))
        self.out = np.empty((b, t, 2, t, 2, n))

    def __call__(self, p: np.ndarray, u: np.ndarray) -> np.ndarray:
        h, r, s = self.h, self.rows, self.s
        d = [[p[:, a:a + h:2, j:j + h:2, :] for j in range(4)] for a in range(4)]
        for j in range(4):   # Bᵀ along the tile rows
            np.subtract(d[0][j], d[2][j], out=r[0, j])
            np.add(d[1][j], d[2][j], out=r[1, j])
            np.subtract(d[2][j], d[1][j], out=r[2, j])
            np.subtract(d[1][j], d[3][j], out=r[3, j])
        v = self.v.reshape(4, 4, *r.shape[2:])
        for a in range(4):   # ... and B along the tile columns
            np.subtract(r[a, 0], r[a, 2], out=v[a, 0])
            np.add(r[a, 1], r[a, 2], out=v[a, 1])
            np.subtract(r[a, 2], r[a, 1], out=v[a, 2])
            np.subtract(r[a, 1], r[a, 3], out=v[a, 3])
        for k in range(16):
            np.matmul(self.v[k], u[k], out=self.m[k])
        m = self.m.reshape(4, 4, *s.shape[2:])
        for j in range(4):   # Aᵀ along the rows: (m0 + m1 + m2, m1 − m2 − m3)
            np.add(m[0, j], m[1, j], out=s[0, j])
            s[0, j] += m[2, j]
            np.subtract(m[1, j], m[2, j], out=s[1, j])
            s[1, j] -= m[3, j]
        y = self.out
        for a in range(2):   # ... and A along the columns, into the 2 × 2 output pixels
            np.add(s[a, 0], s[a, 1], out=y[:, :, a, :, 0])
            y[:, :, a, :, 0] += s[a, 2]
            np.subtract(s[a, 1], s[a, 2], out=y[:, :, a, :, 1])
            y[:, :, a, :, 1] -= s[a, 3]
        return y.reshape(len(p), h, h, -1)


class Direct:
    """The interpreter's way: im2col into a reused buffer, one GEMM."""

    def __init__(self, b: int, h: int, c: int, n: int) -> None:
        self.patches = np.empty((b, h, h, 3, 3, c))
        self.out = np.empty((b * h * h, n))

    def __call__(self, p: np.ndarray, w: np.ndarray) -> np.ndarray:
        np.copyto(self.patches, patch_view(p, (3, 3), (1, 1), (0, 0, 0, 0)))
        b, h = self.patches.shape[:2]
        np.matmul(self.patches.reshape(b * h * h, -1), w, out=self.out)
        return self.out.reshape(b, h, h, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=100)
    args = parser.parse_args()
    interpreter = tfxbar.Interpreter(reference_program(args.train_steps), workers=1)
    patches: dict[int, int] = {}   # patches per image of every crossbar: H·W for a 'same' convolution
    interpreter.crossbar_hook = lambda index, rows: patches.setdefault(index, len(rows))
    interpreter.run(np.zeros((1, 28, 28, 1), np.uint8))
    convs = [(x, int(round(patches[i] ** 0.5))) for i, x in interpreter.crossbars.items()
             if x.attrs["layer_type"] == "Conv2D" and list(x.attrs["kernel"]) == [3, 3]
             and x.attrs["rows"] > 9]   # not the first convolution (one input channel)
    rng = np.random.default_rng(0)
    print(f"{BATCH} images per batch, {ROUNDS} rotated rounds, numpy BLAS on one thread")
    print(f"{'layer':6s} {'H':>3s} {'C→N':>7s} {'lane bits':>9s} {'Winograd bits':>13s} "
          f"{'direct ms (lanes)':>18s} {'Winograd ms (lanes)':>20s} {'speed-up':>9s} "
          f"{'fewer multiplies':>16s}")
    with single_threaded_blas():
        for xbar, h in convs:
            c, n = xbar.attrs["rows"] // 9, xbar.attrs["cols"]
            g = xbar.weights.reshape(3, 3, c, n).astype(np.float64)
            bits, wino = winograd_lanes(g, xbar.attrs["input_max"], xbar.lane_bits)
            w, u = g.reshape(9 * c, n), winograd_weights(g)
            codes = np.zeros((2, h + 2, h + 2, c))
            codes[:, 1:-1, 1:-1] = rng.integers(0, xbar.attrs["input_max"] + 1, (2, h, h, c))
            assert np.array_equal(Winograd(2, h, c, n)(codes, u), 4 * Direct(2, h, c, n)(codes, w))
            runs = {}
            for method, lanes, weights in (("direct", xbar.lanes, w), ("winograd", wino, u)):
                b = -(-BATCH // lanes)   # packed words: their values do not change the speed
                words = rng.integers(0, 8, (b, h + 2, h + 2, c)).astype(np.float64)
                runs[method] = ((Direct if method == "direct" else Winograd)(b, h, c, n), words, weights)
            times: dict[str, list[float]] = {k: [] for k in runs}
            for r in range(ROUNDS):
                for method in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                    fn, words, weights = runs[method]
                    start = time.perf_counter()
                    fn(words, weights)
                    times[method].append(time.perf_counter() - start)
            td, tw = (1e3 * float(np.median(times[k])) for k in ("direct", "winograd"))
            fewer = (9 / xbar.lanes) / (4 / wino)   # direct / Winograd float64 multiplies per output
            print(f"{xbar.name:6s} {h:3d} {f'{c}→{n}':>7s} {xbar.lane_bits:9d} {bits:13d} "
                  f"{td:12.2f} ({xbar.lanes}) {tw:14.2f} ({wino}) {td / tw:8.2f}× {fewer:15.2f}×")


if __name__ == "__main__":
    main()
