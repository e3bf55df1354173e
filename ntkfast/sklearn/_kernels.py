"""The infinite-width kernels as scikit-learn Gaussian-process kernels (:class:`NTKKernel`, :class:`NNGPKernel`).

Which criterion for choosing the architecture: the marginal likelihood (``GaussianProcessRegressor``,
with the analytic gradient in W_std and b_std) is the Bayesian answer for the NNGP and is cheap in
continuous hyper-parameters; exact leave-one-out (``NTKRegressorCV``, ``NTKClassifierCV``) scores
held-out predictions, serves the NTK and classification, and covers depth and ridge on a grid.
"""

from __future__ import annotations

import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from ..gram import kernel, kernel_diag
from ..kernel_grad import kernel_with_gradient
from ..spec import MLP

__all__ = ["NTKKernel", "NNGPKernel"]


class _InfiniteWidthKernel(Kernel):
    """A Gaussian-process kernel: the NNGP or NTK of an MLP, with W_std and b_std as hyper-parameters.

    ``depth``, ``activation``, ``parameterization``, ``width``, ``residual`` and ``input_map`` are
    structure, not hyper-parameters; ``b_std=None`` (no bias) leaves W_std the only one.  The
    gradient in (log W_std, log b_std) is analytic, computed in the same pass as K (see
    ``ntkfast.kernel_grad``), for every activation: the closed forms and the Hermite-series ones
    (tanh, sigmoid, softplus, SiLU, Mish, gelu_tanh, ELU, SELU, ``Elementwise``; ELU/SELU to the
    accuracy their series have next to rho = +-1).
    """

    _get = "ntk"

    def __init__(
        self,
        depth: int = 3,
        activation="relu",
        W_std: float = 1.4,
        b_std: float | None = 0.1,
        parameterization: str = "ntk",
        width=512,
        residual: bool = False,
        input_map=None,
        W_std_bounds=(1e-2, 1e1),
        b_std_bounds=(1e-5, 1e1),
    ):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.width = width
        self.residual = residual
        self.input_map = input_map
        self.W_std_bounds = W_std_bounds
        self.b_std_bounds = b_std_bounds

    @property
    def hyperparameter_W_std(self) -> Hyperparameter:
        return Hyperparameter("W_std", "numeric", self.W_std_bounds)

    @property
    def hyperparameter_b_std(self) -> Hyperparameter:
        # no bias (b_std=None): nothing to optimise, so the hyper-parameter is fixed (not in theta)
        return Hyperparameter("b_std", "numeric", "fixed" if self.b_std is None else self.b_std_bounds)

    def _arch(self) -> MLP:
        return MLP.from_params(self)

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
        b_std = "None" if self.b_std is None else f"{self.b_std:.3g}"
        extra = "".join(
            f", {name}={getattr(self, name)!r}"
            for name, default in (("parameterization", "ntk"), ("residual", False), ("input_map", None))
            if getattr(self, name) != default
        )
        return (
            f"{type(self).__name__}(depth={self.depth}, activation={self.activation!r}, "
            f"W_std={self.W_std:.3g}, b_std={b_std}{extra})"
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
    b_std : float or None, default=0.1
        None: no bias (and no b_std hyper-parameter).
    parameterization : {"ntk", "standard"}, default="ntk"
    width : int or tuple of int, default=512
        Hidden width(s), used by the standard parameterization's NTK.
    residual : bool, default=False
        Residual blocks.
    input_map : ntkfast.FourierFeatures or ntkfast.RandomFourierFeatures, default=None
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
    """The infinite-width NNGP kernel of an MLP as a scikit-learn kernel (see :class:`NTKKernel`).

    The NNGP is the prior covariance of the network's outputs at initialisation: as a GP kernel
    its marginal likelihood is that of a Bayesian infinitely wide network, the natural criterion
    for choosing W_std, b_std (and depth, by comparing fits).  The NTK used as a GP kernel is a
    valid kernel but not the prior of any network; choose its depth and ridge by leave-one-out
    (:class:`NTKRegressorCV`), which scores the predictions themselves.
    """

    _get = "nngp"
