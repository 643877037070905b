"""The native hardware-mode kernel (tfxbar/hardware/crossbar_kernel.cc): the same integers as the
TF/XLA path and the interpreter where the mapping tests do not reach (graphs with strides and
asymmetric padding, multi-bit DAC planes, int32 partial sums, several column blocks), its
refusals, and how it is built and cached."""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from export_toys import pixel_codes, trained
from graph_toys import residual
from toys import toy_data

import tfxbar
from tfxbar.hardware import HardwareMode, native
from tfxbar.hardware.products import dac_planes
from tfxbar.introspect import output_codes


def _require(method: str) -> None:
    if method in ("dense", "lut") and not native.method_supported(native.load("native"), method):
        pytest.skip(f"this CPU or build cannot run the {method} method")


@pytest.fixture(params=["sparse", "dense", "auto"])
def kernel_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The model tests run with each way of forming partial sums; dense needs AVX2 or AMX;
    auto takes the lookup method where it applies on AVX2-only CPUs (1-bit DACs, stride-1
    convolutions and Dense layers), dense for the other crossbars."""
    _require(request.param)
    monkeypatch.setenv("TFXBAR_KERNEL_METHOD", request.param)
    return request.param


@pytest.fixture(scope="module")
def models() -> dict[str, keras.Model]:
    x, y = toy_data(256)
    mlp = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Conv2D(4, 3, name="stem"),
                            keras.layers.BatchNormalization(), keras.layers.ReLU(), keras.layers.Flatten(),
                            keras.layers.Dense(160, activation="relu", name="wide"),
                            keras.layers.Dense(4, name="logits")])
    return {"residual": trained("w4a3", residual(), x, y, epochs=1),
            "mlp": trained("w4a3", mlp, x, y, epochs=1)}


def _same_everywhere(qmodel: keras.Model, program: tfxbar.Program, codes: np.ndarray, x: np.ndarray) -> None:
    """Native = TF path on every crossbar's X, and = the interpreter on top-1, codes and counters."""
    logits, taps = (interpreter := tfxbar.Interpreter(program, "hardware")).run(codes, taps=True)
    fast, slow = HardwareMode(qmodel, program=program, engine="native"), \
        HardwareMode(qmodel, program=program, engine="tf")
    assert any(c.simulation.uses_native for c in fast.crossbars.values())
    with fast:
        out = qmodel.predict(x, batch_size=32, verbose=0)
        stats = fast.stats()
        got_codes = output_codes(qmodel, x, sorted(taps), batch_size=32)
    assert np.mean(out.argmax(-1) == logits.argmax(-1)) == 1.0
    same = sum(int(np.sum(got_codes[k].reshape(v.shape) == v)) for k, v in taps.items())
    assert same / sum(v.size for v in taps.values()) >= 0.9999
    assert stats == interpreter.stats
    # X itself, crossbar by crossbar, on the codes each receives (the native kernel's
    # unscaled output against the TF formulation's).
    for name, crossbar in fast.crossbars.items():
        if not crossbar.simulation.uses_native:
            continue
        codes_in = _input_codes(fast, qmodel, x, name)
        w, _, offset = crossbar.parts()
        got = crossbar._compiled(codes_in, w, offset)[0]  # noqa: SLF001
        want = slow.crossbars[name]._compiled(codes_in, w, offset)[0]  # noqa: SLF001
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)


