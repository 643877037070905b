"""Interpreter: mappings agree, hardware mode (DAC/ADC/accumulator), numpy-only import."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras
from export_toys import pixel_codes, trained

import tfxbar
from tfxbar.export.elementwise import Affine, Relu
from tfxbar.export.passes.fold_thresholds import integer_thresholds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def models() -> dict[str, keras.Model]:
    return {preset: trained(preset, epochs=1) for preset in ("w4a3", "w2a2-biased")}


def _convert(qmodel: keras.Model, **options) -> tfxbar.Program:  # noqa: ANN003
    return tfxbar.CrossbarConverter.from_keras_model(qmodel, **options).convert()


@pytest.mark.parametrize("preset,mappings", [
    ("w4a3", ["auto", "differential", "offset", "bit_sliced"]),
    ("w2a2-biased", ["auto", "offset", "bit_sliced"]),
])
def test_mappings_agree_in_ideal_mode(models, preset: str, mappings: list[str]) -> None:
    codes, _ = pixel_codes(128)
    reference = tfxbar.Interpreter(_convert(models[preset])).run(codes)
    for mapping in mappings:
        program = _convert(models[preset], weight_mapping=mapping, tile_rows=16, tile_cols=8, cell_bits=1)
        np.testing.assert_array_equal(tfxbar.Interpreter(program).run(codes), reference, err_msg=mapping)
        hardware = tfxbar.Interpreter(program, "hardware", accumulator_bits=40)
        np.testing.assert_array_equal(hardware.run(codes), reference, err_msg=mapping)
        assert all(s["adc_clips"] == 0 and s["acc_overflows"] == 0 for s in hardware.stats.values())


def test_differential_mapping_of_biased_weights_raises(models) -> None:
    with pytest.raises(tfxbar.ConversionError, match="offset"):
        _convert(models["w2a2-biased"], weight_mapping="differential")


@pytest.mark.parametrize("dac_bits", [1, 3, 8])
def test_hardware_lossless_equals_ideal_with_bit_serial_dac(models, dac_bits: int) -> None:
    program = _convert(models["w4a3"], dac_bits=dac_bits, tile_rows=32, tile_cols=16)
    conv = program.ops[0]["attrs"]
    assert conv["dac_cycles"] == -(-8 // dac_bits)
    assert conv["adc_bits"] == conv["adc_bits_lossless"]
    codes, _ = pixel_codes(64)
    ideal = tfxbar.Interpreter(program).run(codes)
    np.testing.assert_array_equal(tfxbar.Interpreter(program, "hardware").run(codes), ideal)


def test_clipping_adc_counts_and_changes_results(models) -> None:
    program = _convert(models["w4a3"], adc_range="clip", adc_bits=3)
    codes, _ = pixel_codes(64)
    hardware = tfxbar.Interpreter(program, "hardware")
    out = hardware.run(codes)
    assert sum(s["adc_clips"] for s in hardware.stats.values()) > 0
    assert not np.array_equal(out, tfxbar.Interpreter(program).run(codes))


@pytest.mark.parametrize("mode", ["saturate", "wrap"])
def test_narrow_accumulator_overflows_are_counted(models, mode: str) -> None:
    program = _convert(models["w4a3"], accumulator_bits=8, accumulator_mode=mode)
    assert program.ops[0]["attrs"]["acc_bits_required"] > 8
    codes, _ = pixel_codes(64)
    hardware = tfxbar.Interpreter(program, "hardware")
    hardware.run(codes)
    assert sum(s["acc_overflows"] for s in hardware.stats.values()) > 0
    wide = tfxbar.Interpreter(program, "hardware", accumulator_bits=48)
    wide.run(codes)
    assert sum(s["acc_overflows"] for s in wide.stats.values()) == 0


def test_saturation_clamps_to_the_accumulator_range() -> None:
    from tfxbar.export.interpreter import Interpreter

    interpreter = Interpreter.__new__(Interpreter)
    interpreter.accumulator_bits, interpreter.accumulator_mode = 4, "saturate"
    counters = {"acc_overflows": 0}
    out = interpreter._limit(np.array([-20, -8, 0, 7, 9]), counters)  # noqa: SLF001
    assert out.tolist() == [-8, -8, 0, 7, 7] and counters["acc_overflows"] == 2
    interpreter.accumulator_mode = "wrap"
    assert interpreter._limit(np.array([8, -9]), counters).tolist() == [-8, 7]  # noqa: SLF001


def test_device_conductances_hook(models) -> None:
    program = _convert(models["w4a3"])
    codes, _ = pixel_codes(32)
    ideal = tfxbar.Interpreter(program).run(codes)
    exact = tfxbar.Interpreter(program, "hardware", conductances=lambda name, t, cells: cells.astype(float))
    np.testing.assert_array_equal(exact.run(codes), ideal)
    rng = np.random.default_rng(0)
    noisy = tfxbar.Interpreter(program, "hardware",
                               conductances=lambda name, t, cells: cells * rng.lognormal(0, 0.3, cells.shape))
    assert not np.array_equal(noisy.run(codes), ideal)


def test_thresholds_match_clipped_rounding_with_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, 6)
    a[0], a[1] = 0.25, -0.25  # exact ties at half steps
    chain = [Affine(a, rng.normal(0, 0.5, 6)), Affine(np.where(rng.random(6) < 0.5, -1.5, 2.0), 0.1), Relu()]
    lo, hi = np.full(6, -300), np.full(6, 300)
    thresholds, direction = integer_thresholds(chain, lo, hi, step=0.5, bits=3)
    x = np.arange(-300, 301)
    v = np.tile(x.astype(float), (6, 1))
    for stage in chain:
        v = stage.apply(v)
    expected = np.clip(np.round(v / 0.5), 0, 7)
    from tfxbar.export.kernels import apply_thresholds

    got = apply_thresholds(np.tile(x[:, None], (1, 6)), thresholds, direction).T
    np.testing.assert_array_equal(got, expected)


def test_input_validation(models) -> None:
    interpreter = tfxbar.Interpreter(_convert(models["w4a3"]))
    codes, x = pixel_codes(4)
    with pytest.raises(ValueError, match="integer codes"):
        interpreter.run(x)
    with pytest.raises(ValueError, match="shape"):
        interpreter.run(codes[:, :5])
    np.testing.assert_array_equal(interpreter.program.quantize_input(x), codes)


def test_interpreter_imports_without_tensorflow(models, tmp_path) -> None:
    path = tmp_path / "model.xbar"
    _convert(models["w4a3"]).save(path)
    codes, _ = pixel_codes(8)
    np.save(tmp_path / "codes.npy", codes)
    script = f"""
