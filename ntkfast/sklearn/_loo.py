"""Exact leave-one-out scores of kernel ridge regression for many ridges from one eigendecomposition.

The estimators fit ``f(x) = m + k(x)^T (K + lam I)^-1 (y - m 1)`` with ``m`` the target mean and
``lam = diag_reg * mean(diag K)``.  Refitted without point ``i``, both ``m`` and ``lam`` change:
``m_i = (S - y_i) / (n - 1)``, ``lam_i = diag_reg (tr K - K_ii) / (n - 1)``.  With
``G = (K + lam_i I)^-1`` the ridge identity ``z_i - f_{-i}(x_i) = (G z)_i / G_ii`` (any targets z,
any value of z_i) at ``z = y - m_i 1`` gives the left-out prediction exactly:

    f_{-i}(x_i) = y_i - [(G y)_i - m_i (G 1)_i] / G_ii.

From ``K = V diag(s) V^T`` the row ``i`` of ``G`` is ``V_i diag(1 / (s + lam_i)) V^T``, so every
left-out prediction for one ``diag_reg`` costs O(n^2 k) after the O(n^3) eigendecomposition: all
ridges of a grid share it.  The result equals n explicit refits of the estimator (to round-off).
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.special

__all__ = ["EigenLOO", "fit_temperature", "regression_score", "classification_score", "best_index"]


class EigenLOO:
    """Left-out predictions of the estimators' kernel ridge for any ``diag_reg``, from K's eigenpairs.

    Parameters
    ----------
    K : ndarray of shape (n, n), float64, n >= 2
        The training Gram (not modified).
    Y : ndarray of shape (n, k)
        Targets (one-hot for a classifier), not centred.
    """

    def __init__(self, K: np.ndarray, Y: np.ndarray):
        n = len(K)
        self.diag = np.diag(K).copy()
        lam, V = np.linalg.eigh(K)
        self.lam = np.clip(lam, 0.0, None)  # round-off negatives of a PSD Gram
        self.V = V
        self.Y = Y
        self.PQ = np.hstack([V.T @ Y, V.sum(axis=0)[:, None]])  # V^T [Y, 1], shared by every ridge
        self.m = (Y.sum(axis=0)[None, :] - Y) / (n - 1)  # the left-out target means, (n, k)

    def predictions(self, diag_reg: float) -> np.ndarray:
        """``f_{-i}(x_i)`` for every i, shape (n, k)."""
        n = len(self.diag)
        reg = diag_reg * (self.diag.sum() - self.diag) / (n - 1)
        VW = self.lam[None, :] + reg[:, None]  # row i: V_i / (s + lam_i), built in place (one n^2 buffer)
        np.reciprocal(VW, out=VW)
        VW *= self.V
        G_ii = np.einsum("ij,ij->i", VW, self.V)
        GZ = VW @ self.PQ  # [G Y, G 1]
        return self.Y - (GZ[:, :-1] - self.m * GZ[:, -1:]) / G_ii[:, None]


def fit_temperature(decision: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the mean log-loss of softmax(decision / T) at ``labels``."""
    rows = np.arange(len(labels))

    def log_loss(log_T):
        return -np.mean(scipy.special.log_softmax(decision / np.exp(log_T), axis=1)[rows, labels])

    # decision values live on the scale of the one-hot targets: T in [1e-3, 1e3] is ample
    return float(np.exp(scipy.optimize.minimize_scalar(log_loss, bounds=(-7.0, 7.0), method="bounded").x))


def regression_score(Y: np.ndarray, pred: np.ndarray) -> dict:
    """Leave-one-out R^2 averaged over outputs: per output 1 - SSE / SST of the left-out
    predictions (an output's squared error in units of its variance, so outputs on different
    scales count alike, as in ``r2_score``; a constant output scores -SSE)."""
    sse = np.sum((Y - pred) ** 2, axis=0)
    sst = np.sum((Y - Y.mean(axis=0)) ** 2, axis=0)
    r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), -sse)
    return {"score": float(np.mean(r2))}


def classification_score(decision: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy of left-out decision values, with the log-loss at the temperature fitted on them."""
    T = fit_temperature(decision, labels)
    log_loss = -float(np.mean(scipy.special.log_softmax(decision / T, axis=1)[np.arange(len(labels)), labels]))
    return {"score": float(np.mean(decision.argmax(axis=1) == labels)), "log_loss": log_loss, "temperature": T}


def best_index(results: list[dict]) -> int:
    """The highest score; among equal scores the lowest log-loss (classification), then the first."""
    keys = [(-r["score"], r.get("log_loss", 0.0)) for r in results]
    return min(range(len(results)), key=keys.__getitem__)
