"""Keras hardware mode = the interpreter's hardware mode: outputs, codes, accumulators, counters."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from export_toys import pixel_codes, trained

import tfxbar
from tfxbar.hardware import HardwareMode, TileLayout, with_adc_steps
from tfxbar.hardware.cells import group_cells, weight_cells
from tfxbar.hardware.ste import straight_through
from tfxbar.introspect import output_codes


@pytest.fixture(scope="module")
def models() -> dict[str, keras.Model]:
    return {preset: trained(preset, epochs=1) for preset in ("w4a3", "w2a2-biased")}


def _program(qmodel: keras.Model, codes: np.ndarray, **options) -> tfxbar.Program:  # noqa: ANN003
    settings = {"tile_rows": 8, "tile_cols": 8, "dac_bits": 1, "adc_bits": 3, "adc_range": "calibrated",
                "representative_data": codes[:64], **options}
    return tfxbar.CrossbarConverter.from_keras_model(qmodel, **settings).convert()


def _compare(qmodel: keras.Model, program: tfxbar.Program, codes: np.ndarray, x: np.ndarray,
             engine: str = "tf", **mode) -> tuple[float, float, dict, dict]:  # noqa: ANN003
    """(top-1 agreement, code agreement over every tapped layer, interpreter stats, Keras stats);
    with ``engine="native"`` some crossbar must run the native kernel."""
    interpreter = tfxbar.Interpreter(program, "hardware", **mode)
    logits, taps = interpreter.run(codes, taps=True)
    with HardwareMode(qmodel, program=program, engine=engine, **mode) as hw:
        assert (engine == "native") == any(c.simulation.uses_native for c in hw.crossbars.values())
        out = qmodel.predict(x, batch_size=64, verbose=0)
        stats = hw.stats()
        keras_codes = output_codes(qmodel, x, sorted(taps), batch_size=64)
    same = sum(int(np.sum(keras_codes[k].reshape(v.shape) == v)) for k, v in taps.items())
    total = sum(v.size for v in taps.values())
    return float(np.mean(out.argmax(-1) == logits.argmax(-1))), same / total, interpreter.stats, stats


@pytest.mark.parametrize("engine", ["tf", "native"])
@pytest.mark.parametrize("preset,mapping,cell_bits,adc_bits", [
    ("w4a3", "differential", None, 3), ("w4a3", "bit_sliced", 1, 2), ("w2a2-biased", "offset", None, 3),
])
def test_keras_hardware_mode_equals_the_interpreter(models, preset: str, mapping: str, cell_bits: int | None,
                                                    adc_bits: int, engine: str) -> None:
    codes, x = pixel_codes(64)
    program = _program(models[preset], codes, weight_mapping=mapping, cell_bits=cell_bits, adc_bits=adc_bits)
    top1, same, expected, got = _compare(models[preset], program, codes, x, engine)
    assert top1 == 1.0
    assert same >= 0.9999
    assert got == expected
    lossy = any(program.op_arrays(i)[f"tile{t}.adc_shift"].any() for i, op in enumerate(program.ops)
                if op["kind"] == "crossbar" for t in range(len(op["attrs"]["tiles"])))
    assert lossy or sum(s["adc_clips"] for s in got.values()) > 0   # the ADCs really lose bits


def test_narrow_accumulator_overflows_match(models, mode: str = "wrap") -> None:
    codes, x = pixel_codes(32)
    program = _program(models["w4a3"], codes, dac_bits=2, adc_bits=4, weight_mapping="offset")
    top1, same, expected, got = _compare(models["w4a3"], program, codes, x,
                                         accumulator_bits=9, accumulator_mode=mode)
    assert sum(s["acc_overflows"] for s in got.values()) > 0
    assert got == expected
    assert top1 == 1.0 and same >= 0.9999


@pytest.mark.parametrize("bits,mode,rows,engine", [
    (9, "saturate", 8, "tf"), (9, "wrap", 8, "tf"), (32, "saturate", 8, "tf"), (32, "saturate", 16, "tf"),
    (32, "saturate", 8, "native"), (32, "saturate", 16, "native")])
def test_first_crossbar_accumulators_are_identical(models, bits: int, mode: str, rows: int,
                                                   engine: str) -> None:
    """The accumulator X itself, on the overflow-free float path (32) and the int64 path (9);
    with 16-row tiles the whole 3 × 3 kernel is one row block (a plain convolution); the
    native kernel on the overflow-free path."""
    codes, _ = pixel_codes(64)
    program = _program(models["w4a3"], codes, dac_bits=2, adc_bits=4, tile_rows=rows)
    interpreter = tfxbar.Interpreter(program, "hardware", accumulator_bits=bits, accumulator_mode=mode)
    expected = interpreter._crossbar(0, codes.astype(np.float32))  # noqa: SLF001
    assert bits > 9 or interpreter.stats[program.ops[0]["name"]]["acc_overflows"] > 0
    hw = HardwareMode(models["w4a3"], program=program, accumulator_bits=bits, accumulator_mode=mode,
                      engine=engine)
    crossbar = hw.crossbars[program.ops[0]["name"]]
    assert crossbar.simulation.free == (bits == 32)
    assert crossbar.simulation.uses_native == (engine == "native")
    acc, *_ = crossbar.accumulate(tf.constant(codes, tf.float32))
    np.testing.assert_array_equal(np.asarray(acc, np.int64).reshape(expected.shape), expected)


@pytest.mark.parametrize("adc_bits,rows,dim", [(5, 8, 1), (6, 16, 1), (8, 8, 1), (5, 16, 8)])
def test_linear_crossbars_equal_the_interpreter(models, adc_bits: int, rows: int, dim: int) -> None:
    """Unit ADC steps: the one-GEMM shortcut (always, or after checking the cells) is exact;
    calibrated on images `dim` times darker, the steps stay 1 but the test images clip the ADCs,
    so the cells must send the crossbar down the modelled path."""
    codes, x = pixel_codes(64)
    program = _program(models["w4a3"], codes, adc_bits=adc_bits, tile_rows=rows,
                       representative_data=codes[:64] // dim)
    simulations = [c.simulation for c in HardwareMode(models["w4a3"], program=program).crossbars.values()]
    assert any(s.linear for s in simulations)
    if adc_bits < 8:   # some crossbar decides on its cells while running
        assert any(s.linear and not s.always_linear for s in simulations)
    top1, same, expected, got = _compare(models["w4a3"], program, codes, x)
    assert top1 == 1.0 and same == 1.0
    assert got == expected
    assert (sum(s["adc_clips"] for s in got.values()) > 0) == (dim > 1)


def test_always_linear_crossbars_skip_the_bit_planes(models) -> None:
    """The codes-in shortcut of an always-linear crossbar (`linear_from_codes`, the pixel layer)
    equals the product of its bit-planes, codes outside the DAC's range (modulo 2^(d·cycles))
    included, and the fused real product equals the unfused one."""
    from tfxbar.hardware.products import dac_planes, pad

    codes, _ = pixel_codes(16)
    program = _program(models["w4a3"], codes, adc_bits=8, tile_rows=16)
    crossbar = next(c for c in HardwareMode(models["w4a3"], program=program).crossbars.values()
                    if c.simulation.always_linear)
    layout, sim = crossbar.layout, crossbar.simulation
    shape = [5, *crossbar.layer.input_shape[1:]]
    x = tf.constant(np.random.default_rng(0).integers(-300, 700, shape).astype(np.float32))
    w, scale, offset = crossbar.parts()
    cells = group_cells(layout, weight_cells(layout, w, offset, int(crossbar.low))[0], sim.cell_dtype())
    want = sim(pad(dac_planes(x, layout.dac_bits, layout.cycles), layout), cells)[0]
    got = tf.function(sim.linear_from_codes, jit_compile=True)(x, cells)[0]
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    step = float(crossbar.input_step())
    real = crossbar.product(x * step, False)[0]
    a = tf.cast(step * scale, tf.float64) * 2.0 ** -layout.offset_shift
    np.testing.assert_array_equal(real.numpy(), tf.cast(tf.cast(want, tf.float64) * a, tf.float32).numpy())


@pytest.mark.parametrize("channels,strides,kernel", [(1, 1, 3), (3, 2, 3), (2, 1, 5), (3, 3, 1)])
def test_shifted_convolution_equals_conv2d(channels: int, strides: int, kernel: int) -> None:
    """The pixel layers' convolution as a sum of shifted inputs = tf.nn.conv2d, exactly."""
    from tfxbar.hardware.products import shifted_conv

    rng = np.random.default_rng(channels)
    x = tf.constant(rng.integers(0, 256, (3, 11, 10, channels)).astype(np.float32))
    k = tf.constant(rng.integers(-15, 16, (kernel, kernel, channels, 4)).astype(np.float32))
    want = tf.nn.conv2d(x, k, [1, strides, strides, 1], "VALID")
    np.testing.assert_array_equal(shifted_conv(x, k, (strides, strides)).numpy(), want.numpy())


