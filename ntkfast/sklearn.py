"""scikit-learn estimators on the infinite-width kernels (:class:`NTKRegressor`, :class:`NTKClassifier`)
and the kernels themselves for Gaussian processes and other kernel methods (:class:`NTKKernel`,
:class:`NNGPKernel`).

A fitted regressor is kernel regression with the NTK (``t = inf``, the function an infinitely wide
network trained by gradient flow converges to) or the output at a finite training time ``t``
(``ntkfast.predict.gradient_descent_mse``), or NNGP posterior regression with ``kernel="nngp"``.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import predict, solvers
from ._validation import check_lapack_size
from .gram import kernel, kernel_diag
from .kernel_grad import kernel_with_gradient
from .spec import MLP

__all__ = ["NTKRegressor", "NTKClassifier", "NTKKernel", "NNGPKernel"]

_SOLVERS = ("auto", "cholesky", "eigh", "cg", "nystrom")


_PARAMETERS_DOC = """
    Parameters
    ----------
    depth : int, default=3
        Hidden layers of the MLP (``ntkfast.MLP``).
    activation : str or activation object, default="relu"
    W_std : float, default=1.4
    b_std : float or None, default=0.1
        None: no bias.
    parameterization : {"ntk", "standard"}, default="ntk"
    input_map : ntkfast.FourierFeatures or ntkfast.RandomFourierFeatures, default=None
    kernel : {"ntk", "nngp"}, default="ntk"
    t : float, default=np.inf
        Training time of the infinitely wide network (np.inf: kernel regression).
    lr : float, default=1.0
        Learning rate of that training (matters only for finite ``t``).
    diag_reg : float, default=1e-4
        Ridge, relative to the mean of the Gram's diagonal.
    solver : {"auto", "cholesky", "eigh", "cg", "nystrom"}, default="auto"
        "auto": Cholesky when the n x n Gram fits the memory budget, else matrix-free conjugate
        gradient (n <= 100 000) or Nystrom-preconditioned CG (``ntkfast.solvers.plan_solver``);
        a finite ``t`` uses "eigh".
    n_centers : int, default=None
        Nystrom centres (default 2 sqrt(n)).
    tol, max_iter : float, int, default=None
        Stopping rule of the iterative solvers (defaults: see ``ntkfast.solvers.solve``).
    random_state : int, default=None
        Seed of the Nystrom centres.
    dtype : {np.float64, np.float32}, default=np.float64
        Precision of the kernel (solves are float64).
    backend : {"auto", "cpu", "gpu"}, default="auto"
    n_jobs : int, default=None
        Threads of the kernel engine (default: all cores).

    Attributes
    ----------
    arch_ : ntkfast.MLP
    dual_coef_ : ndarray of shape (n_samples or n_centers, n_outputs)
    solver_ : str
        The solver used.
    n_iter_ : int
        Iterations of the iterative solvers (1 for the direct ones).
    X_fit_ : ndarray of shape (n_samples, n_features)
    y_mean_ : ndarray of shape (n_outputs,)
    n_features_in_ : int
