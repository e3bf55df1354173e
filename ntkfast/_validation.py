"""Checks at the public boundary.  The core trusts what passes them.

One rule for the error raised: a wrong *kind* of argument is :class:`~ntkfast.errors.ArgumentTypeError`
(a ``TypeError``), a wrong *value* :class:`~ntkfast.errors.ArgumentError` (a ``ValueError``); each
message names the argument and says what is expected.  Every module checks its arguments here
rather than writing its own version of a check.
"""

from __future__ import annotations

import numbers
import sys

import numpy as np

from . import config
from .errors import ArgumentError, ArgumentTypeError
from .spec import MLP

GETS = ("nngp", "ntk")
BACKENDS = ("auto", "cpu", "gpu")


def check_arch(arch) -> MLP:
    if not isinstance(arch, MLP):
        raise ArgumentTypeError(f"arch must be an ntkfast.MLP, got {type(arch).__name__}")
    return arch


def resolve_dtype(dtype, *arrays) -> np.dtype:
    """float64 unless asked otherwise or every input is already float32."""
    if dtype is None:
        given = [a.dtype for a in arrays if a is not None and hasattr(a, "dtype")]
        if given and all(np.dtype(g) == np.float32 for g in given):
            return np.dtype(np.float32)
        return np.dtype(np.float64)
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ArgumentTypeError(f"dtype: expected float32 or float64, got {dtype!r}") from exc
    if dt not in (np.float32, np.float64):
        raise ArgumentTypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def check_array(X, name: str, dtype: np.dtype, n_features: int | None = None) -> np.ndarray:
    """A finite, non-empty 2-D real array of ``dtype`` (C-contiguous)."""
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise ArgumentTypeError(f"{name}: sparse input is not supported; pass a dense array")
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # ragged nested lists
        raise ArgumentError(f"{name}: expected a 2-D array of shape (n_samples, n_features) ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)):
        raise ArgumentTypeError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ArgumentTypeError(f"{name}: complex input is not supported")
    if arr.ndim != 2:
        raise ArgumentError(
            f"{name}: expected a 2-D array of shape (n_samples, n_features), got {arr.ndim}-D "
            f"with shape {arr.shape}" + (" (use X.reshape(-1, 1) for one feature)" if arr.ndim == 1 else "")
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ArgumentError(f"{name}: empty array of shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ArgumentError(f"{name}: has {arr.shape[1]} features, expected {n_features} (as in X)")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ArgumentError(f"{name}: contains NaN or inf")
    return arr


def check_get(get) -> tuple[tuple[str, ...], bool]:
    """Normalise ``get`` to a tuple of names, and whether a single array is returned."""
    if isinstance(get, str):
        names, single = (get,), True
    elif isinstance(get, (tuple, list)) and get and all(isinstance(g, str) for g in get):
        names, single = tuple(get), False
    else:
        raise ArgumentTypeError(f"get: expected 'nngp', 'ntk' or a tuple of them, got {get!r}")
    for g in names:
        if g not in GETS:
            raise ArgumentError(f"get: unknown kernel {g!r}; expected 'nngp' or 'ntk'")
    if len(set(names)) != len(names):
        raise ArgumentError(f"get: repeated names in {get!r}")
    return names, single


def check_backend(backend, *arrays) -> str:
    """Resolve ``backend`` to "cpu" or "gpu": "auto" is the GPU when any of ``arrays`` is a CuPy
    array, else the CPU.  Whether CuPy and a device are there is checked by the GPU backend."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ArgumentError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        cupy = sys.modules.get("cupy")  # not imported: no array can be a CuPy array
        on_gpu = cupy is not None and any(isinstance(a, cupy.ndarray) for a in arrays)
        return "gpu" if on_gpu else "cpu"
    return backend


def check_positive_int(value, name: str, allow_none: bool = True, maximum: int | None = None):
    """A positive integer (or None when ``allow_none``), at most ``maximum`` when given."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name}: expected a positive integer, got {value!r}")
    if value < 1:
        raise ArgumentError(f"{name}: expected a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ArgumentError(f"{name}: {value} is above the largest supported value, {maximum}")
    return int(value)


def check_nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name}: expected an integer >= 0, got {value!r}")
    if value < 0:
        raise ArgumentError(f"{name}: expected an integer >= 0, got {value!r}")
    return int(value)


def check_real(value, name: str) -> float:
    """A real number (not a bool, not a string); NaN and inf are the caller's business."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name}: expected a real number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # a Python int beyond float's range, e.g. 10**400
        raise ArgumentError(f"{name}: {value!r} is beyond the float64 range") from None


def check_nonnegative_float(value, name: str, allow_inf: bool = False) -> float:
    """A finite number >= 0 (``np.inf`` too when ``allow_inf``)."""
    v = check_real(value, name)
    if np.isnan(v) or v < 0 or (np.isinf(v) and not allow_inf):
        what = "a number >= 0 (np.inf allowed)" if allow_inf else "a finite number >= 0"
        raise ArgumentError(f"{name}: expected {what}, got {value!r}")
    return v


def check_choice(value, name: str, choices) -> str:
    """One of ``choices`` (strings), with the choices in the message."""
    if not isinstance(value, str) or value not in choices:
        raise ArgumentError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_seed(seed, name: str = "seed"):
    """Anything ``np.random.default_rng`` accepts, refused with a clear message otherwise."""
    if isinstance(seed, bool):
        raise ArgumentTypeError(f"{name}: expected an integer >= 0, a numpy Generator or None, got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(
            f"{name}: expected an integer >= 0, a numpy Generator or None, got {seed!r} ({exc})"
        ) from None


def check_targets(y, n: int, name: str = "y") -> tuple[np.ndarray, bool]:
    """Targets of shape (n,) or (n, k) as a finite float64 (n, k) array, and whether y was 1-D."""
    try:
        Y = np.asarray(y)
        complex_ = np.iscomplexobj(Y)
        Y = Y if complex_ else Y.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"{name}: expected a numeric array of shape ({n},) or ({n}, k) ({exc})") from None
    if complex_:
        raise ArgumentTypeError(f"{name}: complex targets are not supported")
    if Y.ndim not in (1, 2) or Y.shape[0] != n or (Y.ndim == 2 and Y.shape[1] == 0):
        raise ArgumentError(f"{name}: expected shape ({n},) or ({n}, k) with k >= 1, got {Y.shape}")
    if not np.isfinite(Y).all():
        raise ArgumentError(f"{name}: contains NaN or inf")
    return Y.reshape(n, -1), Y.ndim == 1


def as_square_matrix(K, name: str, copy: bool = False) -> np.ndarray:
    """``K`` as a non-empty square float64 matrix (a copy with ``copy``), refused clearly otherwise."""
    try:
        A = np.array(K, dtype=np.float64) if copy else np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"{name}: expected a square numeric matrix ({exc})") from None
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.size == 0:
        raise ArgumentError(f"{name}: expected a non-empty square matrix, got shape {A.shape}")
    return A


def check_no_overlap(outputs, inputs, out_name: str = "out") -> None:
    """Refuse outputs that share memory with each other or with an input (``np.shares_memory``)."""
    outputs = [o for o in outputs if isinstance(o, np.ndarray)]
    for a in range(len(outputs)):
        for b in range(a + 1, len(outputs)):
            if np.shares_memory(outputs[a], outputs[b]):
                raise ArgumentError(f"{out_name}: the output arrays overlap in memory; pass separate arrays")
    for o in outputs:
        for label, x in inputs:
            if isinstance(x, np.ndarray) and np.shares_memory(o, x):
                raise ArgumentError(
                    f"{out_name}: shares memory with the input {label}, which would be overwritten "
                    "while it is read; pass a separate output array"
                )


def check_positive_float(value, name: str) -> float:
    v = check_real(value, name)
    if not np.isfinite(v) or v <= 0:
        raise ArgumentError(f"{name}: expected a finite number > 0, got {value!r}")
    return v


def check_out(out, names: tuple[str, ...], shape: tuple[int, int], dtype: np.dtype) -> list[np.ndarray]:
    outs = [out] if len(names) == 1 and not isinstance(out, (tuple, list)) else out
    if not isinstance(outs, (tuple, list)) or len(outs) != len(names):
        raise ArgumentError(f"out: expected {len(names)} array(s), one per kernel in get={names}")
    for o in outs:
        if not isinstance(o, np.ndarray):
            raise ArgumentTypeError(f"out: expected a NumPy array or np.memmap, got {type(o).__name__}")
        if o.shape != shape:
            raise ArgumentError(f"out: expected shape {shape}, got {o.shape}")
        if o.dtype != dtype:
            raise ArgumentError(f"out: expected dtype {dtype}, got {o.dtype}")
        if not o.flags.writeable:
            raise ArgumentError("out: array is read-only")
        if not o.flags.c_contiguous:
            raise ArgumentError("out: must be C-contiguous (np.empty, np.memmap or lib.format.open_memmap)")
    return list(outs)


def check_lapack_size(n: int, what: str, alternative: str, cholesky: bool = False) -> None:
    """Refuse a dense factorisation LAPACK may not survive (it would crash the interpreter)."""
    limit = max(config.CHOLESKY_MAX_N, config.dense_max_n()) if cholesky else config.dense_max_n()
    if n > limit:
        kind = "Cholesky factorisation (32-bit LAPACK)" if cholesky else "eigendecomposition verified with this LAPACK"
        raise ArgumentError(
            f"{what}: n = {n} is above {limit}, the largest dense {kind}; {alternative}. "
            "With another LAPACK, NTKFAST_DENSE_MAX_N raises the limit."
        )
