"""Matrix-free block conjugate gradient for kernel ridge regression, ``(K + reg I) alpha = y``.

:func:`block_cg` is the iteration itself (shared with the Nyström solver, which runs it on
FALKON's preconditioned system); :func:`conjugate_gradient` applies it to a symmetric operator
such as :class:`ntkfast.GramOperator`, which recomputes K's tiles at every product and never
stores K.  A Ctrl-C stops the iteration at the next product and propagates: no partial
solution is returned.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .. import tiling
from .._validation import check_choice, check_positive_float, check_positive_int, check_targets
from ..errors import ArgumentError, ArgumentTypeError
from .dense import NonFiniteError, diag_regularizer

__all__ = [
    "CGResult",
    "ConvergenceWarning",
    "block_cg",
    "check_cg_vectors",
    "check_symmetric_operator",
    "conjugate_gradient",
]

# CG keeps X, R, Z, P and A P (n x k each) and forms one more n x k temporary per step
CG_VECTORS = 6


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance."""


@dataclass
class CGResult:
    """Solution of (K + reg I) alpha = y, the iterations taken and the final relative residuals."""

    alpha: np.ndarray
    iterations: int
    residual: np.ndarray  # ||y - (K + reg) alpha|| / ||y|| per column
    converged: bool


def check_cg_vectors(n: int, k: int, who: str) -> None:
    """Refuse, before anything is allocated, CG vectors for n rows and k right-hand sides beyond the budget."""
    tiling.check_fits(
        8 * CG_VECTORS * n * k,
        f"{who}: the conjugate-gradient vectors ({CG_VECTORS} x {n} x {k} float64)",
        "Solve fewer right-hand sides (columns of y) at a time, or raise NTKFAST_MEMORY_BUDGET.",
    )


def check_symmetric_operator(op: LinearOperator, name: str = "op") -> None:
    """Refuse an operator that is clearly not symmetric: ``u^T (A v)`` against ``v^T (A u)`` for two
    fixed random vectors (one product with two columns).  Skipped for operators that say they are
    symmetric (``op.symmetric``, as :class:`ntkfast.GramOperator` does).  The tolerance (1e-6, 1e-3
    for float32 operators, of ``||u|| ||A v||``) lets round-off pass and catches a wrong operator:
    CG on it would return a wrong answer with a small recurrence residual.
    """
    if getattr(op, "symmetric", False) is True:
        return
    n = op.shape[0]
    U = np.random.default_rng(0).standard_normal((n, 2))
    W = np.asarray(op @ U, dtype=np.float64).reshape(n, 2)
    if not np.isfinite(W).all():
        raise NonFiniteError(f"{name}: the operator returned NaN/inf")
    rtol = 1e-3 if np.dtype(getattr(op, "dtype", None) or np.float64) == np.float32 else 1e-6
    gap = abs(U[:, 0] @ W[:, 1] - U[:, 1] @ W[:, 0])
    scale = 0.5 * (
        np.linalg.norm(U[:, 0]) * np.linalg.norm(W[:, 1]) + np.linalg.norm(U[:, 1]) * np.linalg.norm(W[:, 0])
    )
    if gap > rtol * scale:
        raise ArgumentError(
            f"{name}: not symmetric (u^T A v and v^T A u differ by {gap / max(scale, 1e-300):.3g} relative); "
            "conjugate gradient needs a symmetric positive semi-definite operator"
        )


