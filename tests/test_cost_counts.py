"""Counts of the cost model against cases counted by hand (no TensorFlow training).

The main example: W (4 inputs × 3 outputs), differential cells g⁺ = max(W, 0), g⁻ = max(−W, 0),
on 2 × 2 tiles, 2-bit inputs streamed through 1-bit DACs (2 cycles):

    W = [[ 1, -2,  0],        tiles (row block × column block, row-block-major):
         [ 3,  0,  0],          t0 rows 0–1 × cols 0–1   g⁺ [[1,0],[3,0]]  g⁻ [[0,2],[0,0]]
         [ 0,  1, -1],          t1 rows 0–1 × col 2      g⁺ [[0],[0]]      g⁻ [[0],[0]]
         [-2,  0,  2]]          t2 rows 2–3 × cols 0–1   g⁺ [[0,1],[0,0]]  g⁻ [[0,0],[2,0]]
                                t3 rows 2–3 × col 2      g⁺ [[0],[2]]      g⁻ [[1],[0]]

Physical columns (polarity × column) per tile: 4, 2, 4, 2 → 12 per DAC cycle; of those all-zero:
t0 2 (g⁺ col 1, g⁻ col 0), t1 2, t2 2, t3 0 → 6 non-zero. Per inference, dense: 2 cycles × 12 =
24 ADC conversions; DAC drives 2 cycles × 4 tiles × 2 polarities × 2 rows = 32; cells used
2·2·2 + 2·2·1 + 2·2·2 + 2·2·1 = 24 (capacity 4 tiles × 2 arrays × 4 = 32, utilization 75 %),
cell reads 2 × 24 = 48.
"""

from __future__ import annotations

import numpy as np
import pytest
from cost_toys import W_4x3, dense_program

import tfxbar
from tfxbar.cost import measure, static_counts


@pytest.fixture()
def program() -> tfxbar.Program:
    return dense_program(W_4x3, tile_rows=2, tile_cols=2, input_bits=2, dac_bits=1)


def test_static_counts_by_hand(program) -> None:
    (layer,) = static_counts(program)
    assert (layer.tiles, layer.arrays, layer.patches, layer.dac_cycles) == (4, 8, 1, 2)
    assert (layer.columns, layer.zero_columns) == (12, 6)
    assert (layer.cells, layer.capacity, layer.utilization) == (24, 32, 0.75)
    assert layer.adc_conversions == 24 and layer.shift_adds == 24
    assert layer.dac_drives == 32 and layer.cell_reads == 48
    assert (layer.accumulates, layer.compares) == (0, 0)   # differential: no offset correction


def test_static_conversions_equal_the_hardware_interpreter(program) -> None:
    """An independent count: the hardware-mode interpreter converts every column every cycle."""
    x = np.array([[0, 2, 0, 0], [3, 3, 3, 3], [1, 0, 2, 3]])
    hw = tfxbar.Interpreter(program, "hardware")
    np.testing.assert_array_equal(hw.run(x), x @ W_4x3)
    assert hw.stats["fc"]["adc_conversions"] == 3 * static_counts(program)[0].adc_conversions


def test_sparse_input_by_hand(program) -> None:
    # x = [0, 2, 0, 0]: rows 0–1 carry (0, 2) → bit-plane 0 = (0, 0) zero, bit-plane 1 = (0, 1)
    # non-zero; rows 2–3 carry (0, 0) → both planes zero. Active (tile, cycle): t0·c1, t1·c1.
    # Skipped for zero input: t0·c0 4 + t1·c0 2 + t2 2×4 + t3 2×2 = 18 conversions.
    # In t0·c1 2 of 4 columns are zero, in t1·c1 2 of 2 → 4 skipped for zero columns, 2 left.
    found, out = measure(program, np.array([[0, 2, 0, 0]]))
    m = found["fc"]
    np.testing.assert_array_equal(out, [[6, 0, 0]])
    assert (m.tile_cycles, m.tile_cycles_zero) == (8, 6)
    assert (m.adc_conversions, m.adc_skipped_zero_input, m.adc_skipped_zero_column) == (2, 18, 4)
    assert m.dac_drives == 2 * 4           # 2 active tile-cycles × 2 polarities × 2 rows
    assert m.cell_reads == 8 + 4           # t0 uses 8 cells, t1 4


