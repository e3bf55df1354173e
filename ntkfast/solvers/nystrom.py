"""Nyström kernel ridge regression solved by FALKON's preconditioned conjugate gradient.

Rudi, Carratino & Rosasco (2017), Algorithm 1; Meanti et al. (2020): m centres, the
preconditioner from two m x m Cholesky factors, K_nm products streamed by row blocks (or cached
when they fit the memory budget).  Centres are drawn uniformly or by approximate ridge leverage
scores (:func:`leverage_centers`).  Every allocation that grows with m, n or the number of
right-hand sides is compared with the memory budget before it is made.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.linalg

from .. import config
from .._validation import (
    check_arch,
    check_array,
    check_get,
    check_positive_float,
    check_positive_int,
    check_seed,
    check_targets,
    resolve_dtype,
)
from ..errors import ArgumentError, InsufficientMemoryError, SingularKernelError
from ..gram import kernel, kernel_diag
from ..spec import MLP
from ..tiling import default_n_jobs, format_bytes
from .cg import block_cg
from .dense import diag_regularizer
from .memory import default_centers, resolve_budget, solver_needs
from .result import KernelRidgeResult

__all__ = ["default_centers", "leverage_centers", "nystrom"]


def _upper_cholesky(M: np.ndarray, what: str) -> np.ndarray:
    """Upper U with U^T U = M + jitter I (M is kept).  The jitter starts at FALKON's eps * m
    (relative to mean diag M: round-off level, invisible in the results) and grows 100-fold, up
    to 1e-6, only while the factorisation fails (near-duplicate centres).  One m x m working copy."""
    m = len(M)
    scale = float(np.mean(np.diag(M)))
    scale = scale if scale > 0 and np.isfinite(scale) else 1.0
    jitter = np.finfo(np.float64).eps * m * scale
    while True:
        work = np.array(M, dtype=np.float64, order="F")
        work[np.diag_indices_from(work)] += jitter
        try:
            return scipy.linalg.cholesky(work, lower=False, overwrite_a=True, check_finite=True)
        except scipy.linalg.LinAlgError:
            jitter *= 100
            if jitter > 1e-6 * scale:
                raise SingularKernelError(
                    f"{what}: not positive definite even with a jitter of 1e-6 * mean(diag): the centres "
                    "include repeated or nearly identical points (or the kernel is degenerate on them); "
                    "pass distinct centres, or fewer (m)"
                ) from None


def leverage_centers(arch: MLP, X: np.ndarray, m: int, reg: float, get: str, rng, block_bytes=None) -> np.ndarray:
    """Indices of m centres sampled without replacement with probability proportional to
    approximate ridge leverage scores.

    The scores of a uniform pool of ``r = min(n, config.LEVERAGE_POOL * m)`` points are approximated
    from a uniform sub-sample S of s = m of them (the Nyström estimator of Rudi, Calandriello,
    Carratino & Rosasco 2018, eq. 4, with uniform weights):
    ``l_i ∝ K_ii - K_iS (K_SS + reg s/n I)^-1 K_Si`` (the constant factor 1/reg is dropped).
    Scores get a floor of 1e-3 of their mean so that every pool point can be drawn.
    Cost: r * s kernel entries and O(r s^2) flops, in column blocks of ``block_bytes``
    (default ``config.BLOCK_BYTES``); the caller has checked the m x m factors against the budget.

    Parameters
    ----------
    arch : MLP
    X : ndarray of shape (n, d), float64
    m : int
        Centres to draw, at most n.
    reg : float
        The absolute ridge.
    get : {"ntk", "nngp"}
    rng : numpy.random.Generator
    block_bytes : int, default=None

    Returns
    -------
    ndarray of shape (m,)
        Distinct row indices into X.
    """
    n = len(X)
    r = min(n, config.LEVERAGE_POOL * m)
    block_bytes = config.BLOCK_BYTES if block_bytes is None else block_bytes
    pool = rng.choice(n, r, replace=False)
    S = pool[:m]  # the pool is in random order: its head is a uniform sub-sample
    K_SS = kernel(arch, X[S], get=get)
    K_SS[np.diag_indices_from(K_SS)] += reg * m / n
    U = _upper_cholesky(K_SS, "K_SS (leverage scores)")
    del K_SS
    diag = kernel_diag(arch, X[pool], get=get)
    scores = np.empty(r)
    cols = max(1, block_bytes // (8 * m))
    for j0 in range(0, r, cols):  # a Ctrl-C stops between blocks (and inside kernel's tiles)
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
        from .. import distributed

        self.op = distributed.NystromOperator(arch, X, C, get, client=client, dtype=dtype)

    def rmatmat(self, Y: np.ndarray) -> np.ndarray:
        return np.asarray(self.op.rhs(Y.astype(self.op.dtype)), dtype=np.float64)

    def normal_matmat(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self.op.matmat(Z.astype(self.op.dtype)), dtype=np.float64)


def _check_cache(cache, n, m, k, d, dtype, budget, distributed: bool) -> bool:
    """Whether to cache K_nm; refuses, before any allocation, a fit whose m x m factors, CG vectors
    and K_nm (a streamed block, or all of it with ``cache=True``) exceed ``budget``."""
    needs = solver_needs(n, 0, k, d, m, dtype.itemsize, default_n_jobs())
    if distributed:  # K_nm lives on the workers; here only the m x m algebra
        local = needs["nystrom"] - min(config.BLOCK_BYTES, n * m * dtype.itemsize)
        if local > budget:
            raise InsufficientMemoryError(
                f"nystrom: the m x m factors for m = {m} centres need {format_bytes(local)} but the memory "
                f"budget is {format_bytes(budget)}; use fewer centres (m) or raise the budget"
            )
        return False
    if needs["nystrom"] > budget:
        raise InsufficientMemoryError(
            f"nystrom: m = {m} centres with K_nm ({n} x {m}, {dtype.name}) streamed by row blocks need "
            f"{format_bytes(needs['nystrom'])} but the memory budget is {format_bytes(budget)}; use fewer "
            f"centres (m, at least {config.NYSTROM_MIN_M} is sensible), dtype=float32, or raise the budget "
            "(budget= or NTKFAST_MEMORY_BUDGET)"
        )
    fits = needs["nystrom_cached"] <= budget
    if cache is None:
        return fits
    if cache and not fits:
        raise InsufficientMemoryError(
            f"cache=True: K_nm ({n} x {m}, {dtype.name}) needs {format_bytes(needs['nystrom_cached'])} "
            f"in all but the memory budget is {format_bytes(budget)}; use cache=False, fewer centres "
            "or dtype=float32"
        )
    return bool(cache)


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
        :func:`leverage_centers`); an array: these points.
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
        Memory budget in bytes (or "8G"); default ``ntkfast.config.memory_budget()``.
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

    Raises
    ------
    InsufficientMemoryError
        Before any allocation, when the m x m factors, the CG vectors and K_nm (a block, or all
        of it with ``cache=True``) exceed the budget.
    SingularKernelError
        K_mm is singular (repeated or nearly identical centres).
    KeyboardInterrupt
        Ctrl-C stops at the next kernel tile or block; nothing is returned.

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
        raise ArgumentError("get: Nyström fits one kernel; pass 'ntk' or 'nngp'")
    dtype = resolve_dtype(dtype)
    X = check_array(X, "X", np.dtype(np.float64))
    n, d = X.shape
    Y, squeeze = check_targets(y, n)
    if tol is None:
        tol = 1e-7 if dtype == np.float64 else 1e-5
    tol = check_positive_float(tol, "tol")
    maxiter = check_positive_int(maxiter, "maxiter", allow_none=False)
    budget = resolve_budget(budget)
    rng = check_seed(seed)
    m = check_positive_int(m, "m")
    if cache is not None and not isinstance(cache, (bool, np.bool_)):
        raise ArgumentError(f"cache: expected True, False or None, got {cache!r}")

    if isinstance(centers, str):
        if centers not in ("uniform", "leverage"):
            raise ArgumentError(f"centers: expected 'uniform', 'leverage' or an array of points, got {centers!r}")
        m = default_centers(n) if m is None else m
        if m > n:
            raise ArgumentError(f"m: {m} centres requested but there are only n = {n} training points")
    else:
        C = check_array(centers, "centers", np.dtype(np.float64), n_features=d)
        if m is not None and m != len(C):
            raise ArgumentError(f"m: {m} does not match the {len(C)} rows of centers")
        m = len(C)
    cache = _check_cache(cache, n, m, Y.shape[1], d, dtype, budget, client is not None)
    if not isinstance(centers, str) and len(np.unique(C, axis=0)) < m:
        raise ArgumentError("centers: contains repeated rows (K_mm would be singular); pass distinct points")

    diag = kernel_diag(arch, X, get=get)
    reg = diag_regularizer(diag, diag_reg, diag_reg_absolute_scale)
    if isinstance(centers, str):
        idx = rng.choice(n, m, replace=False) if centers == "uniform" else leverage_centers(arch, X, m, reg, get, rng)
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
    G = T @ T.T
    G *= n / m
    G[np.diag_indices_from(G)] += reg
    A = _upper_cholesky(G, "the preconditioner (n/m) T T^T + reg I")
    del G
    timings["preconditioner"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if client is not None:
        knm = _DistributedKnm(arch, X, C, names[0], dtype, client)
    else:
        knm = _Knm(arch, X, C, names[0], dtype, cache, progress, config.BLOCK_BYTES)
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
    beta, it, res, converged = block_cg(apply, rhs, tol, maxiter, progress=progress, desc="Nyström CG", who="nystrom")
    alpha = solve_t(solve_a(beta))
    timings["cg"] = time.perf_counter() - t0
    return KernelRidgeResult(
        "nystrom", arch, names[0], C, alpha, it, res, converged, reg, dtype, squeeze, timings, cache
    )
