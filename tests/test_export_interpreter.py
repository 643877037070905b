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