import sys, types, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization', 'keras'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
package = types.ModuleType('tfxbar'); package.__path__ = [{os.path.join(ROOT, 'tfxbar')!r}]
sys.modules['tfxbar'] = package
import numpy as np
from tfxbar.export.interpreter import Interpreter
from tfxbar.export.format import load_program
out = Interpreter(load_program({str(path)!r})).run(np.load({str(tmp_path / 'codes.npy')!r}))
assert not any(m.startswith('tensorflow') for m in sys.modules)
print(out.shape)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(8, 4)"


def test_calibrated_adc_fits_its_data(models) -> None:
    codes, _ = pixel_codes(64)
    program = _convert(models["w4a3"], adc_range="calibrated", adc_bits=4, representative_data=codes)
    shifts = program.op_arrays(0)["tile0.adc_shift"]
    assert shifts.max() > 0
    hardware = tfxbar.Interpreter(program, "hardware")
    hardware.run(codes)
    # The first layer sees exactly the calibration inputs (later ones see ADC-quantized codes).
    first = hardware.stats[program.ops[0]["name"]]
    assert first["adc_clips"] == 0 and first["adc_conversions"] > 0


# -- exactness of the fast paths ---------------------------------------------------------------

def _per_cycle_reference(program: tfxbar.Program, x: np.ndarray, acc_bits: int, acc_mode: str) -> tuple:
    """docs/format.md §4.1 hardware semantics, one addition at a time, in Python-int-safe int64:
    the straightforward per-cycle loop the stacked interpreter must reproduce."""
    index = next(i for i, op in enumerate(program.ops) if op["kind"] == "crossbar")
    attrs, arrays = program.ops[index]["attrs"], program.op_arrays(index)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    counts = {"adc_clips": 0, "adc_conversions": 0, "acc_overflows": 0}

    def limit(v: np.ndarray) -> np.ndarray:
        over = (v < lo) | (v > hi)
        counts["acc_overflows"] += int(over.sum())
        return np.clip(v, lo, hi) if acc_mode == "saturate" else ((v - lo) % (1 << acc_bits)) + lo

    def adc(v: np.ndarray, shift: np.ndarray) -> np.ndarray:
        code = (v + ((1 << shift) >> 1)) >> shift
        counts["adc_clips"] += int((code > (1 << attrs["adc_bits"]) - 1).sum())
        counts["adc_conversions"] += code.size
        return np.minimum(code, (1 << attrs["adc_bits"]) - 1) << shift

    patches = x.reshape(len(x), -1, attrs["rows"]).sum(axis=1)   # the toys' optional global sum-pool
    d, b = attrs["dac_bits"], attrs["slice_bits"]
    acc = np.zeros((len(x), attrs["cols"]), np.int64)
    total = np.zeros((len(x), 1), np.int64)
    for t in range(len(attrs["tiles"])):
        cells, rows, cols = (arrays[f"tile{t}.{k}"].astype(np.int64) for k in ("cells", "rows", "cols"))
        shift = arrays[f"tile{t}.adc_shift"].astype(np.int64)
        for j in range(attrs["dac_cycles"]):
            plane = (patches[:, rows] >> (d * j)) & ((1 << d) - 1)
            for p, sign in enumerate(attrs["polarities"]):
                for s in range(attrs["slices"]):
                    value = adc(plane @ cells[p, s], shift[p, s])
                    acc[:, cols] = limit(acc[:, cols] + sign * (value << (b * s + d * j)))
            if attrs["tiles"][t]["reference"]:
                ref = adc(plane.sum(axis=1, keepdims=True), arrays[f"tile{t}.ref_shift"].astype(np.int64))
                total = limit(total + (ref << (d * j)))
    out = limit((acc << attrs["offset_shift"]) - total * arrays["offset_num"][None, :])
    return out, counts