def block_cg(apply, B, tol, maxiter, precondition=None, X0=None, progress=False, desc="CG", who="conjugate_gradient"):
    """Preconditioned CG for ``A X = B`` on all columns of B at once (one ``apply`` per step).

    Stops when every column's relative residual ``||b - A x|| / ||b||`` is at most ``tol``, or
    after ``maxiter`` steps (ConvergenceWarning).  NaN/inf raises NonFiniteError (a FloatingPointError); a step
    with ``p^T A p <= 0`` on an unconverged column (A not positive definite, or precision
    exhausted) stops with a ConvergenceWarning instead of looping on to ``maxiter``.
    KeyboardInterrupt propagates (the progress bar is closed on the way).

    Returns
    -------
    (X, iterations, residuals, converged)
    """
    # each column is solved for b / max|b| and scaled back: CG is linear in b, so no inner
    # product overflows or underflows whatever the targets' scale
    scale = np.max(np.abs(B), axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    B = B / scale
    X = np.zeros_like(B) if X0 is None else X0 / scale
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
                raise NonFiniteError(f"{who}: the operator returned NaN/inf at iteration {it + 1}")
            active = res > tol  # converged columns stay put
            if (pap[active] <= 0).any():
                breakdown = True
                break
            step = np.where(active, rz / np.where(pap > 0, pap, 1.0), 0.0)
            X += P * step
            R -= AP * step
            res = np.linalg.norm(R, axis=0) / norm_b
            if not np.isfinite(res).all():
                raise NonFiniteError(f"{who}: the residual became NaN/inf (is the operator positive semi-definite?)")
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
    X *= scale
    if not np.isfinite(X).all():
        raise NonFiniteError(f"{who}: the solution overflows float64; rescale y or raise diag_reg")
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
    its tiles once per iteration).

    Parameters
    ----------
    op : scipy.sparse.linalg.LinearOperator of shape (n, n)
        Symmetric positive semi-definite, e.g. :class:`ntkfast.GramOperator`.  Other operators
        get one probe product that refuses a clearly non-symmetric one.
    y : array-like of shape (n,) or (n, k)
    diag_reg : float, default=0.0
        Ridge, relative to ``mean(op.diagonal())`` unless ``diag_reg_absolute_scale``.
    diag_reg_absolute_scale : bool, default=False
    tol : float, default=1e-8
        Relative residual ``||y - (K + reg) alpha|| / ||y||`` per column at which CG stops.
    maxiter : int, default=None
        At most this many iterations (default ``10 n``); :class:`ConvergenceWarning` when it ends
        the run before ``tol``, or when CG breaks down (``p^T A p <= 0``).
    preconditioner : {"jacobi", None}, default="jacobi"
        "jacobi" divides by the diagonal (needs ``op.diagonal()``); None for plain CG.
    x0 : array-like of shape (n,) or (n, k), default=None
        Starting point.
    progress : bool, default=False
        A tqdm bar with the residual.

    Returns
    -------
    CGResult

    Raises
    ------
    NonFiniteError
        The operator returned NaN or inf (a ``FloatingPointError``).
    KeyboardInterrupt
        Ctrl-C stops at the next product; nothing is returned.
    """
    if not isinstance(op, LinearOperator):
        raise ArgumentTypeError(
            f"op: expected a scipy LinearOperator (e.g. ntkfast.GramOperator), got {type(op).__name__}"
        )
    n = op.shape[0]
    if op.shape[0] != op.shape[1]:
        raise ArgumentError(f"op: expected a square operator, got shape {op.shape}")
    Y, squeeze = check_targets(y, n)
    tol = check_positive_float(tol, "tol")
    maxiter = check_positive_int(10 * n if maxiter is None else maxiter, "maxiter")
    if preconditioner is not None:
        check_choice(preconditioner, "preconditioner", ("jacobi", None))
    check_cg_vectors(n, Y.shape[1], "conjugate_gradient")
    check_symmetric_operator(op)
    diag = op.diagonal() if hasattr(op, "diagonal") else None
    if preconditioner == "jacobi" and diag is None:
        raise ArgumentError("preconditioner='jacobi' needs op.diagonal(); pass preconditioner=None")
    if diag is None and diag_reg and not diag_reg_absolute_scale:
        raise ArgumentError("diag_reg: a relative regulariser needs op.diagonal(); use diag_reg_absolute_scale=True")
    reg = diag_regularizer(diag if diag is not None else np.ones(1), diag_reg, diag_reg_absolute_scale)
    inv_m = None
    if preconditioner == "jacobi":
        shifted = np.asarray(diag, dtype=np.float64) + reg
        if not (np.isfinite(shifted).all() and (shifted >= 0).all()):
            raise ArgumentError(
                "preconditioner='jacobi': op.diagonal() + reg has negative or NaN entries (the operator is not "
                "positive semi-definite); pass preconditioner=None"
            )
        # a zero diagonal entry of a PSD operator means a zero row: any positive scaling is right
        inv_m = (1.0 / np.where(shifted > 0, shifted, 1.0))[:, None]

    def apply(V):
        return op @ V + reg * V

    X0 = None
    if x0 is not None:
        X0, _ = check_targets(x0, n, "x0")
        if X0.shape != Y.shape:
            want = Y.shape[:1] if squeeze else Y.shape
            raise ArgumentError(f"x0: expected the shape of y, {want}, got {np.shape(x0)}")
    precondition = (lambda R: R * inv_m) if inv_m is not None else None
    X, it, res, converged = block_cg(apply, Y, tol, maxiter, precondition, X0, progress, "CG")
    return CGResult(X[:, 0] if squeeze else X, it, res, converged)