@pytest.mark.parametrize("mapping,cell_bits", [("differential", None), ("bit_sliced", 1), ("bit_sliced", 2)])
def test_lane_packed_partial_sums_are_exact_at_their_bound(models, mapping: str,
                                                           cell_bits: int | None) -> None:
    """Every cell at its largest value and every bit-plane 1: each packed lane holds exactly its
    bound, the worst case for carries between lanes."""
    codes, _ = pixel_codes(32)
    program = _program(models["w4a3"], codes, weight_mapping=mapping, cell_bits=cell_bits, tile_rows=16)
    crossbar = next(iter(HardwareMode(models["w4a3"], program=program).crossbars.values()))
    sim, layout = crossbar.simulation, crossbar.layout
    assert sim.lanes > 1
    top, largest = float(2 ** layout.slice_bits - 1), 0.0
    for group in layout.groups:
        cells = tf.fill([len(group.rows), len(layout.polarities) * layout.slices * layout.cols], top)
        planes = tf.ones([5, len(group.rows)], sim.dtype)
        expected = tf.matmul(planes, cells)
        np.testing.assert_array_equal(sim._unpack(tf.matmul(planes, sim._pack(cells))).numpy(),  # noqa: SLF001
                                      expected.numpy())
        largest = max(largest, float(tf.reduce_max(expected)))
    assert largest == layout.partial_bound()   # the lanes were filled to their bound


