"""``tfxbar run PROGRAM --dataset mnist``: accuracy of a program in the numpy interpreter (or, with
``--engine keras``, the Keras hardware mode), optionally on ``--chips`` simulated chips."""

from __future__ import annotations

import argparse
import time

import numpy as np

from tfxbar.cli import EXIT_OK, EXIT_VIOLATION, CommandError
from tfxbar.cli._common import (
    add_batch_size_argument,
    add_data_arguments,
    fraction,
    int_range,
    load_inputs,
    open_program,
)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run", help="run a program on a dataset and print its accuracy",
        description="Runs the program in the reference interpreter (ideal: exact integers; "
                    "hardware: tiles, bit-serial DAC, ADCs and a finite accumulator) and prints "
                    "top-1 accuracy, throughput and, in hardware mode, ADC clips and overflows.",
        epilog="examples: TFXBAR_DATA_DIR=/data tfxbar run mnist.xbar --dataset mnist --mode hardware; "
               "tfxbar run mnist.xbar --dataset mnist --mode hardware --chips 10 --sigma 0.2 "
               "[--engine keras --model mnist.keras]")
    parser.add_argument("program", help="program file")
    add_data_arguments(parser, labels=True)
    parser.add_argument("--mode", choices=("ideal", "hardware"), default="ideal",
                        help="interpreter mode (default: ideal)")
    parser.add_argument("--acc-bits", type=int_range(2, 64), default=None, metavar="P",
                        help="accumulator width, --mode hardware only (default: the program's)")
    parser.add_argument("--acc-mode", choices=("saturate", "wrap"), default=None,
                        help="accumulator overflow behaviour, --mode hardware only (default: the program's)")
    parser.add_argument("--engine", choices=("interpreter", "keras"), default="interpreter",
                        help="interpreter: the numpy reference (default); keras: the quantized Keras model "
                             "given by --model, its crossbars in the program's hardware mode "
                             "(tfxbar.hardware, TensorFlow speed) or, with --mode ideal, as trained")
    parser.add_argument("--model", default=None, metavar="MODEL.keras",
                        help="the quantized Keras model the program was converted from (--engine keras)")
    chips = parser.add_argument_group(
        "simulated chips (--mode hardware)",
        "Monte-Carlo chips: each chip is the program's cells with lognormal conductance variation "
        "(tfxbar.DeviceModel.lognormal(S), no read noise), drawn from the program alone, so both "
        "engines run the same chips (tfxbar.hardware.chips.program_chip). Prints the mean, std and "
        "worst accuracy over the chips and each chip's accuracy. Imports TensorFlow.")
    chips.add_argument("--chips", type=int_range(1), default=None, metavar="N",
                       help="evaluate N simulated chips instead of the ideal cells")
    chips.add_argument("--sigma", type=_sigma, default=None, metavar="S",
                       help="lognormal σ of the cells' conductances (required with --chips, e.g. 0.1)")
    chips.add_argument("--seed", type=int_range(0), default=None, metavar="K",
                       help="seed of the chips: chip i of seed K is the same chip in every run (default 0)")
    add_batch_size_argument(parser, 256)
    parser.add_argument("--min-accuracy", type=fraction, default=None, metavar="A",
                        help="exit 1 if the accuracy (with --chips: the chips' mean) is below A "
                             "(a fraction in [0, 1], e.g. 0.98)")
    parser.set_defaults(handler=run)
    return parser


