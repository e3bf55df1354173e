"""The library's error types.

Every refusal at a public boundary raises one of these.  Each is also the built-in exception a
caller would expect (``ValueError``, ``TypeError``, ``MemoryError``), so ``except ValueError``
keeps working, and :class:`NtkfastError` lets a front end (the CLI) tell a clear refusal, shown
as one line, from a bug, which keeps its traceback.

The rule: the *kind* of an argument is wrong (a string where a number goes, a list where an
MLP goes) -> :class:`ArgumentTypeError`; its *value* is wrong (negative, NaN, wrong shape, not
one of the choices) -> :class:`ArgumentError`.
"""

from __future__ import annotations

__all__ = [
    "NtkfastError",
    "ArgumentError",
    "ArgumentTypeError",
    "ConfigError",
    "InsufficientMemoryError",
    "SingularKernelError",
]


class NtkfastError(Exception):
    """Base class of every error ntkfast raises on purpose."""


class ArgumentError(NtkfastError, ValueError):
    """An argument has the right type but a value the function cannot use."""


class ArgumentTypeError(NtkfastError, TypeError):
    """An argument has a type the function does not accept."""


class ConfigError(NtkfastError, ValueError):
    """An ``NTKFAST_*`` environment variable is malformed."""


class InsufficientMemoryError(NtkfastError, MemoryError, ValueError):
    """A request that cannot fit in the memory budget; raised before anything is allocated."""


class SingularKernelError(NtkfastError, ValueError):
    """A kernel matrix that is not (numerically) positive definite where a solve needs it to be."""
