"""Hand-built crossbar programs (numpy only) for the checker tests: any mapping, tiling, DAC plan.

`make_program` writes a valid version-1 program whose output is the crossbar accumulator X
itself (a dequantize with a = 1, b = 0), optionally preceded by a global sum-pool so the
crossbar's `input_max` is not of the form 2^B − 1.
"""

from __future__ import annotations

import numpy as np

from tfxbar.check.bounds import signed_bits, unsigned_bits
from tfxbar.export.format import Program


def _slices(cells: np.ndarray, bits: int, width: int) -> np.ndarray:
    count = -(-bits // width)
    return np.stack([(cells >> (width * s)) & ((1 << width) - 1) for s in range(count)], axis=1)


def make_program(codes: np.ndarray, *, mapping: str = "differential", offset_num: np.ndarray | None = None,
                 offset_shift: int = 0, input_bits: int = 3, pool: int = 1, tile_rows: int = 4,
                 tile_cols: int = 4, dac_bits: int | None = None, slice_bits: int | None = None,
                 adc_bits: int | None = None, adc_shift: int = 0, reverse_tiles: bool = False,
                 accumulator_bits: int = 32) -> Program:
    """A program computing X = Σ_k ((codes << f) − B)·x_k for a Dense crossbar.

    Arguments:
        codes: (K, N) integer codes: signed for ``"differential"``, ≥ 0 for ``"offset"``.
        offset_num, offset_shift: B and f (offset mapping only).
        input_bits: bits of the program input; the crossbar's input_max is (2^bits − 1)·pool.
        pool: > 1 puts a global sum-pool over `pool` positions before the crossbar.
        dac_bits, slice_bits: DAC bits per cycle and bits per cell slice (None: whole).
        adc_bits, adc_shift: ADC resolution (None: lossless) and step 2^adc_shift everywhere.
        reverse_tiles: store the tiles in reverse order (the plan follows file order).
    """
    codes = np.asarray(codes, np.int64)
    k, n = codes.shape
    ref = mapping == "offset"
    if ref:
        assert codes.min() >= 0
        polarities, cells = [1], codes[None]
        offset_num = np.zeros(n, np.int64) if offset_num is None else np.asarray(offset_num, np.int64)
    else:
        polarities, cells = [1, -1], np.stack([np.maximum(codes, 0), np.maximum(-codes, 0)])
        offset_num, offset_shift = np.zeros(n, np.int64), 0
    top_bits = unsigned_bits(int(cells.max(initial=0)))
    width = slice_bits or top_bits
    sliced = _slices(cells, top_bits, width)
    input_max = (2 ** input_bits - 1) * pool
    in_bits = input_max.bit_length()
    dac = min(dac_bits or in_bits, in_bits)
    arrays: dict[str, np.ndarray] = {}
    per_tile = tile_cols - (1 if ref else 0)
    tiles = []
    for r0 in range(0, k, tile_rows):
        for c0 in range(0, n, per_tile):
            rows = np.arange(r0, min(r0 + tile_rows, k), dtype=np.int32)
            cols = np.arange(c0, min(c0 + per_tile, n), dtype=np.int32)
            tiles.append((rows, cols, bool(ref and c0 == 0)))
    if reverse_tiles:
        tiles = tiles[::-1]
    plane = (1 << dac) - 1
    worst = 0
    meta = []
    i = 1 if pool > 1 else 0
    for t, (rows, cols, is_ref) in enumerate(tiles):
        block = np.ascontiguousarray(sliced[:, :, rows[:, None], cols[None, :]]).astype(np.uint8)
        arrays[f"op{i}.tile{t}.cells"] = block
        worst = max(worst, int(block.astype(np.int64).sum(axis=2).max()) * min(plane, input_max),
                    len(rows) * min(plane, input_max) if is_ref else 0)
        meta.append({"reference": is_ref})
    for t, (rows, cols, is_ref) in enumerate(tiles):
        arrays[f"op{i}.tile{t}.rows"] = rows
        arrays[f"op{i}.tile{t}.cols"] = cols
        arrays[f"op{i}.tile{t}.adc_shift"] = np.full((len(polarities), sliced.shape[1], len(cols)), adc_shift,
                                                     np.uint8)
        if is_ref:
            arrays[f"op{i}.tile{t}.ref_shift"] = np.full(1, adc_shift, np.uint8)
    weights = (codes << offset_shift) - offset_num[None, :]
    lo = np.where(weights < 0, weights, 0).sum(0) * input_max
    hi = np.where(weights > 0, weights, 0).sum(0) * input_max
    arrays[f"op{i}.offset_num"] = offset_num
    arrays[f"op{i}.acc_lo"], arrays[f"op{i}.acc_hi"] = lo, hi
    lossless = unsigned_bits(worst)
    attrs = {"layer_type": "Dense", "rows": k, "cols": n, "kernel": [1, 1], "strides": [1, 1],
             "pads": [0, 0, 0, 0], "input_max": input_max, "input_bits": in_bits,
             "mapping": "offset" if ref else "differential", "polarities": polarities,
             "slices": int(sliced.shape[1]), "slice_bits": width, "offset_shift": offset_shift,
             "reference": ref, "tiles": meta, "dac_bits": dac, "dac_cycles": -(-in_bits // dac),
             "adc_range": "lossless" if adc_bits is None else "clip",
             "adc_bits": lossless if adc_bits is None else adc_bits, "adc_bits_lossless": lossless,
             "acc_bits_required": signed_bits(int(lo.min()), int(hi.max()))}
    ops = []
    in_shape = [k]
    if pool > 1:
        in_shape = [1, pool, k]
        ops.append({"name": "pool", "kind": "sum_pool", "in_shape": in_shape, "out_shape": [k],
                    "out_max": input_max, "tap": None, "attrs": {"global": True}})
    ops.append({"name": "xbar", "kind": "crossbar", "in_shape": [k], "out_shape": [n], "out_max": None,
                "tap": None, "attrs": attrs})
    ops.append({"name": "out", "kind": "dequantize", "in_shape": [n], "out_shape": [n], "out_max": None,
                "tap": None, "attrs": {"chain": [{"kind": "affine"}]}})
    arrays[f"op{len(ops) - 1}.stage0.a"] = np.ones(n, np.float64)
    arrays[f"op{len(ops) - 1}.stage0.b"] = np.zeros(n, np.float64)
    options = {"tile_rows": tile_rows, "tile_cols": tile_cols, "weight_mapping": mapping,
               "cell_bits": slice_bits, "dac_bits": dac_bits, "adc_bits": adc_bits,
               "adc_range": "lossless" if adc_bits is None else "clip",
               "accumulator_bits": accumulator_bits, "accumulator_mode": "saturate"}
    header = {"format": "tfxbar-program", "version": 1, "producer": "check_toys", "options": options,
              "input": {"name": "x", "shape": in_shape, "bits": input_bits, "scale": 1.0}, "ops": ops}
    return Program(header, arrays)


def as_program_input(program: Program, patches: np.ndarray) -> np.ndarray:
    """Program inputs whose crossbar patches are `patches` (splits codes across the sum-pool)."""
    patches = np.atleast_2d(np.asarray(patches, np.int64))
    spec = program.header["input"]
    if len(spec["shape"]) == 1:
        return patches
    pool, top = spec["shape"][1], 2 ** spec["bits"] - 1
    parts = [np.minimum(np.maximum(patches - top * i, 0), top) for i in range(pool)]
    return np.stack(parts, axis=1)[:, None]
