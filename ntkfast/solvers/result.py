"""A fitted kernel ridge model ``f(x) = K(x, centers) @ alpha``, as every solver of this package returns it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import tiling
from .._validation import check_array
from ..gram_operator import GramOperator
from ..spec import MLP

__all__ = ["KernelRidgeResult"]


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

        Raises
        ------
        InsufficientMemoryError
            The (n_test, k) predictions do not fit the memory budget: predict in batches of rows.
        """
        X = check_array(X, "X", np.dtype(np.float64), n_features=self.centers.shape[1])
        k = self.alpha.shape[1]
        tiling.check_fits(
            2 * 8 * len(X) * k,
            f"predict: {len(X)} x {k} predictions",
            "Predict in batches of rows (e.g. 100 000 at a time).",
        )
        op = GramOperator(self.arch, X, self.centers, get=self.get, dtype=self.dtype, progress=progress)
        out = np.asarray(op @ self.alpha.astype(self.dtype), dtype=np.float64)
        return out[:, 0] if self.squeeze else out
