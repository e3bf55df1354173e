"""ntkfast: fast infinite-width NTK/NNGP kernels of fully-connected networks.

``import ntkfast`` loads only the settings, the errors and the network description (:mod:`ntkfast.spec`);
the names whose modules need Numba or SciPy (``kernel``, ``GramOperator``, ``FiniteMLP``, ``predict``,
``solvers``, ...) are imported on first access (PEP 562 module ``__getattr__``), so a script that only
builds an ``MLP``, or the command line's ``--help``, does not pay for them.  ``nf.kernel`` and
``from ntkfast import kernel`` work as before; the first kernel call then imports Numba and SciPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import config, errors
from .errors import InsufficientMemoryError, NtkfastError
from .spec import (
    ELU,
    MLP,
    SELU,
    ABReLU,
    Abs,
    Activation,
    Cos,
    Elementwise,
    Erf,
    Exp,
    FourierFeatures,
    Gaussian,
    Gelu,
    GeluTanh,
    Identity,
    InputMap,
    LeakyReLU,
    Mish,
    Monomial,
    RandomFourierFeatures,
    Rbf,
    RectifiedMonomial,
    ReLU,
    SeriesActivation,
    Sigmoid,
    Sign,
    SiLU,
    Sin,
    Softplus,
    Swish,
    Tanh,
)

__version__ = "0.1.0"

# Public names imported on first access: name -> the module (under ntkfast) that defines it.
_LAZY_NAMES = {
    "FiniteMLP": "finite",
    "TrainResult": "finite",
    "TrainingDivergedError": "finite",
    "monte_carlo_kernel": "finite",
    "GramOperator": "gram_operator",
    "kernel": "gram",
    "kernel_diag": "gram",
    "SeriesAccuracyWarning": "series",
}
# Sub-modules and sub-packages reachable as attributes (``nf.predict``, ``nf.sklearn``) without an import.
_LAZY_MODULES = frozenset({
    "backends", "bench", "cli", "distributed", "engine", "experiments", "finite", "gram", "gram_operator",
    "kernel_grad", "predict", "recursion", "series", "solvers", "spectrum", "sklearn", "tiling",
})  # fmt: skip

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from . import predict, solvers, spectrum
    from .finite import FiniteMLP, TrainingDivergedError, TrainResult, monte_carlo_kernel
    from .gram import kernel, kernel_diag
    from .gram_operator import GramOperator
    from .series import SeriesAccuracyWarning


def __getattr__(name: str):
    """Import a lazy public name (or sub-module) on first access and keep it in the module."""
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # the documented names only: listing sklearn, distributed, cli... would make help(ntkfast) and
    # inspect.getmembers import them all (and fail without an optional dependency such as Dask)
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ABReLU",
    "Abs",
    "Activation",
    "Cos",
    "ELU",
    "Elementwise",
    "Erf",
    "Exp",
    "FiniteMLP",
    "FourierFeatures",
    "Gaussian",
    "Gelu",
    "GeluTanh",
    "GramOperator",
    "Identity",
    "InputMap",
    "InsufficientMemoryError",
    "LeakyReLU",
    "MLP",
    "Mish",
    "NtkfastError",
    "Monomial",
    "RandomFourierFeatures",
    "Rbf",
    "RectifiedMonomial",
    "ReLU",
    "SELU",
    "SeriesAccuracyWarning",
    "SeriesActivation",
    "SiLU",
    "Sigmoid",
    "Sign",
    "Sin",
    "Softplus",
    "Swish",
    "Tanh",
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
