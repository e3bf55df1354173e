"""Kernel ridge regression solvers, from exact to large scale.

* :func:`cholesky_solve`: exact coefficients from a dense K (O(n^2) memory, O(n^3) time).
* :func:`conjugate_gradient`: matrix-free block CG on a :class:`ntkfast.GramOperator` (K never
  stored, O(n^2) kernel work per iteration).
* :func:`nystrom`: Nyström kernel ridge solved by preconditioned CG, following FALKON
  (Rudi, Carratino & Rosasco 2017, Algorithm 1; Meanti et al. 2020): m centres, the
  preconditioner from two m x m Cholesky factors, K_nm products streamed by row blocks
  (or cached when they fit the memory budget).
* :func:`plan_solver` chooses among them from the memory budget, and :func:`solve` runs the
  choice; both refuse, with the numbers, what cannot fit.

All of them solve with the ridge ``reg = diag_reg * mean(diag K(X, X))`` (relative, as in
``ntkfast.predict``) unless ``diag_reg_absolute_scale``: exact and CG solve
``(K + reg I) alpha = y``; Nyström restricts alpha to the span of the centres and solves
``(K_nm^T K_nm + reg K_mm) alpha = K_nm^T y``, which is FALKON's problem with its
``lambda = reg / n`` and gives exactly the kernel ridge predictions when the centres are all
n training points.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator

from . import config, tiling
from ._validation import (
    check_arch,
    check_array,
    check_get,
    check_lapack_size,
    check_positive_int,
    resolve_dtype,
)
from .gram import GramOperator, kernel, kernel_diag
from .predict import diag_regularizer
from .spec import MLP

__all__ = [
    "CGResult",
    "ConvergenceWarning",
    "KernelRidgeResult",
    "SolverPlan",
    "cholesky_solve",
    "conjugate_gradient",
    "nystrom",
    "plan_solver",
    "solve",
]

NYSTROM_MIN_M = 100  # the smallest Nyström model the planner considers when refusing


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance."""


@dataclass
class CGResult:
    """Solution of (K + reg I) alpha = y, the iterations taken and the final relative residuals."""

    alpha: np.ndarray
    iterations: int
    residual: np.ndarray  # ||y - (K + reg) alpha|| / ||y|| per column
    converged: bool


def _targets(y, n: int) -> tuple[np.ndarray, bool]:
    Y = np.asarray(y, dtype=np.float64)
    if Y.ndim not in (1, 2) or Y.shape[0] != n:
        raise ValueError(f"y: expected shape ({n},) or ({n}, k), got {Y.shape}")
    if not np.isfinite(Y).all():
        raise ValueError("y: contains NaN or inf")
    return Y.reshape(n, -1), Y.ndim == 1


def _check_tol(tol, maxiter) -> tuple[float, int]:
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol > 0:
        raise ValueError(f"tol: expected a number > 0, got {tol!r}")
    if isinstance(maxiter, bool) or not isinstance(maxiter, numbers.Integral) or maxiter < 1:
        raise ValueError(f"maxiter: expected an integer >= 1, got {maxiter!r}")
    return float(tol), int(maxiter)


