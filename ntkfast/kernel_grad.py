"""K(X, X) together with its derivatives in the log hyper-parameters (log W_std, log b_std).

The gradient rides along the recursion in the same fused pass (forward mode: each pair carries
Sigma, Theta and their two derivatives through the layers, with the chain rule through
``recursion.dual_grad``), tiled like :func:`ntkfast.kernel` with the same engine pieces (input
map, coefficients, tile plan, per-tile exact diagonal and mirror copy: no n^2 temporaries).  This is what
:class:`ntkfast.sklearn.NTKKernel` uses for ``eval_gradient=True``.  The closed forms run
``backends.cpu``'s vectorised ``tile_grad``; the Hermite-series activations (code ``SERIES``)
``backends.cpu_series_grad`` (derivative coefficients per row, seven polynomials in rho per pair,
and for ELU/SELU the pairs near rho = +-1 that the forward kernel takes in closed form from
``bivariate.elu_dual_grad``; docs/design.md, "GP hyper-parameter gradients").
"""

from __future__ import annotations

import numpy as np

from . import engine, tiling
from ._validation import check_arch, check_array, check_choice, check_positive_int
from .backends import cpu, cpu_series_grad
from .errors import ArgumentError
from .recursion import GRADIENT_CODES
from .spec import MLP, SERIES

__all__ = ["kernel_with_gradient", "has_gradient"]


