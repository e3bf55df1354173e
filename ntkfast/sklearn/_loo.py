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

from ..solvers.dense import flow_gain
from ._loo_eigh import eigh_inplace
from ._loo_sums import loo_sums

__all__ = ["EigenLOO", "fit_temperature", "regression_score", "classification_score", "best_index"]


class EigenLOO:
    """Left-out predictions of the estimators' kernel ridge for any ``diag_reg``, from K's eigenpairs.

    Parameters
    ----------
    K : ndarray of shape (n, n), float64, n >= 2
        The training Gram (not modified unless ``overwrite_k``).
    Y : ndarray of shape (n, k)
        Targets (one-hot for a classifier), not centred.
    overwrite_k : bool, default=False
        K is the caller's scratch: the eigenvectors are written into its memory (no second n x n
        buffer, and LAPACK's divide-and-conquer driver runs on it without a copy).
    """

    def __init__(self, K: np.ndarray, Y: np.ndarray, overwrite_k: bool = False):
        diag = np.diag(K).copy()
        # with overwrite the eigenvectors are written over K (in place, no second n^2 buffer);
        # either way the LAPACK call lets other threads run (``_loo_eigh``)
        own = overwrite_k and K.dtype == np.float64 and (K.flags.c_contiguous or K.flags.f_contiguous)
        own = own and K.flags.writeable
        eigenvalues, V = eigh_inplace(K if own else np.array(K, dtype=np.float64, order="F"))
        self._setup(eigenvalues, V, diag, Y)

    @classmethod
    def from_eigenpairs(cls, eigenvalues: np.ndarray, V: np.ndarray, diag: np.ndarray, Y: np.ndarray) -> EigenLOO:
        """From K's eigenpairs (``K = V diag(eigenvalues) V^T``, as ``eigh_inplace`` gives them) and
        its diagonal (taken before the decomposition overwrote K)."""
        loo = cls.__new__(cls)
        loo._setup(eigenvalues, V, np.asarray(diag, dtype=np.float64), Y)
        return loo

    def _setup(self, eigenvalues, V, diag, Y):
        n = len(diag)
        self.diag = diag
        self.eigenvalues = eigenvalues  # as LAPACK gave them (the refit's K + reg I has them + reg)
        self.lam = np.clip(eigenvalues, 0.0, None)  # round-off negatives of a PSD Gram
        self.V = V
        self.Y = Y
        self.PQ = np.hstack([V.T @ Y, V.sum(axis=0)[:, None]])  # V^T [Y, 1], shared by every ridge
        self.m = (Y.sum(axis=0)[None, :] - Y) / (n - 1)  # the left-out target means, (n, k)
        self.scale = (diag.sum() - diag) / (n - 1)  # lam_i = diag_reg * scale_i

    def predictions(self, diag_reg: float) -> np.ndarray:
        """``f_{-i}(x_i)`` for every i, shape (n, k) (NumPy, n x n temporaries: the reference for
        :meth:`predictions_all`)."""
        reg = diag_reg * self.scale
        VW = self.lam[None, :] + reg[:, None]  # row i: V_i / (s + lam_i), built in place (one n^2 buffer)
        np.reciprocal(VW, out=VW)
        VW *= self.V
        G_ii = np.einsum("ij,ij->i", VW, self.V)
        GZ = VW @ self.PQ  # [G Y, G 1]
        return self.Y - (GZ[:, :-1] - self.m * GZ[:, -1:]) / G_ii[:, None]

    def predictions_all(self, diag_regs, n_jobs: int = 1) -> np.ndarray:
        """``f_{-i}(x_i)`` for every ridge of ``diag_regs`` and every i, shape (len(diag_regs), n, k),
        from one pass over the eigenvectors (``_loo_sums``; no n x n temporaries)."""
        G, GZ = loo_sums(self.V.T, self.lam, self.PQ, self.scale, np.asarray(diag_regs, dtype=np.float64), n_jobs)
        GY = np.transpose(GZ[:, :-1, :], (0, 2, 1))  # (R, n, k)
        G1 = GZ[:, -1, :, None]
        return self.Y[None] - (GY - self.m[None] * G1) / G[:, :, None]

    def ridge_fit(self, reg: float, Yc: np.ndarray, loo: bool = False):
        """Kernel ridge on all n points with the absolute ridge ``reg``, from these eigenpairs, as the
        estimators' "eigh" solver computes it from the eigendecomposition of ``K + reg I`` (whose
        eigenpairs are these, shifted by ``reg``): the pseudo-inverse with round-off modes left out.

        Parameters
        ----------
        reg : float
            The ridge added to the diagonal (``diag_reg * mean(diag K)``).
        Yc : ndarray of shape (n, k)
            Centred targets.
        loo : bool, default=False
            Also the leave-one-out values of that fit (full-data mean and ridge, the linear-smoother
            formula ``(f_i - H_ii y_i) / (1 - H_ii)``, as the estimators' ``loo_``), centred.

        Returns
        -------
        coef : ndarray of shape (n, k)
            ``(K + reg I)^+ Yc``.
        gain : ndarray of shape (n,)
            ``1 / (s_j + reg)`` per mode (0 for a round-off mode).
        loo_c : ndarray of shape (n, k) or None
        """
        lam = np.clip(self.eigenvalues + reg, 0.0, None)
        lam = np.where(lam > 1e-12 * lam.max(), lam, 0.0)
        gain = flow_gain(lam, np.inf)
        coef = self.V @ (gain[:, None] * (self.V.T @ Yc))
        if not loo:
            return coef, gain, None
        h = np.clip(lam - reg, 0.0, None) * gain
        f = self.V @ (h[:, None] * (self.V.T @ Yc))
        H_ii = np.einsum("ij,j,ij->i", self.V, h, self.V)
        keep = 1.0 - H_ii > 1e-10  # an interpolated point has no leave-one-out information
        loo_c = np.where(keep[:, None], (f - H_ii[:, None] * Yc) / np.where(keep, 1.0 - H_ii, 1.0)[:, None], f)
        return coef, gain, loo_c

    def iter_predictions(self, diag_regs, n_jobs: int = 1):
        """``(diag_reg, f_{-i}(x_i) for every i)`` for each ridge, from :meth:`predictions_all` over
        groups of ridges whose results together take at most about one n x n buffer (a long grid
        of many classes never holds every ridge's (n, k) arrays at once)."""
        n, k = self.Y.shape
        per_ridge = 8 * n * (2 * k + 2)  # G, [G Y, G 1] and the predictions of one ridge
        group = max(1, (8 * n * n) // per_ridge)
        diag_regs = tuple(diag_regs)
        for start in range(0, len(diag_regs), group):
            chunk = diag_regs[start : start + group]
            yield from zip(chunk, self.predictions_all(chunk, n_jobs))


def fit_temperature(decision: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the mean log-loss of softmax(decision / T) at ``labels``."""
    rows = np.arange(len(labels))
    top = decision.max(axis=1, keepdims=True)
    shifted = decision - top  # <= 0 (-inf: a class a k-fold training fold lacked): exp never overflows
    margin = np.mean(shifted[rows, labels])  # mean of (d_label - d_max), <= 0
    buffer = np.empty_like(shifted)

    def log_loss(log_T):
        # mean_i [logsumexp(d_i / T) - d_i,label / T] with the row maximum taken out (a few
        # vectorised passes over n x k: the search calls this ~30 times per candidate)
        inv = np.exp(-log_T)
        np.multiply(shifted, inv, out=buffer)
        np.exp(buffer, out=buffer)
        return float(np.mean(np.log(buffer.sum(axis=1))) - margin * inv)

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