def _input_codes(hw: HardwareMode, qmodel: keras.Model, x: np.ndarray, name: str) -> tf.Tensor:
    crossbar, seen = hw.crossbars[name], {}
    original = crossbar.layer.call

    def spy(inputs, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        step = tf.cast(crossbar.input_step(), tf.float32)
        seen["codes"] = tf.round(inputs / step)
        return original(inputs, *args, **kwargs)

    with hw:
        crossbar.layer.call = spy
        qmodel(x, training=False)
        crossbar.layer.call = original
    return seen["codes"]


@pytest.mark.usefixtures("kernel_method")
@pytest.mark.parametrize("dac_bits,adc_bits", [(1, 3), (8, 4)])
def test_graph_with_strides_and_projections(models, dac_bits: int, adc_bits: int) -> None:
    """ResNet blocks: stride-2 3×3 convolutions ('same' padding, asymmetric pads on even
    inputs), a 1×1 stride-2 projection, residual adds; 1-bit and 8-bit DAC planes."""
    codes, x = pixel_codes(48)
    program = tfxbar.CrossbarConverter.from_keras_model(
        models["residual"], tile_rows=16, tile_cols=8, dac_bits=dac_bits, adc_bits=adc_bits,
        adc_range="calibrated", representative_data=codes[:32]).convert()
    _same_everywhere(models["residual"], program, codes, x)


@pytest.mark.usefixtures("kernel_method")
@pytest.mark.parametrize("mapping,cell_bits,dac_bits,tile_rows", [
    ("differential", None, 1, 64),    # 160 columns × 2 polarities: two column blocks of int16
    ("bit_sliced", 2, 1, 64),         # 640 cell columns
    ("differential", None, 8, 128),   # 8-bit planes × 128 rows × 7: partial sums need int32
])
def test_wide_layers_and_int32_partial_sums(models, mapping: str, cell_bits: int | None, dac_bits: int,
                                            tile_rows: int) -> None:
    codes, x = pixel_codes(48)
    program = tfxbar.CrossbarConverter.from_keras_model(
        models["mlp"], tile_rows=tile_rows, tile_cols=256, weight_mapping=mapping, cell_bits=cell_bits,
        dac_bits=dac_bits, adc_bits=4, adc_range="calibrated", representative_data=codes[:32]).convert()
    _same_everywhere(models["mlp"], program, codes, x)


@pytest.mark.usefixtures("kernel_method")
def test_partial_sums_at_their_bound(models) -> None:
    """Every input code at its largest value (every plane bit 1) and the cells at their largest:
    each partial sum reaches the layout's bound, the int16/int32 limit cases."""
    codes, _ = pixel_codes(32)
    program = tfxbar.CrossbarConverter.from_keras_model(
        models["mlp"], tile_rows=64, tile_cols=256, dac_bits=1, adc_bits=5, adc_range="calibrated",
        representative_data=codes).convert()
    fast = HardwareMode(models["mlp"], program=program, engine="native").crossbars["wide"]
    slow = HardwareMode(models["mlp"], program=program, engine="tf").crossbars["wide"]
    layout, sim = fast.layout, fast.simulation
    assert sim.uses_native
    codes = tf.fill([3, layout.rows], float(layout.input_max))
    top = float(2 ** layout.slice_bits - 1)
    cells = [tf.fill([len(g.rows), len(layout.polarities) * layout.slices * layout.cols], top)
             for g in layout.groups]
    got, clips, _ = sim.from_codes(codes, [tf.cast(c, sim.cell_dtype()) for c in cells])
    planes = dac_planes(codes, layout.dac_bits, layout.cycles)
    want, want_clips, _ = slow.simulation(planes, [tf.cast(c, slow.simulation.cell_dtype()) for c in cells])
    np.testing.assert_array_equal(got.numpy(), np.asarray(want))
    assert int(clips) == int(want_clips) > 0


@pytest.mark.usefixtures("kernel_method")
def test_non_finite_codes_are_refused(models) -> None:
    program = tfxbar.CrossbarConverter.from_keras_model(models["mlp"], tile_rows=64, tile_cols=256).convert()
    crossbar = HardwareMode(models["mlp"], program=program, engine="native").crossbars["wide"]
    codes = np.zeros([2, crossbar.layout.rows], np.float32)
    codes[1, 5] = np.nan
    w, _, offset = crossbar.parts()
    index = crossbar.layout.rows + 5
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"finite integers \(got nan at flat index {index}\)"):
        crossbar._compiled(tf.constant(codes), w, offset)  # noqa: SLF001


