"""Convergence rates read off the kernel's eigenspectrum (SciPy eigensolvers only).

Under gradient flow on ``1/(2N) ||f - y||^2`` (N = n k), the train residual's component along
eigenvector v_i decays as ``exp(-lr lambda_i t / N)``; under discrete gradient descent by the factor
``|1 - lr lambda_i / N|`` per step, stable while ``lr < 2N / lambda_max``.  :func:`analyze` returns
those rates, the predicted loss curve, the target's energy per mode and a power-law fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from ._validation import check_lapack_size, check_positive_float

__all__ = ["SpectrumResult", "analyze", "fourier_feature_spectra"]


@dataclass
class SpectrumResult:
    """Eigenpairs (descending) and the convergence quantities derived from them."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray | None
    n: int
    n_outputs: int
    lr: float
    y_projection: np.ndarray | None = None  # (k_eig, k_out): V^T y
    y_energy_total: float | None = None
    method: str = "dense"
    extras: dict = field(default_factory=dict)

    @property
    def N(self) -> int:
        return self.n * self.n_outputs

    @property
    def max_lr(self) -> float:
        """Largest stable learning rate of discrete gradient descent, 2N / lambda_max."""
        return 2.0 * self.N / self.eigenvalues[0]

    @property
    def condition_number(self) -> float:
        lam_min = self.eigenvalues[-1]
        return math.inf if lam_min <= 0 else float(self.eigenvalues[0] / lam_min)

    @property
    def flow_rates(self) -> np.ndarray:
        """Per-mode gradient-flow decay rates lr lambda_i / N (per unit time)."""
        return self.lr * self.eigenvalues / self.N

    @property
    def step_rates(self) -> np.ndarray:
        """Per-mode discrete-GD rates -log|1 - lr lambda_i / N| per step (negative: diverging)."""
        with np.errstate(divide="ignore"):
            return -np.log(np.abs(1.0 - self.lr * self.eigenvalues / self.N))

    @property
    def alignment(self) -> np.ndarray:
        """Fraction of ||y||^2 along each computed eigenvector (learnability per mode)."""
        self._need_y()
        return np.sum(self.y_projection**2, axis=1) / self.y_energy_total

    def _need_y(self):
        if self.y_projection is None:
            raise ValueError("y: this needs the targets; call analyze(K, y=...)")

    def _residual_energy(self, t, discrete: bool) -> np.ndarray:
        self._need_y()
        t = np.asarray(t, dtype=np.float64)
        if discrete:
            factor = (1.0 - self.lr * self.eigenvalues / self.N)[None, :] ** (2 * t.reshape(-1, 1))
        else:
            factor = np.exp(-2.0 * self.flow_rates[None, :] * t.reshape(-1, 1))
        e = np.sum(self.y_projection**2, axis=1)
        outside = self.y_energy_total - e.sum()  # energy in modes not computed: not learned
        return (factor @ e + max(outside, 0.0)).reshape(t.shape)

    def loss(self, t, discrete: bool = False) -> np.ndarray:
        """Predicted training loss 1/(2N) ||y - f_t||^2 from f_0 = 0 at times (or steps) ``t``."""
        return self._residual_energy(t, discrete) / (2.0 * self.N)

    def learned_fraction(self, t, discrete: bool = False) -> np.ndarray:
        """1 - ||residual(t)||^2 / ||y||^2: the share of the target learned by time t."""
        return 1.0 - self._residual_energy(t, discrete) / self.y_energy_total

    def time_to_loss(self, tol: float) -> float:
        """Smallest gradient-flow time with loss <= tol (inf if never: energy in null modes)."""
        if self.loss(0.0) <= tol:
            return 0.0
        floor = float(self.loss(1e300))
        if floor > tol:
            return math.inf
        lo, hi = 0.0, 1.0
        while self.loss(hi) > tol:
            hi *= 2.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.loss(mid) > tol else (lo, mid)
            if hi - lo <= 1e-12 * hi:
                break
        return hi

    def power_law_exponent(self, fraction: tuple[float, float] = (0.05, 0.5)) -> float:
        """alpha in lambda_i ~ i^-alpha, fitted on log-log axes over the given range of indices."""
        lam = self.eigenvalues
        i0 = max(1, int(fraction[0] * len(lam)))
        i1 = max(i0 + 2, int(fraction[1] * len(lam)))
        idx = np.arange(i0, min(i1, len(lam)))
        keep = lam[idx] > 0
        if keep.sum() < 2:
            return math.nan
        slope = np.polyfit(np.log(idx[keep] + 1.0), np.log(lam[idx][keep]), 1)[0]
        return float(-slope)

    # ----------------------------------------------------------------------------- plotting
    def plot_spectrum(self, ax=None):
        """Eigenvalues against index on log-log axes (needs matplotlib)."""
        ax = _axes(ax)
        ax.loglog(np.arange(1, len(self.eigenvalues) + 1), np.clip(self.eigenvalues, 1e-300, None), ".")
        ax.set_xlabel("index i")
        ax.set_ylabel("eigenvalue")
        return ax

    def plot_alignment(self, ax=None):
        ax = _axes(ax)
        ax.semilogx(np.arange(1, len(self.eigenvalues) + 1), np.cumsum(self.alignment))
        ax.set_xlabel("modes")
        ax.set_ylabel("cumulative share of ||y||^2")
        return ax

    def plot_loss(self, t, measured=None, ax=None):
        ax = _axes(ax)
        ax.semilogy(t, self.loss(t), label="predicted")
        if measured is not None:
            ax.semilogy(t, measured, "--", label="measured")
        ax.set_xlabel("t")
        ax.set_ylabel("training loss")
        ax.legend()
        return ax


