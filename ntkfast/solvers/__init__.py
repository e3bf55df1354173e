"""Kernel ridge regression solvers, from exact to large scale.

* :mod:`~ntkfast.solvers.dense`: :func:`cholesky_solve`, exact coefficients from a dense K
  (O(n^2) memory, O(n^3) time), and the dense helpers the rest of ntkfast shares
  (:func:`diag_regularizer`, :func:`cho_factor_inplace`, :func:`lapack_threads`).
* :mod:`~ntkfast.solvers.cg`: :func:`conjugate_gradient`, matrix-free block CG on a
  :class:`ntkfast.GramOperator` (K never stored, O(n^2) kernel work per iteration).
* :mod:`~ntkfast.solvers.nystrom`: :func:`nystrom`, Nyström kernel ridge solved by preconditioned
  CG, following FALKON (Rudi, Carratino & Rosasco 2017, Algorithm 1; Meanti et al. 2020): m
  centres, the preconditioner from two m x m Cholesky factors, K_nm products streamed by row
  blocks (or cached when they fit the memory budget).
* :mod:`~ntkfast.solvers.planner`: :func:`plan_solver` chooses among them from the memory budget
  (estimates in :mod:`~ntkfast.solvers.memory`), and :func:`solve` runs the choice; both
  refuse, with the numbers, what cannot fit.  :class:`KernelRidgeResult`
  (:mod:`~ntkfast.solvers.result`) is the fitted model they return.

All of them solve with the ridge ``reg = diag_reg * mean(diag K(X, X))`` (relative, as in
``ntkfast.predict``) unless ``diag_reg_absolute_scale``: exact and CG solve
``(K + reg I) alpha = y``; Nyström restricts alpha to the span of the centres and solves
``(K_nm^T K_nm + reg K_mm) alpha = K_nm^T y``, which is FALKON's problem with its
``lambda = reg / n`` and gives exactly the kernel ridge predictions when the centres are all
n training points.  Layers: ``dense`` and ``cg`` below ``memory`` and ``result``, below
``nystrom``, below ``planner``; see ``docs/design.md`` (section "Solvers").

Note that ``ntkfast.solvers.nystrom`` is the function; its module is
``sys.modules["ntkfast.solvers.nystrom"]`` (``from ntkfast.solvers.nystrom import leverage_centers``
works).
"""

from __future__ import annotations

from .cg import CGResult, ConvergenceWarning, conjugate_gradient
from .dense import (
    NonFiniteError,
    cho_factor_inplace,
    cholesky_solve,
    diag_regularizer,
    lapack_threads,
    singular_kernel_error,
)
from .memory import default_centers
from .nystrom import leverage_centers, nystrom
from .planner import SolverPlan, plan_solver, solve
from .result import KernelRidgeResult

__all__ = [
    "CGResult",
    "ConvergenceWarning",
    "KernelRidgeResult",
    "NonFiniteError",
    "SolverPlan",
    "cho_factor_inplace",
    "cholesky_solve",
    "conjugate_gradient",
    "default_centers",
    "diag_regularizer",
    "lapack_threads",
    "leverage_centers",
    "nystrom",
    "plan_solver",
    "singular_kernel_error",
    "solve",
]
