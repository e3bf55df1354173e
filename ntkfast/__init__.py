"""ntkfast: fast infinite-width NTK/NNGP kernels of fully-connected networks."""

from . import config, errors, predict, solvers, spectrum
from .errors import InsufficientMemoryError, NtkfastError
from .finite import FiniteMLP, TrainingDivergedError, TrainResult, monte_carlo_kernel
from .gram import GramOperator, kernel, kernel_diag
from .spec import (
    MLP,
    ABReLU,
    Abs,
    Activation,
    Cos,
    Erf,
    Exp,
    FourierFeatures,
    Gaussian,
    Gelu,
    Identity,
    InputMap,
    LeakyReLU,
    Monomial,
    RandomFourierFeatures,
    Rbf,
    RectifiedMonomial,
    ReLU,
    Sign,
    Sin,
)

__version__ = "0.1.0"

__all__ = [
    "ABReLU",
    "Abs",
    "Activation",
    "Cos",
    "Erf",
    "Exp",
    "FiniteMLP",
    "FourierFeatures",
    "Gaussian",
    "Gelu",
    "GramOperator",
    "Identity",
    "InputMap",
    "InsufficientMemoryError",
    "LeakyReLU",
    "MLP",
    "NtkfastError",
    "Monomial",
    "RandomFourierFeatures",
    "Rbf",
    "RectifiedMonomial",
    "ReLU",
    "Sign",
    "Sin",
    "TrainResult",
    "TrainingDivergedError",
    "config",
    "errors",
    "kernel",
    "kernel_diag",
    "monte_carlo_kernel",
    "predict",
    "solvers",
    "spectrum",
]