def test_hardware_stacking_equals_the_per_cycle_reference() -> None:
    """Random programs (mappings, slices, DAC plans, clipping ADCs, narrow accumulators): the
    stacked GEMMs, the ADC shortcut and the no-overflow summation change nothing, counters included."""
    from check_toys import make_program

    rng = np.random.default_rng(1)
    paths = set()
    for trial in range(40):
        mapping = ("differential", "offset")[trial % 2]
        k, n = int(rng.integers(3, 30)), int(rng.integers(1, 10))
        options = {"mapping": mapping, "input_bits": int(rng.integers(1, 9)),
                   "tile_rows": int(rng.integers(2, 10)), "tile_cols": int(rng.integers(2, 7)),
                   "dac_bits": int(rng.choice([1, 2, 3, 8])), "slice_bits": int(rng.choice([1, 2, 4])),
                   "pool": int(rng.choice([1, 3]))}
        if mapping == "offset":
            codes = rng.integers(0, 16, (k, n))
            options.update(offset_num=rng.integers(0, 40, n), offset_shift=int(rng.integers(0, 3)))
        else:
            codes = rng.integers(-15, 16, (k, n))
        if trial % 4 >= 2:
            options.update(adc_bits=int(rng.integers(2, 7)), adc_shift=int(rng.integers(0, 3)))
        program = make_program(codes, **options)
        spec = program.header["input"]
        x = rng.integers(0, 2 ** spec["bits"], (40, *spec["shape"]))
        budgets = ((40, "saturate"), (int(rng.integers(5, 12)), "saturate"),
                   (int(rng.integers(5, 12)), "wrap"))
        for bits, mode in budgets:
            interpreter = tfxbar.Interpreter(program, "hardware", accumulator_bits=bits,
                                             accumulator_mode=mode)
            out = interpreter.run(x, batch_size=16)
            expected, counts = _per_cycle_reference(program, x, bits, mode)
            np.testing.assert_array_equal(out, expected, err_msg=f"{trial} {options} {bits} {mode}")
            assert interpreter.stats["xbar"] == counts, (trial, options, bits, mode)
            index = len(program.ops) - 2
            paths.add((interpreter._hardware_is_ideal(index), interpreter.no_overflow[index]))  # noqa: SLF001
    assert paths == {(True, True), (False, True), (False, False)}   # every path was exercised


