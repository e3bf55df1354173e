"""CPU inner kernels (Numba): the fused per-tile recursion, the diagonal recursion, a mirror copy.

Each kernel is specialised on the activation ``code`` with ``numba.literally``, so the
``recursion.dual`` dispatch folds away and the inner ``j`` loop is one branch-free formula
that LLVM vectorises.  Inner products come from BLAS (NumPy ``matmul``) before the kernel runs.
"""

from __future__ import annotations

import numpy as np
from numba import literally, prange

from .._jit import kernel_jit
from ..recursion import dual, dual_diag, step


@kernel_jit
def diag_recursion(code, params, first, steps, sqnorm, sig, nngp, ntk):
    """Recursion for x == y.  Writes sig[l, i] = Sigma(x_i, x_i) entering step l, and the outputs."""
    literally(code)
    p0, p1, p2 = params[0], params[1], params[2]
    n = sqnorm.shape[0]
    for i in prange(n):
        s = first[0] * sqnorm[i] + first[1]
        t = first[2] * sqnorm[i] + first[3]
        for layer in range(steps.shape[0]):
            sig[layer, i] = s
            k, kdot = dual_diag(code, p0, p1, p2, s)
            c = steps[layer]
            s, t = step(k, kdot, s, t, c[0], c[1], c[2], c[3], c[4])
        nngp[i] = s
        ntk[i] = t


@kernel_jit
def tile_recursion(code, params, first, steps, G, sig_rows, sig_cols, nngp, ntk, get_nngp, get_ntk):
    """Overwrite a tile of inner products G (bi, bj) with the kernel(s), all layers fused.

    ``sig_rows`` (L, bi) and ``sig_cols`` (L, bj) hold the diagonal Sigma's entering each step.
    ``nngp``/``ntk`` may alias ``G``: each row is read completely before it is written.
    """
    literally(code)
    p0, p1, p2 = params[0], params[1], params[2]
    bi, bj = G.shape
    f0, f1, f2, f3 = first[0], first[1], first[2], first[3]
    for i in prange(bi):
        s = np.empty(bj, G.dtype)
        t = np.empty(bj, G.dtype)
        for j in range(bj):
            g = G[i, j]
            s[j] = f0 * g + f1
            t[j] = f2 * g + f3
        for layer in range(steps.shape[0]):
            sxx = sig_rows[layer, i]
            syy = sig_cols[layer]
            c = steps[layer]
            res, w2, b2, alpha, beta = c[0], c[1], c[2], c[3], c[4]
            for j in range(bj):
                k, kdot = dual(code, p0, p1, p2, sxx, syy[j], s[j])
                s[j], t[j] = step(k, kdot, s[j], t[j], res, w2, b2, alpha, beta)
        if get_nngp:
            for j in range(bj):
                nngp[i, j] = s[j]
        if get_ntk:
            for j in range(bj):
                ntk[i, j] = t[j]


@kernel_jit
def mirror(src, dst):
    """dst[:] = src.T, in cache-sized blocks (the lower triangle of a symmetric Gram)."""
    bi, bj = src.shape
    block = 64
    for jb in prange((bj + block - 1) // block):
        j0 = jb * block
        j1 = min(j0 + block, bj)
        for i0 in range(0, bi, block):
            i1 = min(i0 + block, bi)
            for j in range(j0, j1):
                for i in range(i0, i1):
                    dst[j, i] = src[i, j]


def gemm(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> None:
    """out = A @ B.T through BLAS."""
    np.matmul(A, B.T, out=out)
