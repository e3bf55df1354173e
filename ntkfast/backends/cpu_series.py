"""CPU inner kernel (Numba) for the Hermite-series activations (code ``spec.SERIES``).

The per-row work (coefficients, exact diagonal) is done by :mod:`ntkfast.series`; this kernel
does the per-pair work of a tile: for each layer, ``rho = Sigma_xy / sqrt(Sigma_xx Sigma_yy)``
and two Horner evaluations ``K = sum_k c_k(x) c_k(y) rho^k``, ``Kdot = sum_k d_k(x) d_k(y) rho^k``,
then the same (activation, Dense) step as the closed forms.  The loops over the columns of a
row are innermost and have unit stride (coefficients are stored coefficient-major,
``(rows, layers, degree + 1)``, a chunk of columns is copied coefficient-major), so LLVM
vectorises them.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import jit
from ..recursion import step
from ..series import RHO_STEPS

# columns per chunk: one degree per (row, chunk) from the chunk's largest |rho|; the chunk's
# coefficients (layers x degree x CHUNK) are copied once and stay in cache for all rows
CHUNK = 32


@jit
def _chunk_degree(tables, layer, rho, w):
    """Degree for a chunk of correlations, from its largest |rho| (``series.degree_table`` bins)."""
    top = rho.dtype.type(0.0)
    for j in range(w):
        top = max(top, abs(rho[j]))
    gap = 1.0 - float(top)
    bins = tables.shape[1] - 1
    b = bins if gap <= 0.0 else min(bins, int(math.ceil(-RHO_STEPS * math.log2(gap))))
    return tables[layer, b]


@jit
def _put(out, slot, row, col, vals, w):
    for j in range(w):
        out[slot, row, col + j] = vals[j]


@jit
def tile(first, steps, tables, G, cx, dx, inv_x, r0, cy, dy, inv_y, c0, nngp, ntk, o0, p0, get_nngp, get_ntk,
         write_at, readout, with_readout):
    """Kernel(s) of a tile of pairs (rows r0 + i of X, c0 + j of Y) from their inner products G (bi, bj).

    ``cx``/``dx`` (n_x, L, Dmax + 1) hold the coefficients of X's rows for K and Kdot (row-major:
    one row's coefficients are contiguous), ``inv_x`` (L, n_x) 1/sqrt(Sigma_xx) (0 for a zero
    variance), the same for Y; ``tables`` (L, RHO_BINS + 1) the degree per layer and |rho| bin
    (``series.degree_table``).  Outputs as in ``backends.cpu``'s tile: ``nngp[k, o0 + i, p0 + j]``
    and/or ``ntk[...]`` after ``write_at[k]`` steps, through the ``readout`` step where
    ``with_readout[k]`` (a residual network cut there); they may alias G with zero offsets (each
    entry of G is read before anything is written at its place).

    Loop order: column chunks outermost, then rows, then layers: the chunk's coefficients are
    copied to a small buffer (``(L, D + 1, CHUNK)``) that stays in L1/L2 while every row uses it,
    and each (row, chunk) runs Horner over only the degree its largest |rho| needs.
    """  # fmt: skip
    bi, bj = G.shape
    n_steps = steps.shape[0]
    n_out = write_at.shape[0]
    dmax = cy.shape[2]
    f0, f1, f2, f3 = first[0], first[1], first[2], first[3]
    dt = G.dtype.type
    one = dt(1.0)
    zero = dt(0.0)
    s = np.empty(CHUNK, G.dtype)
    t = np.empty(CHUNK, G.dtype)
    s2 = np.empty(CHUNK, G.dtype)
    t2 = np.empty(CHUNK, G.dtype)
    rho = np.empty(CHUNK, G.dtype)
    k = np.empty(CHUNK, G.dtype)
    kd = np.empty(CHUNK, G.dtype)
    bc = np.zeros((n_steps, dmax, CHUNK), G.dtype)
    bd = np.zeros((n_steps, dmax, CHUNK), G.dtype)
    binv = np.zeros((n_steps, CHUNK), G.dtype)
    for a0 in range(0, bj, CHUNK):
        w = min(CHUNK, bj - a0)
        for layer in range(n_steps):
            for j in range(w):
                binv[layer, j] = inv_y[layer, c0 + a0 + j]
            for m in range(dmax):
                for j in range(w):
                    bc[layer, m, j] = cy[c0 + a0 + j, layer, m]
                    bd[layer, m, j] = dy[c0 + a0 + j, layer, m]
        for i in range(bi):
            ii = r0 + i
            for j in range(w):
                g = G[i, a0 + j]
                s[j] = f0 * g + f1
                t[j] = f2 * g + f3
            slot = 0
            for layer in range(n_steps + 1):
                while slot < n_out and write_at[slot] == layer and not with_readout[slot]:
                    if get_nngp:
                        _put(nngp, slot, o0 + i, p0 + a0, s, w)
                    if get_ntk:
                        _put(ntk, slot, o0 + i, p0 + a0, t, w)
                    slot += 1
                if layer == n_steps:
                    break
                inv_i = inv_x[layer, ii]
                for j in range(w):
                    r = s[j] * inv_i * binv[layer, j]
                    rho[j] = min(max(r, -one), one)
                    k[j] = zero
                    kd[j] = zero
                degree = _chunk_degree(tables, layer, rho, w)
                for m in range(degree, -1, -1):
                    am = cx[ii, layer, m]
                    em = dx[ii, layer, m]
                    for j in range(w):
                        k[j] = k[j] * rho[j] + am * bc[layer, m, j]
                        kd[j] = kd[j] * rho[j] + em * bd[layer, m, j]
                while slot < n_out and write_at[slot] == layer and with_readout[slot]:
                    for j in range(w):
                        s2[j], t2[j] = step(k[j], kd[j], s[j], t[j], readout[0], readout[1], readout[2], readout[3],
                                            readout[4])  # fmt: skip
                    if get_nngp:
                        _put(nngp, slot, o0 + i, p0 + a0, s2, w)
                    if get_ntk:
                        _put(ntk, slot, o0 + i, p0 + a0, t2, w)
                    slot += 1
                res, w2, b2 = steps[layer, 0], steps[layer, 1], steps[layer, 2]
                alpha, beta = steps[layer, 3], steps[layer, 4]
                for j in range(w):
                    s[j], t[j] = step(k[j], kd[j], s[j], t[j], res, w2, b2, alpha, beta)


_PLAIN = np.zeros(1, np.bool_)


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
    nngp = np.empty((1, *G.shape), dtype)
    ntk = np.empty((1, *G.shape), dtype)
    tile(first.astype(dtype), np.ascontiguousarray(steps, dtype), table, G, rx.c, rx.d, rx.inv_sqrt, 0,
         ry.c, ry.d, ry.inv_sqrt, 0, nngp, ntk, 0, 0, True, True, np.array([steps.shape[0]]), np.zeros(5, dtype),
         _PLAIN)  # fmt: skip
    nngp, ntk = nngp[0], ntk[0]
    if Y is None:
        np.fill_diagonal(nngp, rx.nngp)
        np.fill_diagonal(ntk, rx.ntk)
    out = {"nngp": nngp, "ntk": ntk}
    return out[get] if isinstance(get, str) else tuple(out[g] for g in get)
