"""Hand-built crossbar programs for the cost tests (no TensorFlow, no converter).

`dense_program` writes a one-layer Dense program directly in the version-1 format, tiling the
given integer weight matrix row-block-major like the converter does, so every tile, column
and cell is known to the test author.
"""

from __future__ import annotations

import numpy as np

import tfxbar


def dense_program(weights: np.ndarray, *, tile_rows: int, tile_cols: int, input_bits: int,
                  dac_bits: int, mapping: str = "differential", offset: int = 0,
                  threshold_bits: int | None = None) -> tfxbar.Program:
    """A Dense crossbar program for integer `weights` (K × N), one slice per polarity.

    differential: cells = (max(w, 0), max(−w, 0)); offset: cells = w + offset ≥ 0, a reference
    column in the tiles of column block 0 and ``offset_num = offset``. An optional threshold
    op (`threshold_bits`) follows the crossbar.
    """
    w = np.asarray(weights, np.int64)
    k, n = w.shape
    input_max = 2 ** input_bits - 1
    if mapping == "differential":
        cells, signs, ref = np.stack([np.maximum(w, 0), np.maximum(-w, 0)]), [1, -1], False
        offset_num = np.zeros(n, np.int64)
    else:
        cells, signs, ref = (w + offset)[None], [1], True
        offset_num = np.full(n, offset, np.int64)
    assert cells.min() >= 0
    slice_bits = max(1, int(cells.max()).bit_length())
    per_tile = tile_cols - (1 if ref else 0)
    arrays: dict[str, np.ndarray] = {}
    tiles = []
    worst = 0
    for r0 in range(0, k, tile_rows):
        for c0 in range(0, n, per_tile):
            rows = np.arange(r0, min(r0 + tile_rows, k), dtype=np.int32)
            cols = np.arange(c0, min(c0 + per_tile, n), dtype=np.int32)
            t = len(tiles)
            block = cells[:, None][:, :, rows[:, None], cols[None, :]].astype(np.uint8)
            arrays[f"op0.tile{t}.cells"] = block
            arrays[f"op0.tile{t}.rows"], arrays[f"op0.tile{t}.cols"] = rows, cols
            arrays[f"op0.tile{t}.adc_shift"] = np.zeros((len(signs), 1, len(cols)), np.uint8)
            tiles.append({"reference": bool(ref and c0 == 0)})
            if ref and c0 == 0:
                arrays[f"op0.tile{t}.ref_shift"] = np.zeros(1, np.uint8)
                worst = max(worst, len(rows))
            worst = max(worst, int(block.astype(np.int64).sum(axis=2).max()))
    plane = (1 << dac_bits) - 1
    adc_bits = max(1, (worst * plane).bit_length())
    lo = input_max * np.minimum(w, 0).sum(axis=0)
    hi = input_max * np.maximum(w, 0).sum(axis=0)
    arrays.update({"op0.offset_num": offset_num, "op0.acc_lo": lo, "op0.acc_hi": hi})
    crossbar = {
        "name": "fc", "kind": "crossbar", "in_shape": [k], "out_shape": [n], "out_max": None,
        "tap": None, "attrs": {
            "layer_type": "Dense", "rows": k, "cols": n, "kernel": [1, 1], "strides": [1, 1],
            "pads": [0, 0, 0, 0], "input_max": input_max, "input_bits": input_bits,
            "mapping": mapping, "polarities": signs, "slices": 1, "slice_bits": slice_bits,
            "offset_shift": 0, "reference": ref, "tiles": tiles, "dac_bits": dac_bits,
            "dac_cycles": -(-input_bits // dac_bits), "adc_range": "lossless", "adc_bits": adc_bits,
            "adc_bits_lossless": adc_bits,
            "acc_bits_required": max(int(hi.max()).bit_length(), int(-lo.min() - 1).bit_length()) + 1}}
    ops = [crossbar]
    if threshold_bits is not None:
        levels = 2 ** threshold_bits - 1
        ops.append({"name": "fc_act", "kind": "threshold", "in_shape": [n], "out_shape": [n],
                    "out_max": levels, "tap": None, "attrs": {"bits": threshold_bits}})
        arrays["op1.thresholds"] = np.tile(np.arange(1, levels + 1, dtype=np.int64), (n, 1))
        arrays["op1.direction"] = np.ones(n, np.int8)
    last = len(ops)
    ops.append({"name": "out", "kind": "dequantize", "in_shape": [n], "out_shape": [n],
                "out_max": None, "tap": None, "attrs": {"chain": [{"kind": "affine"}]}})
    arrays[f"op{last}.stage0.a"], arrays[f"op{last}.stage0.b"] = np.ones(n), np.zeros(n)
    header = {"format": "tfxbar-program", "version": 1, "producer": "tests",
              "options": {"tile_rows": tile_rows, "tile_cols": tile_cols, "weight_mapping": mapping,
                          "cell_bits": None, "dac_bits": dac_bits, "adc_bits": None,
                          "adc_range": "lossless", "accumulator_bits": 32,
                          "accumulator_mode": "saturate"},
              "input": {"name": "x", "shape": [k], "bits": input_bits, "scale": 1.0},
              "ops": ops}
    return tfxbar.Program(header, arrays)


#: The 4 × 3 weights of the hand-counted example (docs in tests/test_cost_counts.py).
W_4x3 = np.array([[1, -2, 0],
                  [3, 0, 0],
                  [0, 1, -1],
                  [-2, 0, 2]])
