"""Exact kernel ridge regression from a dense K: the regulariser, the in-place Cholesky, its BLAS threads.

These are the dense helpers every part of ntkfast shares (``ntkfast.predict``, the solvers and the
scikit-learn estimators): :func:`diag_regularizer` turns the relative ``diag_reg`` into the ridge
added to the diagonal, :func:`cho_factor_inplace` factorises without a second n^2 buffer,
:func:`lapack_threads` keeps OpenBLAS's threaded potrf away from sizes where it crashed, and
:func:`singular_kernel_error` is the one message for a K that is not positive definite.
See ``docs/design.md`` (section "Solvers").
"""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.linalg

from .. import config, tiling
from .._validation import as_square_matrix, check_lapack_size, check_nonnegative_float, check_targets
from ..errors import ArgumentError, ArgumentTypeError, NtkfastError, SingularKernelError

__all__ = [
    "NonFiniteError",
    "check_symmetric",
    "cho_factor_inplace",
    "cholesky_solve",
    "diag_regularizer",
    "eigenvalue_cutoff",
    "flow_gain",
    "factor_solve",
    "lapack_threads",
    "singular_kernel_error",
]


class NonFiniteError(NtkfastError, FloatingPointError):
    """A computation produced NaN or inf from finite inputs (an operator that returns NaN, a
    solution beyond float64's range); the message says what to rescale.  A ``FloatingPointError``
    for callers that catch that."""


def diag_regularizer(diag: np.ndarray, diag_reg: float, absolute: bool = False) -> float:
    """The ridge added to the diagonal: ``diag_reg * mean(diag)``, or ``diag_reg`` if ``absolute``.

    Parameters
    ----------
    diag : ndarray of shape (n,)
        Diagonal of K (only its mean is used, and only when not ``absolute``).
    diag_reg : float
        A finite number >= 0.
    absolute : bool, default=False

    Returns
    -------
    float

    Examples
    --------
    >>> diag_regularizer(np.array([1.0, 3.0]), 0.1)
    0.2
    """
    diag_reg = check_nonnegative_float(diag_reg, "diag_reg")
    return float(diag_reg * (1.0 if absolute else np.mean(diag)))


def eigenvalue_cutoff(lam: np.ndarray) -> float:
    """The round-off level of the eigenvalues ``lam`` of an (n, n) PSD matrix: ``n eps max(lam)``.

    Eigenvalues at or below it are indistinguishable from 0 (LAPACK's eigenvalues carry an
    absolute error of order ``n eps ||K||``); :func:`flow_gain` and the dynamics treat them as 0.
    """
    top = float(np.max(lam)) if len(lam) else 0.0
    return max(top, 0.0) * len(lam) * np.finfo(np.float64).eps


def flow_gain(lam: np.ndarray, lr_t_over_n: float) -> np.ndarray:
    """(1 - exp(-lr lam t / N)) / lam per mode: what the test outputs gain along each eigenvector.

    Round-off eigenvalues (at or below :func:`eigenvalue_cutoff`, zeros included) get 0: their
    modes do not move (along a true null vector of Theta the test-train kernel vanishes too).
    ``lr_t_over_n = inf`` gives the pseudo-inverse, 1/lam on the range of Theta.

    Parameters
    ----------
    lam : ndarray of shape (n,)
        Eigenvalues of the train kernel.
    lr_t_over_n : float
        ``lr * t / N`` (np.inf allowed).

    Returns
    -------
    ndarray of shape (n,)
    """
    lam = np.asarray(lam, dtype=np.float64)
    moving = lam > eigenvalue_cutoff(lam)
    safe = np.where(moving, lam, 1.0)
    if np.isinf(lr_t_over_n):
        return np.where(moving, 1.0 / safe, 0.0)
    return np.where(moving, -np.expm1(-safe * lr_t_over_n) / safe, 0.0)