@pytest.mark.parametrize("magnitude,dtype", [(100, np.float32), (3000, np.float64), (2 ** 40, np.int64)])
def test_ideal_gemm_dtype_follows_the_static_bound(magnitude: int, dtype: type) -> None:
    """float32 only below 2^24, float64 only below 2^53, else int64 — and exact in each case,
    including sums far above 2^24 that float32 would round."""
    from check_toys import make_program

    k = 600
    codes = np.full((k, 3), magnitude, np.int64)
    codes[::2, 1] *= -1
    program = make_program(codes, input_bits=8, tile_rows=128, tile_cols=8, slice_bits=8, accumulator_bits=64)
    interpreter = tfxbar.Interpreter(program)
    assert interpreter.crossbars[0].dtype == dtype
    x = np.concatenate([np.full((1, k), 255), RNG.integers(0, 256, (15, k))])
    out = interpreter.run(x)
    expected = x @ codes
    if dtype is np.int64:   # beyond 2^53 the float64 dequantize stage itself rounds
        expected = expected.astype(np.float64)
    np.testing.assert_array_equal(out, expected)
    assert expected[0, 0] == k * 255 * magnitude


RNG = np.random.default_rng(7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_threshold_table_matches_binary_search(dtype: type) -> None:
    """Lookup / compare-and-count / binary search, both directions, values outside the table
    (clipped) and thresholds beyond the float32 range, against one searchsorted per channel."""
    from tfxbar.export.kernels import ThresholdTable

    channels = 6
    low, high = (0, 256) if dtype is np.uint8 else (-400, 400)
    x = RNG.integers(low, high, (50, 3, channels))
    for levels, spread in ((7, 60), (3, 300), (1, 5), (31, 2000)):
        t = np.sort(RNG.integers(-spread, spread, (channels, levels)), axis=1)
        t[0, -1] = 2 ** 30   # never passed
        t[1, 0] = -(2 ** 30)  # always passed (and far outside float32's exact range)
        direction = np.where(RNG.random(channels) < 0.5, 1, -1).astype(np.int8)
        stored = np.where(direction[:, None] > 0, t, t[:, ::-1])   # direction −1: non-increasing
        expected = np.stack([np.searchsorted(stored[c], x[..., c], side="right") if direction[c] > 0
                             else np.searchsorted(-stored[c], -x[..., c], side="right")
                             for c in range(channels)], axis=-1)
        for table_size in (1 << 21, 8):   # lookup table; then its fallbacks
            ThresholdTable.MAX_TABLE = table_size
            try:
                got = ThresholdTable(stored, direction)(x.astype(dtype))
            finally:
                ThresholdTable.MAX_TABLE = 1 << 21
            np.testing.assert_array_equal(got, expected, err_msg=f"{levels} {table_size}")


def test_threshold_table_without_clipping_inside_known_bounds() -> None:
    from tfxbar.export.kernels import ThresholdTable

    t = np.array([[-5, 0, 5], [3, 2, 1]])   # direction −1: non-increasing
    bounds = (np.array([-50, -3]), np.array([40, 9]))
    table = ThresholdTable(t, np.array([1, -1], np.int8), bounds)
    assert table.covers_bounds
    x = np.stack(np.meshgrid(np.arange(-50, 41), np.arange(-3, 10), indexing="ij"), -1).reshape(-1, 2)
    expected = ThresholdTable(t, np.array([1, -1], np.int8))(x)
    np.testing.assert_array_equal(table(x.astype(np.float32), in_bounds=True), expected)


def test_field_codes_equal_the_threshold_table() -> None:
    """The table a packed convolution looks its threshold up in gives, for every value of every
    channel's static range, the code of the plain threshold op (both directions)."""
    from tfxbar.export.kernels import ThresholdTable

    channels = 7
    t = np.sort(RNG.integers(-300, 300, (channels, 7)), axis=1)
    direction = np.where(np.arange(channels) % 2 == 0, 1, -1).astype(np.int8)
    stored = np.where(direction[:, None] > 0, t, t[:, ::-1])
    lo, hi = RNG.integers(-400, 0, channels), RNG.integers(0, 400, channels)
    lo[0], hi[0] = 0, 0   # a channel whose range is a single value
    table = ThresholdTable(stored, direction)
    codes = table.field_codes(lo, hi)
    assert codes.table.dtype == np.uint8
    for c in range(channels):
        values = np.arange(lo[c], hi[c] + 1)
        x = np.zeros((len(values), channels), np.int64)
        x[:, c] = values
        np.testing.assert_array_equal(codes.table[codes.base[c] + values - lo[c]], table(x)[:, c])
    assert len(np.unique(codes.table)) == 8
    ThresholdTable.MAX_TABLE = int((hi - lo + 1).sum()) - 1
    try:
        assert ThresholdTable(stored, direction).field_codes(lo, hi) is None
    finally:
        ThresholdTable.MAX_TABLE = 1 << 21


@pytest.mark.parametrize("mode", ["ideal", "hardware"])
def test_thresholds_fused_into_packed_convolutions_equal_the_separate_ops(models, mode: str,
                                                                          monkeypatch) -> None:
    """Every convolution + threshold pair runs fused (codes straight from the lane fields), here
    with half the channels of every threshold turned to direction −1 and min-pooling after some:
    the outputs and tapped codes equal the unfused ops and the unpacked interpreter."""
    import copy

    from tfxbar.export import crossbar

    monkeypatch.setattr(crossbar, "_MIN_PACKED_PATCHES", 0)   # small toy images: pack them all
    program = _convert(models["w4a3"])
    header, arrays = copy.deepcopy(program.header), dict(program.arrays)
    for i, op in enumerate(header["ops"]):
        if op["kind"] == "threshold":
            flip = np.arange(len(arrays[f"op{i}.direction"])) % 2 == 1
            arrays[f"op{i}.thresholds"] = np.where(flip[:, None], -arrays[f"op{i}.thresholds"],
                                                   arrays[f"op{i}.thresholds"])
            arrays[f"op{i}.direction"] = np.where(flip, -1, 1).astype(np.int8)
        elif op["kind"] == "max_pool":
            pooling = np.where(np.arange(len(arrays[f"op{i}.mode"])) % 4 < 2, 1, -1)
            arrays[f"op{i}.mode"] = pooling.astype(np.int8)
    edited = tfxbar.Program(header, arrays)
    codes, _ = pixel_codes(23)
    fused = tfxbar.Interpreter(edited, mode, workers=1)
    convs = [i for i, x in fused.crossbars.items() if x.attrs["layer_type"] == "Conv2D"]
    assert convs and all(fused.field_codes.get(i + 1) is not None for i in convs)
    calls = []
    original = tfxbar.Interpreter._fusable
    monkeypatch.setattr(tfxbar.Interpreter, "_fusable",
                        lambda self, i, x: calls.append(i) or original(self, i, x))
    out, taps = fused.run(codes, batch_size=9, taps=True)
    assert set(convs) <= set(calls)
    monkeypatch.setattr(tfxbar.Interpreter, "_fusable", lambda self, i, x: False)
    for other in (tfxbar.Interpreter(edited, mode, workers=1), tfxbar.Interpreter(edited, mode, lanes=1)):
        ref, ref_taps = other.run(codes, batch_size=9, taps=True)
        np.testing.assert_array_equal(out, ref)
        assert taps.keys() == ref_taps.keys()
        assert all(np.array_equal(taps[key], ref_taps[key]) for key in ref_taps)


@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 0, 0, 1]])
def test_max_pool_commutes_with_thresholds(pads: list[int]) -> None:
    """max(f(x)) = f(max x) for a non-decreasing f (min for non-increasing): the interpreter
    pools accumulators with the mode times the direction, then thresholds."""
    from tfxbar.export.kernels import ThresholdTable, max_pool

    channels = 8
    x = RNG.integers(-60, 60, (4, 7, 6, channels)).astype(np.float32)
    t = np.sort(RNG.integers(-40, 40, (channels, 7)), axis=1)
    direction = np.array([1, -1] * 4, np.int8)
    stored = np.where(direction[:, None] > 0, t, t[:, ::-1])
    mode = np.array([1, 1, -1, -1] * 2, np.int8)
    table = ThresholdTable(stored, direction)
    threshold_then_pool = max_pool(table(x), [2, 3], [2, 2], pads, mode)
    pool_then_threshold = table(max_pool(x, [2, 3], [2, 2], pads, mode * direction))
    np.testing.assert_array_equal(pool_then_threshold, threshold_then_pool)
    assert len(np.unique(threshold_then_pool)) > 3


