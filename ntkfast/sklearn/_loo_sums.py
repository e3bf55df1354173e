"""The leave-one-out sums of every ridge in one pass over the eigenvectors (a Numba kernel).

For ridges ``r`` and rows ``i`` with the per-row ridge ``reg_ri = r * c_i``, the closed-form
leave-one-out needs, from ``K = V diag(s) V^T``,

    G_ii(r) = sum_j V_ij^2 / (s_j + reg_ri)    and    [G Z]_i(r) = sum_j V_ij (V^T Z)_j / (s_j + reg_ri)

for the few columns of ``Z = [Y, 1]``.  Written as NumPy, each ridge builds n x n temporaries
(``1 / (s + reg)``, its product with V) that stream through memory several times; here one pass
over V serves every ridge: a block of rows of ``V^T`` stays in cache while the loop runs over the
ridges, each ``1 / (s_j + reg)`` is computed once and used for all ``k + 2`` sums, and nothing of
size n x n is allocated.  Blocks of rows run on threads (the kernel releases the GIL).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._jit import jit

__all__ = ["loo_sums"]

# rows of a block: the accumulators (ridges x (k + 2) x BLOCK doubles) stay in the L1/L2 cache
BLOCK = 32


@jit
def _block_sums(Vt, s, PQ, c, ridges, i0, i1, G, GZ):  # pragma: no cover - compiled
    """G[r, i] and GZ[r, q, i] for the rows i0 <= i < i1 (V^T is ``Vt``, C-ordered: Vt[j, i] = V_ij)."""
    n = Vt.shape[0]
    m = PQ.shape[1]
    R = ridges.shape[0]
    w = i1 - i0
    reg = np.empty((R, w))
    for r in range(R):
        for i in range(w):
            reg[r, i] = ridges[r] * c[i0 + i]
    accG = np.zeros((R, w))
    acc = np.zeros((R, m, w))
    vw = np.empty(w)
    for j in range(n):
        sj = s[j]
        row = Vt[j, i0:i1]
        for r in range(R):
            for i in range(w):
                t = row[i] / (sj + reg[r, i])
                vw[i] = t
                accG[r, i] += row[i] * t
            for q in range(m):
                p = PQ[j, q]
                for i in range(w):
                    acc[r, q, i] += vw[i] * p
    for r in range(R):
        for i in range(w):
            G[r, i0 + i] = accG[r, i]
        for q in range(m):
            for i in range(w):
                GZ[r, q, i0 + i] = acc[r, q, i]


def loo_sums(Vt: np.ndarray, s: np.ndarray, PQ: np.ndarray, c: np.ndarray, ridges: np.ndarray, n_jobs: int = 1):
    """``G[r, i] = sum_j Vt[j, i]^2 / (s_j + ridges[r] c_i)`` and
    ``GZ[r, q, i] = sum_j Vt[j, i] PQ[j, q] / (s_j + ridges[r] c_i)``.

    Parameters
    ----------
    Vt : ndarray of shape (n, n), float64, C-contiguous
        The transposed eigenvectors (row j is the j-th eigenvector).
    s : ndarray of shape (n,)
        The eigenvalues (>= 0).
    PQ : ndarray of shape (n, m)
        ``V^T Z``.
    c : ndarray of shape (n,)
        Per-row ridge scale (> 0).
    ridges : ndarray of shape (R,)
        The ridges (> 0).
    n_jobs : int
        Threads (blocks of rows are independent; the result does not depend on n_jobs).

    Returns
    -------
    G : ndarray of shape (R, n)
    GZ : ndarray of shape (R, m, n)
    """
    Vt = np.ascontiguousarray(Vt, dtype=np.float64)
    s, c, ridges = (np.ascontiguousarray(a, dtype=np.float64) for a in (s, c, ridges))
    PQ = np.ascontiguousarray(PQ, dtype=np.float64)
    n = Vt.shape[0]
    G = np.empty((len(ridges), n))
    GZ = np.empty((len(ridges), PQ.shape[1], n))
    blocks = [(i0, min(n, i0 + BLOCK)) for i0 in range(0, n, BLOCK)]
    if n_jobs <= 1 or len(blocks) == 1:
        for i0, i1 in blocks:
            _block_sums(Vt, s, PQ, c, ridges, i0, i1, G, GZ)
        return G, GZ
    with ThreadPoolExecutor(min(n_jobs, len(blocks))) as pool:
        list(pool.map(lambda b: _block_sums(Vt, s, PQ, c, ridges, b[0], b[1], G, GZ), blocks))
    return G, GZ
