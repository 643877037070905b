"""Graph export: branches and merges (Add, Concatenate), depthwise, 1-D and shape layers, format v2."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from export_toys import trained
from graph_toys import MODELS, depthwise, residual
from toys import toy_data

import tfxbar
from tfxbar.export import fidelity
from tfxbar.export.errors import FormatError


def _shape(name: str) -> tuple[int, ...]:
    return (12, 12) if name == "conv1d" else (12, 12, 1)


@pytest.fixture(scope="module")
def converted() -> dict:
    found = {}
    for name, build in MODELS.items():
        x, y = toy_data(256, _shape(name))
        qmodel = trained("w4a3", build(_shape(name)), x, y, epochs=1)
        found[name] = (qmodel, tfxbar.CrossbarConverter.from_keras_model(qmodel).convert(), x)
    return found


@pytest.mark.parametrize("name", sorted(MODELS))
def test_graph_program_equals_exact_model_and_keras(converted: dict, name: str) -> None:
    qmodel, program, x = converted[name]
    report = fidelity.measure(qmodel, program, x)
    assert report.layers, "no quantized layer was compared"
    assert report.total("program_exact") == 0          # the program is the exact integer model
    assert report.total("unexplained") == 0            # Keras differs only at float32 ties
    assert report.top1_agreement == 1.0
    codes = program.quantize_input(x)
    ideal = tfxbar.Interpreter(program).run(codes)
    np.testing.assert_array_equal(tfxbar.Interpreter(program, "hardware").run(codes), ideal)
    plain = tfxbar.Interpreter(program, workers=1, lanes=1)   # no lane packing, no fusion, odd batches
    np.testing.assert_array_equal(plain.run(codes, batch_size=7), ideal)


def test_residual_program_shape_and_round_trip(converted: dict, tmp_path) -> None:
    _, program, x = converted["residual"]
    kinds = [op["kind"] for op in program.ops]
    assert kinds.count("add") == 2
    adds = [op for op in program.ops if op["kind"] == "add"]
    assert all(len(op["inputs"]) == 2 for op in adds)
    program.save(tmp_path / "r.xbar")
    loaded = tfxbar.load_program(tmp_path / "r.xbar")
    assert loaded.header == program.header
    codes = program.quantize_input(x[:32])
    np.testing.assert_array_equal(tfxbar.Interpreter(loaded).run(codes),
                                  tfxbar.Interpreter(program).run(codes))


def test_identity_shortcut_of_one_step_adds_codes_with_unit_multipliers() -> None:
    """An Add of two quantized tensors with one step is an integer add of codes (multipliers 1)."""
    from tfxbar.export.lowering import Codes, Lowering

    lowering = Lowering({})
    lowering.add("add", "Add", [Codes((2, 3), 0.5, 7, "a"), Codes((2, 3), 0.5, 7, "b")])
    op = lowering.ops[-1]
    assert op.kind == "add" and op.out_max == 14 and np.all(op.arrays["multipliers"] == 1)
    assert isinstance(lowering.state, Codes) and lowering.state.scale == 0.5


def test_add_multipliers_are_the_scale_ratios() -> None:
    """Codes of step 0.5 plus an accumulator of slope 0.25: multipliers 2 and 1 (exact ratio)."""
    from tfxbar.export.elementwise import Affine
    from tfxbar.export.lowering import Acc, Codes, Lowering

    lowering = Lowering({})
    acc = Acc((3,), [Affine(np.full(3, 0.25), np.array([1.0, 0.0, -1.0]))],
              np.full(3, -10, np.int64), np.full(3, 10, np.int64), tensor="x")
    lowering.add("add", "Add", [Codes((3,), 0.5, 7, "c"), acc])
    op = lowering.ops[-1]
    np.testing.assert_array_equal(op.arrays["multipliers"], [[2, 2, 2], [1, 1, 1]])
    out = lowering.state
    np.testing.assert_array_equal(out.lo, [-10] * 3)
    np.testing.assert_array_equal(out.hi, [24] * 3)
    np.testing.assert_allclose(out.chain[0].apply(np.array([4.0, 4.0, 4.0])), [2.0, 1.0, 0.0])


def test_depthwise_tiles_hold_whole_channels(converted: dict) -> None:
    """No tile of a DepthwiseConv2D is an all-zero block: far fewer tiles than the dense
    block-diagonal needs at small tile sizes, and every tile's cells belong to its channels."""
    qmodel, _, x = converted["depthwise"]
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel, tile_rows=18, tile_cols=4).convert()
    op = next(op for op in program.ops if op["attrs"].get("layer_type") == "DepthwiseConv2D")
    attrs, rows, cols = op["attrs"], op["attrs"]["rows"], op["attrs"]["cols"]
    dense_tiles = -(-rows // 18) * -(-cols // 4)
    assert len(attrs["tiles"]) < dense_tiles
    assert attrs["mapping"] == "differential"
    codes = program.quantize_input(x[:64])
    np.testing.assert_array_equal(tfxbar.Interpreter(program, "hardware").run(codes),
                                  tfxbar.Interpreter(program).run(codes))


def test_version_1_chain_files_still_load(tmp_path) -> None:
    """A version-1 header (no op inputs) loads as a chain and runs like the version-2 program."""
    x, y = toy_data(128)
    program = tfxbar.CrossbarConverter.from_keras_model(trained("w4a3", epochs=1, x=x, y=y)).convert()
    header = copy.deepcopy(program.header)
    header["version"] = 1
    for op in header["ops"]:
        del op["inputs"]
    with open(tmp_path / "v1.xbar", "wb") as handle:
        np.savez(handle, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **program.arrays)
    loaded = tfxbar.load_program(tmp_path / "v1.xbar")
    assert loaded.header["version"] == 2 and loaded.header["ops"] == program.header["ops"]
    codes = program.quantize_input(x[:32])
    np.testing.assert_array_equal(tfxbar.Interpreter(loaded).run(codes),
                                  tfxbar.Interpreter(program).run(codes))


def _edited(program: tfxbar.Program, edit) -> None:  # noqa: ANN001
    header, arrays = copy.deepcopy(program.header), dict(program.arrays)
    edit(header, arrays)
    tfxbar.Program(header, arrays)


@pytest.mark.parametrize("case, field", [
    ("later input", "inputs"),
    ("unknown input", "inputs"),
    ("one input to add", "inputs"),
    ("duplicate name", "name"),
    ("unread op", "ops"),
    ("accumulator add with out_max", "out_max"),
    ("multiplier beyond 2^52", "multipliers"),
])
def test_malformed_graph_headers(converted: dict, case: str, field: str) -> None:
    _, program, _ = converted["residual"]
    ops = program.header["ops"]
    add = next(i for i, op in enumerate(ops) if op["kind"] == "add")

    def edit(header: dict, arrays: dict) -> None:
        hops = header["ops"]
        if case == "later input":
            hops[0]["inputs"] = [hops[3]["name"]]
        elif case == "unknown input":
            hops[2]["inputs"] = ["nowhere"]
        elif case == "one input to add":
            hops[add]["inputs"] = hops[add]["inputs"][:1]
        elif case == "duplicate name":
            hops[2]["name"] = hops[0]["name"]
        elif case == "unread op":
            hops[-1]["inputs"] = [hops[-3]["name"]]
            hops[-1]["in_shape"] = hops[-3]["out_shape"]
        elif case == "accumulator add with out_max":
            hops[add]["out_max"] = 7
        else:
            arrays[f"op{add}.multipliers"] = np.full_like(arrays[f"op{add}.multipliers"], 2 ** 53)

    with pytest.raises(FormatError, match=field):
        _edited(program, edit)


def test_checker_and_summary_cover_graph_programs(converted: dict) -> None:
    _, program, _ = converted["residual"]
    report = tfxbar.check_program(program, accumulator_bits=32)
    crossbars = [op["name"] for op in program.ops if op["kind"] == "crossbar"]
    assert crossbars and all(name in str(report) for name in crossbars)
    assert all(name in str(tfxbar.summary(program)) for name in crossbars)


def test_unsupported_graph_layer_names_layer_and_fix() -> None:
    import tf_keras as keras

    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c")(inputs)
    x = keras.layers.Cropping2D(1, name="crop")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    qmodel = tfxbar.quantize_model(model, "w4a3")
    with pytest.raises(tfxbar.ConversionError, match="crop.*Cropping2D.*register_handler"):
        tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()


def test_residual_model_builds_from_the_public_graph() -> None:
    assert [layer.name for layer in residual().layers if "add" in layer.name] == ["b1_add", "b2_add"]
    assert any(type(layer).__name__ == "DepthwiseConv2D" for layer in depthwise().layers)


def test_cli_on_a_graph_program(converted: dict, tmp_path, capsys) -> None:  # noqa: ANN001
    """export (.h5 model) → info → check (static and with data) → run (hardware) → report."""
    from tfxbar.cli import main

    qmodel, _, x = converted["residual"]
    model_path, program_path = str(tmp_path / "r.h5"), str(tmp_path / "r.xbar")
    qmodel.save(model_path)
    codes, labels = str(tmp_path / "codes.npy"), str(tmp_path / "labels.npy")
    np.save(codes, np.round(x[:48] * 255).astype(np.uint8))
    np.save(labels, toy_data(256)[1][:48])
    assert main(["export", model_path, "-o", program_path]) == 0
    assert main(["info", program_path]) == 0
    assert "b2_proj_conv" in capsys.readouterr().out
    assert main(["check", program_path, "--acc-bits", "32", "--calibration-inputs", codes]) == 0
    assert "verdict: OK" in capsys.readouterr().out
    assert main(["run", program_path, "--inputs", codes, "--labels", labels, "--mode", "hardware"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["report", program_path, "--inputs", codes]) == 0
    out = capsys.readouterr().out
    assert "b1b_conv" in out and "b2_proj_conv" in out


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v1", "mobilenet_v2"])
def test_reference_networks_deploy_exactly(name: str) -> None:
    """tfxbar.models' ResNet and MobileNets (tiny widths, 16×16 inputs) convert, and the program
    is the exact integer model with Keras's top-1 on every image."""
    shape = (16, 16, 3)
    if name == "resnet20":
        model = tfxbar.models.resnet20((4, 8, 8), 1, input_shape=shape)
    else:
        model = tfxbar.models.mobilenet_small(((8, 1), (8, 2), (16, 1)), 8, input_shape=shape,
                                              inverted_residual=name == "mobilenet_v2", expansion=2)
    x = np.random.default_rng(0).uniform(0, 1, (64, *shape)).astype(np.float32)
    qmodel = tfxbar.quantize_model(model, "w4a3", calibration_data=x)
    program = tfxbar.CrossbarConverter.from_keras_model(qmodel).convert()
    report = fidelity.measure(qmodel, program, x)
    assert report.total("program_exact") == 0 and report.total("unexplained") == 0
    assert report.top1_agreement == 1.0
    kinds = {op["kind"] for op in program.ops}
    assert ("add" in kinds) == (name != "mobilenet_v1")
