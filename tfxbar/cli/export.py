"""``tfxbar export MODEL -o PROGRAM``: convert a saved tfxbar-quantized model to a program."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import time

import numpy as np

from tfxbar.cli import EXIT_OK, CommandError
from tfxbar.cli._common import add_data_arguments, data_options_given
from tfxbar.export.config import ACCUMULATOR_MODES, ADC_RANGES, DATA_ADC_RANGES, MAPPINGS, ConverterConfig

__all__ = ["register"]

#: Calibration data defaults to training examples, so the test split stays unseen.
REPRESENTATIVE_SPLIT = "train[:10000]"
_DATA_FLAGS = "--representative-dataset NAME or --representative-inputs FILE.npy"


def _int_or_auto(text: str) -> int | None:
    """argparse ``type``: an integer, or auto/none for the option's automatic value."""
    if text.lower() in ("auto", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    default = ConverterConfig()  # the help states the library's defaults, so they cannot drift apart
    parser = subparsers.add_parser(
        "export", help="convert a saved tfxbar-quantized Keras model to a crossbar program",
        description="Loads MODEL (.keras, .h5 or a SavedModel folder, saved after "
                    "tfxbar.quantize_model) and writes the program file. Options mirror "
                    "tfxbar.ConverterConfig.",
        epilog="example: tfxbar export mnist_w4a3.keras -o mnist.xbar --tile-rows 128 --tile-cols 128 "
               "--weight-mapping bit_sliced --cell-bits 2 --dac-bits 1")
    parser.add_argument("model", help="saved Keras model (.keras, .h5 or SavedModel directory)")
    parser.add_argument("-o", "--output", required=True, metavar="PROGRAM",
                        help="program file to write (.xbar); its folder must exist")
    hw = parser.add_argument_group("hardware options (tfxbar.ConverterConfig)")
    hw.add_argument("--tile-rows", type=int, default=default.tile_rows,
                    help=f"crossbar rows per tile (default {default.tile_rows})")
    hw.add_argument("--tile-cols", type=int, default=default.tile_cols,
                    help=f"crossbar columns per tile, including a reference column if the mapping needs one "
                         f"(default {default.tile_cols})")
    hw.add_argument("--weight-mapping", choices=MAPPINGS, default=default.weight_mapping,
                    help="differential: a cell pair per weight; offset: one cell per weight and a reference "
                         "column; bit_sliced: codes split over --cell-bits cells; auto: differential for "
                         f"signed codes, offset for biased codes (default {default.weight_mapping})")
    hw.add_argument("--cell-bits", type=_int_or_auto, default=default.cell_bits, metavar="BITS",
                    help="bits per cell (default auto: a whole code per cell; 1 with bit_sliced)")
    hw.add_argument("--dac-bits", type=_int_or_auto, default=default.dac_bits, metavar="BITS",
                    help="input bits per DAC cycle (default auto: the whole input in one cycle)")
    hw.add_argument("--adc-bits", type=_int_or_auto, default=default.adc_bits, metavar="BITS",
                    help="ADC resolution per tile column (default auto: lossless, as many bits as the "
                         "worst-case partial sum needs; required by --adc-range clip, calibrated and mse)")
    hw.add_argument("--adc-range", choices=ADC_RANGES, default=default.adc_range,
                    help="lossless: never clips; clip: unit step, saturates at 2^adc_bits - 1; calibrated: "
                         "a power-of-two step per column that holds the largest partial sum of the "
                         "representative data below; mse: the power-of-two step per column with the least "
                         "squared ADC error on that data (clips rare peaks; for 3-5-bit ADCs) "
                         f"(default {default.adc_range})")
    hw.add_argument("--accumulator-bits", type=int, default=default.accumulator_bits, metavar="BITS",
                    help=f"width of the signed digital accumulator (default {default.accumulator_bits})")
    hw.add_argument("--accumulator-mode", choices=ACCUMULATOR_MODES, default=default.accumulator_mode,
                    help="what the accumulator does on overflow in hardware mode "
                         f"(default {default.accumulator_mode})")
    add_data_arguments(parser, prefix="representative-", split=REPRESENTATIVE_SPLIT,
                       title="representative data (only with --adc-range calibrated or mse)")
    parser.set_defaults(handler=run)
    return parser


def _check_output(path: str) -> None:
    """Fail before the (slow) model load if -o cannot be written."""
    if os.path.isdir(path):
        example = os.path.join(path, "model.xbar")
        raise CommandError(f"-o {path} is a directory; give a file name, e.g. {example}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"-o {path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise CommandError(f"-o {path}: cannot write in folder {folder}")


def _flag_names(message: str) -> str:
    """A ConverterConfig.validate message in CLI terms (tile_rows → --tile-rows, None → auto)."""
    fields = "|".join(f.name for f in dataclasses.fields(ConverterConfig) if f.name != "representative_data")
    message = re.sub(rf"\b({fields})\b", lambda m: "--" + m.group(1).replace("_", "-"), message)
    message = message.replace("must be None or", "must be 'auto' or")  # None is spelled auto on the CLI
    return re.sub(r"\brepresentative_data\b", _DATA_FLAGS, message)


def _config(args: argparse.Namespace) -> ConverterConfig:
    """The converter options, validated before the model loads; errors name the CLI flags."""
    data = data_options_given(args, "representative-")
    if args.adc_range in DATA_ADC_RANGES:
        if not (args.representative_dataset or args.representative_inputs):
            raise CommandError(f"--adc-range {args.adc_range} needs {_DATA_FLAGS}")
        if args.representative_inputs and not os.path.isfile(args.representative_inputs):
            raise CommandError(f"--representative-inputs: no such file: {args.representative_inputs}")
    elif data:
        raise CommandError(f"{', '.join(data)}: representative data is only used with --adc-range "
                           "calibrated or mse; add --adc-range calibrated --adc-bits N or drop the option")
    if args.adc_range != "lossless" and args.adc_bits is None:
        raise CommandError(f"--adc-range {args.adc_range} needs --adc-bits N")
    config = ConverterConfig(
        tile_rows=args.tile_rows, tile_cols=args.tile_cols, weight_mapping=args.weight_mapping,
        cell_bits=args.cell_bits, dac_bits=args.dac_bits, adc_bits=args.adc_bits, adc_range=args.adc_range,
        accumulator_bits=args.accumulator_bits, accumulator_mode=args.accumulator_mode)
    # The data needs the model's input shape, so it is loaded later: its source stands in for it here.
    probe = dataclasses.replace(config, representative_data=data or None)
    try:
        probe.validate()
    except ValueError as exc:
        raise CommandError(_flag_names(str(exc))) from None
    return config


def run(args: argparse.Namespace) -> int:
    if not os.path.exists(args.model):
        raise CommandError(f"no such model: {args.model}")
    _check_output(args.output)
    config = _config(args)
    import tf_keras as keras

    import tfxbar
    from tfxbar.cli._common import load_inputs

    tfxbar.register_keras_objects()   # the CLI imported tfxbar before tf_keras: register now

    start = time.perf_counter()
    try:
        model = keras.models.load_model(args.model, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CommandError(f"cannot load model {args.model}: {exc}".splitlines()[0]) from None
    loaded = time.perf_counter()
    if config.adc_range in DATA_ADC_RANGES:
        # The program's input quantizer decides what codes the representative images become.
        shape = [int(d) for d in model.input_shape[1:]]
        probe = dataclasses.replace(config, representative_data=np.zeros((1, *shape), np.uint8))
        spec = tfxbar.CrossbarConverter(model, probe).lower().input
        wanted = {"shape": list(spec.shape), "bits": spec.bits, "scale": spec.scale}
        config.representative_data, _ = load_inputs(args, wanted, prefix="representative_")
    program = tfxbar.CrossbarConverter(model, config).convert()
    program.save(args.output)
    done = time.perf_counter()
    print(program.summary())
    print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes): load {loaded - start:.2f} s, "
          f"convert + save {done - loaded:.2f} s")
    return EXIT_OK