def test_taps_are_int64_codes(models) -> None:
    program = _convert(models["w4a3"])
    codes, _ = pixel_codes(16)
    _, taps = tfxbar.Interpreter(program).run(codes, taps=True)
    assert taps and all(v.dtype == np.int64 for v in taps.values())


@pytest.mark.parametrize("mode", ["ideal", "hardware"])
def test_pool_first_equals_threshold_first_in_a_program(models, mode: str, monkeypatch) -> None:
    """The fused threshold → max-pool of a real program, with some channels turned to direction −1
    and min-pooling, equals running the two ops in file order."""
    import copy

    program = _convert(models["w4a3"], tile_rows=32, tile_cols=16)
    header, arrays = copy.deepcopy(program.header), dict(program.arrays)
    pairs = [i for i, op in enumerate(header["ops"][:-1])
             if op["kind"] == "threshold" and header["ops"][i + 1]["kind"] == "max_pool"]
    assert pairs
    for i in pairs:
        header["ops"][i]["tap"] = None
        flip = np.arange(len(arrays[f"op{i}.direction"])) % 2 == 1
        arrays[f"op{i}.thresholds"] = np.where(flip[:, None], -arrays[f"op{i}.thresholds"],
                                               arrays[f"op{i}.thresholds"])
        arrays[f"op{i}.direction"] = np.where(flip, -1, 1).astype(np.int8)   # codes for −x: still valid
        arrays[f"op{i + 1}.mode"] = np.where(np.arange(len(flip)) % 4 < 2, 1, -1).astype(np.int8)
    edited = tfxbar.Program(header, arrays)
    codes, _ = pixel_codes(32)
    interpreter = tfxbar.Interpreter(edited, mode)
    assert interpreter.pool_after
    fused = interpreter.run(codes)
    interpreter.pool_after = {}
    np.testing.assert_array_equal(fused, interpreter.run(codes))