@pytest.mark.usefixtures("kernel_method")
@pytest.mark.parametrize("step", [0.75, 0.7])
def test_codes_formed_from_the_inputs(models, step: float) -> None:
    """Given the input step, the kernel forms the codes as TF's ``tf.round(inputs / step)``
    (float32 division, ties to even) while it reads the inputs: the same products and clips as
    codes formed by TF, ties included (step 0.75: exact halves; 0.7: rounded quotients); a NaN
    input is named with its index."""
    program = tfxbar.CrossbarConverter.from_keras_model(
        models["mlp"], tile_rows=64, tile_cols=256, dac_bits=1, adc_bits=4, adc_range="calibrated",
        representative_data=pixel_codes(32)[0]).convert()
    crossbar = HardwareMode(models["mlp"], program=program, engine="native").crossbars["wide"]
    sim, top = crossbar.simulation, crossbar.layout.input_max
    w, _, offset = crossbar.parts()
    cells, offset_num = crossbar._native_cells(w, offset)  # noqa: SLF001
    rng = np.random.default_rng(11)
    halves = rng.integers(0, 2 * top + 1, (5, crossbar.layout.rows)) / 2   # k and k + 1/2
    values = np.float32(halves + rng.choice([0.0, 0.0, 0.3, -0.2], halves.shape)).clip(0, top)
    inputs = tf.constant((values * np.float32(step)).astype(np.float32))
    codes = tf.round(inputs / step)
    assert np.any(codes.numpy() != np.floor(inputs.numpy() / np.float32(step) + 0.5))   # ties matter
    got = sim.from_codes(inputs, cells, offset_num, step=tf.constant(step))
    want = sim.from_codes(codes, cells, offset_num)
    np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
    assert int(got[1]) == int(want[1])
    bad = inputs.numpy().copy()
    bad[2, 7] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"got nan at flat index {2 * crossbar.layout.rows + 7} of input / step"):
        sim.from_codes(tf.constant(bad), cells, offset_num, step=tf.constant(step))


