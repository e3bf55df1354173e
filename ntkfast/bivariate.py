"""Bivariate normal orthant probabilities and truncated moments, and ELU's exact dual kernel.

``bvnu(h, k, r)`` = P(x > h, y > k) for standard normals with correlation ``r``: Genz's (2004)
Gauss-Legendre method ("Numerical computation of rectangular bivariate and trivariate normal
and t probabilities", Statistics and Computing 14), the Drezner-Wesolowsky integral in
``asin(r)`` with 6/12/20 nodes by ``|r|`` and, for ``|r| >= 0.925``, the transformed integral in
``sqrt(1 - r^2)`` that stays accurate up to ``|r| = 1`` (absolute error ~1e-15; tested against
SciPy and adaptive 1-D quadrature).  ``1 - r^2`` is passed in (``one_minus_r2``) so that a
caller can form it without cancellation.

:func:`elu_dual` gives, for ``(u, v) ~ N(0, [[sxx, sxy], [sxy, syy]])`` and
``phi(x) = x 1[x > 0] + alpha (e^x - 1) 1[x <= 0]``, ``K = E[phi(u) phi(v)]`` and
``Kdot = E[phi'(u) phi'(v)]`` in closed form: every term is an orthant probability or a
truncated first moment of a Gaussian tilted by ``e^(t1 u + t2 v)`` (``E[e^(t.w) g(w)] =
e^(t' S t / 2) E[g(w + S t)]``), and ``E[x 1[x > h, y > k]] = phi(h) Q((k - r h)/s) + r phi(k)
Q((h - r k)/s)`` (Rosenbaum 1961, ``s = sqrt(1 - r^2)``, ``Q = 1 - Phi``).  Used by the series
kernel (``backends/cpu_series``) for the pairs whose correlation is too close to +-1 for the
Hermite series (ELU's phi' jumps at 0).

:func:`elu_dual_grad` adds the six partials of ``(K, Kdot)`` in ``(sxx, syy, sxy)`` from the
same terms (Price's theorem; for the GP hyper-parameter gradient, ``backends/cpu_series_grad``).
For ``alpha != 1`` (SELU) the true ``dKdot/dsxy``, ``dKdot/dsxx`` and ``dKdot/dsyy`` diverge like
``1/sqrt(1 - rho^2)`` at ``rho = +-1``, through a term ``(1 - alpha)^2 asin(rho) / (2 pi)`` of
``Kdot`` that depends on ``rho`` alone; for pairs taken as parallel that term's partials are left
out, which is their derivative along every direction that keeps them parallel (duplicate rows).
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import exp, jit, jit_inline

__all__ = ["bvnu", "elu_dual", "elu_dual_grad", "elu_dual_row", "WORK_ROWS"]

_TWO_PI = 2.0 * math.pi
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)

# Gauss-Legendre nodes (positive half) and weights on [-1, 1], 6, 12 and 20 points (Genz)
_W6 = np.array([0.1713244923791705, 0.3607615730481384, 0.4679139345726904])
_X6 = np.array([0.9324695142031522, 0.6612093864662647, 0.2386191860831970])
_W12 = np.array([0.04717533638651177, 0.1069393259953183, 0.1600783285433464, 0.2031674267230659,
                 0.2334925365383547, 0.2491470458134029])  # fmt: skip
_X12 = np.array([0.9815606342467191, 0.9041172563704750, 0.7699026741943050, 0.5873179542866171,
                 0.3678314989981802, 0.1252334085114692])  # fmt: skip
_W20 = np.array([0.01761400713915212, 0.04060142980038694, 0.06267204833410906, 0.08327674157670475,
                 0.1019301198172404, 0.1181945319615184, 0.1316886384491766, 0.1420961093183821,
                 0.1491729864726037, 0.1527533871307259])  # fmt: skip
_X20 = np.array([0.9931285991850949, 0.9639719272779138, 0.9122344282513259, 0.8391169718222188,
                 0.7463319064601508, 0.6360536807265150, 0.5108670019508271, 0.3737060887154196,
                 0.2277858511416451, 0.07652652113349733])  # fmt: skip


@jit
def _q(x):
    """Upper normal tail Q(x) = 1 - Phi(x), accurate in both tails."""
    return 0.5 * math.erfc(x * _SQRT_HALF)


@jit
def _pdf(x):
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


@jit
def bvnu(h, k, r, one_minus_r2):
    """P(x > h, y > k), (x, y) standard bivariate normal with correlation r (Genz 2004).

    ``one_minus_r2`` is ``1 - r^2`` (formed by the caller without cancellation); ``h``, ``k`` may
    be infinite."""
    if h == math.inf or k == math.inf:
        return 0.0
    if h == -math.inf:
        return 1.0 if k == -math.inf else _q(k)
    if k == -math.inf:
        return _q(h)
    if r == 0.0:
        return _q(h) * _q(k)
    ar = abs(r)
    if ar < 0.3:
        w, x = _W6, _X6
    elif ar < 0.75:
        w, x = _W12, _X12
    else:
        w, x = _W20, _X20
    hk = h * k
    bvn = 0.0
    if ar < 0.925:
        hs = 0.5 * (h * h + k * k)
        asr = 0.5 * math.asin(r)
        for i in range(w.shape[0]):
            for sgn in (-1.0, 1.0):
                sn = math.sin(asr * (1.0 + sgn * x[i]))
                bvn += w[i] * math.exp((sn * hk - hs) / (1.0 - sn * sn))
        bvn = bvn * asr / _TWO_PI + _q(h) * _q(k)
    else:
        if r < 0.0:
            k = -k
            hk = -hk
        if one_minus_r2 > 0.0:
            bs, a, c, d, lead = _near_setup(h, k, hk, one_minus_r2)
            acc = 0.0
            for i in range(w.shape[0]):
                for sgn in (-1.0, 1.0):
                    acc += w[i] * _node_term(a * (1.0 + sgn * x[i]), bs, hk, c, d)
            bvn = (a * acc - lead) / _TWO_PI
        bvn = _near_finish(h, k, r, bvn)
    return min(1.0, max(0.0, bvn))


@jit
def _near_setup(h, k, hk, one_minus_r2):
    """Genz's |r| >= 0.925 branch, r > 0 (k, hk already flipped for r < 0), 1 - r^2 > 0: (bs, a, c,
    d, lead), ``a`` the half-width of the Gauss-Legendre rule in sqrt(1 - r^2) and ``lead`` the
    closed-form part that the node sum is taken from."""
    a_s = one_minus_r2
    a = math.sqrt(a_s)
    bs = (h - k) * (h - k)
    c = (4.0 - hk) / 8.0
    d = (12.0 - hk) / 80.0
    asr = -0.5 * (bs / a_s + hk)
    lead = a * math.exp(asr) * (1.0 - c * (bs - a_s) * (1.0 - d * bs) / 3.0 + c * d * a_s * a_s)
    if hk > -100.0:
        b = math.sqrt(bs)
        sp = math.sqrt(_TWO_PI) * _q(b / a)  # sqrt(2 pi) Phi(-b/a)
        lead -= math.exp(-0.5 * hk) * sp * b * (1.0 - c * bs * (1.0 - d * bs) / 3.0)
    return bs, 0.5 * a, c, d, lead


@jit_inline
def _node_term(t, bs, hk, c, d):
    """One node's term of the |r| >= 0.925 integral at t = a (1 +- x_i); ``_jit.exp`` (within an
    ulp of libm's, and vectorisable: :func:`elu_dual_row` runs it over many pairs at once)."""
    xs = t * t
    asr = -0.5 * (bs / xs + hk)
    rs = math.sqrt(1.0 - xs)
    sp = 1.0 + c * xs * (1.0 + 5.0 * d * xs)
    ep = exp(-0.5 * hk * xs / ((1.0 + rs) * (1.0 + rs))) / rs
    return exp(asr) * (sp - ep)