def singular_kernel_error(
    diag_reg: float, absolute: bool = False, mean_diag: float = 1.0, what: str = "K", detail: str = ""
) -> SingularKernelError:
    """The error for a ``K + reg I`` that is not numerically positive definite, with a ``diag_reg`` to try.

    The suggestion is 10x the current ``diag_reg`` (relative or absolute, as the caller gave it),
    and at least 1e-6 relative (``1e-6 * mean_diag`` when ``absolute``).

    Returns
    -------
    SingularKernelError
        To be raised by the caller.
    """
    floor = 1e-6 * mean_diag if absolute and mean_diag > 0 else 1e-6
    if diag_reg > 0:
        now = f"diag_reg={diag_reg:g} ({'absolute' if absolute else 'relative to mean(diag K)'})"
    else:
        now = "diag_reg=0"
    suggestion = f"diag_reg={max(10 * diag_reg, floor):g}" + (" (absolute)" if absolute else "")
    return SingularKernelError(
        f"{what} + diag_reg is not numerically positive definite with {now}"
        f"{' (' + detail + ')' if detail else ''}: the kernel matrix is singular or nearly so "
        f"(repeated or nearly parallel inputs, or a degenerate kernel). Raise the regulariser, e.g. {suggestion}."
    )


def lapack_threads(n: int):
    """BLAS threads for a dense factorisation of order n: one above ``config.VERIFIED_N``, where the
    threaded OpenBLAS potrf crashed the interpreter (see ``ntkfast.config``); unchanged below.

    Returns
    -------
    context manager
    """
    if n <= config.VERIFIED_N:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def cho_factor_inplace(K: np.ndarray) -> tuple[np.ndarray, bool]:
    """``scipy.linalg.cho_factor`` of a symmetric float64 K in its own memory (K is destroyed).

    LAPACK works on Fortran-ordered arrays and SciPy copies a C-ordered one (a second n^2
    buffer); for a symmetric K the transpose view is the same matrix in Fortran order.
    A K that is not positive definite raises ``numpy.linalg.LinAlgError`` (LAPACK's), so that
    callers can fall back to an eigendecomposition; :func:`cholesky_solve` turns it into a
    :class:`~ntkfast.errors.SingularKernelError` naming ``diag_reg``.

    Returns
    -------
    (c, lower)
        As ``scipy.linalg.cho_factor``, for ``scipy.linalg.cho_solve``.
    """
    if K.flags.c_contiguous and not K.flags.f_contiguous:
        K = K.T
    with lapack_threads(len(K)):
        return scipy.linalg.cho_factor(K, overwrite_a=True, check_finite=False)


