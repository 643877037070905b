"""Schema of the program file (version 2; version 1 is read too): the header checks. The
arrays each op must carry are checked by `tfxbar.export.schema_arrays`.

Every check raises `FormatError(field, problem)`. `check_header` validates the JSON header
(keys, types, ranges, shape consistency between ops); `expected_arrays` returns, for each
array the header implies, a function that checks its dtype, shape and values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tfxbar.export.config import ADC_RANGES
from tfxbar.export.errors import FormatError
from tfxbar.export.schema_arrays import expected_arrays

__all__ = ["check_header", "expected_arrays", "upgrade_header"]

FORMAT_VERSIONS = (1, 2)

_OP_KEYS = {"name", "kind", "inputs", "in_shape", "out_shape", "out_max", "tap", "attrs"}
_OP_KEYS_V1 = _OP_KEYS - {"inputs"}
_OPTION_KEYS = {"tile_rows", "tile_cols", "weight_mapping", "cell_bits", "dac_bits", "adc_bits",
                "adc_range", "accumulator_bits", "accumulator_mode"}
_ATTR_KEYS = {
    "crossbar": {"layer_type", "rows", "cols", "kernel", "strides", "pads", "input_max", "mapping",
                 "polarities", "slices",
                 "slice_bits", "offset_shift", "reference", "tiles", "input_bits", "dac_bits", "dac_cycles",
                 "adc_range", "adc_bits", "adc_bits_lossless", "acc_bits_required"},
    "threshold": {"bits"},
    "max_pool": {"pool", "strides", "pads"},
    "sum_pool": {"global", "pool", "strides"},
    "flatten": set(),
    "dequantize": {"chain"},
    "reshape": set(),
    "pad": {"pads"},
    "upsample": {"size"},
    "add": set(),
    "concat": set(),
}
_OPTIONAL_ATTRS = {"sum_pool": frozenset({"pool", "strides"}), "crossbar": frozenset({"groups"})}
_MULTI_INPUT = ("add", "concat")


def _fail(field: str, problem: str) -> None:
    raise FormatError(field, problem)


def _keys(value: Any, field: str, required: set[str], optional: frozenset[str] = frozenset()) -> None:
    if not isinstance(value, dict):
        _fail(field, f"must be an object, got {type(value).__name__}")
    missing = sorted(required - set(value))
    if missing:
        _fail(f"{field}.{missing[0]}", "missing field")
    extra = sorted(set(value) - required - optional)
    if extra:
        _fail(f"{field}.{extra[0]}", "unexpected field")


def _int(value: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(field, f"must be an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(field, f"must be in [{lo}, {hi}], got {value}")
    return value


def _num(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(field, f"must be a finite number, got {value!r}")
    return float(value)


def _ints(value: Any, field: str, length: int | None, lo: int = 0) -> list[int]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        _fail(field, f"must be a list of {length or 'some'} integers, got {value!r}")
    return [_int(v, f"{field}[{i}]", lo) for i, v in enumerate(value)]


def _choice(value: Any, field: str, choices: tuple) -> Any:
    if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
        _fail(field, f"must be one of {list(choices)}, got {value!r}")
    return value


def check_header(header: Any) -> None:
    """Validate the whole header; FormatError naming the first bad field."""
    _keys(header, "header", {"format", "version", "producer", "options", "input", "ops"})
    if header["format"] != "tfxbar-program":
        _fail("format", f"must be 'tfxbar-program', got {header['format']!r}")
    version = _int(header["version"], "version")
    if version not in FORMAT_VERSIONS:
        _fail("version", f"unsupported version {version}; this reader supports versions "
                         f"{', '.join(map(str, FORMAT_VERSIONS))}")
    if not isinstance(header["producer"], str):
        _fail("producer", "must be a string")
    _check_options(header["options"])
    spec = header["input"]
    _keys(spec, "input", {"name", "shape", "bits", "scale"})
    if not isinstance(spec["name"], str):
        _fail("input.name", "must be a string")
    if not _ints(spec["shape"], "input.shape", None, lo=1):
        _fail("input.shape", "must not be empty (one example's shape, e.g. [28, 28, 1])")
    _int(spec["bits"], "input.bits", 1, 16)
    if _num(spec["scale"], "input.scale") <= 0:
        _fail("input.scale", "must be > 0")
    ops = header["ops"]
    if not isinstance(ops, list) or not ops:
        _fail("ops", "must be a non-empty list")
    # Every tensor by name: (shape, out_max); ops read only earlier tensors (topological order).
    tensors: dict[str, tuple[list[int], int | None]] = {
        spec["name"]: (list(spec["shape"]), 2 ** spec["bits"] - 1)}
    previous = spec["name"]
    unread = set()
    for i, op in enumerate(ops):
        field = f"ops[{i}]"
        _keys(op, field, _OP_KEYS if version >= 2 else _OP_KEYS_V1)
        inputs = op["inputs"] if version >= 2 else [previous]
        _check_inputs(inputs, f"{field}.inputs", op.get("kind"), tensors)
        name = op["name"]
        if not isinstance(name, str) or not name:
            _fail(f"{field}.name", "must be a non-empty string")
        if name in tensors:
            _fail(f"{field}.name", f"{name!r} names an earlier op or the input: op names must be unique")
        unread -= set(inputs)
        tensors[name] = _check_op(op, field, [tensors[t] for t in inputs], header["options"],
                                  i == len(ops) - 1)
        unread.add(name)
        previous = name
    unread.discard(previous)
    if unread:
        _fail("ops", f"the output of {sorted(unread)[0]!r} is never read (every op but the last must "
                     "feed a later op)")


def _check_inputs(inputs: Any, field: str, kind: Any, tensors: dict) -> None:
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        _fail(field, "must be a non-empty list of tensor names")
    multi = isinstance(kind, str) and kind in _MULTI_INPUT
    if multi != (len(inputs) > 1):
        want = "two or more tensors" if multi else "one tensor"
        _fail(field, f"a {kind!r} op reads {want}, got {len(inputs)}")
    for t in inputs:
        if t not in tensors:
            _fail(field, f"{t!r} is not the input or an earlier op's output")


def upgrade_header(header: dict) -> dict:
    """A version-1 header as version 2 (each op reads the previous op's output)."""
    if header.get("version") != 1:
        return header
    ops, previous = [], header["input"]["name"]
    for op in header["ops"]:
        ops.append({**op, "inputs": [previous]})
        previous = op["name"]
    return {**header, "version": 2, "ops": ops}


def _check_options(options: Any) -> None:
    _keys(options, "options", _OPTION_KEYS)
    _int(options["tile_rows"], "options.tile_rows", 2)
    _int(options["tile_cols"], "options.tile_cols", 2)
    _choice(options["weight_mapping"], "options.weight_mapping",
            ("auto", "differential", "offset", "bit_sliced"))
    for key in ("cell_bits", "dac_bits", "adc_bits"):
        if options[key] is not None:
            _int(options[key], f"options.{key}", 1, 32)
    _choice(options["adc_range"], "options.adc_range", ADC_RANGES)
    _int(options["accumulator_bits"], "options.accumulator_bits", 2, 64)
    _choice(options["accumulator_mode"], "options.accumulator_mode", ("saturate", "wrap"))


def _check_op(op: Any, field: str, sources: list[tuple[list[int], int | None]], options: dict,
              last: bool) -> tuple[list[int], int | None]:
    shape, top = sources[0]
    kind = op["kind"]
    if not isinstance(kind, str) or kind not in _ATTR_KEYS:
        _fail(f"{field}.kind", f"unknown op kind {kind!r}; known: {sorted(_ATTR_KEYS)}")
    if (kind == "dequantize") != last:
        _fail(f"{field}.kind", "the last op, and only the last, must be 'dequantize'")
    if op["tap"] is not None and not isinstance(op["tap"], str):
        _fail(f"{field}.tap", "must be null or a string")
    in_shape = _ints(op["in_shape"], f"{field}.in_shape", None, lo=1)
    out_shape = _ints(op["out_shape"], f"{field}.out_shape", None, lo=1)
    if in_shape != shape:
        _fail(f"{field}.in_shape", f"{in_shape} does not match its (first) input's shape {shape}")
    out_max = op["out_max"]
    if out_max is not None:
        _int(out_max, f"{field}.out_max", 1)
    attrs = op["attrs"]
    a = f"{field}.attrs"
    optional = _OPTIONAL_ATTRS.get(kind, frozenset())
    _keys(attrs, a, _ATTR_KEYS[kind] - optional, optional)
    expect_out, expect_max = in_shape, top
    if kind == "crossbar":
        expect_out, expect_max = _check_crossbar(attrs, a, in_shape, top, options), None
    elif kind == "threshold":
        expect_max = 2 ** _int(attrs["bits"], f"{a}.bits", 1, 16) - 1
    elif kind in ("max_pool", "sum_pool"):
        expect_out, expect_max = _check_pool(kind, attrs, a, in_shape, top)
    elif kind == "flatten":
        expect_out = [int(np.prod(in_shape))]
    elif kind == "reshape":
        if int(np.prod(out_shape)) != int(np.prod(in_shape)):
            _fail(f"{field}.out_shape", f"{out_shape} does not hold the {int(np.prod(in_shape))} values "
                                        f"of {in_shape}")
        expect_out = out_shape
    elif kind in ("pad", "upsample"):
        expect_out = _check_spatial(kind, attrs, a, in_shape, top)
    elif kind in _MULTI_INPUT:
        expect_out, expect_max = _check_merge(kind, sources, out_max, field)
    elif kind == "dequantize":
        expect_max = None
        _check_chain(attrs["chain"], f"{a}.chain")
    if out_shape != list(expect_out):
        _fail(f"{field}.out_shape", f"{out_shape} does not match the op's geometry {list(expect_out)}")
    if out_max != expect_max:
        _fail(f"{field}.out_max", f"must be {expect_max}, got {out_max}")
    return out_shape, out_max


def _check_spatial(kind: str, attrs: dict, a: str, in_shape: list[int], top: int | None) -> list[int]:
    if len(in_shape) != 3:
        _fail(a, f"{kind} needs an HWC input, got {in_shape}")
    if kind == "pad":
        if top is None:
            _fail(a, "pad needs integer codes as input (zero is the real value 0 only for codes)")
        pt, pb, pl, pr = _ints(attrs["pads"], f"{a}.pads", 4)
        return [in_shape[0] + pt + pb, in_shape[1] + pl + pr, in_shape[2]]
    sh, sw = _ints(attrs["size"], f"{a}.size", 2, lo=1)
    return [in_shape[0] * sh, in_shape[1] * sw, in_shape[2]]


def _check_merge(kind: str, sources: list, out_max: Any, field: str) -> tuple[list[int], int | None]:
    shapes = [s for s, _ in sources]
    tops = [t for _, t in sources]
    if kind == "concat":
        if any(t is None for t in tops):
            _fail(f"{field}.inputs", "concat reads integer codes only")
        if len({tuple(s[:-1]) for s in shapes}) != 1:
            _fail(f"{field}.inputs", f"shapes {shapes} differ outside the last (channel) axis")
        return shapes[0][:-1] + [sum(s[-1] for s in shapes)], max(tops)
    if any(s != shapes[0] for s in shapes):
        _fail(f"{field}.inputs", f"an add reads tensors of one shape, got {shapes}")
    # Codes added with multipliers 1 stay codes (out_max the sum); anything else is an accumulator.
    codes = all(t is not None for t in tops) and out_max is not None
    return shapes[0], sum(tops) if codes else None


def _check_crossbar(attrs: dict, a: str, in_shape: list[int], top: int | None, options: dict) -> list[int]:
    layer = _choice(attrs["layer_type"], f"{a}.layer_type", ("Dense", "Conv2D", "DepthwiseConv2D"))
    if ("groups" in attrs) != (layer == "DepthwiseConv2D"):
        _fail(f"{a}.groups", "present exactly for DepthwiseConv2D (its input channels)")
    kh, kw = _ints(attrs["kernel"], f"{a}.kernel", 2, lo=1)
    sh, sw = _ints(attrs["strides"], f"{a}.strides", 2, lo=1)
    pads = _ints(attrs["pads"], f"{a}.pads", 4)
    if top is None:
        _fail(f"{a}.input_max", "a crossbar's input must be integer codes (previous op has out_max null)")
    if _int(attrs["input_max"], f"{a}.input_max", 1) < top:
        _fail(f"{a}.input_max", f"{attrs['input_max']} is below the previous op's out_max {top}")
    mapping = _choice(attrs["mapping"], f"{a}.mapping", ("differential", "offset"))
    want = [1, -1] if mapping == "differential" else [1]
    polarities = attrs["polarities"]
    if (not isinstance(polarities, list) or polarities != want
            or any(type(v) is not int for v in polarities)):   # 1.0 == 1 and True == 1 in Python
        _fail(f"{a}.polarities", f"must be the integers {want} for the {mapping} mapping")
    if _choice(attrs["reference"], f"{a}.reference", (True, False)) != (mapping == "offset"):
        _fail(f"{a}.reference", "must be true exactly for the offset mapping")
    slices = _int(attrs["slices"], f"{a}.slices", 1, 16)
    slice_bits = _int(attrs["slice_bits"], f"{a}.slice_bits", 1, 8)
    shift = _int(attrs["offset_shift"], f"{a}.offset_shift", 0, 24)
    if slices * slice_bits + shift > 62:   # weights (2^(S·b) − 1)·2^f must stay inside int64
        _fail(f"{a}.slices", f"slices·slice_bits + offset_shift = {slices * slice_bits + shift} "
                             "exceeds 62 bits of weight magnitude")
    input_bits = _int(attrs["input_bits"], f"{a}.input_bits", 1, 32)
    if input_bits != int(attrs["input_max"]).bit_length():
        _fail(f"{a}.input_bits", "must be the bit length of input_max")
    dac = _int(attrs["dac_bits"], f"{a}.dac_bits", 1, input_bits)
    if _int(attrs["dac_cycles"], f"{a}.dac_cycles", 1) != -(-input_bits // dac):
        _fail(f"{a}.dac_cycles", "must be ceil(input_bits / dac_bits)")
    adc_range = _choice(attrs["adc_range"], f"{a}.adc_range", ADC_RANGES)
    adc_bits = _int(attrs["adc_bits"], f"{a}.adc_bits", 1, 62)
    lossless_bits = _int(attrs["adc_bits_lossless"], f"{a}.adc_bits_lossless", 1, 62)
    if adc_range == "lossless" and lossless_bits > adc_bits:
        _fail(f"{a}.adc_bits", f"{adc_bits} bits are below adc_bits_lossless={attrs['adc_bits_lossless']} "
                               "although adc_range is 'lossless'")
    _int(attrs["acc_bits_required"], f"{a}.acc_bits_required", 1, 64)
    tiles = attrs["tiles"]
    if not isinstance(tiles, list) or not tiles:
        _fail(f"{a}.tiles", "must be a non-empty list")
    for t, tile in enumerate(tiles):
        _keys(tile, f"{a}.tiles[{t}]", {"reference"})
        _choice(tile["reference"], f"{a}.tiles[{t}].reference", (True, False))
    rows = _int(attrs["rows"], f"{a}.rows", 1)
    cols = _int(attrs["cols"], f"{a}.cols", 1)
    if layer == "Dense":
        if len(in_shape) != 1 or [kh, kw, sh, sw] != [1, 1, 1, 1] or any(pads):
            _fail(f"{a}", "a Dense crossbar needs a rank-1 input, kernel/strides [1, 1] and zero pads")
        if rows != in_shape[0]:
            _fail(f"{a}.rows", f"must equal the input features {in_shape[0]}, got {rows}")
        return [cols]
    if len(in_shape) != 3:
        _fail(f"{a}", f"a {layer} crossbar needs an HWC input, got {in_shape}")
    if layer == "DepthwiseConv2D" and (_int(attrs["groups"], f"{a}.groups", 1) != in_shape[2]
                                       or cols % in_shape[2]):
        _fail(f"{a}.groups", f"must equal the input channels {in_shape[2]} and divide cols {cols}")
    if rows != kh * kw * in_shape[2]:
        _fail(f"{a}.rows", f"must equal kernel height × width × input channels, got {rows}")
    oh = (in_shape[0] + pads[0] + pads[1] - kh) // sh + 1
    ow = (in_shape[1] + pads[2] + pads[3] - kw) // sw + 1
    if oh < 1 or ow < 1:
        _fail(f"{a}.kernel", "larger than the padded input")
    return [oh, ow, cols]


def _check_pool(kind: str, attrs: dict, a: str, in_shape: list[int],
                top: int | None) -> tuple[list, int | None]:
    if len(in_shape) != 3:
        _fail(a, f"pooling needs an HWC input, got {in_shape}")
    if kind == "sum_pool" and _choice(attrs["global"], f"{a}.global", (True, False)):
        if set(attrs) != {"global"}:
            _fail(a, "a global sum_pool has no pool/strides")
        k, out = in_shape[0] * in_shape[1], [in_shape[2]]
    else:
        if kind == "sum_pool" and set(attrs) != {"global", "pool", "strides"}:
            _fail(a, "a windowed sum_pool needs pool and strides")
        ph, pw = _ints(attrs["pool"], f"{a}.pool", 2, lo=1)
        sh, sw = _ints(attrs["strides"], f"{a}.strides", 2, lo=1)
        pads = _ints(attrs["pads"], f"{a}.pads", 4) if kind == "max_pool" else [0, 0, 0, 0]
        oh = (in_shape[0] + pads[0] + pads[1] - ph) // sh + 1
        ow = (in_shape[1] + pads[2] + pads[3] - pw) // sw + 1
        if oh < 1 or ow < 1 or max(pads[0], pads[1]) >= ph or max(pads[2], pads[3]) >= pw:
            _fail(f"{a}.pool", "inconsistent with the input and pads")
        k, out = ph * pw, [oh, ow, in_shape[2]]
    if kind == "max_pool":
        if top is None:
            _fail(a, "max_pool needs integer codes as input")
        return out, top
    return out, None if top is None else top * k


def _check_chain(chain: Any, field: str) -> None:
    if not isinstance(chain, list) or not chain:
        _fail(field, "must be a non-empty list of stages")
    for j, stage in enumerate(chain):
        f = f"{field}[{j}]"
        kind = stage.get("kind") if isinstance(stage, dict) else None
        if kind == "affine":
            _keys(stage, f, {"kind"})
        elif kind == "relu":
            _keys(stage, f, {"kind", "max_value", "negative_slope", "threshold"})
            if stage["max_value"] is not None:
                _num(stage["max_value"], f"{f}.max_value")
            if _num(stage["negative_slope"], f"{f}.negative_slope") < 0:
                _fail(f"{f}.negative_slope", "must be >= 0")
            _num(stage["threshold"], f"{f}.threshold")
        elif kind == "softmax":
            _keys(stage, f, {"kind"})
            if j != len(chain) - 1:
                _fail(f, "softmax must be the last stage")
        else:
            _fail(f"{f}.kind", f"must be 'affine', 'relu' or 'softmax', got {kind!r}")
