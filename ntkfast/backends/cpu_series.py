"""CPU inner kernel (Numba) for the Hermite-series activations (code ``spec.SERIES``).

The per-row work (coefficients, exact diagonal) is done by :mod:`ntkfast.series`; this kernel
does the per-pair work of a tile: for each layer, ``rho = Sigma_xy / sqrt(Sigma_xx Sigma_yy)``
and the two series ``K = sum_k c_k(x) c_k(y) rho^k``, ``Kdot = sum_k d_k(x) d_k(y) rho^k`` to the
degree the row's correlations need, then the same (activation, Dense) step as the closed forms.
The loops over the columns of a row are innermost and have unit stride (the tile's columns'
coefficients, stored ``(rows, layers, degree + 1)``, are copied coefficient-major), so LLVM
vectorises them.
"""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import numpy as np

from .. import config
from .._jit import is_single, jit
from ..bivariate import PARALLEL_TOL32, PARALLEL_TOL64, WORK_ROWS, elu_dual_row
from ..recursion import step
from ..series import RHO_STEPS

# pairs with |rho| > 1 - 2^(-HIGH_BIN / RHO_STEPS) (0.984) are left out of their row's degree and get
# their own (up to the full degree) in a scalar loop: a diagonal pair or a near-duplicate row does
# not raise the degree of the other pairs of its row
HIGH_BIN = 6 * RHO_STEPS


@jit
def degree_for_rho(tables, layer, top):
    """Degree for correlations |rho| <= top (``series.degree_table`` bins)."""
    gap = 1.0 - float(top)
    bins = tables.shape[1] - 1
    b = bins if gap <= 0.0 else min(bins, int(math.ceil(-RHO_STEPS * math.log2(gap))))
    return tables[layer, b]


@jit
def _put(out, slot, row, col, vals, w):
    for j in range(w):
        out[slot, row, col + j] = vals[j]


@jit
def _fill(bc, bd, cy, dy, c0, layer, lo, hi, bj):
    """Copy degrees lo..hi - 1 of the tile's columns into the coefficient-major buffers."""
    for j in range(bj):
        for m in range(lo, hi):
            bc[layer, m, j] = cy[c0 + j, layer, m]
            bd[layer, m, j] = dy[c0 + j, layer, m]


@jit
def _terms(k, kd, p, rho, bc, bd, cx, dx, ii, layer, lo, hi, a, b):
    """Add terms lo..hi of both series to the pairs a..b - 1, in ascending order (p[j] holds
    rho[j]^lo on entry, rho[j]^(hi + 1) on return).  Four terms per pass over the pairs: the
    loop is bound by its loads and stores, which four terms share.  LLVM leaves the four-term
    loop scalar (its twelve arrays exceed the vectoriser's runtime alias checks), and it still
    measured 1.4x faster per term than the vectorised one-term loop (0.7 vs 1.0-1.2 ns per pair
    and term, AVX-512, loaded machine); a vectorised four-term Horner form measured 2 ns."""
    m = lo
    while m + 3 <= hi:
        a0, a1, a2, a3 = cx[ii, layer, m], cx[ii, layer, m + 1], cx[ii, layer, m + 2], cx[ii, layer, m + 3]
        e0, e1, e2, e3 = dx[ii, layer, m], dx[ii, layer, m + 1], dx[ii, layer, m + 2], dx[ii, layer, m + 3]
        for j in range(a, b):
            r = rho[j]
            p0 = p[j]
            p1 = p0 * r
            p2 = p1 * r
            p3 = p2 * r
            k[j] += ((a0 * bc[layer, m, j]) * p0 + (a1 * bc[layer, m + 1, j]) * p1
                     + (a2 * bc[layer, m + 2, j]) * p2 + (a3 * bc[layer, m + 3, j]) * p3)  # fmt: skip
            kd[j] += ((e0 * bd[layer, m, j]) * p0 + (e1 * bd[layer, m + 1, j]) * p1
                      + (e2 * bd[layer, m + 2, j]) * p2 + (e3 * bd[layer, m + 3, j]) * p3)  # fmt: skip
            p[j] = p3 * r
        m += 4
    while m <= hi:
        am = cx[ii, layer, m]
        em = dx[ii, layer, m]
        for j in range(a, b):
            pj = p[j]
            k[j] += (am * bc[layer, m, j]) * pj
            kd[j] += (em * bd[layer, m, j]) * pj
            p[j] = pj * rho[j]
        m += 1