def cholesky_solve(
    K, y, diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False, overwrite_k: bool = False
) -> np.ndarray:
    """Exact kernel ridge coefficients ``(K + reg I)^-1 y`` by a Cholesky factorisation.

    Parameters
    ----------
    K : array-like of shape (n, n)
        Symmetric positive semi-definite kernel matrix.
    y : array-like of shape (n,) or (n, k)
    diag_reg : float, default=0.0
        Ridge, relative to ``mean(diag K)`` unless ``diag_reg_absolute_scale``.
    diag_reg_absolute_scale : bool, default=False
    overwrite_k : bool, default=False
        Factorise a float64 ``K`` in place (saves the n^2 copy; K is destroyed).

    Returns
    -------
    ndarray of shape (n,) or (n, k)
    """
    if overwrite_k and isinstance(K, np.ndarray) and K.dtype == np.float64 and K.flags.writeable:
        K = np.asarray(K)
    else:
        K = np.array(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or not _all_finite(K):
        raise ValueError(f"K: expected a finite square matrix, got shape {K.shape}")
    check_lapack_size(len(K), "K", "use conjugate_gradient or nystrom", cholesky=True)
    Y, squeeze = _targets(y, len(K))
    K[np.diag_indices_from(K)] += diag_regularizer(np.diag(K), diag_reg, diag_reg_absolute_scale)
    alpha = scipy.linalg.cho_solve(cho_factor_inplace(K), Y, check_finite=False)
    return alpha[:, 0] if squeeze else alpha


def _all_finite(A: np.ndarray) -> bool:
    """Whether every entry is finite, without an n^2 boolean temporary in the usual case."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(A.sum())) or bool(np.isfinite(A).all())


def cho_factor_inplace(K: np.ndarray) -> tuple[np.ndarray, bool]:
    """``scipy.linalg.cho_factor`` of a symmetric float64 K in its own memory (K is destroyed).

    LAPACK works on Fortran-ordered arrays and SciPy copies a C-ordered one (a second n^2
    buffer); for a symmetric K the transpose view is the same matrix in Fortran order.
    """
    if K.flags.c_contiguous and not K.flags.f_contiguous:
        K = K.T
    with lapack_threads(len(K)):
        return scipy.linalg.cho_factor(K, overwrite_a=True, check_finite=False)


def lapack_threads(n: int):
    """BLAS threads for a dense factorisation of order n: one above ``VERIFIED_N``, where the
    threaded OpenBLAS potrf crashes (see ``ntkfast._validation``); unchanged below."""
    if n <= config.VERIFIED_N:
        return contextlib.nullcontext()
    return tiling._blas_controller().limit(limits=1, user_api="blas")


def _block_cg(apply, B, tol, maxiter, precondition=None, X0=None, progress=False, desc="CG", who="conjugate_gradient"):
    """Preconditioned CG for ``A X = B`` on all columns of B at once (one ``apply`` per step).

    Stops when every column's relative residual ``||b - A x|| / ||b||`` is at most ``tol``, or
    after ``maxiter`` steps (ConvergenceWarning).  NaN/inf raises FloatingPointError; a step
    with ``p^T A p <= 0`` on an unconverged column (A not positive definite, or precision
    exhausted) stops with a ConvergenceWarning instead of looping on to ``maxiter``.
    """
    X = np.zeros_like(B) if X0 is None else X0.copy()
    R = B.copy() if X0 is None else B - apply(X)
    Z = precondition(R) if precondition is not None else R
    P = Z.copy()
    rz = np.sum(R * Z, axis=0)
    norm_b = np.maximum(np.linalg.norm(B, axis=0), 1e-300)
    res = np.linalg.norm(R, axis=0) / norm_b
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=maxiter, desc=desc, unit="it")
    it, breakdown = 0, False
    try:
        while it < maxiter and res.max() > tol:
            AP = apply(P)
            pap = np.sum(P * AP, axis=0)
            if not np.isfinite(pap).all():
                raise FloatingPointError(f"{who}: the operator returned NaN/inf at iteration {it + 1}")
            active = res > tol  # converged columns stay put
            if (pap[active] <= 0).any():
                breakdown = True
                break
            step = np.where(active, rz / np.where(pap > 0, pap, 1.0), 0.0)
            X += P * step
            R -= AP * step
            res = np.linalg.norm(R, axis=0) / norm_b
            if not np.isfinite(res).all():
                raise FloatingPointError(
                    f"{who}: the residual became NaN/inf (is the operator positive semi-definite?)"
                )
            Z = precondition(R) if precondition is not None else R
            rz_new = np.sum(R * Z, axis=0)
            P = Z + P * np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
            rz = rz_new
            it += 1
            if bar is not None:
                bar.update()
                bar.set_postfix(residual=f"{res.max():.2e}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    converged = bool(res.max() <= tol)
    if not converged:
        why = (
            ": p^T A p <= 0 (the operator is not positive definite, or round-off has used up the precision; "
            "a larger diag_reg or float64 helps)"
            if breakdown
            else " (raise maxiter, or tol)"
        )
        warnings.warn(
            f"{who} stopped after {it} iterations with relative residual {res.max():.3g} > tol={tol:g}{why}",
            ConvergenceWarning,
            stacklevel=3,
        )
    return X, it, res, converged


def conjugate_gradient(
    op: LinearOperator,
    y,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    tol: float = 1e-8,
    maxiter: int | None = None,
    preconditioner: str | None = "jacobi",
    x0=None,
    progress: bool = False,
) -> CGResult:
    """Block preconditioned conjugate gradient for (K + reg I) alpha = y, K a symmetric operator.

    Each iteration is one ``op @ V`` (all right-hand sides together: a GramOperator recomputes
    its tiles once per iteration).  ``preconditioner="jacobi"`` divides by the diagonal (needs
    ``op.diagonal()``); ``None`` for plain CG.  Warns with :class:`ConvergenceWarning` when
    ``maxiter`` (default ``10 n``) ends the run before the relative residual reaches ``tol``,
    or when CG breaks down (``p^T A p <= 0``); raises FloatingPointError on NaN.  ``progress``
    shows a tqdm bar with the residual.
    """
    n = op.shape[0]
    if op.shape[0] != op.shape[1]:
        raise ValueError(f"op: expected a square operator, got shape {op.shape}")
    Y, squeeze = _targets(y, n)
    tol, maxiter = _check_tol(tol, 10 * n if maxiter is None else maxiter)
    diag = op.diagonal() if hasattr(op, "diagonal") else None
    if preconditioner == "jacobi" and diag is None:
        raise ValueError("preconditioner='jacobi' needs op.diagonal(); pass preconditioner=None")
    if preconditioner not in ("jacobi", None):
        raise ValueError(f"preconditioner: expected 'jacobi' or None, got {preconditioner!r}")
    reg = diag_regularizer(diag if diag is not None else np.ones(1), diag_reg, diag_reg_absolute_scale)
    if diag is None and diag_reg and not diag_reg_absolute_scale:
        raise ValueError("diag_reg: a relative regulariser needs op.diagonal(); use diag_reg_absolute_scale=True")
    inv_m = (1.0 / (diag + reg))[:, None] if preconditioner == "jacobi" else None

    def apply(V):
        return op @ V + reg * V

    X0 = None if x0 is None else np.array(x0, dtype=np.float64).reshape(Y.shape)
    precondition = (lambda R: R * inv_m) if inv_m is not None else None
    X, it, res, converged = _block_cg(apply, Y, tol, maxiter, precondition, X0, progress, "CG")
    return CGResult(X[:, 0] if squeeze else X, it, res, converged)


# ------------------------------------------------------------------------------ fitted models
@dataclass
class KernelRidgeResult:
    """A fitted kernel ridge model ``f(x) = K(x, centers) @ alpha``.

    ``centers`` are the training points (``method`` "cholesky" or "cg") or the Nyström centres
    ("nystrom").  ``iterations``, ``residual`` (relative, per output column: of the
    preconditioned system for Nyström) and ``converged`` describe the solve (0, 0, True for
    Cholesky).  ``reg`` is the absolute ridge used, ``timings`` the seconds per stage;
    ``predict`` evaluates the kernel in ``dtype``.
    """

    method: str
    arch: MLP
    get: str
    centers: np.ndarray  # (m, d) float64
    alpha: np.ndarray  # (m, k)
    iterations: int
    residual: np.ndarray
    converged: bool
    reg: float
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float64))
    squeeze: bool = False  # y was 1-D: predict returns (n_test,)
    timings: dict = field(default_factory=dict)
    cached: bool = False  # Nyström: K_nm was kept in memory

    def predict(self, X, *, progress: bool = False) -> np.ndarray:
        """``K(X, centers) @ alpha`` by tiles (a matrix-free :class:`GramOperator`; memory
        O(n_test k) plus tile scratch whatever the number of centres).

        Parameters
        ----------
        X : array-like of shape (n_test, d)
        progress : bool, default=False

        Returns
        -------
        ndarray of shape (n_test,) or (n_test, k)
        """
        X = check_array(X, "X", np.dtype(np.float64), n_features=self.centers.shape[1])
        op = GramOperator(self.arch, X, self.centers, get=self.get, dtype=self.dtype, progress=progress)
        out = np.asarray(op @ self.alpha.astype(self.dtype), dtype=np.float64)
        return out[:, 0] if self.squeeze else out


# ------------------------------------------------------------------------------------ Nyström
def _budget(budget) -> int:
    if budget is None:
        return config.memory_budget()
    if isinstance(budget, str):
        return config.parse_bytes(budget, "budget")
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not budget > 0:
        raise ValueError(f"budget: expected a number of bytes > 0 or a string such as '8G', got {budget!r}")
    return int(budget)


def _upper_cholesky(M: np.ndarray, what: str) -> np.ndarray:
    """Upper U with U^T U = M + jitter I.  The jitter starts at FALKON's eps * m (relative to
    mean diag M: round-off level, invisible in the results) and grows 100-fold, up to 1e-6,
    only while the factorisation fails (near-duplicate centres)."""
    m = len(M)
    scale = float(np.mean(np.diag(M)))
    scale = scale if scale > 0 and np.isfinite(scale) else 1.0
    jitter = np.finfo(np.float64).eps * m * scale
    while True:
        try:
            return scipy.linalg.cholesky(M + jitter * np.eye(m), lower=False, check_finite=True)
        except scipy.linalg.LinAlgError:
            jitter *= 100
            if jitter > 1e-6 * scale:
                raise ValueError(
                    f"{what}: not positive definite even with a jitter of 1e-6 * mean(diag); "
                    "are there duplicate centres?"
                ) from None


def default_centers(n: int) -> int:
    """Default number of Nyström centres: ``2 sqrt(n)``, at least 100 and at most n."""
    return int(min(n, max(NYSTROM_MIN_M, round(2 * math.sqrt(n)))))


def _leverage_centers(arch, X, m, reg, get, rng, block_bytes=config.BLOCK_BYTES) -> np.ndarray:
    """Indices of m centres sampled without replacement with probability proportional to
    approximate ridge leverage scores.

    The scores of a uniform pool of ``r = min(n, config.LEVERAGE_POOL * m)`` points are approximated
    from a uniform sub-sample S of s = m of them (the Nyström estimator of Rudi, Calandriello,
    Carratino & Rosasco 2018, eq. 4, with uniform weights):
    ``l_i ∝ K_ii - K_iS (K_SS + reg s/n I)^-1 K_Si`` (the constant factor 1/reg is dropped).
    Scores get a floor of 1e-3 of their mean so that every pool point can be drawn.
    Cost: r * s kernel entries and O(r s^2) flops.
    """
    n = len(X)
    r = min(n, config.LEVERAGE_POOL * m)
    pool = rng.choice(n, r, replace=False)
    S = pool[:m]  # the pool is in random order: its head is a uniform sub-sample
    U = _upper_cholesky(kernel(arch, X[S], get=get) + reg * m / n * np.eye(m), "K_SS (leverage scores)")
    diag = kernel_diag(arch, X[pool], get=get)
    scores = np.empty(r)
    cols = max(1, block_bytes // (8 * m))
    for j0 in range(0, r, cols):
        V = scipy.linalg.solve_triangular(U, kernel(arch, X[S], X[pool[j0 : j0 + cols]], get=get), trans="T")
        scores[j0 : j0 + cols] = diag[j0 : j0 + cols] - np.einsum("ij,ij->j", V, V)
    scores = np.maximum(scores, 0)
    scores = scores + 1e-3 * scores.mean() if scores.mean() > 0 else np.ones(r)
    return pool[rng.choice(r, m, replace=False, p=scores / scores.sum())]


class _Knm:
    """Products with K_nm = K(X, centres) by row blocks: either slices of a cache computed once
    (``cache``) or recomputed per product (memory O(block * m)).  Blocks are multiplied in the
    kernel's dtype (float32 halves the traffic) and summed in float64."""

    def __init__(self, arch, X, C, get, dtype, cache: bool, progress: bool, block_bytes: int):
        self.arch, self.X, self.C, self.get, self.dtype = arch, X, C, get, dtype
        n, m = len(X), len(C)
        self.matrix = None
        if cache:
            self.rows = max(1, min(n, config.CACHED_BLOCK_BYTES // (m * dtype.itemsize)))
            self.matrix = np.empty((n, m), dtype)
            kernel(arch, X, C, get=get, dtype=dtype, out=self.matrix, progress=progress)
        else:
            self.rows = max(1, min(n, block_bytes // (m * dtype.itemsize)))
            self.scratch = np.empty((self.rows, m), dtype)

    def blocks(self):
        for i0 in range(0, len(self.X), self.rows):
            i1 = min(i0 + self.rows, len(self.X))
            if self.matrix is not None:
                yield i0, i1, self.matrix[i0:i1]
            else:
                out = self.scratch[: i1 - i0]
                yield i0, i1, kernel(self.arch, self.X[i0:i1], self.C, get=self.get, dtype=self.dtype, out=out)

    def rmatmat(self, Y: np.ndarray) -> np.ndarray:
        """K_nm^T Y."""
        acc = np.zeros((len(self.C), Y.shape[1]))
        for i0, i1, Kb in self.blocks():
            acc += Kb.T @ Y[i0:i1].astype(self.dtype)
        return acc

    def normal_matmat(self, Z: np.ndarray) -> np.ndarray:
        """K_nm^T (K_nm Z), one pass over the blocks."""
        acc = np.zeros_like(Z)
        Zd = Z.astype(self.dtype)
        for _, _, Kb in self.blocks():
            acc += Kb.T @ (Kb @ Zd)
        return acc


class _DistributedKnm:
    """The two K_nm products of :class:`_Knm`, summed over row blocks on a Dask cluster."""

    def __init__(self, arch, X, C, get, dtype, client):
        from . import distributed

        self.op = distributed.NystromOperator(arch, X, C, get, client=client, dtype=dtype)

    def rmatmat(self, Y: np.ndarray) -> np.ndarray:
        return np.asarray(self.op.rhs(Y.astype(self.op.dtype)), dtype=np.float64)

    def normal_matmat(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self.op.matmat(Z.astype(self.op.dtype)), dtype=np.float64)


def nystrom(
    arch: MLP,
    X,
    y,
    m: int | None = None,
    *,
    centers="uniform",
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    get: str = "ntk",
    tol: float | None = None,
    maxiter: int = 100,
    dtype=np.float64,
    seed=None,
    progress: bool = False,
    cache: bool | None = None,
    budget=None,
    client=None,
) -> KernelRidgeResult:
    """Nyström kernel ridge regression by FALKON's preconditioned conjugate gradient.

    With centres C (m points) it solves ``(K_nm^T K_nm + reg K_mm) alpha = K_nm^T y``
    (``K_nm = K(X, C)``, ``reg = diag_reg * mean(diag K(X, X))``), i.e. FALKON's problem
    ``min_a (1/n)||K_nm a - y||^2 + lambda a^T K_mm a`` with ``lambda = reg / n``; with all n
    points as centres this is exactly kernel ridge regression ``(K + reg I)^-1 y``.

    Algorithm 1 of Rudi, Carratino & Rosasco (2017), scaled by n: ``T = chol(K_mm)``,
    ``A = chol((n/m) T T^T + reg I)`` (FALKON's ``T T^T / m + lambda I``, times n),
    ``B = T^-1 A^-1``; CG runs on ``B^T H B beta = B^T K_nm^T y`` with
    ``H = K_nm^T K_nm + reg K_mm`` (each step one pass of ``K_nm^T (K_nm v)`` over row blocks)
    and ``alpha = B beta``.  B B^T is H^-1 when K_nm^T K_nm is replaced by its estimate
    (n/m) K_mm^2 from uniform centres.  Leverage-score centres use the same preconditioner:
    re-weighting it by the centres' inclusion probabilities was tried and converged more slowly
    (54 against 33 iterations, n = 20 000, m = 1000, d = 28).  The Cholesky of K_mm gets
    FALKON's jitter ``eps * m * mean(diag K_mm)`` (larger only if it fails); it enters the
    ridge term ``reg K_mm`` at round-off level.

    Parameters
    ----------
    arch : MLP
    X : array-like of shape (n, d)
    y : array-like of shape (n,) or (n, k)
    m : int, default=None
        Number of centres (``default_centers(n)`` = 2 sqrt(n), at least 100, at most n).
        Must not exceed n; ignored (or must match) when ``centers`` is an array.
    centers : {"uniform", "leverage"} or ndarray of shape (m, d), default="uniform"
        "uniform": m distinct training points drawn at random; "leverage": drawn with
        probability proportional to approximate ridge leverage scores (see
        ``_leverage_centers``); an array: these points.
    diag_reg : float, default=0.0
        Ridge relative to the mean of diag K(X, X) (absolute with ``diag_reg_absolute_scale``).
    get : {"ntk", "nngp"}, default="ntk"
    tol : float, default=None
        Relative residual of the preconditioned system at which CG stops (None: 1e-7 in
        float64, 1e-5 in float32, where the float32 products limit the attainable residual).
    maxiter : int, default=100
        A ConvergenceWarning says when CG stops here before ``tol``.
    dtype : {float64, float32}, default=float64
        Of K_nm and its products (and of predictions); K_mm, the preconditioner and the CG
        vectors are always float64.  float32 halves memory and time; its kernel entries carry
        ~1e-5 relative error, so predictions differ from float64 ones at about that level.
    seed : int or Generator, default=None
    progress : bool, default=False
        tqdm bars: K_nm tiles (when cached) and CG iterations with the residual.
    cache : bool, default=None
        Keep K_nm (n * m * itemsize bytes) in memory: None = when it fits the budget,
        True = required (InsufficientMemoryError otherwise), False = recompute it by row blocks
        at every iteration (O(block * m) memory, one kernel pass per iteration).
    budget : int or str, default=None
        Memory budget in bytes (or "8G"); default ``ntkfast.tiling.memory_budget()``.
    client : dask.distributed.Client or str, default=None
        Run the K_nm products (the heavy part) on this Dask cluster
        (:class:`ntkfast.distributed.NystromOperator`: X is sent to the workers once, each
        iteration recomputes K_nm by row blocks there); ``cache`` is then ignored.  The small
        m x m algebra stays local.

    Returns
    -------
    KernelRidgeResult
        ``centers``, ``alpha`` (m, k), ``iterations``, ``residual``, ``converged``,
        ``predict(X_test)``.

    Examples
    --------
    >>> import numpy as np, ntkfast as nf
    >>> X = np.random.default_rng(0).standard_normal((300, 4)); y = np.sin(X[:, 0])
    >>> fit = nf.solvers.nystrom(nf.MLP(depth=2), X, y, m=50, diag_reg=1e-3, seed=0)
    >>> fit.alpha.shape, fit.converged
    ((50, 1), True)
    """
    timings = {}
    t0 = time.perf_counter()
    arch = check_arch(arch)
    names, single = check_get(get)
    if not single:
        raise ValueError("get: Nyström fits one kernel; pass 'ntk' or 'nngp'")
    dtype = resolve_dtype(dtype)
    X = check_array(X, "X", np.dtype(np.float64))
    n, d = X.shape
    Y, squeeze = _targets(y, n)
    if tol is None:
        tol = 1e-7 if dtype == np.float64 else 1e-5
    tol, maxiter = _check_tol(tol, maxiter)
    budget = _budget(budget)
    rng = np.random.default_rng(seed)
    m = check_positive_int(m, "m")

    if isinstance(centers, str):
        if centers not in ("uniform", "leverage"):
            raise ValueError(f"centers: expected 'uniform', 'leverage' or an array of points, got {centers!r}")
        m = default_centers(n) if m is None else m
        if m > n:
            raise ValueError(f"m: {m} centres requested but there are only n = {n} training points")
    else:
        C = check_array(centers, "centers", np.dtype(np.float64), n_features=d)
        if m is not None and m != len(C):
            raise ValueError(f"m: {m} does not match the {len(C)} rows of centers")
        m = len(C)
        if len(np.unique(C, axis=0)) < m:
            raise ValueError("centers: contains repeated rows (K_mm would be singular); pass distinct points")
    plan = plan_solver(n, k=Y.shape[1], d=d, m=m, itemsize=dtype.itemsize, budget=budget, solver="nystrom")
    if cache is None:
        cache = plan.cache
    elif cache and not plan.cache:
        raise tiling.InsufficientMemoryError(
            f"cache=True: K_nm ({n} x {m}, {dtype.name}) needs {tiling.format_bytes(plan.needs['nystrom_cached'])} "
            f"in all but the memory budget is {tiling.format_bytes(budget)}; use cache=False, fewer centres "
            "or dtype=float32"
        )

    diag = kernel_diag(arch, X, get=get)
    reg = diag_regularizer(diag, diag_reg, diag_reg_absolute_scale)
    if isinstance(centers, str):
        idx = rng.choice(n, m, replace=False) if centers == "uniform" else _leverage_centers(arch, X, m, reg, get, rng)
        C = X[np.sort(idx)]
        distinct = np.unique(C, axis=0)
        if len(distinct) < m:  # X has repeated rows: a repeated centre would make K_mm singular
            warnings.warn(
                f"centers: {m - len(distinct)} of the {m} sampled centres repeat other rows of X; "
                f"using the {len(distinct)} distinct ones",
                UserWarning,
                stacklevel=2,
            )
            C, m = distinct, len(distinct)
    timings["centers"] = time.perf_counter() - t0

    # preconditioner: T^T T = K_mm, A^T A = (n/m) T T^T + reg I  (FALKON's, times n)
    t0 = time.perf_counter()
    T = _upper_cholesky(kernel(arch, C, get=get), "K_mm")
    A = _upper_cholesky((n / m) * (T @ T.T) + reg * np.eye(m), "the preconditioner (n/m) T T^T + reg I")
    timings["preconditioner"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if client is not None:
        knm, cache = _DistributedKnm(arch, X, C, names[0], dtype, client), False
    else:
        knm = _Knm(arch, X, C, names[0], dtype, bool(cache), progress, config.BLOCK_BYTES)
    timings["K_nm"] = time.perf_counter() - t0

    def solve_t(M, trans="N"):  # T^-1 M or T^-T M
        return scipy.linalg.solve_triangular(T, M, trans=trans)

    def solve_a(M, trans="N"):
        return scipy.linalg.solve_triangular(A, M, trans=trans)

    def apply(U):  # B^T (K_nm^T K_nm + reg K_mm) B U with B = T^-1 A^-1
        V = solve_a(U)
        return solve_a(solve_t(knm.normal_matmat(solve_t(V)), "T") + reg * V, "T")

    t0 = time.perf_counter()
    rhs = solve_a(solve_t(knm.rmatmat(Y), "T"), "T")
    beta, it, res, converged = _block_cg(apply, rhs, tol, maxiter, progress=progress, desc="Nyström CG", who="nystrom")
    alpha = solve_t(solve_a(beta))
    timings["cg"] = time.perf_counter() - t0
    return KernelRidgeResult(
        "nystrom", arch, names[0], C, alpha, it, res, converged, reg, dtype, squeeze, timings, bool(cache)
    )


# -------------------------------------------------------------------------------- the planner
@dataclass(frozen=True)
class SolverPlan:
    """What :func:`plan_solver` chose, why, and the bytes each method needs.

    ``needs`` has keys "cholesky", "cg", "nystrom" (K_nm streamed by row blocks) and
    "nystrom_cached" (K_nm kept in memory), for ``m`` centres.
    """

    method: str
    reason: str
    budget: int
    needs: dict
    m: int
    cache: bool  # Nyström: K_nm fits the budget as a cache


def plan_solver(
    n: int,
    n_test: int = 0,
    k: int = 1,
    d: int = 0,
    m: int | None = None,
    itemsize: int = 8,
    budget=None,
    solver: str = "auto",
    n_jobs: int | None = None,
) -> SolverPlan:
    """Choose the kernel ridge solver that fits the memory budget, or refuse with the numbers.

    Estimates (bytes): every method holds X, y and predictions, ``8 (n (d + 2k) + n_test (d + k))``.
    Exact Cholesky adds the n x n float64 Gram, ``8 n^2`` (factorised in place; test rows are
    streamed).  CG adds ``8 n k (6 + n_jobs)`` (CG vectors and per-thread accumulators) and the
    tile scratch.  Nyström adds ``8 (3 m^2 + 6 m k)`` (K_mm and the two factors) and either a
    streamed block of K_nm (``config.BLOCK_BYTES``) or the cached ``n m itemsize``.

    ``solver="auto"``: "cholesky" when it fits (and n <= ``CHOLESKY_MAX_N``, 32-bit LAPACK's
    limit; single-threaded above ``VERIFIED_N``: see ``ntkfast._validation``); else "cg" when
    n <= ``config.CG_MAX_N`` (above that its O(n^2) kernel work per iteration is too slow); else
    "nystrom".  An explicit ``solver``
    is only checked.  Raises :class:`ntkfast.InsufficientMemoryError` when the chosen method
    (for "auto": even Nyström with ``NYSTROM_MIN_M`` centres and K_nm streamed) cannot fit.

    Parameters
    ----------
    n, n_test, k, d : int
        Training points, test points, output columns, input features.
    m : int, default=None
        Nyström centres (default ``default_centers(n)``).
    itemsize : int, default=8
        Bytes per K_nm entry for Nyström (4 for float32).
    budget : int or str, default=None
        Default ``ntkfast.tiling.memory_budget()`` ($NTKFAST_MEMORY_BUDGET or 80 % of available).
    solver : {"auto", "cholesky", "cg", "nystrom"}, default="auto"
    n_jobs : int, default=None

    Returns
    -------
    SolverPlan
    """
    for value, name in ((n, "n"), (k, "k")):
        check_positive_int(value, name, allow_none=False)
    for value, name in ((n_test, "n_test"), (d, "d")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    if solver not in ("auto", "cholesky", "cg", "nystrom"):
        raise ValueError(f"solver: expected 'auto', 'cholesky', 'cg' or 'nystrom', got {solver!r}")
    if itemsize not in (4, 8):
        raise ValueError(f"itemsize: expected 4 (float32) or 8 (float64), got {itemsize!r}")
    budget = _budget(budget)
    m = default_centers(n) if m is None else check_positive_int(m, "m")
    if m > n:
        raise ValueError(f"m: {m} centres requested but there are only n = {n} training points")
    jobs = tiling.default_n_jobs() if n_jobs is None else n_jobs
    base = 8 * (n * (d + 2 * k) + n_test * (d + k))
    tile_scratch = jobs * 2 * min(n, config.DEFAULT_TILE) ** 2 * 8

    def nystrom_bytes(mm: int, cached: bool) -> int:
        stream = n * mm * itemsize if cached else min(config.BLOCK_BYTES, n * mm * itemsize)
        return base + 8 * (3 * mm * mm + 6 * mm * k) + stream + tile_scratch

    needs = {
        "cholesky": base + 8 * n * n + min(config.BLOCK_BYTES, 8 * n * n_test) + tile_scratch,
        "cg": base + 8 * n * k * (6 + jobs) + tile_scratch,
        "nystrom": nystrom_bytes(m, False),
        "nystrom_cached": nystrom_bytes(m, True),
    }
    cache = needs["nystrom_cached"] <= budget
    fmt = tiling.format_bytes
    summary = (
        f"n = {n}: exact Cholesky needs {fmt(needs['cholesky'])}, CG {fmt(needs['cg'])}, "
        f"Nyström with m = {m} {fmt(needs['nystrom'])} ({fmt(needs['nystrom_cached'])} with K_nm cached); "
        f"the memory budget is {fmt(budget)}"
    )
    if solver == "auto":
        if needs["cholesky"] <= budget and n <= config.CHOLESKY_MAX_N:
            return SolverPlan("cholesky", f"the n x n Gram fits. {summary}", budget, needs, m, cache)
        cg_max = config.CG_MAX_N
        if n <= cg_max and needs["cg"] <= budget:
            return SolverPlan("cg", f"the Gram does not fit and n <= {cg_max}. {summary}", budget, needs, m, cache)
        if needs["nystrom"] <= budget:
            return SolverPlan("nystrom", f"n > {cg_max} or CG does not fit. {summary}", budget, needs, m, cache)
        m_min = min(n, NYSTROM_MIN_M)
        if nystrom_bytes(m_min, False) <= budget:
            m_fit = m_min
            while m_fit < m and nystrom_bytes(2 * m_fit, False) <= budget:
                m_fit *= 2
            return SolverPlan(
                "nystrom", f"only a smaller Nyström model fits; using m = {m_fit}. {summary}",
                budget, {**needs, "nystrom": nystrom_bytes(m_fit, False)}, m_fit, False,
            )  # fmt: skip
        raise tiling.InsufficientMemoryError(
            f"No solver fits: {summary}; even Nyström with m = {m_min} needs {fmt(nystrom_bytes(m_min, False))}. "
            "Raise the budget (NTKFAST_MEMORY_BUDGET) or sub-sample the data."
        )
    if solver == "cholesky":
        check_lapack_size(n, "solver='cholesky'", "use solver='auto', 'cg' or 'nystrom'", cholesky=True)
    if needs[solver] > budget:
        try:
            auto = plan_solver(n, n_test, k, d, m, itemsize, budget, "auto", n_jobs)
            hint = f"solver='auto' would use {auto.method!r}" + (
                f" with m = {auto.m}" if auto.method == "nystrom" else ""
            )
        except tiling.InsufficientMemoryError:
            hint = "no solver fits: raise the budget (NTKFAST_MEMORY_BUDGET) or sub-sample the data"
        raise tiling.InsufficientMemoryError(f"solver={solver!r} does not fit: {summary}. {hint}.")
    return SolverPlan(solver, f"requested. {summary}", budget, needs, m, cache)


def solve(
    arch: MLP,
    X,
    y,
    solver: str = "auto",
    *,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    get: str = "ntk",
    m: int | None = None,
    centers="uniform",
    tol: float | None = None,
    maxiter: int | None = None,
    dtype=np.float64,
    seed=None,
    progress: bool = False,
    budget=None,
    n_test: int = 0,
) -> KernelRidgeResult:
    """Kernel ridge regression with the solver :func:`plan_solver` picks (or the one named).

    "cholesky": ``nf.kernel`` then :func:`cholesky_solve` in place; "cg":
    :func:`conjugate_gradient` on a :class:`GramOperator` (tol default 1e-8, maxiter 10 n);
    "nystrom": :func:`nystrom` (``m``, ``centers``, ``dtype``, ``seed``: see there).
    ``n_test`` only informs the memory plan.  Returns a :class:`KernelRidgeResult` whose
    ``predict(X_test)`` gives the predictions.

    Examples
    --------
    >>> import numpy as np, ntkfast as nf
    >>> X = np.random.default_rng(0).standard_normal((200, 3))
    >>> fit = nf.solvers.solve(nf.MLP(depth=2), X, X[:, 0], diag_reg=1e-3)
    >>> fit.method, fit.predict(X[:2]).shape
    ('cholesky', (2,))
    """
    arch = check_arch(arch)
    names, single = check_get(get)
    if not single:
        raise ValueError("get: kernel ridge fits one kernel; pass 'ntk' or 'nngp'")
    X = check_array(X, "X", np.dtype(np.float64))
    Y, squeeze = _targets(y, len(X))
    dtype = resolve_dtype(dtype)
    plan = plan_solver(len(X), n_test, Y.shape[1], X.shape[1], m, dtype.itemsize, budget, solver)
    if plan.method == "nystrom":
        return nystrom(
            arch, X, y, plan.m, centers=centers, diag_reg=diag_reg, diag_reg_absolute_scale=diag_reg_absolute_scale,
            get=get, tol=tol, maxiter=100 if maxiter is None else maxiter, dtype=dtype, seed=seed,
            progress=progress, budget=plan.budget,
        )  # fmt: skip
    t0 = time.perf_counter()
    if plan.method == "cholesky":
        K = kernel(arch, X, get=get, progress=progress)
        reg = diag_regularizer(np.diag(K), diag_reg, diag_reg_absolute_scale)
        alpha = cholesky_solve(K, Y, reg, diag_reg_absolute_scale=True, overwrite_k=True)
        del K
        it, res, converged = 0, np.zeros(Y.shape[1]), True
    else:
        op = GramOperator(arch, X, get=get)
        reg = diag_regularizer(op.diagonal(), diag_reg, diag_reg_absolute_scale)
        fit = conjugate_gradient(
            op,
            Y,
            reg,
            diag_reg_absolute_scale=True,
            tol=1e-8 if tol is None else tol,
            maxiter=maxiter,
            progress=progress,
        )
        alpha, it, res, converged = fit.alpha, fit.iterations, fit.residual, fit.converged
    timings = {"solve": time.perf_counter() - t0}
    return KernelRidgeResult(plan.method, arch, names[0], X, alpha, it, res, converged, reg, np.dtype(np.float64),
                             squeeze, timings)  # fmt: skip