def _axes(ax):
    if ax is None:
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:  # pragma: no cover - optional
            raise ImportError("plots need matplotlib: pip install 'ntkfast[notebooks]'") from exc
        _, ax = plt.subplots()
    return ax


def analyze(
    K_or_operator,
    y=None,
    lr: float | None = None,
    k: int | None = None,
    method: str = "auto",
    sym_rtol: float = 1e-8,
) -> SpectrumResult:
    """Eigenspectrum and convergence rates of a kernel matrix or a symmetric LinearOperator.

    Parameters
    ----------
    K_or_operator : ndarray of shape (n, n) or scipy LinearOperator (e.g. ``ntkfast.GramOperator``)
    y : ndarray of shape (n,) or (n, k_out), default=None
        Targets, for the loss curve and the per-mode alignment.
    lr : float, default=None
        Learning rate; default N / lambda_max (half the stable bound 2N / lambda_max).
    k : int, default=None
        Number of top eigenpairs; None = all (dense only).
    method : {"auto", "dense", "eigsh", "lobpcg"}, default="auto"
        dense: ``scipy.linalg.eigh`` (``subset_by_index`` when k is given); eigsh/lobpcg: the
        top k of an operator without forming it.  auto: dense for arrays, eigsh for operators.
    """
    is_op = isinstance(K_or_operator, spla.LinearOperator)
    if is_op:
        op = K_or_operator
        if op.shape[0] != op.shape[1]:
            raise ValueError(f"K_or_operator: expected a square operator, got shape {op.shape}")
        n = op.shape[0]
    else:
        K = np.asarray(K_or_operator, dtype=np.float64)
        if K.ndim != 2 or K.shape[0] != K.shape[1] or K.size == 0:
            raise ValueError(f"K_or_operator: expected a non-empty square matrix, got shape {K.shape}")
        if not np.isfinite(K).all():
            raise ValueError("K_or_operator: contains NaN or inf")
        if np.abs(K - K.T).max() > sym_rtol * max(np.abs(K).max(), 1e-300):
            raise ValueError("K_or_operator: not symmetric (max |K - K.T| exceeds 1e-8 of max |K|)")
        K = 0.5 * (K + K.T)
        n = K.shape[0]
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n):
        raise ValueError(f"k: expected an integer in 1..{n}, got {k!r}")
    if method not in ("auto", "dense", "eigsh", "lobpcg"):
        raise ValueError(f"method: expected 'auto', 'dense', 'eigsh' or 'lobpcg', got {method!r}")
    if method == "auto":
        method = "eigsh" if is_op else "dense"
    if is_op and method == "dense":
        raise ValueError("method='dense' needs a matrix; use 'eigsh' or 'lobpcg' for an operator")
    if method in ("eigsh", "lobpcg") and k is None:
        if is_op:
            raise ValueError("k: required for eigsh/lobpcg (the number of top eigenpairs)")
        k = min(n - 1, 50)

    if method == "dense":
        check_lapack_size(n, "K", "use method='eigsh' with k top eigenpairs")
        if k is None or k == n:
            lam, V = scipy.linalg.eigh(K)
        else:
            lam, V = scipy.linalg.eigh(K, subset_by_index=[n - k, n - 1])
    elif method == "eigsh":
        A = op if is_op else spla.aslinearoperator(K)
        if k >= n:
            raise ValueError(f"k: eigsh computes at most n - 1 = {n - 1} eigenpairs; use method='dense'")
        lam, V = spla.eigsh(A, k=k, which="LA")
    else:
        A = op if is_op else spla.aslinearoperator(K)
        X0 = np.random.default_rng(0).standard_normal((n, k))
        lam, V = spla.lobpcg(A, X0, largest=True, tol=1e-10, maxiter=500)
    order = np.argsort(lam)[::-1]
    lam, V = np.clip(lam[order], 0.0, None), V[:, order]  # round-off negatives clipped

    y_proj = energy = None
    n_out = 1
    if y is not None:
        Y = np.asarray(y, dtype=np.float64)
        if Y.ndim not in (1, 2) or Y.shape[0] != n:
            raise ValueError(f"y: expected shape ({n},) or ({n}, k), got {Y.shape}")
        if not np.isfinite(Y).all():
            raise ValueError("y: contains NaN or inf")
        Y = Y.reshape(n, -1)
        n_out = Y.shape[1]
        y_proj = V.T @ Y
        energy = float(np.sum(Y * Y))
    if lr is None:
        lr = n * n_out / lam[0]
    else:
        lr = check_positive_float(lr, "lr")
    return SpectrumResult(lam, V, n, n_out, float(lr), y_proj, energy, method)


def fourier_feature_spectra(
    n: int = 256, scales=(1.0, 4.0, 16.0), depth: int = 3, n_features: int = 256, dim: int = 1, seed: int = 0
) -> dict:
    """NTK spectra of a ReLU MLP on a regular grid in [0, 1)^dim, plain and after random Fourier
    features of several scales (Tancik et al. 2020): larger scales make the spectrum fall off
    more slowly, so high frequencies are learned sooner.

    Returns ``{"plain": SpectrumResult, scale: SpectrumResult, ...}``.
    """
    from .gram import kernel
    from .spec import MLP, RandomFourierFeatures

    side = int(round(n ** (1.0 / dim)))
    grid = np.stack(np.meshgrid(*[np.arange(side) / side] * dim, indexing="ij"), -1).reshape(-1, dim)
    out = {"plain": analyze(kernel(MLP(depth=depth, activation="relu", b_std=0.1), grid))}
    for s in scales:
        arch = MLP(
            depth=depth,
            activation="relu",
            b_std=0.1,
            input_map=RandomFourierFeatures(n_features, scale=float(s), seed=seed),
        )
        out[s] = analyze(kernel(arch, grid))
    return out
