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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import config, series
from .._jit import jit
from ..errors import ArgumentError

__all__ = ["GradRows", "energy_slopes", "prepare", "tile_grad"]


@dataclass
class GradRows:
    """The rows of a symmetric Gram prepared for its gradient.

    ``sig`` (L, n) Sigma(x, x) entering each step, ``dsig`` (L, 2, n) its derivatives,
    ``inv_sqrt`` (L, n); ``C, D, E, Q`` (L, Dmax + 1, n) coefficient-major (a tile's columns
    contiguous), zero above each layer's degree; ``degrees`` (L,); ``diag`` (n,) and ``ddiag``
    (2, n) the exact diagonal of the output and its derivatives.
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


def prepare(activation, first, dfirst, steps, dsteps, sqnorm, get_ntk: bool, tol: float = series.DEFAULT_TOL):
    """The diagonal recursion with its derivatives and every layer's coefficients (:class:`GradRows`).

    ``first``, ``steps`` from :meth:`MLP.layer_coefficients`, ``dfirst``, ``dsteps`` from
    :meth:`MLP.layer_coefficient_gradients`; the degree of each layer is the forward kernel's
    (``series.layer_series`` at ``tol``, with its warning when the cap binds).
    """
    n_steps, n = steps.shape[0], sqnorm.shape[0]
    s = first[0] * sqnorm + first[1]
    t = first[2] * sqnorm + first[3]
    ds = dfirst[:, 0, None] * sqnorm + dfirst[:, 1, None]
    dt = dfirst[:, 2, None] * sqnorm + dfirst[:, 3, None]
    sig = np.empty((n_steps, n))
    dsig = np.empty((n_steps, 2, n))
    per_layer = []
    for layer in range(n_steps):
        if not (s > 0.0).all():
            raise ArgumentError(
                "X: a row has a zero (or non-finite) pre-activation variance at layer "
                f"{layer + 1}; the hyper-parameter gradient of {activation!r} needs positive variances "
                "(use a bias, b_std > 0, or drop all-zero rows)"
            )
        sig[layer] = s
        dsig[layer] = ds
        ls = series.layer_series(activation, s, tol)
        N = ls.degree
        c, d, _, _ = series.hermite_coefficients(activation, s, N + 2)
        k = np.arange(N + 1)
        root = np.sqrt(s)
        E = np.sqrt(k + 1.0)[:, None] * d[:, 1 : N + 2].T / root
        Q = np.sqrt((k + 1.0) * (k + 2.0))[:, None] * d[:, 2 : N + 3].T / s
        per_layer.append((ls.c, ls.d, E, Q))
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
    config.check_fits(4 * 8 * n_steps * (top + 1) * n, f"the Hermite coefficients and their derivatives of {n} rows "
                      f"({n_steps} layers, degree {top})", "Use fewer points, or optimise on a subset.")  # fmt: skip
    arrays = [np.zeros((n_steps, top + 1, n)) for _ in range(4)]
    for layer, parts in enumerate(per_layer):
        for out, a in zip(arrays, parts):
            out[layer, : a.shape[0]] = a
    inv = 1.0 / np.sqrt(sig)
    diag, ddiag = (t, dt) if get_ntk else (s, ds)
    return GradRows(sig, dsig, inv, *arrays, degrees, diag, ddiag)


@jit
def _chain(k, kdot, dk, dkdot, t, ds, dt, res, w2, alpha, dw2, db2, dalpha, dbeta):
    """Derivative of one step along one hyper-parameter (as ``backends.cpu``'s ``grad_step``)."""
    ds_new = res * ds + dw2 * k + w2 * dk + db2
    dt_new = res * dt + dalpha * k + alpha * dk + dbeta + (dw2 * kdot + w2 * dkdot) * t + w2 * kdot * dt
    return ds_new, dt_new


@jit
def tile_grad(first, dfirst, steps, dsteps, degrees, G, sig, dsig, inv, C, D, E, Q, r0, c0, out, dout, get_ntk):
    """K and dK of a tile (rows r0 + i, columns c0 + j of one set of rows) from its inner products G.

    Writes ``out[r0 + i, c0 + j]`` and ``dout[p, r0 + i, c0 + j]``; row arrays as in
    :class:`GradRows`.  Per pair and layer seven Horner evaluations in rho, then the chain rule.
    """
    bi, bj = G.shape
    n_steps = steps.shape[0]
    st = np.empty((6, bj))
    acc = np.empty((7, bj))
    rho = np.empty(bj)
    for i in range(bi):
        ii = r0 + i
        for j in range(bj):
            g = G[i, j]
            st[0, j] = first[0] * g + first[1]
            st[1, j] = first[2] * g + first[3]
            st[2, j] = dfirst[0, 0] * g + dfirst[0, 1]
            st[3, j] = dfirst[0, 2] * g + dfirst[0, 3]
            st[4, j] = dfirst[1, 0] * g + dfirst[1, 1]
            st[5, j] = dfirst[1, 2] * g + dfirst[1, 3]
        for layer in range(n_steps):
            inv_i = inv[layer, ii]
            for j in range(bj):
                rho[j] = min(max(st[0, j] * inv_i * inv[layer, c0 + j], -1.0), 1.0)
            acc[:, :] = 0.0
            for m in range(degrees[layer], -1, -1):
                cx, dx, ex, qx = C[layer, m, ii], D[layer, m, ii], E[layer, m, ii], Q[layer, m, ii]
                cy, dy, ey, qy = C[layer, m], D[layer, m], E[layer, m], Q[layer, m]
                for j in range(bj):
                    r = rho[j]
                    jj = c0 + j
                    acc[0, j] = acc[0, j] * r + cx * cy[jj]  # K
                    acc[1, j] = acc[1, j] * r + dx * dy[jj]  # Kdot = dK/dsxy
                    acc[2, j] = acc[2, j] * r + ex * cy[jj]  # 2 dK/dsxx
                    acc[3, j] = acc[3, j] * r + cx * ey[jj]  # 2 dK/dsyy
                    acc[4, j] = acc[4, j] * r + qx * dy[jj]  # 2 dKdot/dsxx
                    acc[5, j] = acc[5, j] * r + dx * qy[jj]  # 2 dKdot/dsyy
                    acc[6, j] = acc[6, j] * r + ex * ey[jj]  # dKdot/dsxy
            c = steps[layer]
            res, w2, b2, alpha, beta = c[0], c[1], c[2], c[3], c[4]
            x0, x1 = dsig[layer, 0, ii], dsig[layer, 1, ii]
            for j in range(bj):
                k, kdot = acc[0, j], acc[1, j]
                kx, ky, qx_, qy_, dxy = 0.5 * acc[2, j], 0.5 * acc[3, j], 0.5 * acc[4, j], 0.5 * acc[5, j], acc[6, j]
                y0, y1 = dsig[layer, 0, c0 + j], dsig[layer, 1, c0 + j]
                sj, tj = st[0, j], st[1, j]
                for p in range(2):
                    xp = x0 if p == 0 else x1
                    yp = y0 if p == 0 else y1
                    dsp = st[2 + 2 * p, j]
                    dk = kx * xp + ky * yp + kdot * dsp
                    dkd = qx_ * xp + qy_ * yp + dxy * dsp
                    dc = dsteps[p, layer]
                    st[2 + 2 * p, j], st[3 + 2 * p, j] = _chain(k, kdot, dk, dkd, tj, dsp, st[3 + 2 * p, j], res, w2,
                                                                alpha, dc[1], dc[2], dc[3], dc[4])  # fmt: skip
                st[0, j] = res * sj + w2 * k + b2
                st[1, j] = res * tj + alpha * k + beta + w2 * kdot * tj
        o = 1 if get_ntk else 0
        for j in range(bj):
            out[ii, c0 + j] = st[o, j]
            dout[0, ii, c0 + j] = st[2 + o, j]
            dout[1, ii, c0 + j] = st[4 + o, j]