@functools.cache
def _math_fingerprint() -> int:
    """A hash of the files whose functions ``tile`` inlines (``bivariate``'s closed form, ``_jit``,
    ``recursion.step``, ``series``' constants): Numba's cache checks only this file, so ``tile``
    holds the number as a closure constant (part of its cache key) and editing them recompiles it
    (as ``backends.cpu``'s kernels)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in ("bivariate.py", "_jit.py", "recursion.py", "series.py"):
        digest.update((root / name).read_bytes())
    return int.from_bytes(digest.digest()[:7], "little")


def _make_tile():
    fingerprint = _math_fingerprint()

    @jit
    def tile(first, steps, tables, G, cx, dx, inv_x, r0, cy, dy, inv_y, c0, nngp, ntk, o0, p0, get_nngp, get_ntk,
             write_at, readout, with_readout, cut, exact):
        """Kernel(s) of a tile of pairs (rows r0 + i of X, c0 + j of Y) from their inner products G (bi, bj).

        ``cx``/``dx`` (n_x, L, Dmax + 1) hold the coefficients of X's rows for K and Kdot (row-major:
        one row's coefficients are contiguous), ``inv_x`` (L, n_x) 1/sqrt(Sigma_xx) (0 for a zero
        variance), the same for Y; ``tables`` (L, RHO_BINS + 1) the degree per layer and |rho| bin
        (``series.degree_table``).  Outputs as in ``backends.cpu``'s tile: ``nngp[k, o0 + i, p0 + j]``
        and/or ``ntk[...]`` after ``write_at[k]`` steps, through the ``readout`` step where
        ``with_readout[k]`` (a residual network cut there); they may alias G with zero offsets (each
        row of G is read before anything is written to it).

        ``cut`` (L,): per layer, the |rho| above which a pair leaves its row's degree (at most
        ``1 - 2^(-HIGH_BIN / RHO_STEPS)``; ``series.SeriesPlan.exact_args``).  ``exact`` (5,) float64
        ``[flag, alpha, scale, vmin, vmax]``: with flag 1 (ELU/SELU, ``bivariate.elu_dual``) such a
        pair whose two variances lie in ``[vmin, vmax]`` gets the closed form ``scale^2 (K, Kdot)``
        of ELU(alpha) instead of further series terms (the series' degree table then meets the
        requested bound for every |rho| up to ``cut``); a row's such pairs are gathered and computed
        together (``bivariate.elu_dual_row``: vectorised over them, 3x faster than one at a time).

        One row of the tile at a time, every loop over its bj columns (long unit-stride loops, as the
        closed forms'; per-chunk degrees measured 4x slower, their short loops cost more than the terms
        they save): per layer, rho; the row's degree from its largest |rho| with the pairs above bin
        HIGH_BIN left out; the terms up to it for the whole row, four at a time, in ascending order
        (``p`` carries rho^m); then each left-out pair's further terms to its own degree.  The Y
        coefficients are read from a coefficient-major copy of the tile's columns (``bc``, ``bd``),
        filled lazily to the highest degree a row needed so far.
        """  # fmt: skip
        if fingerprint < 0:  # never true; ties the cache entry to the inlined math's source
            return
        bi, bj = G.shape
        n_steps = steps.shape[0]
        n_out = write_at.shape[0]
        dmax = cy.shape[2]
        f0, f1, f2, f3 = first[0], first[1], first[2], first[3]
        dt = G.dtype.type
        one = dt(1.0)
        zero = dt(0.0)
        s = np.empty(bj, G.dtype)
        t = np.empty(bj, G.dtype)
        s2 = np.empty(bj, G.dtype)
        t2 = np.empty(bj, G.dtype)
        rho = np.empty(bj, G.dtype)
        ar = np.empty(bj, G.dtype)
        p = np.empty(bj, G.dtype)
        k = np.empty(bj, G.dtype)
        kd = np.empty(bj, G.dtype)
        # a row's degree is that of a |rho| <= r_high: at most the table's up to bin HIGH_BIN
        dbuf = 1
        for layer in range(n_steps):
            for b in range(min(HIGH_BIN, tables.shape[1] - 1) + 1):
                dbuf = max(dbuf, min(dmax, tables[layer, b] + 1))
        bc = np.empty((n_steps, dbuf, bj), G.dtype)
        bd = np.empty((n_steps, dbuf, bj), G.dtype)
        have = np.zeros(n_steps, np.int64)  # degrees 0..have - 1 of each layer are in bc, bd
        binv = np.empty((n_steps, bj), G.dtype)
        for layer in range(n_steps):
            for j in range(bj):
                binv[layer, j] = inv_y[layer, c0 + j]
        use_exact = exact[0] == 1.0
        parallel_tol = PARALLEL_TOL32 if is_single(one) else PARALLEL_TOL64
        e_alpha, e_scale2, vmin, vmax = exact[1], exact[2] * exact[2], exact[3], exact[4]
        nb = bj if use_exact else 1  # a row's closed-form pairs, gathered (bivariate.elu_dual_row)
        q_idx = np.empty(nb, np.int64)
        q_syy = np.empty(nb)
        q_sxy = np.empty(nb)
        q_k = np.empty(nb)
        q_kd = np.empty(nb)
        work = np.empty((WORK_ROWS + 1, nb))
        for i in range(bi):
            ii = r0 + i
            for j in range(bj):
                g = G[i, j]
                s[j] = f0 * g + f1
                t[j] = f2 * g + f3
            slot = 0
            for layer in range(n_steps + 1):
                while slot < n_out and write_at[slot] == layer and not with_readout[slot]:
                    if get_nngp:
                        _put(nngp, slot, o0 + i, p0, s, bj)
                    if get_ntk:
                        _put(ntk, slot, o0 + i, p0, t, bj)
                    slot += 1
                if layer == n_steps:
                    break
                inv_i = inv_x[layer, ii]
                r_high = cut[layer]
                for j in range(bj):
                    r = min(max(s[j] * inv_i * binv[layer, j], -one), one)
                    rho[j] = r
                    ar[j] = abs(r)
                    p[j] = one
                    k[j] = zero
                    kd[j] = zero
                top = zero  # largest |rho| at most r_high
                top_all = zero
                for j in range(bj):
                    a = ar[j]
                    top_all = max(top_all, a)
                    top = max(top, a if a <= r_high else zero)
                degree = degree_for_rho(tables, layer, top)
                if degree + 1 > have[layer]:
                    _fill(bc, bd, cy, dy, c0, layer, have[layer], degree + 1, bj)
                    have[layer] = degree + 1
                _terms(k, kd, p, rho, bc, bd, cx, dx, ii, layer, 0, degree, 0, bj)
                if top_all > r_high:
                    sxx = 1.0 / (float(inv_i) * float(inv_i)) if inv_i > zero else 0.0
                    row_exact = use_exact and vmin <= sxx <= vmax
                    nq = 0
                    for j in range(bj):
                        if ar[j] > r_high:
                            if row_exact:
                                bv = float(binv[layer, j])
                                syy = 1.0 / (bv * bv) if bv > 0.0 else 0.0
                                if vmin <= syy <= vmax:  # the closed form, below for all of them at once
                                    q_idx[nq] = j
                                    q_syy[nq] = syy
                                    q_sxy[nq] = float(s[j])
                                    nq += 1
                                    continue
                            full = degree_for_rho(tables, layer, ar[j])
                            kj, kdj, pj, rj = k[j], kd[j], p[j], rho[j]
                            for m in range(degree + 1, full + 1):
                                kj += (cx[ii, layer, m] * cy[c0 + j, layer, m]) * pj
                                kdj += (dx[ii, layer, m] * dy[c0 + j, layer, m]) * pj
                                pj *= rj
                            k[j] = kj
                            kd[j] = kdj
                    if nq > 0:
                        elu_dual_row(sxx, q_syy, q_sxy, e_alpha, parallel_tol, q_k, q_kd, nq, work)
                        for q in range(nq):
                            k[q_idx[q]] = dt(e_scale2 * q_k[q])
                            kd[q_idx[q]] = dt(e_scale2 * q_kd[q])
                while slot < n_out and write_at[slot] == layer and with_readout[slot]:
                    for j in range(bj):
                        s2[j], t2[j] = step(k[j], kd[j], s[j], t[j], readout[0], readout[1], readout[2], readout[3],
                                            readout[4])  # fmt: skip
                    if get_nngp:
                        _put(nngp, slot, o0 + i, p0, s2, bj)
                    if get_ntk:
                        _put(ntk, slot, o0 + i, p0, t2, bj)
                    slot += 1
                res, w2, b2 = steps[layer, 0], steps[layer, 1], steps[layer, 2]
                alpha, beta = steps[layer, 3], steps[layer, 4]
                for j in range(bj):
                    s[j], t[j] = step(k[j], kd[j], s[j], t[j], res, w2, b2, alpha, beta)


    return tile


tile = _make_tile()

_PLAIN = np.zeros(1, np.bool_)


def kernel(arch, X, Y=None, get="ntk", tol=None):
    """K(X, Y) for a series activation in one tile (a reference driver for tests and benchmarks;
    the public entry points go through the engine)."""
    from .. import series

    tol = config.SERIES_TOL if tol is None else tol
    dtype = X.dtype
    feats_x = X if arch.input_map is None else np.ascontiguousarray(arch.input_map.apply(X), dtype)
    feats_y = feats_x if Y is None else (Y if arch.input_map is None else
                                         np.ascontiguousarray(arch.input_map.apply(Y), dtype))  # fmt: skip
    first, steps = arch.layer_coefficients(feats_x.shape[1])
    sq_x = np.einsum("ij,ij->i", feats_x, feats_x, dtype=np.float64)
    if Y is None:
        rx = ry = series.prepare(arch.activation, first, steps, sq_x, tol=tol).astype(dtype)
        table = series.degree_table(rx, None, tol, exact=series.exact_params(arch.activation) is not None)
        cut, exact = series.exact_args(arch.activation, rx, None, tol, dtype)
    else:
        sq_y = np.einsum("ij,ij->i", feats_y, feats_y, dtype=np.float64)
        rx, ry = (r.astype(dtype) for r in series.prepare(arch.activation, first, steps, sq_x, sq_y, tol))
        table = series.degree_table(rx, ry, tol, exact=series.exact_params(arch.activation) is not None)
        cut, exact = series.exact_args(arch.activation, rx, ry, tol, dtype)
    G = np.empty((feats_x.shape[0], feats_y.shape[0]), dtype)
    np.matmul(feats_x, feats_y.T, out=G)
    nngp = np.empty((1, *G.shape), dtype)
    ntk = np.empty((1, *G.shape), dtype)
    tile(first.astype(dtype), np.ascontiguousarray(steps, dtype), table, G, rx.c, rx.d, rx.inv_sqrt, 0,
         ry.c, ry.d, ry.inv_sqrt, 0, nngp, ntk, 0, 0, True, True, np.array([steps.shape[0]]), np.zeros(5, dtype),
         _PLAIN, cut, exact)  # fmt: skip
    nngp, ntk = nngp[0], ntk[0]
    if Y is None:
        np.fill_diagonal(nngp, rx.nngp)
        np.fill_diagonal(ntk, rx.ntk)
    out = {"nngp": nngp, "ntk": ntk}
    return out[get] if isinstance(get, str) else tuple(out[g] for g in get)