"""


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
        n_centers: int | None = None,
        tol: float | None = None,
        max_iter: int | None = None,
        random_state=None,
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
        self.n_centers = n_centers
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
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
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver: expected one of {_SOLVERS}, got {self.solver!r}")
        if not isinstance(self.diag_reg, numbers.Real) or not self.diag_reg >= 0:
            raise ValueError(f"diag_reg: expected a number >= 0, got {self.diag_reg!r}")
        if not isinstance(self.t, numbers.Real) or not self.t > 0:
            raise ValueError(f"t: expected a time > 0 (np.inf for convergence), got {self.t!r}")
        if self.solver in ("cg", "nystrom") and not np.isinf(self.t):
            raise ValueError(f"solver: {self.solver!r} solves kernel regression (t = inf); a finite t needs 'eigh'")
        return self._arch()

    def _choose_solver(self, n: int, k: int, d: int) -> str:
        """"auto": exact when the Gram fits the memory budget, else CG or Nystrom
        (``ntkfast.solvers.plan_solver``); finite t always needs the eigendecomposition."""
        if not np.isinf(self.t):
            return "eigh"
        if self.solver != "auto":
            return self.solver
        m = None if self.n_centers is None else min(self.n_centers, n)
        return solvers.plan_solver(n, 0, k, d, m, np.dtype(self.dtype).itemsize).method

    def _gram(self, X, Y=None):
        return kernel(self.arch_, X, Y, get=self.kernel, dtype=self.dtype, backend=self.backend, n_jobs=self.n_jobs)

    def _fit_targets(self, X, Y, loo: bool = False):
        """Solve for the dual coefficients of centred targets Y (n, k).

        With ``loo``, also the leave-one-out predictions at the training points, ``loo_`` (n, k),
        in closed form from the same factorisation (exact for kernel ridge; the linear-smoother
        formula (f_i - H_ii y_i) / (1 - H_ii) at finite t).
        """
        self.arch_ = self._check_params()
        self.X_fit_ = X
        self.n_iter_ = 1  # a direct factorisation; CG / Nystrom record their iterations
        self.solver_ = self._choose_solver(len(X), Y.shape[1], X.shape[1])
        self._large = None
        if self.solver_ in ("cg", "nystrom"):
            self.y_mean_ = Y.mean(axis=0)
            self._large = solvers.solve(
                self.arch_, X, Y - self.y_mean_, self.solver_, diag_reg=self.diag_reg, get=self.kernel,
                m=self.n_centers, tol=self.tol, maxiter=self.max_iter, dtype=self.dtype, seed=self.random_state,
            )  # fmt: skip
            self.dual_coef_ = self._large.alpha  # on self._large.centers (the training points for CG)
            self.n_iter_ = max(1, self._large.iterations)
            return self
        check_lapack_size(
            len(X), f"solver={self.solver_!r}", "use solver='cg' or 'nystrom' (t = inf)", self.solver_ == "cholesky"
        )
        K = np.asarray(self._gram(X), dtype=np.float64)
        reg = predict.diag_regularizer(np.diag(K), self.diag_reg)
        K[np.diag_indices_from(K)] += reg
        # the NNGP posterior variance (predict(return_std=True)) needs the training Gram again
        self._train_gram = K.copy() if self.kernel == "nngp" else None
        self.y_mean_ = Y.mean(axis=0)
        Yc = Y - self.y_mean_
        if self.solver_ == "cholesky":
            try:
                factor = solvers.cho_factor_inplace(K)  # no second n^2 buffer
                self.dual_coef_ = scipy.linalg.cho_solve(factor, Yc, check_finite=False)
                if loo:  # y_i - f_{-i}(x_i) = alpha_i / [(K + reg)^-1]_ii
                    with solvers.lapack_threads(len(K)):
                        inverse, _ = scipy.linalg.lapack.dpotri(*factor, overwrite_c=True)
                    self.loo_ = Y - self.dual_coef_ / np.diag(inverse)[:, None]
                return self
            except np.linalg.LinAlgError:  # semi-definite after all: fall back to eigh
                K = np.asarray(self._gram(X), dtype=np.float64)  # the failed factorisation overwrote K
                K[np.diag_indices_from(K)] += reg
        self.dual_coef_ = self._eigh_coef(K, Yc, reg, loo)
        return self

    def _eigh_coef(self, K, Yc, reg=0.0, loo=False):
        lam, V = np.linalg.eigh(K)
        lam = np.clip(lam, 0.0, None)
        if np.isinf(self.t):  # pseudo-inverse: modes at round-off level are not fitted
            lam = np.where(lam > 1e-12 * lam.max(), lam, 0.0)
        gain = predict._flow_gain(lam, self.lr * self.t / Yc.size)
        coef = V @ (gain[:, None] * (V.T @ Yc))
        if loo:  # train predictions f = H Yc, H = V diag((lam - reg) gain) V^T
            h = np.clip(lam - reg, 0.0, None) * gain
            f = V @ (h[:, None] * (V.T @ Yc))
            H_ii = np.einsum("ij,j,ij->i", V, h, V)
            keep = 1.0 - H_ii > 1e-10  # an interpolated point has no leave-one-out information
            loo_c = np.where(keep[:, None], (f - H_ii[:, None] * Yc) / np.where(keep, 1.0 - H_ii, 1.0)[:, None], f)
            self.loo_ = loo_c + self.y_mean_
        return coef

    def _test_gram(self, X):
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X, np.asarray(self._gram(X, self.X_fit_), dtype=np.float64)

    def _decision(self, X):
        check_is_fitted(self, "dual_coef_")
        if self._large is not None:  # matrix-free prediction on the centres
            X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
            out = self._large.predict(X)
            return out.reshape(len(X), -1) + self.y_mean_
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
        """Predictions; ``return_std=True`` (NNGP kernel, exact solvers) also gives the posterior std."""
        if not return_std:
            out = self._decision(X)
            return out[:, 0] if self._single_output else out
        if self.kernel != "nngp":
            raise ValueError("return_std: a posterior variance is defined for kernel='nngp'")
        check_is_fitted(self, "dual_coef_")
        if self._large is not None:
            raise ValueError(f"return_std: needs the exact solvers, the model was fitted with {self.solver_!r}")
        X, Kx = self._test_gram(X)
        out = Kx @ self.dual_coef_ + self.y_mean_
        mean = out[:, 0] if self._single_output else out
        K = self._train_gram
        _, cov = predict.gp_inference(K, np.zeros(len(K)), Kx, kernel(self.arch_, X, get="nngp"))
        return mean, np.sqrt(np.clip(np.diag(cov), 0.0, None))


class NTKClassifier(ClassifierMixin, _NTKBase):
    """Classification by NTK kernel regression on centred one-hot targets (Arora et al. 2020).

    ``predict_proba`` is the softmax of the per-class decision values divided by a temperature,
    ``temperature_``, fitted at ``fit`` by minimising the log-loss of the leave-one-out decision
    values (computed in closed form from the kernel regression's own factorisation, so the
    temperature is not fitted on interpolated training outputs).  It orders classes like ``predict``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from ntkfast.sklearn import NTKClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = NTKClassifier().fit(X, y)
    >>> clf.predict_proba(X[:1]).shape
    (1, 3)
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
        self._fit_targets(X, Y, loo=True)
        # the iterative solvers give no leave-one-out values: their probabilities stay uncalibrated
        self.temperature_ = _fit_temperature(self.loo_, Y.argmax(axis=1)) if self._large is None else 1.0
        return self

    def decision_function(self, X):
        d = self._decision(X)
        return d[:, 1] - d[:, 0] if len(self.classes_) == 2 else d

    def predict(self, X):
        d = self._decision(X)
        return self.classes_[np.argmax(d, axis=1)]

    def predict_proba(self, X):
        """Softmax of the decision values over ``temperature_``, shape (n_samples, n_classes)."""
        return scipy.special.softmax(self._decision(X) / self.temperature_, axis=1)


