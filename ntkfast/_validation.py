"""Checks at the public boundary.  The core trusts what passes them."""

from __future__ import annotations

import numbers
import sys

import numpy as np

from . import config
from .spec import MLP

GETS = ("nngp", "ntk")
BACKENDS = ("auto", "cpu", "gpu")


def check_arch(arch) -> MLP:
    if not isinstance(arch, MLP):
        raise TypeError(f"arch must be an ntkfast.MLP, got {type(arch).__name__}")
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
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from exc
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def check_array(X, name: str, dtype: np.dtype, n_features: int | None = None) -> np.ndarray:
    """A finite, non-empty 2-D real array of ``dtype`` (C-contiguous)."""
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise TypeError(f"{name}: sparse input is not supported; pass a dense array")
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)):
        raise TypeError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name}: complex input is not supported")
    if arr.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array of shape (n_samples, n_features), got {arr.ndim}-D "
            f"with shape {arr.shape}" + (" (use X.reshape(-1, 1) for one feature)" if arr.ndim == 1 else "")
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: empty array of shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name}: has {arr.shape[1]} features, expected {n_features} (as in X)")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def check_get(get) -> tuple[tuple[str, ...], bool]:
    """Normalise ``get`` to a tuple of names, and whether a single array is returned."""
    if isinstance(get, str):
        names, single = (get,), True
    elif isinstance(get, (tuple, list)) and get and all(isinstance(g, str) for g in get):
        names, single = tuple(get), False
    else:
        raise TypeError(f"get: expected 'nngp', 'ntk' or a tuple of them, got {get!r}")
    for g in names:
        if g not in GETS:
            raise ValueError(f"get: unknown kernel {g!r}; expected 'nngp' or 'ntk'")
    if len(set(names)) != len(names):
        raise ValueError(f"get: repeated names in {get!r}")
    return names, single


def check_backend(backend, *arrays) -> str:
    """Resolve ``backend`` to "cpu" or "gpu": "auto" is the GPU when any of ``arrays`` is a CuPy
    array, else the CPU.  Whether CuPy and a device are there is checked by the GPU backend."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        cupy = sys.modules.get("cupy")  # not imported: no array can be a CuPy array
        on_gpu = cupy is not None and any(isinstance(a, cupy.ndarray) for a in arrays)
        return "gpu" if on_gpu else "cpu"
    return backend


def check_positive_int(value, name: str, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def check_positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def check_out(out, names: tuple[str, ...], shape: tuple[int, int], dtype: np.dtype) -> list[np.ndarray]:
    outs = [out] if len(names) == 1 and not isinstance(out, (tuple, list)) else out
    if not isinstance(outs, (tuple, list)) or len(outs) != len(names):
        raise ValueError(f"out: expected {len(names)} array(s), one per kernel in get={names}")
    for o in outs:
        if not isinstance(o, np.ndarray):
            raise TypeError(f"out: expected a NumPy array or np.memmap, got {type(o).__name__}")
        if o.shape != shape:
            raise ValueError(f"out: expected shape {shape}, got {o.shape}")
        if o.dtype != dtype:
            raise ValueError(f"out: expected dtype {dtype}, got {o.dtype}")
        if not o.flags.writeable:
            raise ValueError("out: array is read-only")
        if not o.flags.c_contiguous:
            raise ValueError("out: must be C-contiguous (np.empty, np.memmap or lib.format.open_memmap)")
    return list(outs)


def check_lapack_size(n: int, what: str, alternative: str, cholesky: bool = False) -> None:
    """Refuse a dense factorisation LAPACK may not survive (it would crash the interpreter)."""
    limit = max(config.CHOLESKY_MAX_N, config.dense_max_n()) if cholesky else config.dense_max_n()
    if n > limit:
        kind = "Cholesky factorisation (32-bit LAPACK)" if cholesky else "eigendecomposition verified with this LAPACK"
        raise ValueError(
            f"{what}: n = {n} is above {limit}, the largest dense {kind}; {alternative}. "
            "With another LAPACK, NTKFAST_DENSE_MAX_N raises the limit."
        )