def _sigma(text: str) -> float:
    """An argparse ``type`` for a lognormal σ: a finite number ≥ 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value < float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected a lognormal σ ≥ 0 (e.g. 0.1), got {text!r}")
    return value


def _refuse_given(options: tuple[tuple[str, object], ...], verbs: tuple[str, str], reason: str,
                  adverb: str = "") -> None:
    """A usage error naming the options of `options` ``(flag, value)`` that were given (not None),
    e.g. "--sigma and --seed go with --chips N …"; `verbs` is (singular, plural)."""
    given = [flag for flag, value in options if value is not None]
    if given:
        raise CommandError(f"{' and '.join(given)} {adverb}{verbs[len(given) > 1]} {reason}")


def _check_chip_options(args: argparse.Namespace) -> None:
    """Usage errors of --chips / --sigma / --seed, naming the flag (exit 2)."""
    if args.chips is None:
        _refuse_given((("--sigma", args.sigma), ("--seed", args.seed)), ("goes", "go"),
                      "with --chips N (simulated chips); add --chips N")
        return
    if args.sigma is None:
        raise CommandError("--chips needs --sigma S, the lognormal σ of the cells' conductances (e.g. 0.1)")
    if args.mode != "hardware":
        raise CommandError("--chips only applies to --mode hardware (a chip's conductances are the cells "
                           "of the hardware tiles); add --mode hardware")


def run(args: argparse.Namespace) -> int:
    from tfxbar.export.interpreter import Interpreter

    if not args.dataset and not args.inputs:
        raise CommandError("give --dataset NAME, or --inputs FILE.npy with --labels FILE.npy")
    if args.inputs and not args.labels:  # run measures accuracy: inputs alone are not enough
        raise CommandError("--inputs needs --labels FILE.npy (one integer label per input)")
    if args.mode == "ideal":  # the ideal interpreter has an exact accumulator: these would be ignored
        _refuse_given((("--acc-bits", args.acc_bits), ("--acc-mode", args.acc_mode)), ("applies", "apply"),
                      "to --mode hardware (ideal mode accumulates exactly); add --mode hardware", "only ")
    if (args.engine == "keras") != (args.model is not None):
        raise CommandError("--engine keras needs --model MODEL.keras (and --model goes with --engine keras)")
    _check_chip_options(args)
    program = open_program(args.program)
    codes, labels = load_inputs(args, program.header["input"])
    source = args.inputs if args.inputs else f"{args.dataset} {args.split}"
    if args.chips is not None:
        return _run_chips(args, program, codes, labels, source)
    if args.engine == "keras":
        predictions, seconds, stats = _run_keras(args, program, codes)
    else:
        interpreter = Interpreter(program, args.mode, accumulator_bits=args.acc_bits,
                                  accumulator_mode=args.acc_mode)
        start = time.perf_counter()
        predictions = interpreter.predict(codes, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        stats = interpreter.stats
    accuracy = float(np.mean(predictions == labels))
    print(f"{source}: accuracy {accuracy:.4f} on {len(labels)} examples "
          f"({args.mode} mode, {args.engine}, {len(labels) / max(seconds, 1e-9):.0f} img/s)")
    if args.mode == "hardware":
        _print_counters(stats)
    return _verdict(args, accuracy, "accuracy")


def _print_counters(stats: dict[str, dict[str, int]], suffix: str = "") -> None:
    for name, counts in stats.items():
        print(f"  {name}: {counts['adc_clips']} ADC clips of {counts['adc_conversions']} conversions, "
              f"{counts['acc_overflows']} accumulator overflows{suffix}")


def _verdict(args: argparse.Namespace, accuracy: float, what: str) -> int:
    """EXIT_VIOLATION (and a line saying why) when `accuracy` misses --min-accuracy."""
    if args.min_accuracy is not None and accuracy < args.min_accuracy:
        print(f"{what} {accuracy:.4f} is below --min-accuracy {args.min_accuracy}")
        return EXIT_VIOLATION
    return EXIT_OK


def _run_chips(args: argparse.Namespace, program: object, codes: np.ndarray, labels: np.ndarray,
               source: str) -> int:
    """``--chips N``: accuracy of N simulated chips in either engine; one output format for both.

    Both engines get their chips from `program_chip` (the program's cells, one draw per chip
    keyed by seed, chip, layer and tile), so chip i is the same chip in both.
    """
    from tfxbar.variation.devices import DeviceModel

    device = DeviceModel.lognormal(args.sigma)
    seed = args.seed or 0
    if args.engine == "keras":
        accuracies, seconds, stats = _chips_keras(args, program, codes, labels, device, seed)
    else:
        accuracies, seconds, stats = _chips_interpreter(args, program, codes, labels, device, seed)
    mean, std, worst = float(np.mean(accuracies)), float(np.std(accuracies)), float(np.min(accuracies))
    speed = args.chips * len(labels) / max(seconds, 1e-9)
    print(f"{source}: accuracy {mean:.4f} ± {std:.4f} (worst {worst:.4f}) over {args.chips} chips, "
          f"{len(labels)} examples each (hardware mode, {args.engine}, lognormal σ {args.sigma:g}, "
          f"seed {seed}, {speed:.0f} img/s)")
    print("  per chip: " + " ".join(f"{a:.4f}" for a in accuracies))
    _print_counters(stats, f" (all {args.chips} chips)")
    return _verdict(args, mean, "mean chip accuracy")


def _chips_interpreter(args: argparse.Namespace, program: object, codes: np.ndarray, labels: np.ndarray,
                       device: object, seed: int
                       ) -> tuple[list[float], float, dict[str, dict[str, int]]]:
    """Per-chip accuracies, seconds and counters summed over the chips, in the numpy interpreter."""
    from tfxbar.export.interpreter import Interpreter
    from tfxbar.hardware.chips import program_chip

    accuracies, seconds, stats = [], 0.0, {}
    for chip in range(args.chips):
        interpreter = Interpreter(program, "hardware", accumulator_bits=args.acc_bits,
                                  accumulator_mode=args.acc_mode,
                                  conductances=program_chip(program, device, seed, chip))
        start = time.perf_counter()
        predictions = interpreter.predict(codes, batch_size=args.batch_size)
        seconds += time.perf_counter() - start
        accuracies.append(float(np.mean(predictions == labels)))
        for name, counts in interpreter.stats.items():
            total = stats.setdefault(name, dict.fromkeys(counts, 0))
            for key, value in counts.items():
                total[key] += value
    return accuracies, seconds, stats


def _chips_keras(args: argparse.Namespace, program: object, codes: np.ndarray, labels: np.ndarray,
                 device: object, seed: int) -> tuple[list[float], float, dict[str, dict[str, int]]]:
    """Per-chip accuracies, seconds and counters summed over the chips, in the Keras hardware mode
    (`tfxbar.evaluate_under_variation(..., hardware=...)`)."""
    from tfxbar.variation.evaluate import evaluate_under_variation

    model, hardware, x = _keras_hardware(args, program, codes)
    labels = labels.astype(np.int64)
    # Trace once, so the speed is the chips', not the tracing's.
    evaluate_under_variation(model, (_warmup(x, args.batch_size), _warmup(labels, args.batch_size)), device,
                             trials=1, seed=seed, batch_size=args.batch_size, verbose=0, hardware=hardware)
    hardware.reset_stats()
    start = time.perf_counter()
    result = evaluate_under_variation(model, (x, labels), device, trials=args.chips, seed=seed,
                                      batch_size=args.batch_size, verbose=0, hardware=hardware)
    seconds = time.perf_counter() - start
    return result.accuracies.tolist(), seconds, hardware.stats()


def _run_keras(args: argparse.Namespace, program: object,
               codes: np.ndarray) -> tuple[np.ndarray, float, dict[str, dict[str, int]]]:
    """Predictions, seconds and hardware counters of the Keras engine (``--engine keras``)."""
    from tfxbar.pipelines import inference_batches

    model, hardware, x = _keras_hardware(args, program, codes)
    if hardware is not None:
        hardware.install()
    model.predict(_warmup(x, args.batch_size), batch_size=args.batch_size, verbose=0)   # trace, compile
    if hardware is not None:
        hardware.reset_stats()
    start = time.perf_counter()
    logits = model.predict(inference_batches(x, batch_size=args.batch_size), verbose=0)
    predictions = np.argmax(logits, axis=-1)
    seconds = time.perf_counter() - start
    return predictions, seconds, hardware.stats() if hardware is not None else {}


def _warmup(data: np.ndarray, batch_size: int) -> np.ndarray:
    """One full batch and the last, partial one of `data`: the hardware mode's XLA functions are
    compiled per batch shape, so both shapes are compiled before the clock starts."""
    rest = len(data) % batch_size
    if len(data) <= batch_size or rest == 0:
        return data[:batch_size]
    return np.concatenate([data[:batch_size], data[len(data) - rest:]])


def _keras_hardware(args: argparse.Namespace, program: object,
                    codes: np.ndarray) -> tuple[object, object, np.ndarray]:
    """``(model, HardwareMode or None in ideal mode, real inputs)`` of ``--engine keras``;
    the mode is built but not installed."""
    import tf_keras as keras

    import tfxbar
    from tfxbar.hardware import HardwareMode

    tfxbar.register_keras_objects()   # the CLI imported tfxbar before tf_keras: register now
    try:
        model = keras.models.load_model(args.model, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CommandError(f"cannot load model {args.model}: {exc}".splitlines()[0]) from None
    # The model's input quantizer turns code · scale back into the program's input codes.
    x = codes.astype(np.float32) * np.float32(program.header["input"]["scale"])
    hardware = None
    if args.mode == "hardware":
        try:
            hardware = HardwareMode(model, program=program, accumulator_bits=args.acc_bits,
                                    accumulator_mode=args.acc_mode)
        except ValueError as exc:
            raise CommandError(f"--model {args.model} does not fit the program: {exc}") from None
    return model, hardware, x
