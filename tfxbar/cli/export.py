"""``tfxbar export MODEL -o PROGRAM``: convert a saved tfxbar-quantized model to a program."""

from __future__ import annotations

import argparse
import os
import time

from tfxbar.cli import EXIT_OK, CommandError
from tfxbar.cli._common import add_data_arguments

__all__ = ["register"]


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "auto") else int(text)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from tfxbar.export.config import ACCUMULATOR_MODES, ADC_RANGES, MAPPINGS

    parser = subparsers.add_parser(
        "export", help="convert a saved tfxbar-quantized Keras model to a crossbar program",
        description="Loads MODEL (.keras, .h5 or a SavedModel folder, saved after "
                    "tfxbar.quantize_model) and writes the program file. Options mirror "
                    "tfxbar.ConverterConfig.",
        epilog="example: tfxbar export mnist_w4a3.keras -o mnist.xbar --tile-rows 128 --tile-cols 128 "
               "--weight-mapping bit_sliced --cell-bits 2 --dac-bits 1")
    parser.add_argument("model", help="saved Keras model (.keras, .h5 or SavedModel directory)")
    parser.add_argument("-o", "--output", required=True, metavar="PROGRAM", help="program file to write")
    hw = parser.add_argument_group("hardware options (tfxbar.ConverterConfig)")
    hw.add_argument("--tile-rows", type=int, default=128, help="crossbar rows per tile (default 128)")
    hw.add_argument("--tile-cols", type=int, default=128, help="crossbar columns per tile (default 128)")
    hw.add_argument("--weight-mapping", choices=MAPPINGS, default="auto")
    hw.add_argument("--cell-bits", type=_optional_int, default=None,
                    help="bits per cell (default: whole code)")
    hw.add_argument("--dac-bits", type=_optional_int, default=None,
                    help="input bits per DAC cycle (default: all at once)")
    hw.add_argument("--adc-bits", type=_optional_int, default=None,
                    help="ADC resolution (default: lossless)")
    hw.add_argument("--adc-range", choices=ADC_RANGES, default="lossless")
    hw.add_argument("--accumulator-bits", type=int, default=32)
    hw.add_argument("--accumulator-mode", choices=ACCUMULATOR_MODES, default="saturate")
    add_data_arguments(parser, prefix="representative-")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if not os.path.exists(args.model):
        raise CommandError(f"no such model: {args.model}")
    import tf_keras as keras

    import tfxbar
    from tfxbar.cli._common import load_inputs

    start = time.perf_counter()
    try:
        model = keras.models.load_model(args.model, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CommandError(f"cannot load model {args.model}: {exc}".splitlines()[0]) from None
    loaded = time.perf_counter()
    config = tfxbar.ConverterConfig(
        tile_rows=args.tile_rows, tile_cols=args.tile_cols, weight_mapping=args.weight_mapping,
        cell_bits=args.cell_bits, dac_bits=args.dac_bits, adc_bits=args.adc_bits, adc_range=args.adc_range,
        accumulator_bits=args.accumulator_bits, accumulator_mode=args.accumulator_mode)
    if args.adc_range == "calibrated":
        shape = [int(d) for d in model.input_shape[1:]]
        config.representative_data, _ = load_inputs(args, shape, prefix="representative_")
        if config.representative_data is None:
            raise CommandError("--adc-range calibrated needs --representative-dataset or "
                               "--representative-inputs")
    program = tfxbar.CrossbarConverter(model, config).convert()
    program.save(args.output)
    done = time.perf_counter()
    print(program.summary())
    print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes): load {loaded - start:.2f} s, "
          f"convert + save {done - loaded:.2f} s")
    return EXIT_OK