@jit
def _near_finish(h, k, r, bvn):
    """The end of Genz's |r| >= 0.925 branch (k flipped for r < 0), unclipped."""
    if r > 0.0:
        return bvn + _q(max(h, k))
    if h >= k:
        return -bvn
    # P(h < x < k) (k flipped above) = Phi(k) - Phi(h), from the smaller tails
    band = _q(-k) - _q(-h) if h < 0.0 else _q(h) - _q(k)
    return band - bvn


@jit
def _moment(h, k, r, s):
    """E[x 1[x > h, y > k]], correlation r, s = sqrt(1 - r^2) (Rosenbaum 1961)."""
    if s > 0.0:
        return _pdf(h) * _q((k - r * h) / s) + r * _pdf(k) * _q((h - r * k) / s)
    if r > 0.0:  # y = x
        return _pdf(max(h, k))
    # y = -x: h < x < -k
    return _pdf(h) - _pdf(-k) if h < -k else 0.0


@jit
def _geometry(e1, e2, t1, t2, sxx, syy, sxy, s1, s2, r):
    """The tilted orthant {e1 u > 0, e2 v > 0} under e^(t1 u + t2 v): the mean m = S t, the log
    mass factor q = t' S t / 2, bvnu's limits (h, k) and correlation rr."""
    m1 = t1 * sxx + t2 * sxy
    m2 = t1 * sxy + t2 * syy
    q = 0.5 * (t1 * t1 * sxx + 2.0 * t1 * t2 * sxy + t2 * t2 * syy)
    return m1, m2, q, -e1 * m1 / s1, -e2 * m2 / s2, e1 * e2 * r