@pytest.mark.parametrize("path", ["float32", "float64", "int64"])
def test_hardware_float_paths_equal_the_per_cycle_reference(path: str) -> None:
    """Partial sums beyond float32's exact ADC range (float64 ADC and sums), and the integer ADC
    fallback (forced), against the per-cycle int64 reference, counters included."""
    from check_toys import make_program

    rng = np.random.default_rng(3)
    k, n = 256, 5   # two full row tiles: every tile's peak is past 2^22 in the float64 case
    magnitude = 15 if path == "float32" else 2 ** 16 - 1
    codes = rng.integers(-magnitude, magnitude + 1, (k, n))
    codes[:, ::4] = magnitude   # a column per tile whose partial sums reach the peak
    program = make_program(codes, input_bits=8, tile_rows=128, tile_cols=4, dac_bits=8, slice_bits=8,
                           adc_bits=14 if path != "float32" else 6, adc_shift=8 if path != "float32" else 2)
    x = np.concatenate([np.full((1, k), 255), rng.integers(0, 256, (30, k))])
    for bits, mode in ((48, "saturate"), (60, "saturate"), (20, "wrap"), (20, "saturate")):
        interpreter = tfxbar.Interpreter(program, "hardware", accumulator_bits=bits, accumulator_mode=mode)
        tiles = interpreter.crossbars[0].tiles
        if path == "int64":
            for tile in tiles:
                tile.adc_dtype, tile.scaled = np.dtype(np.int64), None
        assert {t.adc_dtype.name for t in tiles} == {path}
        out = interpreter.run(x, batch_size=8)
        expected, counts = _per_cycle_reference(program, x, bits, mode)
        np.testing.assert_array_equal(out, expected.astype(np.float64), err_msg=f"{bits} {mode}")
        assert interpreter.stats["xbar"] == counts, (bits, mode)
        assert counts["adc_clips"] > 0


