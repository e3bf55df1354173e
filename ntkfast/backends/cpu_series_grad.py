"""Hyper-parameter gradients of the Hermite-series activations (code ``spec.SERIES``) on the CPU.

For a pair with variances ``(sxx, syy)`` and correlation ``rho = sxy / sqrt(sxx syy)``, Mehler's
formula gives ``K = sum_k c_k(sxx) c_k(syy) rho^k`` (``ntkfast.series``).  Its partials come from
the same per-row quadrature, without any derivative of ``phi`` beyond ``phi'``:

* Price's theorem in the variances (the heat equation of the Gaussian): ``dK/dsxx = E[phi''(u)
  phi(v)] / 2``, ``dKdot/dsxx = E[phi'''(u) phi'(v)] / 2`` and ``dKdot/dsxy = E[phi''(u) phi''(v)]``
  (``dK/dsxy = Kdot``);
* Mehler again, with the Hermite coefficients of ``phi''`` and ``phi'''``, which Gaussian
  integration by parts (``E[f'(z) h_k(z)] = sqrt(k + 1) E[f(z) h_{k+1}(z)]``, from
  ``z h_k = sqrt(k + 1) h_{k+1} + sqrt(k) h_{k-1}`` and ``h_k' = sqrt(k) h_{k-1}``) turns into
  higher coefficients of ``phi'``:

      e_k(s) = E[phi''(sqrt(s) z) h_k(z)]  = sqrt(k + 1) d_{k+1}(s) / sqrt(s)
      q_k(s) = E[phi'''(sqrt(s) z) h_k(z)] = sqrt((k + 1)(k + 2)) d_{k+2}(s) / s

  so that ``dK/dsxx = 1/2 sum_k e_k(sxx) c_k(syy) rho^k``, ``dKdot/dsxx = 1/2 sum_k q_k(sxx)
  d_k(syy) rho^k`` and ``dKdot/dsxy = sum_k e_k(sxx) e_k(syy) rho^k``.

The diagonal's derivatives are one-dimensional integrals (Stein's identity,
``d/ds E[F(sqrt(s) z)] = E[F(sqrt(s) z) (z^2 - 1)] / (2 s)``) by split Gauss-Legendre quadrature,
exact also for the kinked ELU/SELU.  The per-pair work is seven polynomials in ``rho`` (value,
Kdot and five partials), then the chain rule of ``ntkfast.kernel_grad``.

Rows with a zero variance at some layer have no derivative in this form (``1/sqrt(s)``): they are
refused (:class:`~ntkfast.errors.ArgumentError`).

ELU/SELU (``series.exact_params``): the pairs that the forward kernel takes in closed form (``|rho|``
above the layer's cut of ``series.exact_args``, both variances in ``series.ELU_EXACT_VARIANCES``)
get their seven values from ``bivariate.elu_dual_grad`` instead of the polynomials, whose series
converges slowly there (phi' jumps at 0); below the cut the polynomials run to the forward
kernel's degree with the closed form (the degree that meets ``SERIES_TOL`` up to the cut, about
230-290 instead of the cap 512: half the cost; the gradients moved by at most 1e-13 of their
largest entry against the cap's on correlated and duplicate rows).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import config, series
from .._jit import jit
from ..bivariate import PARALLEL_TOL64, elu_dual_grad
from ..errors import ArgumentError
from .cpu_series import degree_for_rho

__all__ = ["GradRows", "energy_slopes", "prepare", "tile_grad"]


@dataclass
class GradRows:
    """The rows of a symmetric Gram prepared for its gradient.

    ``sig`` (L, n) Sigma(x, x) entering each step, ``dsig`` (L, 2, n) its derivatives,
    ``inv_sqrt`` (L, n); ``C, D, E, Q`` (L, Dmax + 1, n) coefficient-major (a tile's columns
    contiguous), zero above each layer's degree; ``degrees`` (L,); ``diag`` (n,) and ``ddiag``
    (2, n) the exact diagonal of the output and its derivatives; ``cut`` (L,) and ``exact`` (5,)
    as ``series.exact_args`` gives them to the forward kernel (ELU/SELU's closed form; ``exact[0]``
    0 and ``cut`` unused otherwise); ``table`` (L, RHO_BINS + 1) the degree per layer and |rho|
    bin (``series.bin_degrees`` at ``tol / (degree + 2)``, see :func:`prepare`).
    """

    sig: np.ndarray
    dsig: np.ndarray
    inv_sqrt: np.ndarray
    C: np.ndarray
    D: np.ndarray
    E: np.ndarray
    Q: np.ndarray
    degrees: np.ndarray
    diag: np.ndarray
    ddiag: np.ndarray
    cut: np.ndarray
    exact: np.ndarray
    table: np.ndarray


def _stein_rule(m: int = 160, z_max: float = 14.0):
    """Nodes and weights of E[f(z)], z ~ N(0, 1), split at z = 0 (where ELU's kink sits)."""
    x, w = np.polynomial.legendre.leggauss(m)
    half = 0.5 * z_max
    z = np.concatenate([half * (x - 1.0), half * (x + 1.0)])
    wz = np.concatenate([half * w, half * w]) * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    return z, wz


def energy_slopes(activation, s: np.ndarray):
    """d/ds E[phi(sqrt(s) z)^2] and d/ds E[phi'(sqrt(s) z)^2] at the variances ``s > 0`` (Stein's identity)."""
    z, w = _stein_rule()
    s = np.asarray(s, dtype=np.float64)
    x = np.sqrt(s)[:, None] * z[None, :]
    weight = w * (z * z - 1.0)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        f = np.asarray(activation.phi(x), dtype=np.float64)
        g = np.asarray(activation.dphi(x), dtype=np.float64)
    return (f * f) @ weight / (2.0 * s), (g * g) @ weight / (2.0 * s)


def prepare(activation, first, dfirst, steps, dsteps, sqnorm, get_ntk: bool, tol: float | None = None):
    """The diagonal recursion with its derivatives and every layer's coefficients (:class:`GradRows`).

    ``first``, ``steps`` from :meth:`MLP.layer_coefficients`, ``dfirst``, ``dsteps`` from
    :meth:`MLP.layer_coefficient_gradients`; the degree of each layer is the forward kernel's
    (``series.layer_series`` at ``tol`` with ELU's closed form, with its warning when the cap
    binds where no closed form covers the rows); ELU/SELU's cut is the forward kernel's
    (``series.prepare`` and ``series.exact_args`` of the same rows).

    A chunk of pairs whose largest |rho| is r needs fewer terms than the full degree (as in the
    forward kernel's degree table: the tail beyond N is within r^(N+1) profile[N] of the
    diagonal's scale).  The derivative polynomials' coefficients e_k, q_k carry the factors
    sqrt(k + 1) and sqrt((k + 1)(k + 2)) <= degree + 2 over d_k, so their table is that of the
    profiles at ``tol / (degree + 2)``: far from rho = +-1 (random inputs in high dimension) a
    few dozen terms instead of hundreds.
    """
    n_steps, n = steps.shape[0], sqnorm.shape[0]
    s = first[0] * sqnorm + first[1]
    t = first[2] * sqnorm + first[3]
    ds = dfirst[:, 0, None] * sqnorm + dfirst[:, 1, None]
    dt = dfirst[:, 2, None] * sqnorm + dfirst[:, 3, None]
    sig = np.empty((n_steps, n))
    dsig = np.empty((n_steps, 2, n))
    per_layer = []
    profile_of = []
    for layer in range(n_steps):
        if not (s > 0.0).all():
            raise ArgumentError(
                "X: a row has a zero (or non-finite) pre-activation variance at layer "
                f"{layer + 1}; the hyper-parameter gradient of {activation!r} needs positive variances "
                "(use a bias, b_std > 0, or drop all-zero rows)"
            )
        sig[layer] = s
        dsig[layer] = ds
        ls = series.layer_series(activation, s, tol, closed_form=True)
        N = ls.degree
        # phi''s coefficients two degrees further: interpolated to the rows as the forward's are,
        # by quadrature row by row where that passes the cap
        if N + 2 <= config.SERIES_MAX_DEGREE:
            d = series.layer_series(activation, s, tol, min_degree=N + 2, warn=False).d
        else:
            d = series.hermite_coefficients(activation, s, N + 2)[1].T
        k = np.arange(N + 1)
        root = np.sqrt(s)
        E = np.sqrt(k + 1.0)[:, None] * d[1 : N + 2] / root
        Q = np.sqrt((k + 1.0) * (k + 2.0))[:, None] * d[2 : N + 3] / s
        per_layer.append((ls.c, ls.d, E, Q))
        profile_of.append(ls.profile)
        kp, kdp = energy_slopes(activation, s)
        K, Kd = ls.e2, ls.e2d
        res, w2, b2, alpha, beta = steps[layer]
        dw2, db2, dal, dbe = (dsteps[:, layer, m, None] for m in (1, 2, 3, 4))
        dk, dkd = kp * ds, kdp * ds
        ds_new = res * ds + dw2 * K + w2 * dk + db2
        dt = res * dt + dal * K + alpha * dk + dbe + (dw2 * Kd + w2 * dkd) * t + w2 * Kd * dt
        ds = ds_new
        s, t = res * s + w2 * K + b2, res * t + alpha * K + beta + w2 * Kd * t
    degrees = np.array([p[0].shape[0] - 1 for p in per_layer], dtype=np.int64)
    top = int(degrees.max(initial=0))
    profiles = np.empty((n_steps, top + 1))
    for layer, ls in enumerate(profile_of):
        profiles[layer, : ls.size] = ls
        profiles[layer, ls.size :] = ls[-1]
    config.check_fits(4 * 8 * n_steps * (top + 1) * n, f"the Hermite coefficients and their derivatives of {n} rows "
                      f"({n_steps} layers, degree {top})", "Use fewer points, or optimise on a subset.")  # fmt: skip
    arrays = [np.zeros((n_steps, top + 1, n)) for _ in range(4)]
    for layer, parts in enumerate(per_layer):
        for out, a in zip(arrays, parts):
            out[layer, : a.shape[0]] = a
    inv = 1.0 / np.sqrt(sig)
    diag, ddiag = (t, dt) if get_ntk else (s, ds)
    closed = series.exact_params(activation) is not None
    target = (config.SERIES_TOL if tol is None else tol) / (top + 2)
    table, _ = series.bin_degrees(profiles, degrees, target, closed)
    if not closed:
        cut, exact = np.ones(n_steps), np.zeros(5)
    else:  # the forward kernel's rows of K(X, X), for its cut (the closed form's threshold) per layer
        fwd = series.prepare(activation, first, steps, sqnorm, tol=tol)
        cut, exact = series.exact_args(activation, fwd, None, tol, np.float64)
    return GradRows(sig, dsig, inv, *arrays, degrees, diag, ddiag, cut, exact, table)


@jit
def _chain(k, kdot, dk, dkdot, t, ds, dt, res, w2, alpha, dw2, db2, dalpha, dbeta):
    """Derivative of one step along one hyper-parameter (as ``backends.cpu``'s ``grad_step``)."""
    ds_new = res * ds + dw2 * k + w2 * dk + db2
    dt_new = res * dt + dalpha * k + alpha * dk + dbeta + (dw2 * kdot + w2 * dkdot) * t + w2 * kdot * dt
    return ds_new, dt_new


# columns per chunk of the tile kernel: the per-pair state and accumulators live in flat arrays at
# offsets that are multiples of this compile-time constant (LLVM then needs no runtime overlap
# checks between them, and the loops vectorise; see backends.cpu.GRAD_CHUNK)
CHUNK = 128


@jit
def _horner(degree, layer, ii, c0, C, D, E, Q, rho, acc, w):
    """The seven polynomials in rho of a chunk of ``w`` pairs (row ``ii``, columns ``c0 + j``) into ``acc``."""
    for j in range(7 * CHUNK):
        acc[j] = 0.0
    for m in range(degree, -1, -1):
        cx, dx, ex, qx = C[layer, m, ii], D[layer, m, ii], E[layer, m, ii], Q[layer, m, ii]
        cy = C[layer, m, c0 : c0 + w]
        dy = D[layer, m, c0 : c0 + w]
        ey = E[layer, m, c0 : c0 + w]
        qy = Q[layer, m, c0 : c0 + w]
        for j in range(w):
            r = rho[j]
            acc[j] = acc[j] * r + cx * cy[j]  # K
            acc[CHUNK + j] = acc[CHUNK + j] * r + dx * dy[j]  # Kdot = dK/dsxy
            acc[2 * CHUNK + j] = acc[2 * CHUNK + j] * r + ex * cy[j]  # 2 dK/dsxx
            acc[3 * CHUNK + j] = acc[3 * CHUNK + j] * r + cx * ey[j]  # 2 dK/dsyy
            acc[4 * CHUNK + j] = acc[4 * CHUNK + j] * r + qx * dy[j]  # 2 dKdot/dsxx
            acc[5 * CHUNK + j] = acc[5 * CHUNK + j] * r + dx * qy[j]  # 2 dKdot/dsyy
            acc[6 * CHUNK + j] = acc[6 * CHUNK + j] * r + ex * ey[j]  # dKdot/dsxy


@jit
def _chain_row(acc, st, col, x0, x1, w, c, dc0, dc1):
    """One step with its two derivatives for a chunk of pairs, from the polynomials in ``acc``;
    ``col`` holds the columns' dSigma/dp0, dSigma/dp1 (CHUNK apart), ``st`` the state as in
    ``backends.cpu``'s ``layer_grad_row``."""
    res, w2, b2, alpha, beta = c[0], c[1], c[2], c[3], c[4]
    dw20, db20, dal0, dbe0 = dc0[1], dc0[2], dc0[3], dc0[4]
    dw21, db21, dal1, dbe1 = dc1[1], dc1[2], dc1[3], dc1[4]
    for j in range(w):
        k = acc[j]
        kdot = acc[CHUNK + j]
        kx = 0.5 * acc[2 * CHUNK + j]
        ky = 0.5 * acc[3 * CHUNK + j]
        qx = 0.5 * acc[4 * CHUNK + j]
        qy = 0.5 * acc[5 * CHUNK + j]
        dxy = acc[6 * CHUNK + j]
        y0 = col[j]
        y1 = col[CHUNK + j]
        sj = st[j]
        tj = st[CHUNK + j]
        a0 = st[2 * CHUNK + j]
        a1 = st[4 * CHUNK + j]
        st[2 * CHUNK + j], st[3 * CHUNK + j] = _chain(k, kdot, kx * x0 + ky * y0 + kdot * a0,
                                                      qx * x0 + qy * y0 + dxy * a0, tj, a0, st[3 * CHUNK + j],
                                                      res, w2, alpha, dw20, db20, dal0, dbe0)  # fmt: skip
        st[4 * CHUNK + j], st[5 * CHUNK + j] = _chain(k, kdot, kx * x1 + ky * y1 + kdot * a1,
                                                      qx * x1 + qy * y1 + dxy * a1, tj, a1, st[5 * CHUNK + j],
                                                      res, w2, alpha, dw21, db21, dal1, dbe1)  # fmt: skip
        st[j] = res * sj + w2 * k + b2
        st[CHUNK + j] = res * tj + alpha * k + beta + w2 * kdot * tj


def _math_fingerprint() -> int:
    """A hash of the files whose compiled functions ``tile_grad`` calls (``bivariate``'s closed
    form, ``_jit``): Numba's cache checks only this file, so ``tile_grad`` holds the number as a
    closure constant (part of its cache key) and editing them recompiles it."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in ("bivariate.py", "_jit.py", "backends/cpu_series.py"):
        digest.update((root / name).read_bytes())
    return int.from_bytes(digest.digest()[:7], "little")


def _make_tile_grad():
    fingerprint = _math_fingerprint()

    @jit
    def exact_pairs(layer, ii, cc, w, rho, st, sig, cut, exact, acc):
        """ELU/SELU: the seven values of the pairs of a chunk that the forward kernel takes in closed
        form (|rho| above ``cut[layer]``, both variances in ``[exact[3], exact[4]]``) from
        ``bivariate.elu_dual_grad``, into ``acc`` in ``_horner``'s layout (scale^2 times ELU(alpha)'s)."""
        if fingerprint < 0 or exact[0] != 1.0:
            return
        alpha, scale2, vmin, vmax = exact[1], exact[2] * exact[2], exact[3], exact[4]
        sxx = sig[layer, ii]
        if not vmin <= sxx <= vmax:
            return
        r_high = cut[layer]
        for j in range(w):
            syy = sig[layer, cc + j]
            if abs(rho[j]) > r_high and vmin <= syy <= vmax:
                k, kd, kx, ky, kdx, kdy, kdxy = elu_dual_grad(sxx, syy, st[j], alpha, PARALLEL_TOL64)
                acc[j] = scale2 * k
                acc[CHUNK + j] = scale2 * kd
                acc[2 * CHUNK + j] = 2.0 * scale2 * kx
                acc[3 * CHUNK + j] = 2.0 * scale2 * ky
                acc[4 * CHUNK + j] = 2.0 * scale2 * kdx
                acc[5 * CHUNK + j] = 2.0 * scale2 * kdy
                acc[6 * CHUNK + j] = scale2 * kdxy

    @jit
    def _series_top(layer, ii, cc, w, rho, sig, cut, exact):
        """The largest |rho| of a chunk's pairs that the polynomials serve (not those of
        ``exact_pairs``: ELU/SELU beyond the cut with both variances in range)."""
        top = 0.0
        row_exact = exact[0] == 1.0 and exact[3] <= sig[layer, ii] <= exact[4]
        r_high = cut[layer]
        for j in range(w):
            a = abs(rho[j])
            if not (row_exact and a > r_high and exact[3] <= sig[layer, cc + j] <= exact[4]):
                top = max(top, a)
        return top

    @jit
    def tile_grad(
        first, dfirst, steps, dsteps, table, G, sig, dsig, inv, C, D, E, Q, r0, c0, out, dout, get_ntk, cut, exact
    ):
        """K and dK of a tile (rows r0 + i, columns c0 + j of one set of rows) from its inner products G.

        Writes ``out[r0 + i, c0 + j]`` and ``dout[p, r0 + i, c0 + j]``; row arrays as in
        :class:`GradRows` (``table``, ``cut``, ``exact`` its fields).  Per pair and layer seven Horner
        evaluations in rho, to the degree of the chunk's largest |rho| (for ELU/SELU's pairs beyond
        the cut the closed form instead, left out of that largest), then the chain rule, over
        chunks of CHUNK columns.
        """  # fmt: skip
        if fingerprint < 0:  # never true; ties the cache entry to the called math's source
            return
        bi, bj = G.shape
        n_steps = steps.shape[0]
        W = CHUNK
        st = np.empty(6 * W)
        acc = np.empty(7 * W)
        rho = np.empty(W)
        col = np.empty(2 * W)
        o = 1 if get_ntk else 0
        for a0 in range(0, bj, W):
            w = min(W, bj - a0)
            cc = c0 + a0
            for i in range(bi):
                ii = r0 + i
                for j in range(w):
                    g = G[i, a0 + j]
                    st[j] = first[0] * g + first[1]
                    st[W + j] = first[2] * g + first[3]
                    st[2 * W + j] = dfirst[0, 0] * g + dfirst[0, 1]
                    st[3 * W + j] = dfirst[0, 2] * g + dfirst[0, 3]
                    st[4 * W + j] = dfirst[1, 0] * g + dfirst[1, 1]
                    st[5 * W + j] = dfirst[1, 2] * g + dfirst[1, 3]
                for layer in range(n_steps):
                    inv_i = inv[layer, ii]
                    for j in range(w):
                        rho[j] = min(max(st[j] * inv_i * inv[layer, cc + j], -1.0), 1.0)
                        col[j] = dsig[layer, 0, cc + j]
                        col[W + j] = dsig[layer, 1, cc + j]
                    top = _series_top(layer, ii, cc, w, rho, sig, cut, exact)
                    _horner(degree_for_rho(table, layer, top), layer, ii, cc, C, D, E, Q, rho, acc, w)
                    exact_pairs(layer, ii, cc, w, rho, st, sig, cut, exact, acc)
                    _chain_row(acc, st, col, dsig[layer, 0, ii], dsig[layer, 1, ii], w, steps[layer], dsteps[0, layer],
                               dsteps[1, layer])  # fmt: skip
                row = out[ii]
                row0 = dout[0, ii]
                row1 = dout[1, ii]
                for j in range(w):
                    row[cc + j] = st[o * W + j]
                    row0[cc + j] = st[(2 + o) * W + j]
                    row1[cc + j] = st[(4 + o) * W + j]

    return tile_grad


tile_grad = _make_tile_grad()
