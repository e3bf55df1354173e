"""Convergence rates read off the kernel's eigenspectrum (SciPy eigensolvers only).

Under gradient flow on ``1/(2N) ||f - y||^2`` (N = n k), the train residual's component along
eigenvector v_i decays as ``exp(-lr lambda_i t / N)``; under discrete gradient descent by the factor
``|1 - lr lambda_i / N|`` per step, stable while ``lr < 2N / lambda_max``.  :func:`analyze` returns
those rates, the predicted loss curve, the target's energy per mode and a power-law fit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from . import tiling
from ._validation import (
    as_square_matrix,
    check_lapack_size,
    check_nonnegative_float,
    check_positive_float,
    check_real,
    check_targets,
)
from .errors import ArgumentError, ArgumentTypeError, SingularKernelError
from .solvers.cg import check_symmetric_operator
from .solvers.dense import NonFiniteError, check_symmetric

__all__ = ["SpectrumResult", "analyze"]

METHODS = ("auto", "dense", "eigsh", "lobpcg")


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
        """Largest stable learning rate of discrete gradient descent, 2N / lambda_max (inf if K = 0)."""
        lam_max = self.eigenvalues[0]
        return math.inf if lam_max <= 0 else float(2.0 * self.N / lam_max)

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
        self._need_y(nonzero=True)
        return np.sum(self.y_projection**2, axis=1) / self.y_energy_total

    def _need_y(self, nonzero: bool = False):
        if self.y_projection is None:
            raise ArgumentError("y: this needs the targets; call analyze(K, y=...)")
        if nonzero and not self.y_energy_total > 0:
            raise ArgumentError("y: the targets are all zero, so shares of ||y||^2 are undefined")

    def _residual_energy(self, t, discrete: bool) -> np.ndarray:
        self._need_y()
        t = _times(t)
        if discrete:
            factor = (1.0 - self.lr * self.eigenvalues / self.N)[None, :] ** (2 * t.reshape(-1, 1))
        else:
            factor = np.exp(-2.0 * self.flow_rates[None, :] * t.reshape(-1, 1))
        e = np.sum(self.y_projection**2, axis=1)
        outside = self.y_energy_total - e.sum()  # energy in modes not computed: not learned
        with np.errstate(invalid="ignore", over="ignore"):  # a diverging mode without energy adds 0, not NaN
            kept = np.where(e > 0, factor * e, 0.0).sum(axis=1)
        return (kept + max(outside, 0.0)).reshape(t.shape)

    def loss(self, t, discrete: bool = False) -> np.ndarray:
        """Predicted training loss 1/(2N) ||y - f_t||^2 from f_0 = 0 at times (or steps) ``t``."""
        return self._residual_energy(t, discrete) / (2.0 * self.N)

    def learned_fraction(self, t, discrete: bool = False) -> np.ndarray:
        """1 - ||residual(t)||^2 / ||y||^2: the share of the target learned by time t."""
        self._need_y(nonzero=True)
        return 1.0 - self._residual_energy(t, discrete) / self.y_energy_total

    def time_to_loss(self, tol: float) -> float:
        """Smallest gradient-flow time with loss <= tol (inf if never: energy in null modes)."""
        tol = check_nonnegative_float(tol, "tol")
        if self.loss(0.0) <= tol:
            return 0.0
        if tol == 0:  # the loss decays to 0 only as t -> inf (a finite answer would be underflow's)
            return math.inf
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
        """alpha in lambda_i ~ i^-alpha, fitted on log-log axes over the given range of indices
        (fractions of the number of eigenvalues, ``0 <= lo < hi <= 1``); NaN when fewer than two
        positive eigenvalues fall in the range."""
        if not isinstance(fraction, (tuple, list)) or len(fraction) != 2:
            raise ArgumentTypeError(f"fraction: expected a pair (lo, hi), got {fraction!r}")
        lo, hi = (check_real(f, "fraction") for f in fraction)
        if not 0 <= lo < hi <= 1:
            raise ArgumentError(f"fraction: expected 0 <= lo < hi <= 1, got {fraction!r}")
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


def _times(t) -> np.ndarray:
    try:
        arr = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"t: expected times >= 0 (np.inf allowed) ({exc})") from None
    if np.isnan(arr).any() or (arr < 0).any():
        raise ArgumentError(f"t: expected times >= 0 (np.inf allowed), got {t!r}")
    return arr


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
    sym_rtol : float, default=1e-8
        A matrix K with ``max |K - K^T| > sym_rtol max |K|`` is refused; an operator gets one
        probe product (skipped when it says ``op.symmetric``, as ``ntkfast.GramOperator`` does).

    Returns
    -------
    SpectrumResult

    Raises
    ------
    ArgumentError
        Non-square, non-symmetric, NaN/inf input, or a bad ``k``, ``method``, ``y`` or ``lr``.
    SingularKernelError
        No positive eigenvalue while ``lr`` is to be defaulted (K = 0), or lobpcg's block lost
        rank (fewer than k eigenvalues above round-off).
    InsufficientMemoryError
        The dense eigendecomposition (or the eigsh/lobpcg work vectors) does not fit the budget.
    """
    is_op = isinstance(K_or_operator, spla.LinearOperator)
    if is_op:
        op = K_or_operator
        if op.shape[0] != op.shape[1]:
            raise ArgumentError(f"K_or_operator: expected a square operator, got shape {op.shape}")
        n = op.shape[0]
    else:
        if hasattr(K_or_operator, "toarray") or hasattr(K_or_operator, "tocsr"):
            raise ArgumentTypeError("K_or_operator: sparse matrices are not supported; pass a dense array")
        given = K_or_operator
        if isinstance(given, np.ndarray) and given.ndim == 2 and given.dtype != np.float64:
            tiling.check_fits(
                8 * given.size, f"analyze: a float64 copy of K {given.shape}", "Pass K in float64, or use eigsh on it."
            )
        K = as_square_matrix(K_or_operator, "K_or_operator")
        n = K.shape[0]
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n):
        raise ArgumentError(f"k: expected an integer in 1..{n}, got {k!r}")
    if not isinstance(method, str) or method not in METHODS:
        raise ArgumentError(f"method: expected one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "eigsh" if is_op else "dense"
    if is_op and method == "dense":
        raise ArgumentError("method='dense' needs a matrix; use 'eigsh' or 'lobpcg' for an operator")
    if method in ("eigsh", "lobpcg") and k is None:
        if is_op:
            raise ArgumentError("k: required for eigsh/lobpcg (the number of top eigenpairs)")
        k = min(n - 1, 50)
    if method == "eigsh" and k >= n:
        raise ArgumentError(f"k: eigsh computes at most n - 1 = {n - 1} eigenpairs; use method='dense'")
    sym_rtol = check_nonnegative_float(sym_rtol, "sym_rtol")
    Y = None
    if y is not None:
        Y, _ = check_targets(y, n)
    if lr is not None:
        lr = check_positive_float(lr, "lr")

    if method == "dense":
        check_lapack_size(n, "K", "use method='eigsh' with k top eigenpairs")
        vectors = n if k is None else k
        tiling.check_fits(
            8 * n * (2 * n + vectors),
            f"analyze: the dense eigendecomposition of a {n} x {n} K (a symmetrised copy, LAPACK's "
            f"workspace and {vectors} eigenvectors)",
            "Use method='eigsh' with k top eigenpairs, on K or on an ntkfast.GramOperator.",
        )
    else:
        tiling.check_fits(
            8 * n * (10 * k + 20),
            f"analyze: {method} with k = {k} on n = {n} (its n x O(k) work vectors)",
            "Ask for fewer eigenpairs (k).",
        )
    if not is_op:
        if not np.isfinite(K).all():
            raise ArgumentError("K_or_operator: contains NaN or inf")
        check_symmetric(K, "K_or_operator", sym_rtol)
    else:
        check_symmetric_operator(op, "K_or_operator")

    if method == "dense":
        S = K + K.T  # the symmetric part, in the one n^2 copy LAPACK may overwrite
        S *= 0.5
        subset = None if k is None or k == n else [n - k, n - 1]
        lam, V = scipy.linalg.eigh(S, subset_by_index=subset, overwrite_a=True, check_finite=False)
        del S
    elif method == "eigsh":
        A = op if is_op else spla.aslinearoperator(K)  # symmetric to sym_rtol: checked above
        try:
            lam, V = spla.eigsh(A, k=k, which="LA")
        except spla.ArpackNoConvergence:
            raise
        except spla.ArpackError as exc:  # e.g. -9: A maps the starting vector to zero
            raise SingularKernelError(
                f"eigsh: ARPACK failed ({exc}): the kernel is zero on a random vector, or has fewer than "
                f"k = {k} eigenvalues clearly above zero; ask for fewer eigenpairs (k) or use method='dense'"
            ) from None
    else:
        A = op if is_op else spla.aslinearoperator(K)
        X0 = np.random.default_rng(0).standard_normal((n, k))
        try:
            lam, V = spla.lobpcg(A, X0, largest=True, tol=1e-10, maxiter=500)
        except np.linalg.LinAlgError as exc:
            raise SingularKernelError(
                f"lobpcg: the block of {k} vectors lost rank ({exc}): K has fewer than k = {k} eigenvalues "
                "clearly above round-off; ask for fewer eigenpairs (k) or use method='eigsh'"
            ) from None
    if not np.isfinite(lam).all():
        raise NonFiniteError(f"analyze: {method} returned NaN/inf eigenvalues")
    order = np.argsort(lam)[::-1]
    lam, V = np.clip(lam[order], 0.0, None), V[:, order]  # round-off negatives clipped

    y_proj = energy = None
    n_out = 1
    if Y is not None:
        n_out = Y.shape[1]
        with np.errstate(over="ignore"):  # checked just below
            y_proj = V.T @ Y
            energy = float(np.sum(Y * Y))
        if not (np.isfinite(energy) and np.isfinite(y_proj).all()):
            raise ArgumentError("y: ||y||^2 overflows float64; rescale the targets (e.g. standardise them)")
    if lr is None:
        if not lam[0] > 0:
            raise SingularKernelError(
                "K_or_operator: has no positive eigenvalue (K = 0 up to round-off), so the default "
                "learning rate N / lambda_max is undefined; pass lr, or check the kernel"
            )
        with np.errstate(over="ignore"):  # checked just below
            lr = n * n_out / lam[0]
        if not np.isfinite(lr):
            raise SingularKernelError(
                f"K_or_operator: lambda_max = {lam[0]:.3g} is too small for the default learning rate "
                "N / lambda_max in float64; pass lr, or rescale K"
            )
    return SpectrumResult(lam, V, n, n_out, float(lr), y_proj, energy, method)


def fourier_feature_spectra(*args, **kwargs) -> dict:
    """Deprecated: moved to :func:`ntkfast.experiments.fourier_feature_spectra` (an experiment, not
    part of the spectrum analysis); this alias forwards there with a DeprecationWarning."""
    warnings.warn(
        "ntkfast.spectrum.fourier_feature_spectra moved to ntkfast.experiments.fourier_feature_spectra",
        DeprecationWarning,
        stacklevel=2,
    )
    from . import experiments  # lazy: experiments uses analyze from this module

    return experiments.fourier_feature_spectra(*args, **kwargs)
