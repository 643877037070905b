"""Export: tfxbar-quantized Keras models → versioned crossbar programs → a numpy interpreter.

The interpreter, the file format and the errors are numpy-only; the converter (which needs
TensorFlow) is imported lazily, so ``from tfxbar.export import interpreter`` in a deployment
without TensorFlow works once the parent package allows it.
"""

from __future__ import annotations

from typing import Any

from tfxbar.export.errors import ConversionError, FormatError
from tfxbar.export.format import Program, load_program
from tfxbar.export.interpreter import Interpreter

__all__ = ["ConversionError", "ConverterConfig", "CrossbarConverter", "FormatError", "Interpreter",
           "Program", "load_program", "register_handler"]

_LAZY = {
    "CrossbarConverter": "tfxbar.export.converter",
    "ConverterConfig": "tfxbar.export.config",
    "register_handler": "tfxbar.export.handlers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfxbar.export' has no attribute {name!r}")