NTKRegressor.__doc__ += _PARAMETERS_DOC
NTKClassifier.__doc__ += _PARAMETERS_DOC + """    classes_ : ndarray of shape (n_classes,)
    temperature_ : float
    loo_ : ndarray of shape (n_samples, n_classes)
        Leave-one-out decision values (exact solvers).
"""


def _fit_temperature(decision: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the mean log-loss of softmax(decision / T) at ``labels``."""
    rows = np.arange(len(labels))

    def log_loss(log_T):
        return -np.mean(scipy.special.log_softmax(decision / np.exp(log_T), axis=1)[rows, labels])

    # decision values live on the scale of the one-hot targets: T in [1e-3, 1e3] is ample
    return float(np.exp(scipy.optimize.minimize_scalar(log_loss, bounds=(-7.0, 7.0), method="bounded").x))


class _InfiniteWidthKernel(Kernel):
    """A Gaussian-process kernel: the NNGP or NTK of an MLP, with W_std and b_std as hyper-parameters.

    ``depth``, ``activation`` and ``parameterization`` are structure, not hyper-parameters.  The
    gradient in (log W_std, log b_std) is analytic, computed in the same pass as K (see
    ``ntkfast.kernel_grad``).
    """

    _get = "ntk"

    def __init__(
        self,
        depth: int = 3,
        activation="relu",
        W_std: float = 1.4,
        b_std: float = 0.1,
        parameterization: str = "ntk",
        W_std_bounds=(1e-2, 1e1),
        b_std_bounds=(1e-5, 1e1),
    ):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.W_std_bounds = W_std_bounds
        self.b_std_bounds = b_std_bounds

    @property
    def hyperparameter_W_std(self) -> Hyperparameter:
        return Hyperparameter("W_std", "numeric", self.W_std_bounds)

    @property
    def hyperparameter_b_std(self) -> Hyperparameter:
        return Hyperparameter("b_std", "numeric", self.b_std_bounds)

    def _arch(self) -> MLP:
        return MLP(
            depth=self.depth,
            activation=self.activation,
            W_std=self.W_std,
            b_std=self.b_std,
            parameterization=self.parameterization,
        )

    def __call__(self, X, Y=None, eval_gradient: bool = False):
        """K(X, Y); with ``eval_gradient`` also dK/dtheta of shape (n, n, n_free_hyperparameters).

        Parameters
        ----------
        X : ndarray of shape (n_samples_X, n_features)
        Y : ndarray of shape (n_samples_Y, n_features), default=None
            None: K(X, X).
        eval_gradient : bool, default=False
            Also return the gradient in the log of the non-fixed hyper-parameters (only for Y=None).
        """
        arch = self._arch()
        if not eval_gradient:
            return kernel(arch, X, Y, get=self._get, dtype=np.float64)
        if Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        K, dK = kernel_with_gradient(arch, X, get=self._get)
        free = [i for i, h in enumerate(self.hyperparameters) if not h.fixed]  # W_std, b_std order
        return K, dK[:, :, free]

    def diag(self, X) -> np.ndarray:
        """The diagonal of K(X, X), without the matrix."""
        return kernel_diag(self._arch(), X, get=self._get)

    def is_stationary(self) -> bool:
        return False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(depth={self.depth}, activation={self.activation!r}, "
            f"W_std={self.W_std:.3g}, b_std={self.b_std:.3g})"
        )


class NTKKernel(_InfiniteWidthKernel):
    """The infinite-width NTK of an MLP as a scikit-learn kernel.

    Use it in :class:`~sklearn.gaussian_process.GaussianProcessRegressor` (hyper-parameters W_std and
    b_std are optimised with an analytic gradient), :class:`~sklearn.kernel_ridge.KernelRidge` or
    :class:`~sklearn.svm.SVC` (called on whole arrays), and in sums and products with other kernels.

    Parameters
    ----------
    depth : int, default=3
        Hidden layers.
    activation : str or activation object, default="relu"
    W_std : float, default=1.4
    b_std : float, default=0.1
        0 with ``b_std_bounds="fixed"`` means no bias.
    parameterization : {"ntk", "standard"}, default="ntk"
    W_std_bounds, b_std_bounds : pair of floats >= 0, or "fixed", default=(1e-2, 1e1), (1e-5, 1e1)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process import GaussianProcessRegressor
    >>> from sklearn.gaussian_process.kernels import WhiteKernel
    >>> from ntkfast.sklearn import NTKKernel
    >>> X = np.random.default_rng(0).standard_normal((30, 3))
    >>> gpr = GaussianProcessRegressor(NTKKernel() + WhiteKernel(), random_state=0).fit(X, X[:, 0])
    >>> gpr.predict(X[:2]).shape
    (2,)
    """

    _get = "ntk"


class NNGPKernel(_InfiniteWidthKernel):
    """The infinite-width NNGP kernel of an MLP as a scikit-learn kernel (see :class:`NTKKernel`)."""

    _get = "nngp"