@jit
def _tilted(p, m1, m2, q, h, k, rr, e1, e2, s1, s2, s, which):
    """(mass, moment) of the tilted orthant from its probability p = bvnu(h, k, rr): the moment
    is of u (``which`` 1), of v (2), or not wanted (0; its normal tails are not computed)."""
    g = math.exp(q)
    if which == 1:
        return g * p, g * (m1 * p + s1 * e1 * _moment(h, k, rr, s))
    if which == 2:
        return g * p, g * (m2 * p + s2 * e2 * _moment(k, h, rr, s))
    return g * p, 0.0


@jit
def _orthant(e1, e2, t1, t2, sxx, syy, sxy, s1, s2, r, omr2, s, which):
    """(E[e^(t1 u + t2 v) 1[e1 u > 0, e2 v > 0]], the same times u (``which`` 1) or v (2)).

    Tilt: the mean moves to m = S t and the mass is scaled by e^(t' S t / 2)."""
    m1, m2, q, h, k, rr = _geometry(e1, e2, t1, t2, sxx, syy, sxy, s1, s2, r)
    return _tilted(bvnu(h, k, rr, omr2), m1, m2, q, h, k, rr, e1, e2, s1, s2, s, which)


# 1 - rho^2 below this is rounding noise of the inner products: the pair is taken as parallel
# (rho = +-1), the convention of the closed forms (``recursion``'s parallel tolerances, the same
# values): Kdot has a sqrt(1 - rho^2) cusp at rho = +-1, which would turn noise of 1e-16 in rho
# into 1e-9 in Kdot (exact duplicate rows)
PARALLEL_TOL64 = 1e-12
PARALLEL_TOL32 = 1e-5


@jit
def _pair(sxx, syy, sxy, parallel_tol):
    """(s1, s2, r, 1 - r^2, sxy, sqrt(1 - r^2)): sxy clipped to Cauchy-Schwarz, parallel below the tolerance."""
    s1 = math.sqrt(sxx)
    s2 = math.sqrt(syy)
    r = min(1.0, max(-1.0, sxy / math.sqrt(sxx * syy)))  # exactly 1 for sxy = sqrt(sxx syy)
    omr2 = (1.0 - r) * (1.0 + r)
    if omr2 < parallel_tol:
        r = 1.0 if r > 0.0 else -1.0
        omr2 = 0.0
    return s1, s2, r, omr2, r * s1 * s2, math.sqrt(omr2)