def test_dense_input_skips_only_zero_columns(program) -> None:
    # x = [3, 3, 3, 3]: every bit-plane of every tile is non-zero → only the 6 zero columns
    # are skipped in each of the 2 cycles: 12 conversions, 12 skipped.
    m = measure(program, np.array([[3, 3, 3, 3]]))[0]["fc"]
    assert (m.adc_conversions, m.adc_skipped_zero_input, m.adc_skipped_zero_column) == (12, 0, 12)
    assert m.tile_cycles_zero == 0 and m.dac_drives == 32 and m.cell_reads == 48


def test_all_zero_input_skips_everything(program) -> None:
    m = measure(program, np.zeros((1, 4), np.int64))[0]["fc"]
    assert (m.adc_conversions, m.adc_skipped_zero_input, m.adc_skipped_zero_column) == (0, 24, 0)
    assert m.dac_drives == 0 and m.cell_reads == 0


def test_counts_are_averaged_per_inference(program) -> None:
    # (2 + 12) / 2 conversions left; (18 + 0) / 2 and (4 + 12) / 2 skipped.
    m = measure(program, np.array([[0, 2, 0, 0], [3, 3, 3, 3]]))[0]["fc"]
    assert m.examples == 2
    assert (m.adc_conversions, m.adc_skipped_zero_input, m.adc_skipped_zero_column) == (7, 9, 8)


def test_whole_input_in_one_dac_cycle() -> None:
    # dac_bits = 2: one cycle per input; x = [0, 2, 0, 0] → only t0 and t1 are active:
    # t0 2 + t1 0 conversions left, t2 4 + t3 2 skipped for zero input, t0 2 + t1 2 for columns.
    program = dense_program(W_4x3, tile_rows=2, tile_cols=2, input_bits=2, dac_bits=2)
    (layer,) = static_counts(program)
    assert layer.adc_conversions == 12 and layer.dac_cycles == 1
    m = measure(program, np.array([[0, 2, 0, 0]]))[0]["fc"]
    assert (m.adc_conversions, m.adc_skipped_zero_input, m.adc_skipped_zero_column) == (2, 6, 4)


def test_offset_mapping_reference_column_by_hand() -> None:
    # W = [[1, −1], [0, −1]], cells W + 1 = [[2, 0], [1, 0]], one polarity, tiles 2 × 2 with the
    # reference column in column block 0: t0 = rows 0–1 × col 0 + reference, t1 = rows 0–1 ×
    # col 1 (all zero). Columns per cycle: t0 2, t1 1 → 3 conversions per inference (1-bit
    # inputs). Cells used: t0 2 + 2 reference, t1 2 → 6 of 2 × 4. Offset correction: 1 add per
    # output (2); a 2-bit threshold: binary search = 2 compares per output (4).
    program = dense_program(np.array([[1, -1], [0, -1]]), tile_rows=2, tile_cols=2, input_bits=1,
                            dac_bits=1, mapping="offset", offset=1, threshold_bits=2)
    (layer,) = static_counts(program)
    assert (layer.adc_conversions, layer.cells, layer.capacity, layer.zero_columns) == (3, 6, 8, 1)
    assert (layer.accumulates, layer.compares) == (2, 4)
    hw = tfxbar.Interpreter(program, "hardware")
    hw.run(np.array([[1, 1]]))
    assert hw.stats["fc"]["adc_conversions"] == 3
    # x = [0, 0]: all 3 skipped (the reference Σx is 0 too). x = [1, 0]: t0 column + reference
    # = 2 conversions, t1's zero column skipped.
    m = measure(program, np.array([[0, 0]]))[0]["fc"]
    assert (m.adc_conversions, m.adc_skipped_zero_input, m.adc_skipped_zero_column) == (0, 3, 0)
    m = measure(program, np.array([[1, 0]]))[0]["fc"]
    assert (m.adc_conversions, m.adc_skipped_zero_input, m.adc_skipped_zero_column) == (2, 0, 1)