@pytest.mark.parametrize("preset,mapping", [("w4a3", "differential"), ("w4a3", "bit_sliced"),
                                            ("w2a2-biased", "offset")])
def test_cells_from_the_weights_equal_the_programs(models, preset: str, mapping: str) -> None:
    codes, _ = pixel_codes(32)
    program = _program(models[preset], codes, weight_mapping=mapping, cell_bits=2)
    hw = HardwareMode(models[preset], program=program)
    for index, op in enumerate(program.ops):
        if op["kind"] != "crossbar":
            continue
        layout, crossbar = TileLayout(op, program.op_arrays(index)), hw.crossbars[op["name"]]
        w, _, offset = crossbar.parts()
        cells, offset_num = weight_cells(layout, w, offset, int(crossbar.low))
        for group, got in zip(layout.groups, group_cells(layout, cells, tf.float64), strict=True):
            np.testing.assert_array_equal(got.numpy(), layout.program_cells(group))
        np.testing.assert_array_equal(offset_num.numpy(), layout.offset_num)


def test_device_conductances_follow_the_interpreter(models) -> None:
    codes, x = pixel_codes(64)
    program = _program(models["w4a3"], codes, adc_bits=5)

    def chip(name: str, tile: int, cells: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([tile, len(name)])
        return cells * rng.lognormal(0.0, 0.2, cells.shape)

    top1, same, expected, got = _compare(models["w4a3"], program, codes, x, conductances=chip)
    # The device ADC rounds float32 partial sums (the interpreter float64): rare boundary cases.
    assert top1 >= 0.95 and same >= 0.99
    clean = tfxbar.Interpreter(program, "hardware").run(codes)
    noisy = tfxbar.Interpreter(program, "hardware", conductances=chip).run(codes)
    assert not np.array_equal(clean, noisy)   # the chip matters


def test_straight_through_passes_the_hardware_value_and_the_ideal_gradient() -> None:
    ideal, hardware = tf.constant([0.1, 0.2, 0.3]), tf.constant([0.0, 0.25, 0.5])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([ideal, hardware])
        value = straight_through(ideal, hardware) * tf.constant([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(value.numpy(), [0.0, 0.5, 1.5])
    np.testing.assert_array_equal(tape.gradient(value, ideal).numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(tape.gradient(value, hardware).numpy(), [0.0, 0.0, 0.0])


def test_training_reaches_every_kernel(models) -> None:
    """In hardware mode every kernel gets a (nonzero) straight-through gradient."""
    qmodel = models["w4a3"]
    codes, x = pixel_codes(16)
    program = _program(qmodel, codes, adc_bits=2)
    y = np.zeros(len(x), np.int64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernels = [k.kernel for k in tfxbar.quantized_kernels(qmodel)]
    with HardwareMode(qmodel, program=program):
        with tf.GradientTape() as tape:
            out = qmodel(x, training=True)
            value = loss(y, out)
        grads = tape.gradient(value, kernels)
        inference = qmodel(x, training=False)
    ideal = qmodel(x, training=False)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    assert not np.allclose(inference.numpy(), ideal.numpy())   # 2-bit ADCs change the outputs


def test_removed_mode_restores_the_model(models) -> None:
    qmodel = models["w4a3"]
    codes, x = pixel_codes(16)
    before = qmodel.predict(x, verbose=0)
    with HardwareMode(qmodel, program=_program(qmodel, codes, adc_bits=2)):
        pass
    np.testing.assert_array_equal(qmodel.predict(x, verbose=0), before)


def test_a_program_of_another_model_is_refused(models) -> None:
    codes, _ = pixel_codes(16)
    program = _program(models["w4a3"], codes)
    with pytest.raises(ValueError, match="has no tfxbar-quantized layer"):
        HardwareMode(keras.Sequential([keras.layers.Dense(2, input_shape=(3,))]), program=program)


def test_deployment_keeps_the_adc_steps_trained_against(models) -> None:
    codes, _ = pixel_codes(64)
    program = _program(models["w4a3"], codes, adc_bits=3)
    other = _program(models["w4a3"], codes[32:], adc_bits=3, representative_data=codes[32:40])
    deployed = with_adc_steps(other, program)
    shifts = [k for k in program.arrays if k.endswith("_shift")]
    assert any(not np.array_equal(other.arrays[k], program.arrays[k]) for k in shifts)
    for k in program.arrays:
        expected = program.arrays[k] if k.endswith("_shift") else other.arrays[k]
        np.testing.assert_array_equal(deployed.arrays[k], expected)
    with pytest.raises(ValueError, match="tile grid"):
        with_adc_steps(_program(models["w4a3"], codes, tile_rows=16), program)


@pytest.mark.parametrize("channels,tile_rows,strides", [(5, 8, 1), (5, 16, 2), (32, 128, 1), (3, 27, 1)])
def test_group_product_equals_the_patch_gemm(channels: int, tile_rows: int, strides: int) -> None:
    """The windowed convolutions of a row group = its im2col rows times the matrix, for groups
    that start and end inside a tap (partial channel ranges) and span kernel rows."""
    from types import SimpleNamespace

    from tfxbar.hardware.products import group_product, windows
    from tfxbar.hardware.tiles import RowGroup

    rng = np.random.default_rng(channels)
    k = 9 * channels
    layout = SimpleNamespace(layer_type="Conv2D", rows=k, attrs={"kernel": [3, 3], "strides": [strides] * 2})
    x = rng.integers(0, 2, (2, 9, 9, channels)).astype(np.float32)
    patches = tf.image.extract_patches(x, [1, 3, 3, 1], [1, strides, strides, 1], [1, 1, 1, 1], "VALID")
    patches = patches.numpy().reshape(-1, k)           # (kh, kw, C) order, as the program's rows
    for first in range(0, k, tile_rows):
        rows = np.arange(first, min(k, first + tile_rows))
        group = RowGroup(rows, [], np.ones(4, bool), np.zeros((1, 1, 4), np.int64), None)
        matrix = rng.integers(0, 8, (len(rows), 4)).astype(np.float32)
        got = group_product(tf.constant(x), layout, group, tf.constant(matrix)).numpy()
        np.testing.assert_array_equal(got, patches[:, rows] @ matrix)
        assert sum(len(w.positions) for w in windows(rows, (3, 3), channels)) == len(rows)