@jit
def _combine(sxx, syy, s1, s2, r, s, alpha, a_pn, u_pn, a_np, v_np, a_uv):
    """(K, Kdot) from the three tilted orthants (see :func:`elu_dual`)."""
    # E[u+ v+] (arc-cosine) and P(u > 0, v > 0)
    theta = math.atan2(s, r)
    kpp = s1 * s2 * (s + (math.pi - theta) * r) / _TWO_PI
    ppp = (math.pi - theta) / _TWO_PI
    # untilted: E[u 1[u > 0, v < 0]] = s1 phi(0) (1 - r) / 2 (Rosenbaum at h = k = 0), and mirrored
    u_pn0 = s1 * _INV_SQRT_2PI * 0.5 * (1.0 - r)
    v_np0 = s2 * _INV_SQRT_2PI * 0.5 * (1.0 - r)
    # E[e^u 1[u < 0, v < 0]] = E[e^u 1[u < 0]] - E[e^u 1[u < 0, v > 0]], the first univariate
    # (e^(sxx/2) Phi(-s1)): two orthant calls fewer (no cancellation that matters: the absolute
    # error is eps e^(sxx/2) Phi(-s1) <= eps, next to K's O(1) terms)
    a_u = math.exp(0.5 * sxx) * _q(s1) - a_np
    a_v = math.exp(0.5 * syy) * _q(s2) - a_pn
    p_nn = ppp  # P(u < 0, v < 0) = P(u > 0, v > 0)
    k = kpp + alpha * ((u_pn - u_pn0) + (v_np - v_np0)) + alpha * alpha * ((a_uv - a_u) - a_v + p_nn)
    kd = ppp + alpha * (a_pn + a_np) + alpha * alpha * a_uv
    return k, kd


@jit
def elu_dual(sxx, syy, sxy, alpha, parallel_tol):
    """(K, Kdot) of ELU(alpha) for pre-activation covariances (sxx, syy, sxy), both variances > 0.

    Float64 throughout; ``sxy`` is clipped to the Cauchy-Schwarz range, and a pair with
    ``1 - rho^2 < parallel_tol`` is taken as parallel."""
    s1, s2, r, omr2, sxy, s = _pair(sxx, syy, sxy, parallel_tol)
    # e^v on {u > 0, v < 0}: (mass, u-moment); e^u on {u < 0, v > 0}: (mass, v-moment); e^(u + v)
    # on {u < 0, v < 0}: the mass
    a_pn, u_pn = _orthant(1.0, -1.0, 0.0, 1.0, sxx, syy, sxy, s1, s2, r, omr2, s, 1)
    a_np, v_np = _orthant(-1.0, 1.0, 1.0, 0.0, sxx, syy, sxy, s1, s2, r, omr2, s, 2)
    a_uv, _ = _orthant(-1.0, -1.0, 1.0, 1.0, sxx, syy, sxy, s1, s2, r, omr2, s, 0)
    return _combine(sxx, syy, s1, s2, r, s, alpha, a_pn, u_pn, a_np, v_np, a_uv)


@jit
def _kink_terms(sv, alpha):
    """For w ~ N(0, sv^2) (one variable given that the other is at the kink, 0): (E[phi(w)],
    E[phi'(w)], E[e^w 1[w < 0]]) of ELU(alpha)."""
    g = math.exp(0.5 * sv * sv) * _q(sv)
    return sv * _INV_SQRT_2PI + alpha * (g - 0.5), 0.5 + alpha * g, g


