"""K(X, X) together with its derivatives in the log hyper-parameters (log W_std, log b_std).

The gradient rides along the recursion in the same fused pass (forward mode: each pair carries
Sigma, Theta and their two derivatives through the layers, with the chain rule through
``recursion.dual_grad``), tiled like :func:`ntkfast.kernel`.  This is what
:class:`ntkfast.sklearn.NTKKernel` uses for ``eval_gradient=True``.
"""

from __future__ import annotations

import numpy as np

from . import tiling
from ._validation import check_arch, check_array
from .backends import cpu
from .recursion import GRADIENT_CODES
from .spec import MLP

__all__ = ["kernel_with_gradient", "has_gradient"]


def has_gradient(arch: MLP) -> bool:
    """Whether the analytic hyper-parameter gradient is implemented for ``arch``'s activation."""
    return arch.activation.code in GRADIENT_CODES


def kernel_with_gradient(arch: MLP, X, get: str = "ntk", *, n_jobs: int | None = None):
    """K(X, X) and dK/dlog(W_std), dK/dlog(b_std).

    Parameters
    ----------
    arch : MLP
    X : array-like of shape (n, d)
    get : {"ntk", "nngp"}, default="ntk"
    n_jobs : int, default=None
        Threads (default: all cores).

    Returns
    -------
    K : ndarray of shape (n, n), float64, exactly symmetric
    dK : ndarray of shape (n, n, 2)
        Derivatives in log W_std and log b_std (the second is 0 without a bias).
    """
    arch = check_arch(arch)
    if get not in ("ntk", "nngp"):
        raise ValueError(f"get: expected 'ntk' or 'nngp', got {get!r}")
    if not has_gradient(arch):
        raise ValueError(
            f"activation: no analytic hyper-parameter gradient for {arch.activation!r} "
            "(use GaussianProcessRegressor(optimizer=None), or another activation)"
        )
    X = check_array(X, "X", np.float64)
    feats = X if arch.input_map is None else np.ascontiguousarray(arch.input_map.apply(X), np.float64)
    n, d_in = feats.shape
    first, steps = arch.layer_coefficients(d_in)
    dfirst, dsteps = arch.layer_coefficient_gradients(d_in)
    steps = np.ascontiguousarray(steps)
    dsteps = np.ascontiguousarray(dsteps)
    params = np.asarray(arch.activation.params, dtype=np.float64)
    hint = "Use fewer points, or optimise the hyper-parameters on a subset."
    tiling.check_fits(3 * n * n * 8, f"K and its gradient for n = {n}", hint)
    kernels = cpu.recursion_kernels(arch.activation.code)
    get_ntk = get == "ntk"

    sig = np.empty((steps.shape[0], n))
    dsig = np.empty((steps.shape[0], n, 2))
    diag = np.empty(n)
    ddiag = np.empty((n, 2))
    sqnorm = np.einsum("ij,ij->i", feats, feats)
    kernels.diag_grad(params, first, dfirst, steps, dsteps, sqnorm, sig, dsig, diag, ddiag, get_ntk)
    if not (np.isfinite(diag).all() and np.isfinite(ddiag).all()):
        raise ValueError(f"the kernel of {arch.activation!r} diverges for these inputs; scale them or W_std down")

    K = np.empty((n, n))
    dK = np.empty((n, n, 2))
    plan = tiling.plan_tiles(n, n, 8, symmetric=True, n_jobs=n_jobs)

    def work(i0, i1, j0, j1, worker):
        G = feats[i0:i1] @ feats[j0:j1].T
        kernels.tile_grad(
            params, first, dfirst, steps, dsteps, G,
            np.ascontiguousarray(sig[:, i0:i1]), np.ascontiguousarray(dsig[:, i0:i1]),
            np.ascontiguousarray(sig[:, j0:j1]), np.ascontiguousarray(dsig[:, j0:j1]),
            K, dK, i0, j0, get_ntk,
        )  # fmt: skip

    tiling.run_tiles(plan, work, n_jobs=n_jobs)
    # the upper triangle is computed; mirror it, and put in the exact diagonal
    iu = np.triu_indices(n, 1)
    K.T[iu] = K[iu]
    dK.transpose(1, 0, 2)[iu] = dK[iu]
    K[np.diag_indices(n)] = diag
    dK[np.arange(n), np.arange(n)] = ddiag
    return K, dK