def has_gradient(arch: MLP) -> bool:
    """Whether the analytic hyper-parameter gradient is implemented for ``arch``'s activation."""
    return arch.activation.code in GRADIENT_CODES or arch.activation.code == SERIES


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
        Derivatives in log W_std and log b_std (the second is 0 without a bias); a view of a
        (2, n, n) C-contiguous array, ``dK[:, :, p]`` being plane ``p``.
    """
    arch = check_arch(arch)
    check_choice(get, "get", ("ntk", "nngp"))
    if not has_gradient(arch):
        raise ArgumentError(
            f"activation: no analytic hyper-parameter gradient for {arch.activation!r} "
            "(use GaussianProcessRegressor(optimizer=None), or another activation)"
        )
    X = check_array(X, "X", np.float64)
    n_jobs = check_positive_int(n_jobs, "n_jobs", maximum=tiling.max_n_jobs())
    feats = engine.input_features(arch, X)
    n, d_in = feats.shape
    coef = engine.coefficients(arch, d_in, np.float64)
    dfirst, dsteps = arch.layer_coefficient_gradients(d_in)
    dsteps = np.ascontiguousarray(dsteps)
    hint = "Use fewer points, or optimise the hyper-parameters on a subset."
    n_jobs = tiling.default_n_jobs() if n_jobs is None else n_jobs
    plan = tiling.plan_tiles(n, n, 8, symmetric=True, n_jobs=n_jobs)
    t = plan.tile
    # K and dK (3 n^2 doubles) plus per-thread scratch (G, t^2; the row kernels' few rows are not counted)
    tiling.check_fits(3 * n * n * 8 + n_jobs * t * t * 8, f"K and its gradient for n = {n}", hint)
    get_ntk = get == "ntk"
    if coef.code == SERIES:
        return _series_with_gradient(arch, coef, dfirst, dsteps, feats, plan, n_jobs, get_ntk)
    kernels = cpu.recursion_kernels(coef.code)
    # ``tile_grad`` leaves out the derivatives that are structurally 0: d/dlog W_std of b^2 and beta,
    # d/dlog b_std of W^2 and alpha
    if dsteps[0][:, [2, 4]].any() or dsteps[1][:, [1, 3]].any():
        raise RuntimeError("internal: layer_coefficient_gradients no longer has the structure tile_grad assumes")

    n_steps = coef.steps.shape[0]
    sig = np.empty((n_steps, n))
    dsig = np.empty((n_steps, 2, n))  # parameter-major: a tile's column slice of each is contiguous
    diag = np.empty(n)
    ddiag = np.empty((2, n))
    sqnorm = np.einsum("ij,ij->i", feats, feats)
    kernels.diag_grad(coef.params, coef.first, dfirst, coef.steps, dsteps, sqnorm, sig, dsig, diag, ddiag, get_ntk)
    if not (np.isfinite(diag).all() and np.isfinite(ddiag).all()):
        raise ArgumentError(f"the kernel of {arch.activation!r} diverges for these inputs; scale them or W_std down")

    K, dK = _allocate(n)
    # outputs far larger than the cache: non-temporal stores, mirrored rows in whole 64-byte lines
    phase = engine.stream_phase([K[None], dK])
    scratch = [np.empty((t, t)) for _ in range(n_jobs)]

    def work(i0, i1, j0, j1, worker):
        G = engine.scratch_view(scratch[worker], i1 - i0, j1 - j0)
        cpu.gemm(feats[i0:i1], feats[j0:j1], G)
        diagonal = i0 == j0
        # a tile above the diagonal is stored with its mirror image, strip by strip while in L1
        kernels.tile_grad(
            coef.params, coef.first, dfirst, coef.steps, dsteps, G,
            np.ascontiguousarray(sig[:, i0:i1]), np.ascontiguousarray(dsig[:, :, i0:i1]),
            np.ascontiguousarray(sig[:, j0:j1]), np.ascontiguousarray(dsig[:, :, j0:j1]),
            K[None], dK, i0, j0, get_ntk, not diagonal, phase is not None, phase or 0,
        )  # fmt: skip
        if diagonal:  # its lower part from its upper part, and the exact diagonal
            engine.finish_tile([K, dK[0], dK[1]], [diag, ddiag[0], ddiag[1]], i0, i1, j0, j1)

    tiling.run_tiles(plan, work, n_jobs=n_jobs)
    return K, dK.transpose(1, 2, 0)


def _allocate(n: int):
    """K (n, n) and dK (2, n, n), uninitialised, each starting on a 64-byte boundary (the streaming
    stores of ``tile_grad`` want whole lines; the caller has checked that they fit)."""
    K = tiling.allocate((n, n), np.float64, 1, align=64)[0]
    dK = tiling.allocate((2 * n, n), np.float64, 1, align=64)[0].reshape(2, n, n)
    return K, dK


def _series_with_gradient(arch, coef, dfirst, dsteps, feats, plan, n_jobs, get_ntk):
    """``kernel_with_gradient`` for a Hermite-series activation (``backends.cpu_series_grad``)."""
    n = feats.shape[0]
    t = plan.tile
    sqnorm = np.einsum("ij,ij->i", feats, feats)
    rows = cpu_series_grad.prepare(arch.activation, coef.first, dfirst, coef.steps, dsteps, sqnorm, get_ntk)
    if not (np.isfinite(rows.diag).all() and np.isfinite(rows.ddiag).all()):
        raise ArgumentError(f"the kernel of {arch.activation!r} diverges for these inputs; scale them or W_std down")
    K = np.empty((n, n))
    dK = np.empty((2, n, n))
    scratch = [np.empty((t, t)) for _ in range(n_jobs)]

    def work(i0, i1, j0, j1, worker):
        G = engine.scratch_view(scratch[worker], i1 - i0, j1 - j0)
        cpu.gemm(feats[i0:i1], feats[j0:j1], G)
        cpu_series_grad.tile_grad(coef.first, dfirst, coef.steps, dsteps, rows.table, G, rows.sig, rows.dsig,
                                  rows.inv_sqrt, rows.C, rows.D, rows.E, rows.Q, i0, j0, K, dK, get_ntk, rows.cut,
                                  rows.exact)  # fmt: skip
        engine.finish_tile([K, dK[0], dK[1]], [rows.diag, rows.ddiag[0], rows.ddiag[1]], i0, i1, j0, j1)

    tiling.run_tiles(plan, work, n_jobs=n_jobs)
    return K, dK.transpose(1, 2, 0)