def test_conv_patches_and_padding() -> None:
    """A converted Conv2D: M = output pixels; zero padding makes border patches sparse."""
    import tf_keras as keras

    model = keras.Sequential([keras.layers.Conv2D(2, 3, padding="same", input_shape=(4, 4, 1)),
                              keras.layers.ReLU()])
    qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=np.random.rand(8, 4, 4, 1))
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel, tile_rows=3, dac_bits=1).convert()
    (layer,) = static_counts(program)
    # 9 rows in 3 row tiles of 3, 2 columns → 3 tiles, 2 polarities; 16 patches × 8 cycles.
    assert (layer.patches, layer.tiles, layer.dac_cycles) == (16, 3, 8)
    assert layer.adc_conversions == 16 * 8 * 3 * 2 * 2
    # A single bright pixel at (0, 0) with code 1 (only bit-plane 0): it lies in the 3 × 3
    # window of the 4 output pixels (0..1, 0..1); in each, exactly one kernel row (one tile)
    # sees it → 4 active tile-cycles of 16 · 3 · 8 = 384.
    x = np.zeros((1, 4, 4, 1), np.int64)
    x[0, 0, 0, 0] = 1
    m = measure(program, x)[0][layer.name]
    assert (m.tile_cycles, m.tile_cycles_zero) == (384, 380)
    hw = tfxbar.Interpreter(program, "hardware")
    hw.run(x)
    assert hw.stats[layer.name]["adc_conversions"] == layer.adc_conversions


def test_crossbar_hook_sees_patches_in_both_modes(program) -> None:
    seen = []
    for mode in ("ideal", "hardware"):
        interpreter = tfxbar.Interpreter(program, mode)
        interpreter.crossbar_hook = lambda index, patches: seen.append((index, patches.copy()))
        interpreter.run(np.array([[1, 2, 3, 0]]))
    assert [i for i, _ in seen] == [0, 0]
    for _, patches in seen:
        np.testing.assert_array_equal(patches, [[1, 2, 3, 0]])


def test_info_and_cost_model_share_one_utilization_convention() -> None:
    """Offset mapping, bit-sliced into 2 slices: the reference column is r cells once per tile.

    Dense 100 → 16 of 2-bit biased weights, 1-bit cells (P = 1, L = 2), tiles 16 × 8 (7 weight
    columns + the reference column in column block 0): 7 row blocks × 3 column blocks = 21 tiles.
    Used cells = L·K·N + K (every row meets the reference column once) = 2·100·16 + 100 = 3300 of
    21 · 2 · 16 · 8 = 5376. Counting the reference column in both slices would give 3400.
    """
    import tf_keras as keras
    from toys import tiny_cnn, toy_data

    from tfxbar.cli.info import program_info

    keras.utils.set_random_seed(0)
    qmodel = tfxbar.quantize_model(tiny_cnn(), "w2a2-biased", calibration_data=toy_data(32)[0])
    program = tfxbar.CrossbarConverter.from_keras_model(
        qmodel, tile_rows=16, tile_cols=8, weight_mapping="bit_sliced", cell_bits=1).convert()
    info = {c["name"]: c for c in program_info(program)["crossbars"]}
    counts = {layer.name: layer for layer in static_counts(program)}
    dense = info["dense"]
    assert (dense["mapping"], dense["polarities"], dense["slices"], dense["tiles"]) == ("offset", 1, 2, 21)
    assert (dense["cells"], dense["capacity"]) == (3300, 5376)
    assert dense["utilization"] == counts["dense"].utilization == 3300 / 5376
    for name, layer in counts.items():
        assert info[name]["utilization"] == layer.utilization
    total = program_info(program)["utilization"]
    assert total == sum(c.cells for c in counts.values()) / sum(c.capacity for c in counts.values())