@jit
def elu_dual_grad(sxx, syy, sxy, alpha, parallel_tol):
    """(K, Kdot, dK/dsxx, dK/dsyy, dKdot/dsxx, dKdot/dsyy, dKdot/dsxy) of ELU(alpha); dK/dsxy = Kdot.

    K, Kdot are :func:`elu_dual`'s (the same terms, the same values).  Price's theorem in the
    variances: dK/dsxx = E[phi''(u) phi(v)] / 2, dKdot/dsxx = E[phi'''(u) phi'(v)] / 2 and
    dKdot/dsxy = E[phi''(u) phi''(v)], where phi'' = alpha g + (1 - alpha) delta, g(x) =
    e^x 1[x < 0], and phi''' = alpha g - alpha delta + (1 - alpha) delta'.  With p_u =
    1 / sqrt(2 pi sxx) the density of u at 0 and E_0 the expectation under v | u = 0 ~
    N(0, syy (1 - rho^2)): E[delta(u) f(v)] = p_u E_0[f(v)], E[delta'(u) f(v)] = -p_u (sxy / sxx)
    E_0[f'(v)]; the E[g(u) f(v)] are the tilted orthants of :func:`elu_dual`.  The delta-delta
    term, (1 - alpha)^2 / (2 pi sqrt(1 - rho^2)) times the partials of rho (Kdot holds
    (1 - alpha)^2 asin(rho) / (2 pi)), is infinite at rho = +-1 and left out for parallel pairs
    (see the module's docstring); for 1 - rho^2 above ``parallel_tol`` it is in, so the partials
    are the true ones there.
    """
    s1, s2, r, omr2, sxy, s = _pair(sxx, syy, sxy, parallel_tol)
    a_pn, u_pn = _orthant(1.0, -1.0, 0.0, 1.0, sxx, syy, sxy, s1, s2, r, omr2, s, 1)
    a_np, v_np = _orthant(-1.0, 1.0, 1.0, 0.0, sxx, syy, sxy, s1, s2, r, omr2, s, 2)
    a_uv, _ = _orthant(-1.0, -1.0, 1.0, 1.0, sxx, syy, sxy, s1, s2, r, omr2, s, 0)
    k, kd = _combine(sxx, syy, s1, s2, r, s, alpha, a_pn, u_pn, a_np, v_np, a_uv)
    b = 1.0 - alpha
    px = _INV_SQRT_2PI / s1  # densities of u and of v at 0
    py = _INV_SQRT_2PI / s2
    fy, dfy, gy = _kink_terms(s2 * s, alpha)  # v given u = 0
    fx, dfx, gx = _kink_terms(s1 * s, alpha)  # u given v = 0
    # E[g(u) phi(v)] = E[v e^u 1[u < 0, v > 0]] + alpha E[e^u (e^v - 1) 1[u < 0, v < 0]], and mirrored
    a_u = math.exp(0.5 * sxx) * _q(s1) - a_np  # E[e^u 1[u < 0, v < 0]]
    a_v = math.exp(0.5 * syy) * _q(s2) - a_pn
    kx = 0.5 * (alpha * (v_np + alpha * (a_uv - a_u)) + b * px * fy)
    ky = 0.5 * (alpha * (u_pn + alpha * (a_uv - a_v)) + b * py * fx)
    # E[g(u) phi'(v)] = E[e^u 1[u < 0, v > 0]] + alpha E[e^(u + v) 1[u < 0, v < 0]]; E_0[phi''(v)] =
    # alpha E_0[g(v)] + (1 - alpha) / (sqrt(2 pi) sd), whose second part is in the singular term
    kdx = 0.5 * (alpha * (a_np + alpha * a_uv) - alpha * px * dfy - b * (sxy / sxx) * px * alpha * gy)
    kdy = 0.5 * (alpha * (a_pn + alpha * a_uv) - alpha * py * dfx - b * (sxy / syy) * py * alpha * gx)
    kdxy = alpha * alpha * a_uv + alpha * b * (px * gy + py * gx)
    if s > 0.0:  # (1 - alpha)^2 / (2 pi s) times d rho / d(sxx, syy, sxy)
        sing = b * b / (_TWO_PI * s)
        kdxy += sing / (s1 * s2)
        kdx -= sing * r / (2.0 * sxx)
        kdy -= sing * r / (2.0 * syy)
    return k, kd, kx, ky, kdx, kdy, kdxy


# the three tilted orthants of elu_dual: (e1, e2, t1, t2)
_ORTHANTS = ((1.0, -1.0, 0.0, 1.0), (-1.0, 1.0, 1.0, 0.0), (-1.0, -1.0, 1.0, 1.0))
_MOMENT = (1, 2, 0)  # the moment each one's term needs (u, v, none)
# the 40 nodes of the |r| >= 0.925 rule in bvnu's order (i, then the sign): 1 +- x_i and w_i
_NODE_T = np.array([1.0 + sgn * x for x in _X20 for sgn in (-1.0, 1.0)])
_NODE_W = np.array([w for w in _W20 for sgn in (-1.0, 1.0)])
# rows of elu_dual_row's work array per orthant: h, k (bvnu's, flipped for rr < 0), bs, a, c, d, lead, acc
_FIELDS = 8
WORK_ROWS = 3 * _FIELDS