def _direct_call(method: str, cells: np.ndarray, dac_bits: int, codes: np.ndarray) -> tuple[np.ndarray, int]:
    """The op on a Dense crossbar of two row groups (differential: Q = 2 · 6 columns)."""
    rows, q = cells.shape
    cycles = -(-8 // dac_bits)
    coef = np.stack([np.stack([np.r_[np.full(6, 1 << (dac_bits * j)), -np.full(6, 1 << (dac_bits * j))]
                               for j in range(cycles)])] * 2).astype(np.int64)
    out, clips = native.load("native").tfxbar_crossbar(
        codes=tf.constant(codes), cells=tf.constant(cells), rows=tf.range(rows),
        group_sizes=tf.constant([rows // 2, rows - rows // 2]), shift=tf.fill([2, q], 3),
        coef=tf.constant(coef), ref_shift=tf.constant([-1, -1]), offset_num=tf.zeros([6], tf.float64),
        scale=tf.zeros([0], tf.float64), step=tf.zeros([0]), Tout=tf.float64, offset_shift=0, conv=False,
        dac_bits=dac_bits, cycles=cycles, top=31, cols=6, method=method)
    return out.numpy(), int(clips)


@pytest.mark.parametrize("cell_max,dac_bits", [(300, 1), (200, 1), (100, 8), (15, 8), (15, 1)])
def test_auto_runs_what_dense_cannot(cell_max: int, dac_bits: int) -> None:
    """Cells past 7 bits (AVX2) or 8 bits (AMX), or 8-bit planes times cells past 64 (AVX2 pair
    sums): `auto` still returns the sparse method's integers (falling back where dense cannot
    run them exactly), and `dense` either matches them or refuses, naming its limits."""
    rng = np.random.default_rng(cell_max)
    cells = rng.integers(0, cell_max + 1, (40, 12)).astype(np.float32)
    codes = rng.integers(0, 256, (9, 40)).astype(np.float32)
    want = _direct_call("sparse", cells, dac_bits, codes)
    got = _direct_call("auto", cells, dac_bits, codes)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]
    if not native.dense_supported(native.load("native")):
        return
    try:
        dense = _direct_call("dense", cells, dac_bits, codes)
    except tf.errors.InvalidArgumentError as exc:
        assert cell_max > 64 and "method 'dense' needs AVX2 (or AMX int8 tiles)" in str(exc)
    else:
        np.testing.assert_array_equal(dense[0], want[0])
        assert dense[1] == want[1]
    if cell_max > 255:   # no dense backend takes these
        with pytest.raises(tf.errors.InvalidArgumentError, match="use 'auto' or 'sparse'"):
            _direct_call("dense", cells, dac_bits, codes)


@pytest.mark.parametrize("bad", [1.5, -1.0, 65536.0, np.nan])
def test_cells_that_are_no_program_cells_are_refused(bad: float) -> None:
    """A cell that is no integer in 0..65535 (here the 30th of 40 × 12, past the 8-wide vector
    checks' first blocks) is named in the error, whatever the method."""
    cells = np.ones((40, 12), np.float32)
    cells[2, 5] = bad
    message = rf"0\.\.65535 \(program cells\), got {bad:g}"
    for method in ("sparse", "auto"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            _direct_call(method, cells, 1, np.zeros((3, 40), np.float32))


def _modelled(codes: np.ndarray, cells: np.ndarray, sizes: list[int], dac_bits: int, cycles: int,
              shift: np.ndarray, top: int, coef: np.ndarray, cols: int) -> tuple[np.ndarray, int]:
    """The modelled accumulator in numpy: per row group and DAC cycle, partial sums, the ADC
    (round half up at 2^shift, saturating at top), then Σ coef · code per output column."""
    x = codes.astype(np.int64)
    total = np.zeros((len(x), cells.shape[1]), np.int64)
    clips, start = 0, 0
    for g, size in enumerate(sizes):
        block = cells[start:start + size].astype(np.int64)
        half = np.where(shift[g] > 0, 1 << np.maximum(shift[g] - 1, 0), 0)
        for j in range(cycles):
            plane = (x[:, start:start + size] >> (dac_bits * j)) & ((1 << dac_bits) - 1)
            code = (plane @ block + half) >> shift[g]
            clips += int(np.sum(code > top))
            total += np.minimum(code, top) * coef[g, j]
        start += size
    return total.reshape(len(x), -1, cols).sum(axis=1).astype(np.float64), clips


def _check_methods(codes: np.ndarray, cells: np.ndarray, rows: np.ndarray, sizes: list[int],
                   shift: np.ndarray, coef: np.ndarray, dac_bits: int, cycles: int, top: int,
                   want: tuple[np.ndarray, int], lut: bool) -> None:
    """A Dense crossbar (no reference column, offset 0) by the dense, the sparse and (where
    `lut`, else it must refuse) the lookup method equals the modelled X and clip count (some
    codes clip)."""
    cols = want[0].shape[1]
    for method in ("dense", "sparse", "lut"):
        call = functools.partial(
            native.load("native").tfxbar_crossbar,
            codes=tf.constant(codes, tf.float32), cells=tf.constant(cells), rows=tf.constant(rows, tf.int32),
            group_sizes=tf.constant(sizes), shift=tf.constant(shift), coef=tf.constant(coef),
            ref_shift=tf.constant([-1] * len(sizes)), offset_num=tf.zeros([cols], tf.float64),
            scale=tf.zeros([0], tf.float64), step=tf.zeros([0]), Tout=tf.float64, offset_shift=0, conv=False,
            dac_bits=dac_bits, cycles=cycles, top=top, cols=cols, method=method)
        if method == "lut" and not lut:
            with pytest.raises(tf.errors.InvalidArgumentError, match="method 'lut' needs AVX2, 1-bit DACs"):
                call()
            continue
        out, clips = call()
        np.testing.assert_array_equal(out.numpy(), want[0], err_msg=method)
        assert int(clips) == want[1] > 0, method


@pytest.mark.parametrize("dac_bits,cycles,cell_max,exp,lut", [
    (1, 3, 7, 0, True), (1, 2, 31, 0, True), (1, 4, 32, 0, True), (1, 3, 7, 24, False), (2, 3, 5, 0, False),
    (2, 2, 6, 0, False), (1, 5, 3, 2, True), (1, 3, 7, 12, True), (1, 8, 1, 0, True)])
def test_dense_paths_equal_the_modelled_sums(dac_bits: int, cycles: int, cell_max: int, exp: int,
                                             lut: bool) -> None:
    """The dense and lookup methods against numpy on a Dense crossbar that takes their AVX2
    variants: dense with two DAC cycles per multiply (1-bit DACs with cells ≤ 31, 2-bit with
    cells ≤ 5; odd and even cycle counts; several splits of the s16 sums per group), codes
    going straight into an int32 accumulator (column weights 2^0) or through the int64 one
    (2^24: past int32); lookup with int16 sums (2^0, 2^2) or int32 ones (2^12), refusing 2-bit
    DACs and sums past int32; clipped codes, columns of weight 0."""
    _require("dense")
    rng = np.random.default_rng([dac_bits, cycles, cell_max, exp])
    sizes, cols = [100, 61], 12
    rows, q = sum(sizes), 3 * cols   # columns: +, − and a third slice of weight 0
    cells = rng.integers(0, cell_max + 1, (rows, q)).astype(np.float32)
    codes = (rng.integers(0, 1 << (dac_bits * cycles), (37, rows)) * (rng.random((37, rows)) < 0.6))
    shift = rng.integers(0, 4, (2, q)).astype(np.int32)
    weight = np.r_[np.full(cols, 1), -np.full(cols, 1), np.zeros(cols)].astype(np.int64) << exp
    coef = np.stack([np.stack([weight << (dac_bits * j) for j in range(cycles)])] * 2)
    top = 15
    want = _modelled(codes, cells, sizes, dac_bits, cycles, shift, top, coef, cols)
    _check_methods(codes, cells, np.arange(rows), sizes, shift, coef, dac_bits, cycles, top, want, lut)


@pytest.mark.parametrize("dac_bits,cell_max", [(1, 7), (2, 5)])
@pytest.mark.parametrize("gathered", [False, True])
def test_patches_with_zero_planes_are_skipped_exactly(dac_bits: int, cell_max: int, gathered: bool) -> None:
    """The dense method skips a patch whose planes are 0 in a row group (its partial sums are 0,
    its codes 0): patches zero everywhere, in one group, in the paired cycles only (codes that
    are multiples of 2^(2·dac)), or nonzero only in a group's last row (the masked tail of the
    zero test) or the next group's first, in runs that leave odd counts per 16 patches; rows read
    in place or gathered (rows in reverse order within each group)."""
    _require("dense")
    rng = np.random.default_rng([dac_bits, cell_max, gathered])
    sizes, cols, cycles, patches = [100, 61], 12, 3, 53
    rows, q = sum(sizes), 2 * cols
    cells = rng.integers(0, cell_max + 1, (rows, q)).astype(np.float32)
    ordered = rng.integers(1, 1 << (dac_bits * cycles), (patches, rows)) * (rng.random((patches, rows)) < 0.6)
    kinds = rng.integers(0, 7, patches)
    ordered[kinds == 0] = 0
    ordered[kinds == 1, :100] = 0
    ordered[kinds == 2, 100:] = 0
    ordered[kinds == 3] = (ordered[kinds == 3] >> (2 * dac_bits)) << (2 * dac_bits)
    for kind, row in ((4, 99), (5, 100)):
        ordered[kinds == kind] = 0
        ordered[kinds == kind, row] = 1
    assert {0, 1, 2, 3, 4, 5} <= set(kinds.tolist())
    perm = np.r_[np.arange(100)[::-1], 100 + np.arange(61)[::-1]] if gathered else np.arange(rows)
    codes = np.empty_like(ordered)
    codes[:, perm] = ordered   # cell row i reads input element perm[i]
    shift = rng.integers(0, 3, (2, q)).astype(np.int32)
    weight = np.r_[np.full(cols, 1), -np.full(cols, 1)].astype(np.int64)
    coef = np.stack([np.stack([weight << (dac_bits * j) for j in range(cycles)])] * 2)
    top = 15
    want = _modelled(ordered, cells, sizes, dac_bits, cycles, shift, top, coef, cols)
    _check_methods(codes, cells, perm, sizes, shift, coef, dac_bits, cycles, top, want, dac_bits == 1)


@pytest.mark.parametrize("method", ["dense", "sparse", "lut"])
def test_reused_planes_keep_their_padding(method: str) -> None:
    """A Conv2D op's bit-plane buffer is reused from call to call: inputs of another layout with
    the same buffer size (2 × 6 × 5 and 1 × 12 × 6 pixels, padded 1 on each side), then the
    first layout again, each equal to the modelled sums of its zero-padded patches."""
    _require(method)
    rng = np.random.default_rng(7)
    channels, cols, cycles = 4, 4, 3
    rows = 9 * channels
    cells = rng.integers(0, 8, (rows, 2 * cols)).astype(np.float32)
    shift = rng.integers(0, 3, (1, 2 * cols)).astype(np.int32)
    weight = np.r_[np.full(cols, 1), -np.full(cols, 1)].astype(np.int64)
    coef = np.stack([np.stack([weight << j for j in range(cycles)])])
    for shape in [(2, 6, 5), (1, 12, 6), (2, 6, 5)]:
        codes = rng.integers(1, 8, (*shape, channels))   # no zero code: stale bytes would count
        padded = np.pad(codes, [(0, 0), (1, 1), (1, 1), (0, 0)])
        taps = [padded[:, dy:dy + shape[1], dx:dx + shape[2]] for dy in range(3) for dx in range(3)]
        patches = np.stack(taps, axis=3).reshape(-1, rows)   # rows in (kh, kw, C) order
        want = _modelled(patches, cells, [rows], 1, cycles, shift, 15, coef, cols)
        out, clips = native.load("native").tfxbar_crossbar(
            codes=tf.constant(codes, tf.float32), cells=tf.constant(cells), rows=tf.range(rows),
            group_sizes=tf.constant([rows]), shift=tf.constant(shift), coef=tf.constant(coef),
            ref_shift=tf.constant([-1]), offset_num=tf.zeros([cols], tf.float64),
            scale=tf.zeros([0], tf.float64), step=tf.zeros([0]), Tout=tf.float64, offset_shift=0, conv=True,
            kernel=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dac_bits=1, cycles=cycles, top=15, cols=cols,
            method=method)
        np.testing.assert_array_equal(out.numpy(), want[0], err_msg=str(shape))
        assert int(clips) == want[1], shape


def _conv_call(method: str, codes: np.ndarray, cells: np.ndarray, rows: np.ndarray, sizes: list[int],
               shift: np.ndarray, coef: np.ndarray, pads: list[int], strides: list[int], top: int,
               cols: int) -> tuple[np.ndarray, int]:
    out, clips = native.load("native").tfxbar_crossbar(
        codes=tf.constant(codes, tf.float32), cells=tf.constant(cells), rows=tf.constant(rows, tf.int32),
        group_sizes=tf.constant(sizes), shift=tf.constant(shift), coef=tf.constant(coef),
        ref_shift=tf.constant([-1] * len(sizes)), offset_num=tf.zeros([cols], tf.float64),
        scale=tf.zeros([0], tf.float64), step=tf.zeros([0]), Tout=tf.float64, offset_shift=0, conv=True,
        kernel=[3, 3], strides=strides, pads=pads, dac_bits=1, cycles=coef.shape[1], top=top, cols=cols,
        method=method)
    return out.numpy(), int(clips)


@pytest.mark.parametrize("channels", [6, 8, 16])
def test_lookup_method_on_convolutions(channels: int) -> None:
    """The lookup method on Conv2D crossbars equals the sparse method's integers: rows of each
    group in a random order (a chunk's four index bits come from any rows of one tap and
    channel quad), channels that fill no quad (6) or whole 8-channel vectors, asymmetric padding,
    output rows of 37 patches (three 16-patch units, the last one partly past the row), three
    row groups, codes that clip; new cells on the same op are not answered from the last
    call's tables; a stride-2 convolution is refused by `lut` and run by `auto`."""
    _require("lut")
    rng = np.random.default_rng(channels)
    cols, cycles, top = 5, 3, 15
    rows = 9 * channels
    perm = rng.permutation(rows)
    sizes = [rows // 3, rows // 3, rows - 2 * (rows // 3)]
    shift = rng.integers(0, 4, (3, 2 * cols)).astype(np.int32)
    weight = np.r_[np.full(cols, 1), -np.full(cols, 1)].astype(np.int64)
    coef = np.stack([np.stack([weight << j for j in range(cycles)])] * 3)
    codes = rng.integers(0, 8, (2, 9, 36, channels)) * (rng.random((2, 9, 36, channels)) < 0.7)
    args = (perm, sizes, shift, coef, [2, 0, 1, 2], [1, 1], top, cols)
    for trial in range(2):   # the second: other cells, same shapes
        cells = rng.integers(0, 8, (rows, 2 * cols)).astype(np.float32)
        want = _conv_call("sparse", codes, cells, *args)
        got = _conv_call("lut", codes, cells, *args)
        assert got[0].shape == (2 * 9 * 37, cols)
        np.testing.assert_array_equal(got[0], want[0], err_msg=str(trial))
        assert got[1] == want[1] > 0
    strided = (perm, sizes, shift, coef, [1, 1, 1, 1], [2, 2], top, cols)
    with pytest.raises(tf.errors.InvalidArgumentError, match="a stride-1 Conv2D or a Dense layer"):
        _conv_call("lut", codes, cells, *strided)
    np.testing.assert_array_equal(_conv_call("auto", codes, cells, *strided)[0],
                                  _conv_call("sparse", codes, cells, *strided)[0])


def test_engine_names_are_checked(models, monkeypatch: pytest.MonkeyPatch) -> None:
    program = tfxbar.CrossbarConverter.from_keras_model(models["mlp"], tile_rows=64, tile_cols=256).convert()
    monkeypatch.setenv("TFXBAR_KERNEL_METHOD", "amx")
    with pytest.raises(ValueError, match=r"TFXBAR_KERNEL_METHOD must be one of auto, sparse, dense, lut; "
                                         r"got 'amx'"):
        HardwareMode(models["mlp"], program=program, engine="native")
    monkeypatch.setenv("TFXBAR_KERNEL_METHOD", "auto")
    with pytest.raises(ValueError, match=r"engine must be one of auto, native, tf; got 'gpu'"):
        HardwareMode(models["mlp"], program=program, engine="gpu")
    monkeypatch.setenv("TFXBAR_ENGINE", "fast")
    with pytest.raises(ValueError, match=r"TFXBAR_ENGINE must be one of .*; got 'fast'"):
        HardwareMode(models["mlp"], program=program)
    monkeypatch.setenv("TFXBAR_ENGINE", "tf")
    assert not any(c.simulation.uses_native
                   for c in HardwareMode(models["mlp"], program=program).crossbars.values())


def test_a_missing_compiler_falls_back_or_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_loaded", None)
    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.warns(RuntimeWarning, match=r"kernel is unavailable.*/nonexistent/c\+\+"):
        assert native.load("auto") is None
    with pytest.raises(native.NativeKernelError, match=r"no C\+\+ compiler '/nonexistent/c\+\+' on PATH"):
        native.load("native")
    assert native.load("tf") is None


def test_every_kernel_source_is_in_the_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit to any of the library's files (the two .cc files or a header) makes a new build,
    never a stale library."""
    copies = []
    for source in (native._SOURCE, native._LAYER_SOURCE, *native._HEADERS):  # noqa: SLF001
        copy = tmp_path / source.name
        copy.write_text(source.read_text())
        copies.append(copy)
    monkeypatch.setattr(native, "_SOURCE", copies[0])
    monkeypatch.setattr(native, "_LAYER_SOURCE", copies[1])
    monkeypatch.setattr(native, "_HEADERS", tuple(copies[2:]))
    keys = {native._cache_key("g++")}  # noqa: SLF001
    for copy in copies:
        copy.write_text(copy.read_text() + "\n// edited\n")
        keys.add(native._cache_key("g++"))  # noqa: SLF001
    assert len(keys) == len(copies) + 1


@pytest.mark.parametrize("version,tuned", [
    ("g++ (Debian 12.2.0-14+deb12u1) 12.2.0", True), ("g++ (GCC) 13.2.0", True),
    ("c++ (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0", True), ("Debian clang version 14.0.6", False),
    ("Apple clang version 15.0.0 (clang-1500.3.9.4)", False),
    ("x86_64-linux-gnu-g++-12 (Debian 12.2.0-14) 12.2.0", True),
    ("Intel(R) oneAPI DPC++/C++ Compiler 2024.0.0 (2024.0.0.20231017)", False)])
def test_only_gcc_gets_its_tuning_flag(version: str, tuned: bool) -> None:
    """`-fno-tree-pre` goes to GCC alone (another compiler may refuse a flag it does not know)."""
    assert native._tuning_flags(version) == (["-fno-tree-pre"] if tuned else [])  # noqa: SLF001


def test_the_tuning_flags_are_in_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library built without the tuning flags is not reused with them."""
    keys = set()
    for flags in ([], ["-fno-tree-pre"]):
        monkeypatch.setattr(native, "_tuning_flags", lambda _version, flags=flags: flags)
        keys.add(native._cache_key("g++"))  # noqa: SLF001
    assert len(keys) == 2


def test_the_build_is_cached_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build lands whole under its key; the next one only asks the compiler its version."""
    monkeypatch.setenv("TFXBAR_CACHE", str(tmp_path))
    built = native._build("g++")  # noqa: SLF001
    assert built.parent == tmp_path / "kernels" and built.suffix == ".so"
    assert sorted(p.name for p in built.parent.iterdir()) == [built.name]   # no temporary left
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "cxx"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec g++ "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    assert native._build(str(wrapper)) == built  # noqa: SLF001
    assert log.read_text().split() == ["--version"]
    assert os.access(built, os.R_OK)