def _all_finite(A: np.ndarray) -> bool:
    """Whether every entry is finite, without an n^2 boolean temporary in the usual case."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(A.sum())) or bool(np.isfinite(A).all())


def _dense_matrix(K, overwrite_k: bool) -> np.ndarray:
    """K as a square finite float64 array: K itself when it may be overwritten, else a budgeted copy."""
    if hasattr(K, "toarray") or hasattr(K, "tocsr"):
        raise ArgumentTypeError("K: sparse matrices are not supported; pass a dense array")
    if isinstance(K, np.ndarray) and np.iscomplexobj(K):
        raise ArgumentTypeError("K: complex matrices are not supported; pass a real symmetric kernel matrix")
    if overwrite_k and isinstance(K, np.ndarray) and K.dtype == np.float64 and K.flags.writeable:
        A = as_square_matrix(K, "K")  # K itself (already float64): only its shape is checked
    else:
        shape = np.shape(K) if isinstance(K, np.ndarray) else None
        if shape is not None and len(shape) == 2:
            tiling.check_fits(
                8 * shape[0] * shape[1],
                f"cholesky_solve: a float64 copy of K ({shape[0]} x {shape[1]})",
                "Pass a writeable float64 K with overwrite_k=True (factorised in place), or use "
                "ntkfast.solvers.conjugate_gradient / nystrom, which never store K.",
            )
        A = as_square_matrix(K, "K", copy=True)
    if not _all_finite(A):
        raise ArgumentError("K: contains NaN or inf")
    return A


def check_symmetric(
    A: np.ndarray, name: str = "K", rtol: float = 1e-8, scale: float | None = None, block: int = 128
) -> None:
    """Refuse a square A with ``max |A - A^T| > rtol * scale``, by blocks (no n^2 temporary).

    ``scale`` defaults to ``max |A|``; for a matrix that must be positive semi-definite anyway
    (a Cholesky factorisation), ``max |diag A|`` bounds every entry and saves a pass.  Blocks of
    128 keep both the block and its transpose in cache (measured fastest of 64..1024).  A Cholesky
    factorisation reads one triangle only: a non-symmetric K would be solved as a different
    matrix without a word.
    """
    n = len(A)
    worst, largest = 0.0, 0.0
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        for j0 in range(i0, n, block):
            j1 = min(j0 + block, n)
            upper = A[i0:i1, j0:j1]
            worst = max(worst, float(np.max(np.abs(upper - A[j0:j1, i0:i1].T))))
            if scale is None:
                largest = max(largest, float(np.max(np.abs(upper))))
    scale = largest if scale is None else scale
    if worst > rtol * scale:
        raise ArgumentError(
            f"{name}: not symmetric (max |{name} - {name}.T| = {worst:.3g} exceeds {rtol:g} of max |{name}| = "
            f"{scale:.3g}); pass a symmetric kernel matrix, e.g. 0.5 * ({name} + {name}.T)"
        )


def factor_solve(K: np.ndarray, Y: np.ndarray, diag_reg: float, absolute: bool) -> np.ndarray:
    """``(K + reg I)^-1 Y`` for a checked float64 K (destroyed) and targets Y (n, k).

    Raises :class:`~ntkfast.errors.SingularKernelError` (naming ``diag_reg`` and a value to try)
    when LAPACK finds ``K + reg I`` indefinite, or when a Cholesky pivot falls to round-off level
    (``L_ii^2 <= n eps max_i K_ii``: the solution would be dominated by round-off, whatever its sign).
    """
    n = len(K)
    diag = np.diag(K)  # a view: read the scale before it is overwritten
    mean_diag = float(np.mean(diag))
    reg = diag_regularizer(diag, diag_reg, absolute)
    scale = float(np.max(np.abs(diag))) + reg
    K[np.diag_indices_from(K)] += reg
    try:
        c, lower = cho_factor_inplace(K)
    except np.linalg.LinAlgError as exc:
        raise singular_kernel_error(diag_reg, absolute, mean_diag, detail=f"LAPACK: {exc}") from None
    pivots = np.diag(c) ** 2
    floor = n * np.finfo(np.float64).eps * scale
    if scale == 0 or pivots.min() <= floor:
        i = int(np.argmin(pivots))
        detail = f"Cholesky pivot {i} is {pivots[i]:.3g}, at round-off level {floor:.3g}"
        raise singular_kernel_error(diag_reg, absolute, mean_diag, detail=detail)
    with lapack_threads(n):
        alpha = scipy.linalg.cho_solve((c, lower), Y, check_finite=False)
    if not np.isfinite(alpha).all():
        raise NonFiniteError(
            f"the coefficients (K + reg I)^-1 y overflow float64 (K's diagonal is at scale {scale:.3g}); "
            "rescale K (and y) towards 1"
        )
    return alpha


def cholesky_solve(
    K, y, diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False, overwrite_k: bool = False
) -> np.ndarray:
    """Exact kernel ridge coefficients ``(K + reg I)^-1 y`` by a Cholesky factorisation.

    Parameters
    ----------
    K : array-like of shape (n, n)
        Symmetric positive semi-definite kernel matrix (symmetric to 1e-8 of ``max |K|``, or refused).
    y : array-like of shape (n,) or (n, k)
    diag_reg : float, default=0.0
        Ridge, relative to ``mean(diag K)`` unless ``diag_reg_absolute_scale``.
    diag_reg_absolute_scale : bool, default=False
    overwrite_k : bool, default=False
        Factorise a float64 ``K`` in place (saves the n^2 copy; K is destroyed, also when the
        factorisation fails).

    Returns
    -------
    ndarray of shape (n,) or (n, k)

    Raises
    ------
    SingularKernelError
        ``K + reg I`` is not numerically positive definite; the message names ``diag_reg`` and a
        value to try.
    InsufficientMemoryError
        The float64 copy of K does not fit the memory budget (``overwrite_k=True`` avoids it).

    Examples
    --------
    >>> cholesky_solve(np.array([[2.0, 1.0], [1.0, 2.0]]), [3.0, 3.0])
    array([1., 1.])
    """
    diag_reg = check_nonnegative_float(diag_reg, "diag_reg")
    A = _dense_matrix(K, overwrite_k)
    check_lapack_size(len(A), "K", "use conjugate_gradient or nystrom", cholesky=True)
    check_symmetric(A, scale=float(np.max(np.abs(np.diag(A)))))  # a PSD K: max |K_ij| <= max K_ii
    Y, squeeze = check_targets(y, len(A))
    if np.shares_memory(Y, A):  # y is a view of the K that is about to be overwritten
        Y = Y.copy()
    alpha = factor_solve(A, Y, diag_reg, bool(diag_reg_absolute_scale))
    return alpha[:, 0] if squeeze else alpha
