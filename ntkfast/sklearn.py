"""scikit-learn estimators on the infinite-width kernels: :class:`NTKRegressor`, :class:`NTKClassifier`.

A fitted regressor is kernel regression with the NTK (``t = inf``, the function an infinitely wide
network trained by gradient flow converges to) or the output at a finite training time ``t``
(``ntkfast.predict.gradient_descent_mse``), or NNGP posterior regression with ``kernel="nngp"``.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import predict
from .gram import kernel
from .spec import MLP

__all__ = ["NTKRegressor", "NTKClassifier"]


class _NTKBase(BaseEstimator):
    """Parameters shared by the estimators; ``__init__`` stores them, ``fit`` validates them."""

    def __init__(
        self,
        *,
        depth: int = 3,
        activation="relu",
        W_std: float = 1.4,
        b_std: float | None = 0.1,
        parameterization: str = "ntk",
        input_map=None,
        kernel: str = "ntk",
        t: float = np.inf,
        lr: float = 1.0,
        diag_reg: float = 1e-4,
        solver: str = "auto",
        dtype=np.float64,
        backend: str = "auto",
        n_jobs: int | None = None,
    ):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.input_map = input_map
        self.kernel = kernel
        self.t = t
        self.lr = lr
        self.diag_reg = diag_reg
        self.solver = solver
        self.dtype = dtype
        self.backend = backend
        self.n_jobs = n_jobs

    def _arch(self) -> MLP:
        return MLP(
            depth=self.depth,
            activation=self.activation,
            W_std=self.W_std,
            b_std=self.b_std,
            parameterization=self.parameterization,
            input_map=self.input_map,
        )

    def _check_params(self):
        if self.kernel not in ("ntk", "nngp"):
            raise ValueError(f"kernel: expected 'ntk' or 'nngp', got {self.kernel!r}")
        if self.solver not in ("auto", "cholesky", "eigh"):
            raise ValueError(f"solver: expected 'auto', 'cholesky' or 'eigh', got {self.solver!r}")
        if not isinstance(self.diag_reg, numbers.Real) or not self.diag_reg >= 0:
            raise ValueError(f"diag_reg: expected a number >= 0, got {self.diag_reg!r}")
        if not isinstance(self.t, numbers.Real) or not self.t > 0:
            raise ValueError(f"t: expected a time > 0 (np.inf for convergence), got {self.t!r}")
        return self._arch()

    def _gram(self, X, Y=None):
        return kernel(self.arch_, X, Y, get=self.kernel, dtype=self.dtype, backend=self.backend, n_jobs=self.n_jobs)

    def _fit_targets(self, X, Y):
        """Solve for the dual coefficients of centred targets Y (n, k)."""
        self.arch_ = self._check_params()
        self.X_fit_ = X
        K = self._gram(X).astype(np.float64)
        K[np.diag_indices_from(K)] += predict.diag_regularizer(np.diag(K), self.diag_reg)
        # the NNGP posterior variance (predict(return_std=True)) needs the training Gram again
        self._train_gram = K.copy() if self.kernel == "nngp" else None
        self.y_mean_ = Y.mean(axis=0)
        Yc = Y - self.y_mean_
        if np.isinf(self.t) and self.solver in ("auto", "cholesky"):
            try:
                self.dual_coef_ = scipy.linalg.cho_solve(scipy.linalg.cho_factor(K), Yc)
            except np.linalg.LinAlgError:  # semi-definite after all: fall back to eigh
                self.dual_coef_ = self._eigh_coef(K, Yc)
        else:
            self.dual_coef_ = self._eigh_coef(K, Yc)
        return self

    def _eigh_coef(self, K, Yc):
        lam, V = np.linalg.eigh(K)
        lam = np.clip(lam, 0.0, None)
        if np.isinf(self.t):  # pseudo-inverse: modes at round-off level are not fitted
            lam = np.where(lam > 1e-12 * lam.max(), lam, 0.0)
        gain = predict._flow_gain(lam, self.lr * self.t / Yc.size)
        return V @ (gain[:, None] * (V.T @ Yc))

    def _test_gram(self, X):
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X, self._gram(X, self.X_fit_).astype(np.float64)

    def _decision(self, X):
        return self._test_gram(X)[1] @ self.dual_coef_ + self.y_mean_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class NTKRegressor(RegressorMixin, _NTKBase):
    """Regression with the infinite-width NTK (or NNGP) of an MLP.

    ``t = inf`` (default): kernel regression, the limit of an infinitely wide network trained by
    gradient flow on the MSE loss (outputs at initialisation taken as 0, targets centred).  Finite
    ``t``: the prediction of that network after training time ``t`` with learning rate ``lr``.

    Examples
    --------
    >>> import numpy as np
    >>> from ntkfast.sklearn import NTKRegressor
    >>> X = np.random.default_rng(0).standard_normal((40, 3))
    >>> reg = NTKRegressor().fit(X, X[:, 0] ** 2)
    >>> reg.predict(X[:2]).shape
    (2,)
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=[np.float64, np.float32])
        Y = np.asarray(y, dtype=np.float64)
        self._single_output = Y.ndim == 1
        return self._fit_targets(X, Y.reshape(len(Y), -1))

    def predict(self, X, return_std: bool = False):
        """Predictions; ``return_std=True`` (NNGP kernel only) also gives the posterior std."""
        X, Kx = self._test_gram(X)
        out = Kx @ self.dual_coef_ + self.y_mean_
        mean = out[:, 0] if self._single_output else out
        if not return_std:
            return mean
        if self.kernel != "nngp":
            raise ValueError("return_std: a posterior variance is defined for kernel='nngp'")
        K = self._train_gram
        _, cov = predict.gp_inference(K, np.zeros(len(K)), Kx, kernel(self.arch_, X, get="nngp"))
        return mean, np.sqrt(np.clip(np.diag(cov), 0.0, None))


class NTKClassifier(ClassifierMixin, _NTKBase):
    """Classification by NTK kernel regression on centred one-hot targets (Arora et al. 2020).

    ``predict_proba`` is the softmax of the decision values at temperature ``temperature_`` = 1:
    it orders classes like ``predict`` but is not calibrated (a fitted temperature is not done yet).
    """

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self._binarizer = LabelBinarizer()
        Y = self._binarizer.fit_transform(y).astype(np.float64)
        self.classes_ = self._binarizer.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"y: needs at least 2 classes, got {len(self.classes_)} class")
        if Y.shape[1] == 1:  # binary: two columns, as for multiclass
            Y = np.hstack([1.0 - Y, Y])
        self._fit_targets(X, Y)
        self.temperature_ = 1.0
        return self

    def decision_function(self, X):
        d = self._decision(X)
        return d[:, 1] - d[:, 0] if len(self.classes_) == 2 else d

    def predict(self, X):
        d = self._decision(X)
        return self.classes_[np.argmax(d, axis=1)]

    def predict_proba(self, X):
        d = self._decision(X) / self.temperature_
        d = d - d.max(axis=1, keepdims=True)
        e = np.exp(d)
        return e / e.sum(axis=1, keepdims=True)
