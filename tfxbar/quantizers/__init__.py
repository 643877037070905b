"""Crossbar quantizers: tfmot `Quantizer`s that also expose their integer form."""

from tfxbar.quantizers.activation import ActivationForm, ClippedRound
from tfxbar.quantizers.base import WeightQuantizer
from tfxbar.quantizers.biased import BiasedWeights
from tfxbar.quantizers.binarizer import InputBinarizer
from tfxbar.quantizers.binary import BinaryWeights
from tfxbar.quantizers.integer_form import CELL_VIEWS, IntegerForm
from tfxbar.quantizers.ternary import TernaryWeights
from tfxbar.quantizers.uniform import UniformWeights

__all__ = [
    "CELL_VIEWS",
    "ActivationForm",
    "BiasedWeights",
    "BinaryWeights",
    "ClippedRound",
    "InputBinarizer",
    "IntegerForm",
    "TernaryWeights",
    "UniformWeights",
    "WeightQuantizer",
]