@pytest.mark.parametrize("mode", ["ideal", "hardware"])
def test_parallel_batches_equal_sequential(models, mode: str) -> None:
    """Batches on worker threads: same outputs, taps and counters as one at a time, and a device
    instance drawn once, in the same order (the callable consumes a random stream)."""
    program = _convert(models["w4a3"], dac_bits=1, adc_range="clip", adc_bits=5, tile_rows=32, tile_cols=16)
    codes, _ = pixel_codes(40)
    results = []
    for workers in (1, 3):
        rng = np.random.default_rng(5)

        def device(name: str, t: int, cells: np.ndarray, rng: np.random.Generator = rng) -> np.ndarray:
            return cells * rng.lognormal(0, 0.2, cells.shape)

        device = device if mode == "hardware" else None
        interpreter = tfxbar.Interpreter(program, mode, workers=workers, conductances=device)
        out, taps = interpreter.run(codes, batch_size=6, taps=True)
        results.append((out, taps, interpreter.stats))
    (out1, taps1, stats1), (out3, taps3, stats3) = results
    np.testing.assert_array_equal(out3, out1)
    assert taps3.keys() == taps1.keys() and all(np.array_equal(taps3[k], taps1[k]) for k in taps1)
    assert stats3 == stats1
    if mode == "hardware":
        assert list(stats1) == [op["name"] for op in program.ops if op["kind"] == "crossbar"]
        assert sum(s["adc_clips"] for s in stats1.values()) > 0


@pytest.mark.parametrize("device", [False, True])
def test_hardware_crossbars_in_image_blocks_equal_whole_batches(models, device: bool, monkeypatch) -> None:
    """Modelled hardware runs each crossbar on a few images at a time (rows are independent):
    outputs, taps and every counter (ADC clips, conversions, wrapped accumulator overflows)
    equal one call per batch, with and without a device instance."""
    from tfxbar.export import interpreter as module

    program = _convert(models["w4a3"], dac_bits=1, adc_range="clip", adc_bits=4, tile_rows=32, tile_cols=16,
                       accumulator_bits=10, accumulator_mode="wrap")
    codes, _ = pixel_codes(13)

    def conductances(name: str, t: int, cells: np.ndarray) -> np.ndarray:
        return cells * np.random.default_rng(t).lognormal(0, 0.2, cells.shape)

    results = []
    for block in (1 << 40, 1):   # one call per batch; then one image per call
        monkeypatch.setattr(module, "_HARDWARE_BLOCK", block)
        interpreter = tfxbar.Interpreter(program, "hardware", workers=1,
                                         conductances=conductances if device else None)
        out, taps = interpreter.run(codes, batch_size=7, taps=True)
        results.append((out, taps, interpreter.stats))
    (whole, whole_taps, whole_stats), (blocked, blocked_taps, blocked_stats) = results
    np.testing.assert_array_equal(blocked, whole)
    assert all(np.array_equal(blocked_taps[k], whole_taps[k]) for k in whole_taps)
    assert blocked_stats == whole_stats
    assert sum(s["acc_overflows"] for s in whole_stats.values()) > 0
    assert sum(s["adc_clips"] for s in whole_stats.values()) > 0


def test_blas_is_single_threaded_only_inside_a_run() -> None:
    from tfxbar.export import blas as module

    blas = module._blas_library()   # noqa: SLF001
    if blas is None:
        pytest.skip("numpy is not linked with a findable OpenBLAS")
    get, _ = blas
    before = get()
    with module.single_threaded_blas():
        assert get() == 1
        with module.single_threaded_blas():
            assert get() == 1
        assert get() == 1
    assert get() == before


def test_accumulator_bounds_as_wide_as_int64_run_like_tight_ones(models) -> None:
    """docs/format.md only asks acc_lo/acc_hi to contain the true range: the widest legal bounds
    must not overflow the threshold tables' sizes (they gave IndexError)."""
    program = _convert(models["w4a3"])
    arrays = dict(program.arrays)
    index = next(i for i, op in enumerate(program.ops) if op["kind"] == "crossbar")
    arrays[f"op{index}.acc_hi"] = np.full_like(arrays[f"op{index}.acc_hi"], np.iinfo(np.int64).max)
    arrays[f"op{index}.acc_lo"] = np.full_like(arrays[f"op{index}.acc_lo"], np.iinfo(np.int64).min)
    wide = tfxbar.Program(program.header, arrays)
    codes = RNG.integers(0, 256, (16, *program.header["input"]["shape"]))
    np.testing.assert_array_equal(tfxbar.Interpreter(wide, workers=1).run(codes),
                                  tfxbar.Interpreter(program, workers=1).run(codes))


