"""Choose the kernel ridge solver that fits the memory budget (:func:`plan_solver`) and run it (:func:`solve`).

The byte estimates are those of :mod:`ntkfast.solvers.memory`; see there for the formulas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .. import config
from .._validation import (
    check_arch,
    check_array,
    check_choice,
    check_get,
    check_lapack_size,
    check_nonnegative_int,
    check_positive_int,
    check_targets,
    resolve_dtype,
)
from ..errors import ArgumentError, InsufficientMemoryError
from ..gram import kernel
from ..gram_operator import GramOperator
from ..spec import MLP
from ..tiling import default_n_jobs, format_bytes
from .cg import check_cg_vectors, conjugate_gradient
from .dense import diag_regularizer, factor_solve
from .memory import data_bytes, default_centers, nystrom_bytes, resolve_budget, solver_needs
from .nystrom import nystrom
from .result import KernelRidgeResult

__all__ = ["SolverPlan", "plan_solver", "solve"]

SOLVERS = ("auto", "cholesky", "cg", "nystrom")
MAX_COUNT = 2**53  # sizes beyond this are no data set (and leave float64's exact integers)


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

    ``solver="auto"``: "cholesky" when it fits (and n <= ``config.CHOLESKY_MAX_N``, 32-bit
    LAPACK's limit; single-threaded above ``config.VERIFIED_N``); else "cg" when
    n <= ``config.CG_MAX_N`` (above that its O(n^2) kernel work per iteration is too slow); else
    "nystrom".  An explicit ``solver`` is only checked.

    Parameters
    ----------
    n, n_test, k, d : int
        Training points, test points, output columns, input features.
    m : int, default=None
        Nyström centres (default ``default_centers(n)``).
    itemsize : int, default=8
        Bytes per K_nm entry for Nyström (4 for float32).
    budget : int or str, default=None
        Default ``ntkfast.config.memory_budget()`` ($NTKFAST_MEMORY_BUDGET or 80 % of available).
    solver : {"auto", "cholesky", "cg", "nystrom"}, default="auto"
    n_jobs : int, default=None

    Returns
    -------
    SolverPlan

    Raises
    ------
    InsufficientMemoryError
        The chosen method (for "auto": even Nyström with ``config.NYSTROM_MIN_M`` centres and K_nm
        streamed) cannot fit.

    Examples
    --------
    >>> plan_solver(10**6, d=28, budget="4G").method
    'nystrom'
    """
    n = check_positive_int(n, "n", allow_none=False, maximum=MAX_COUNT)
    k = check_positive_int(k, "k", allow_none=False, maximum=MAX_COUNT)
    n_test = check_nonnegative_int(n_test, "n_test")
    d = check_nonnegative_int(d, "d")
    for value, name in ((n_test, "n_test"), (d, "d")):
        if value > MAX_COUNT:
            raise ArgumentError(f"{name}: {value} is above the largest supported value, {MAX_COUNT}")
    check_choice(solver, "solver", SOLVERS)
    if isinstance(itemsize, bool) or itemsize not in (4, 8):
        raise ArgumentError(f"itemsize: expected 4 (float32) or 8 (float64), got {itemsize!r}")
    budget = resolve_budget(budget)
    m = default_centers(n) if m is None else check_positive_int(m, "m")
    if m > n:
        raise ArgumentError(f"m: {m} centres requested but there are only n = {n} training points")
    jobs = default_n_jobs() if n_jobs is None else check_positive_int(n_jobs, "n_jobs", allow_none=False)
    needs = solver_needs(n, n_test, k, d, m, itemsize, jobs)
    base = data_bytes(n, n_test, k, d, jobs)

    def nystrom_needs(mm: int) -> int:
        return nystrom_bytes(n, mm, k, itemsize, False, base)

    cache = needs["nystrom_cached"] <= budget
    fmt = format_bytes
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
        m_min = min(n, config.NYSTROM_MIN_M)
        if nystrom_needs(m_min) <= budget:
            m_fit = m_min
            while m_fit < m and nystrom_needs(2 * m_fit) <= budget:
                m_fit *= 2
            return SolverPlan(
                "nystrom", f"only a smaller Nyström model fits; using m = {m_fit}. {summary}",
                budget, {**needs, "nystrom": nystrom_needs(m_fit)}, m_fit, False,
            )  # fmt: skip
        raise InsufficientMemoryError(
            f"No solver fits: {summary}; even Nyström with m = {m_min} needs {fmt(nystrom_needs(m_min))}. "
            "Raise the budget (NTKFAST_MEMORY_BUDGET) or sub-sample the data."
        )
    if solver == "cholesky":
        check_lapack_size(n, "solver='cholesky'", "use solver='auto', 'cg' or 'nystrom'", cholesky=True)
    if needs[solver] > budget:
        try:
            auto = plan_solver(n, n_test, k, d, m, itemsize, budget, "auto", jobs)
            hint = f"solver='auto' would use {auto.method!r}" + (
                f" with m = {auto.m}" if auto.method == "nystrom" else ""
            )
        except InsufficientMemoryError:
            hint = "no solver fits: raise the budget (NTKFAST_MEMORY_BUDGET) or sub-sample the data"
        raise InsufficientMemoryError(f"solver={solver!r} does not fit: {summary}. {hint}.")
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

    "cholesky": ``nf.kernel`` then a Cholesky factorisation in place
    (:func:`~ntkfast.solvers.cholesky_solve`'s); "cg": :func:`~ntkfast.solvers.conjugate_gradient`
    on a :class:`GramOperator` (tol default 1e-8, maxiter 10 n); "nystrom":
    :func:`~ntkfast.solvers.nystrom` (``m``, ``centers``, ``dtype``, ``seed``: see there; maxiter
    default 100).  ``n_test`` only informs the memory plan.

    Returns
    -------
    KernelRidgeResult
        Whose ``predict(X_test)`` gives the predictions.

    Raises
    ------
    InsufficientMemoryError
        No solver (or not the one named) fits the budget.
    SingularKernelError
        "cholesky": K + reg I is not numerically positive definite; the message names
        ``diag_reg`` and a value to try.

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
        raise ArgumentError("get: kernel ridge fits one kernel; pass 'ntk' or 'nngp'")
    check_choice(solver, "solver", SOLVERS)
    X = check_array(X, "X", np.dtype(np.float64))
    Y, squeeze = check_targets(y, len(X))
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
        diag_regularizer(np.ones(1), diag_reg)  # checks diag_reg before the Gram is computed
        K = kernel(arch, X, get=get, progress=progress)
        reg = diag_regularizer(np.diag(K), diag_reg, diag_reg_absolute_scale)
        alpha = factor_solve(K, Y, diag_reg, bool(diag_reg_absolute_scale))
        del K
        it, res, converged = 0, np.zeros(Y.shape[1]), True
    else:
        check_cg_vectors(len(X), Y.shape[1], "solve")
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