@jit
def _node_sums(a, bs, hk, c, d, acc, n):
    """acc[q] = sum_i w_i term_i(q) for q < n: bvnu's node loop, vectorised over the pairs (node
    loop outside, the same order of the terms as bvnu's)."""
    for q in range(n):
        acc[q] = 0.0
    for i in range(_NODE_T.shape[0]):
        t = _NODE_T[i]
        w = _NODE_W[i]
        for q in range(n):
            acc[q] += w * _node_term(a[q] * t, bs[q], hk[q], c[q], d[q])


@jit
def elu_dual_row(sxx, syy, sxy, alpha, parallel_tol, k_out, kd_out, n, work):
    """:func:`elu_dual` for the pairs (sxx, syy[q], sxy[q]), q < n, into k_out, kd_out.

    The pairs with 1 - r^2 > 0 and |r| >= 0.925 (Genz's branch in sqrt(1 - r^2), where the
    series' cut puts nearly all pairs that come here) have the 40-node sums of their three bvnu
    vectorised over the pairs (``_node_sums``: one exp pair per node and pair, ~2/3 of the time
    per pair when scalar); the rest of each pair (limits, the normal tails, the moments) runs per
    pair, and the other pairs are :func:`elu_dual` itself.  ``work`` (WORK_ROWS + 1, >= n)
    float64 scratch (its last row holds hk)."""
    hk_row = work[WORK_ROWS]
    for o in range(3):
        e1, e2, t1, t2 = _ORTHANTS[o]
        base = o * _FIELDS
        for q in range(n):
            s1, s2, r, omr2, sxy_q, s = _pair(sxx, syy[q], sxy[q], parallel_tol)
            if omr2 > 0.0 and abs(r) >= 0.925:
                _, _, _, h, k, rr = _geometry(e1, e2, t1, t2, sxx, syy[q], sxy_q, s1, s2, r)
                hk = h * k
                if rr < 0.0:
                    k = -k
                    hk = -hk
                bs, a, c, d, lead = _near_setup(h, k, hk, omr2)
            else:  # harmless values: the pair is elu_dual's
                h = k = hk = bs = c = d = lead = 0.0
                a = 0.5
            work[base, q] = h
            work[base + 1, q] = k
            work[base + 2, q] = bs
            work[base + 3, q] = a
            work[base + 4, q] = c
            work[base + 5, q] = d
            work[base + 6, q] = lead
            hk_row[q] = hk
        _node_sums(work[base + 3], work[base + 2], hk_row, work[base + 4], work[base + 5], work[base + 7], n)
        for q in range(n):  # bvnu's hk is h k (flipped), not kept: the node sum is all that needs it
            work[base + 6, q] = (work[base + 3, q] * work[base + 7, q] - work[base + 6, q]) / _TWO_PI
    for q in range(n):
        s1, s2, r, omr2, sxy_q, s = _pair(sxx, syy[q], sxy[q], parallel_tol)
        if not (omr2 > 0.0 and abs(r) >= 0.925):
            k_out[q], kd_out[q] = elu_dual(sxx, syy[q], sxy[q], alpha, parallel_tol)
            continue
        a_pn, u_pn = _finish_orthant(0, work, q, sxx, syy[q], sxy_q, s1, s2, r, s)
        a_np, v_np = _finish_orthant(1, work, q, sxx, syy[q], sxy_q, s1, s2, r, s)
        a_uv, _ = _finish_orthant(2, work, q, sxx, syy[q], sxy_q, s1, s2, r, s)
        k_out[q], kd_out[q] = _combine(sxx, syy[q], s1, s2, r, s, alpha, a_pn, u_pn, a_np, v_np, a_uv)


@jit
def _finish_orthant(o, work, q, sxx, syy, sxy, s1, s2, r, s):
    """(mass, moment) of orthant ``o`` of pair ``q`` from its node sum (:func:`elu_dual_row`)."""
    e1, e2, t1, t2 = _ORTHANTS[o]
    base = o * _FIELDS
    m1, m2, qq, h, k, rr = _geometry(e1, e2, t1, t2, sxx, syy, sxy, s1, s2, r)
    p = min(1.0, max(0.0, _near_finish(h, work[base + 1, q], rr, work[base + 6, q])))
    return _tilted(p, m1, m2, qq, h, k, rr, e1, e2, s1, s2, s, _MOMENT[o])
