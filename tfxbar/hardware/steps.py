"""Deploy a model trained in hardware mode with the ADC steps it was trained against.

ADC-aware training keeps the ADC steps of the program it started from; converting the trained
weights again with ``adc_range="calibrated"`` would choose new steps. `with_adc_steps` gives
the new program the old steps, so the deployed program computes what training saw.
"""

from __future__ import annotations

import copy

from tfxbar.export.format import Program

__all__ = ["with_adc_steps"]


def with_adc_steps(program: Program, reference: Program) -> Program:
    """`program` with every tile's ``adc_shift`` / ``ref_shift`` taken from `reference`.

    Arguments:
        program: a conversion of the trained weights (same converter options as `reference`).
        reference: the program whose ADC steps the hardware-mode training used.

    Returns:
        A new, validated `Program`.

    Raises:
        ValueError: the two programs do not have the same ops and tile grid.

    Example:
        >>> deployed = with_adc_steps(CrossbarConverter(qmodel, config).convert(), program)
    """
    ops, ref_ops = program.ops, reference.ops
    if [(op["name"], op["kind"]) for op in ops] != [(op["name"], op["kind"]) for op in ref_ops]:
        raise ValueError("program and reference have different ops; convert the same model with the "
                         "same options")
    arrays = dict(program.arrays)
    for i, op in enumerate(ops):
        if op["kind"] != "crossbar":
            continue
        for t in range(len(op["attrs"]["tiles"])):
            for field in ("adc_shift", "ref_shift", "rows", "cols"):
                key = f"op{i}.tile{t}.{field}"
                if (key in arrays) != (key in reference.arrays) or (
                        key in arrays and arrays[key].shape != reference.arrays[key].shape):
                    raise ValueError(f"{op['name']}: tile {t} differs between program and reference "
                                     "(tile grid or mapping); convert with the same options")
                if field.endswith("shift") and key in arrays:
                    arrays[key] = reference.arrays[key].copy()
    return Program(copy.deepcopy(program.header), arrays)
