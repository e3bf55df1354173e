"""CPU inner kernel (Numba) for the Hermite-series activations (code ``spec.SERIES``).

The per-row work (coefficients, exact diagonal) is done by :mod:`ntkfast.series`; this kernel
does the per-pair work of a tile: for each layer, ``rho = Sigma_xy / sqrt(Sigma_xx Sigma_yy)``
and two Horner evaluations ``K = sum_k c_k(x) c_k(y) rho^k``, ``Kdot = sum_k d_k(x) d_k(y) rho^k``,
then the same (activation, Dense) step as the closed forms.  The loops over the columns of a
row are innermost and have unit stride (coefficients are stored coefficient-major,
``(layers, degree + 1, rows)``), so LLVM vectorises them.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import jit
from ..recursion import step
from ..series import RHO_STEPS

# columns per chunk: one degree per chunk, from the chunk's largest |rho| (a multiple of the
# vector width, small enough that a near-parallel pair costs little for its neighbours)
CHUNK = 16


@jit
def _series_row(cx, dx, ix, cy, dy, j0, inv_x, inv_y, table, s, t, rho, k, kd, res, w2, b2, alpha, beta):
    """One layer for one row of pairs, in place in (s, t).

    ``table`` (RHO_BINS + 1,) is the layer's degree per |rho| bin (``series.degree_table``)."""
    one = s.dtype.type(1.0)
    zero = s.dtype.type(0.0)
    bins = table.shape[0] - 1
    bj = s.shape[0]
    for j in range(bj):
        r = s[j] * inv_x * inv_y[j0 + j]
        rho[j] = min(max(r, -one), one)
        k[j] = zero
        kd[j] = zero
    for a0 in range(0, bj, CHUNK):
        a1 = min(a0 + CHUNK, bj)
        top = zero
        for j in range(a0, a1):
            top = max(top, abs(rho[j]))
        gap = 1.0 - float(top)
        b = bins if gap <= 0.0 else min(bins, int(math.ceil(-RHO_STEPS * math.log2(gap))))
        degree = table[b]
        for m in range(degree, -1, -1):
            a = cx[m, ix]
            e = dx[m, ix]
            cm = cy[m]
            dm = dy[m]
            for j in range(a0, a1):
                k[j] = k[j] * rho[j] + a * cm[j0 + j]
                kd[j] = kd[j] * rho[j] + e * dm[j0 + j]
    for j in range(bj):
        s[j], t[j] = step(k[j], kd[j], s[j], t[j], res, w2, b2, alpha, beta)


@jit
def tile(first, steps, tables, G, cx, dx, inv_x, i0, cy, dy, inv_y, j0, nngp, ntk, o0, p0, get_nngp, get_ntk):
    """Kernel(s) of a tile of pairs (rows i0 + i of X, j0 + j of Y) from their inner products G (bi, bj).

    ``cx``/``dx`` (L, Dmax + 1, n_x) hold the coefficients of X's rows for K and Kdot,
    ``inv_x`` (L, n_x) 1/sqrt(Sigma_xx) (0 for a zero variance), the same for Y; ``tables``
    (L, RHO_BINS + 1) the degree per layer and |rho| bin (``series.degree_table``).  Writes
    ``nngp[o0 + i, p0 + j]`` and/or ``ntk[...]``; the outputs may alias G (each row of G is read
    completely before it is written).
    """
    bi, bj = G.shape
    f0, f1, f2, f3 = first[0], first[1], first[2], first[3]
    s = np.empty(bj, G.dtype)
    t = np.empty(bj, G.dtype)
    rho = np.empty(bj, G.dtype)
    k = np.empty(bj, G.dtype)
    kd = np.empty(bj, G.dtype)
    for i in range(bi):
        for j in range(bj):
            g = G[i, j]
            s[j] = f0 * g + f1
            t[j] = f2 * g + f3
        for layer in range(steps.shape[0]):
            c = steps[layer]
            _series_row(
                cx[layer], dx[layer], i0 + i, cy[layer], dy[layer], j0, inv_x[layer, i0 + i], inv_y[layer],
                tables[layer], s, t, rho, k, kd, c[0], c[1], c[2], c[3], c[4],
            )  # fmt: skip
        if get_nngp:
            row = nngp[o0 + i]
            for j in range(bj):
                row[p0 + j] = s[j]
        if get_ntk:
            row = ntk[o0 + i]
            for j in range(bj):
                row[p0 + j] = t[j]


def kernel(arch, X, Y=None, get="ntk", tol=None):
    """K(X, Y) for a series activation in one tile (a reference driver for tests and benchmarks;
    the public entry points go through the engine)."""
    from .. import series

    tol = series.DEFAULT_TOL if tol is None else tol
    dtype = X.dtype
    feats_x = X if arch.input_map is None else np.ascontiguousarray(arch.input_map.apply(X), dtype)
    feats_y = feats_x if Y is None else (Y if arch.input_map is None else
                                         np.ascontiguousarray(arch.input_map.apply(Y), dtype))  # fmt: skip
    first, steps = arch.layer_coefficients(feats_x.shape[1])
    sq_x = np.einsum("ij,ij->i", feats_x, feats_x, dtype=np.float64)
    if Y is None:
        rx = ry = series.prepare(arch.activation, first, steps, sq_x, tol=tol).astype(dtype)
        table = series.degree_table(rx, None, tol)
    else:
        sq_y = np.einsum("ij,ij->i", feats_y, feats_y, dtype=np.float64)
        rx, ry = (r.astype(dtype) for r in series.prepare(arch.activation, first, steps, sq_x, sq_y, tol))
        table = series.degree_table(rx, ry, tol)
    G = np.empty((feats_x.shape[0], feats_y.shape[0]), dtype)
    np.matmul(feats_x, feats_y.T, out=G)
    nngp = np.empty_like(G)
    ntk = np.empty_like(G)
    tile(first.astype(dtype), np.ascontiguousarray(steps, dtype), table, G, rx.c, rx.d, rx.inv_sqrt, 0,
         ry.c, ry.d, ry.inv_sqrt, 0, nngp, ntk, 0, 0, True, True)  # fmt: skip
    if Y is None:
        np.fill_diagonal(nngp, rx.nngp)
        np.fill_diagonal(ntk, rx.ntk)
    out = {"nngp": nngp, "ntk": ntk}
    return out[get] if isinstance(get, str) else tuple(out[g] for g in get)
