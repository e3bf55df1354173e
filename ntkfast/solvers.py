"""Kernel ridge regression solvers: exact (Cholesky) and matrix-free preconditioned conjugate
gradient on a :class:`ntkfast.GramOperator` (K never stored).

Both solve ``(K + reg I) alpha = y`` with ``reg = diag_reg * mean(diag K)`` (relative, as in
``ntkfast.predict``) unless ``diag_reg_absolute_scale``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator

from .predict import diag_regularizer

__all__ = ["CGResult", "ConvergenceWarning", "cholesky_solve", "conjugate_gradient"]


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


def cholesky_solve(K, y, diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False) -> np.ndarray:
    """Exact kernel ridge coefficients by a Cholesky factorisation (in place on a copy of K)."""
    K = np.array(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or not np.isfinite(K).all():
        raise ValueError(f"K: expected a finite square matrix, got shape {K.shape}")
    Y, squeeze = _targets(y, len(K))
    K[np.diag_indices_from(K)] += diag_regularizer(np.diag(K), diag_reg, diag_reg_absolute_scale)
    alpha = scipy.linalg.cho_solve(scipy.linalg.cho_factor(K, overwrite_a=True), Y)
    return alpha[:, 0] if squeeze else alpha


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
    ``maxiter`` ends the run before the relative residual reaches ``tol``; raises on NaN.
    """
    n = op.shape[0]
    if op.shape[0] != op.shape[1]:
        raise ValueError(f"op: expected a square operator, got shape {op.shape}")
    Y, squeeze = _targets(y, n)
    maxiter = 10 * n if maxiter is None else int(maxiter)
    if maxiter < 1 or not tol > 0:
        raise ValueError(f"tol and maxiter: expected tol > 0 and maxiter >= 1, got {tol!r}, {maxiter!r}")
    diag = op.diagonal() if hasattr(op, "diagonal") else None
    if preconditioner == "jacobi" and diag is None:
        raise ValueError("preconditioner='jacobi' needs op.diagonal(); pass preconditioner=None")
    if preconditioner not in ("jacobi", None):
        raise ValueError(f"preconditioner: expected 'jacobi' or None, got {preconditioner!r}")
    reg = diag_regularizer(diag if diag is not None else np.ones(1), diag_reg, diag_reg_absolute_scale)
    if diag is None and diag_reg and not diag_reg_absolute_scale:
        raise ValueError("diag_reg: a relative regulariser needs op.diagonal(); use diag_reg_absolute_scale=True")
    inv_m = 1.0 / (diag + reg) if preconditioner == "jacobi" else None

    def apply(V):
        return op @ V + reg * V

    X = np.zeros_like(Y) if x0 is None else np.array(x0, dtype=np.float64).reshape(Y.shape)
    R = Y - apply(X) if x0 is not None else Y.copy()
    Z = R * inv_m[:, None] if inv_m is not None else R
    P = Z.copy()
    rz = np.sum(R * Z, axis=0)
    norm_y = np.maximum(np.linalg.norm(Y, axis=0), 1e-300)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=maxiter, desc="CG")
    it = 0
    res = np.linalg.norm(R, axis=0) / norm_y
    try:
        while it < maxiter and res.max() > tol:
            AP = apply(P)
            pap = np.sum(P * AP, axis=0)
            step = np.where(pap > 0, rz / np.where(pap > 0, pap, 1.0), 0.0)
            X += P * step
            R -= AP * step
            res = np.linalg.norm(R, axis=0) / norm_y
            if not np.isfinite(res).all():
                raise FloatingPointError(
                    "conjugate_gradient: the residual became NaN/inf (is K positive semi-definite?)"
                )
            Z = R * inv_m[:, None] if inv_m is not None else R
            rz_new = np.sum(R * Z, axis=0)
            P = Z + P * np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
            rz = rz_new
            it += 1
            if bar is not None:
                bar.update()
                bar.set_postfix(residual=f"{res.max():.2e}")
    finally:
        if bar is not None:
            bar.close()
    converged = bool(res.max() <= tol)
    if not converged:
        warnings.warn(
            f"conjugate_gradient stopped after {it} iterations with relative residual {res.max():.3g} > tol={tol:g}",
            ConvergenceWarning,
            stacklevel=2,
        )
    return CGResult(X[:, 0] if squeeze else X, it, res, converged)
