"""ntkfast: fast infinite-width NTK/NNGP kernels of fully-connected networks."""

from . import predict, solvers, spectrum
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
from .tiling import InsufficientMemoryError

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
    "Monomial",
    "RandomFourierFeatures",
    "Rbf",
    "RectifiedMonomial",
    "ReLU",
    "Sign",
    "Sin",
    "TrainResult",
    "TrainingDivergedError",
    "kernel",
    "kernel_diag",
    "monte_carlo_kernel",
    "predict",
    "solvers",
    "spectrum",
]