def test_hardware_mode_is_exact_for_inputs_beyond_float32() -> None:
    """A sum-pooled 16-bit input reaches 300·65535 > 2^24 in one DAC cycle: its bit-planes must not
    be rounded to float32 on the way to the tile GEMM."""
    from check_toys import make_program

    codes = np.array([[1, -1], [2, 3]])
    program = make_program(codes, input_bits=16, pool=300, tile_rows=4, tile_cols=4)
    x = np.random.default_rng(0).integers(60000, 65536, (3, 1, 300, 2))
    exact = x.sum(axis=(1, 2)) @ codes
    crossbar = next(op for op in program.ops if op["kind"] == "crossbar")
    bits = crossbar["attrs"]["acc_bits_required"] + 1   # modelled, not the proven-ideal shortcut
    for interpreter in (tfxbar.Interpreter(program, "hardware", workers=1, accumulator_bits=bits),
                        tfxbar.Interpreter(program, "hardware", workers=1,
                                           conductances=lambda name, tile, cells: cells.astype(float))):
        np.testing.assert_array_equal(interpreter.run(x), exact)


def test_batch_size_must_be_positive() -> None:
    from check_toys import make_program

    interpreter = tfxbar.Interpreter(make_program(np.ones((3, 2), np.int64)))
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            interpreter.run(np.ones((4, 3), np.int64), batch_size=bad)


def test_lanes_must_be_positive() -> None:
    from check_toys import make_program

    with pytest.raises(ValueError, match="lanes"):
        tfxbar.Interpreter(make_program(np.ones((3, 2), np.int64)), lanes=0)


def test_workers_must_be_positive() -> None:
    from check_toys import make_program

    with pytest.raises(ValueError, match="workers"):
        tfxbar.Interpreter(make_program(np.ones((3, 2), np.int64)), workers=0)


@pytest.mark.parametrize("k,magnitude,lanes,dtype", [(200, 1, 3, np.float32), (600, 100, 2, np.float32),
                                                     (600, 3000, 1, np.float64)])
def test_lane_packing_is_exact_at_the_extremes(monkeypatch, k: int, magnitude: int, lanes: int,
                                               dtype: type) -> None:
    """Images packed F to a float64 lane word give the exact products, including outputs at ±the
    static bound (each lane's field full in both directions) and batches not a multiple of F."""
    from check_toys import make_program

    from tfxbar.export import crossbar

    monkeypatch.setattr(crossbar, "_MIN_PACKED_PATCHES", 0)   # pack the dense toy as well
    codes = np.full((k, 3), magnitude, np.int64)
    codes[:, 1] *= -1
    codes[::2, 2] *= -1
    program = make_program(codes, input_bits=8, tile_rows=128, tile_cols=8, slice_bits=8, accumulator_bits=64)
    interpreter = tfxbar.Interpreter(program, workers=1)
    xbar = interpreter.crossbars[0]
    assert (xbar.lanes, xbar.dtype) == (lanes, dtype)
    x = np.concatenate([np.full((2, k), 255), np.zeros((1, k), np.int64), RNG.integers(0, 256, (8, k))])
    expected = x @ codes
    assert expected[0, 0] == k * 255 * magnitude and expected[0, 1] == -expected[0, 0]
    for batch_size in (11, 4, 1):
        np.testing.assert_array_equal(interpreter.run(x, batch_size=batch_size), expected)


def test_convolutions_run_packed_and_equal_the_unpacked_gemm(models, monkeypatch) -> None:
    from tfxbar.export import crossbar

    program = _convert(models["w4a3"])
    codes, _ = pixel_codes(37)
    packed = tfxbar.Interpreter(program, workers=1)
    convs = [x for x in packed.crossbars.values() if x.attrs["layer_type"] == "Conv2D"]
    assert convs and all(x.lanes >= 2 for x in convs)
    monkeypatch.setattr(crossbar, "_MIN_PACKED_PATCHES", 0)   # small toy images: pack them all
    out, taps = packed.run(codes, batch_size=10, taps=True)
    plain = tfxbar.Interpreter(program, workers=1, lanes=1)
    assert all(x.lanes == 1 for x in plain.crossbars.values())
    ref, ref_taps = plain.run(codes, batch_size=10, taps=True)
    np.testing.assert_array_equal(out, ref)
    assert all(np.array_equal(taps[key], ref_taps[key]) for key in ref_taps)
