"""Closed-form layer maps of the infinite-width NNGP/NTK recursion, one activation family each.

This module is the single home of the math on the CPU (``backends/cuda/recursion.cuh`` holds
the same functions for the GPU).  Each family gives, for pre-activation covariances
``(sxx, syy, sxy)`` of a pair of inputs,

    K    = E[phi(u) phi(v)],   Kdot = E[phi'(u) phi'(v)],   (u, v) ~ N(0, [[sxx, sxy], [sxy, syy]])

and a ``*_diag`` version for ``x == y`` that is exact (no 0/0, no angle).  Functions are plain
scalar Python compiled by Numba; constants go through :func:`ntkfast._jit.like` so that float32
inputs stay in float32, and the angle comes from the branch-free :func:`ntkfast._jit.atan2`
so that the loops calling these functions vectorise.  Conventions (docs/design.md section 2):
no arccos of a clipped cosine, no division by norms, finite values for zero variances.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import atan2, atan2_upper, expm1_small, is_single, jit, jit_inline, like
from ._jit import exp as vexp
from .spec import ABRELU, ERF, EXP, GAUSSIAN, GELU, MONOMIAL, RECTIFIED_MONOMIAL, SIGN, SIN

_INV_2PI = 1.0 / (2.0 * math.pi)


# sxx syy - sxy^2 below this fraction of sxx syy is rounding noise (the inner products carry
# relative errors of order sqrt(d) eps): such pairs are taken as parallel.  Without this, exact
# duplicate rows get theta ~ sqrt(eps), and kernels with a sqrt-type cusp at rho = 1 (sign,
# ReLU's Kdot) amplify it layer after layer (sign, depth 3: 1e-2 instead of 1e-16).
_PARALLEL_TOL64 = 1e-12
_PARALLEL_TOL32 = 1e-5


@jit
def _det(sxx, syy, sxy):
    """max(sxx syy - sxy^2, 0): the determinant of the pair covariance, clamped at rounding level.

    Formulas below expand det(I + c Sigma) as 1 + c (sxx + syy) + c^2 det(Sigma) rather than
    multiplying out, so nothing cancels between large terms (erf at variance 1e8 in float32
    otherwise divides by zero).
    """
    return max(sxx * syy - sxy * sxy, like(sxy, 0.0))


@jit_inline
def _angle(sxx, syy, sxy):
    """(r, theta): r = sqrt(sxx syy - sxy^2), theta = atan2(r, sxy) in [0, pi].

    theta = pi/2 when r = sxy = 0 (a zero-variance input: treated as uncorrelated), and r = 0
    when sxx syy - sxy^2 is within rounding noise of 0 (see ``_PARALLEL_TOL64``).

    Computed in units of sxx (y = syy/sxx, c = sxy/sxx, r = sxx sqrt(y - c^2)) so that nothing
    overflows or underflows while the variances are normal numbers whose ratio is representable:
    the product sxx syy would leave the float range at variances around 1e+-154 (float64) or
    1e+-19 (float32) and make every pair look parallel.  The reciprocal 1/sxx depends on the row
    only, so the tile loops hoist it: the fast path gains two multiplications, no division.
    """
    r = angle_radius(sxx, syy, sxy)
    # r >= 0: the upper half-plane's atan2, whose (0, 0) is the pi/2 above (no select for it)
    return r, atan2_upper(r, sxy)


@jit_inline
def angle_radius(sxx, syy, sxy):
    """The r of :func:`_angle` alone (the tile loops of ``ANGLE_CODES`` compute it in a loop of its own)."""
    zero = like(sxy, 0.0)
    tol = like(sxy, _PARALLEL_TOL32) if is_single(sxy) else like(sxy, _PARALLEL_TOL64)
    # sxx = 0 (then sxy = 0): any finite inv gives r = 0; max() keeps the code branch-free
    inv = like(sxy, 1.0) / max(sxx, like(sxy, 1.1754944e-38) if is_single(sxy) else like(sxy, 2.2250738585072014e-308))
    y = syy * inv
    c = sxy * inv
    det = y - c * c
    return math.sqrt(det) * sxx if det > tol * y else zero


@jit
def _scaled_det1(c, sxx, syy, sxy):
    """(a, dn, x, v, w) with det(I + c Sigma) = a^2 dn, a = 1 + c sxx, and x, v, w = c (sxx, syy, sxy) / a.

    det(I + c Sigma) = 1 + c (sxx + syy) + c^2 det(Sigma) in units of a^2, as
    dn = (1 + x + v) / a + (x v - w^2), with nothing cancelling between large terms and no
    product of two variances (which overflows at variances around 1e154 in float64, 1e19 in
    float32, while the kernels themselves are still representable).  Needs a > 0; 1/a depends
    on the row only, so the tile loops hoist it.  A pair parallel to rounding (x v - w^2 within
    ``_PARALLEL_TOL64`` of x v, as :func:`angle_radius`) gets x v - w^2 = 0 (:func:`_scaled_det1_held`).
    """
    a, dn, x, v, w, held = _scaled_det1_held(c, sxx, syy, sxy)
    return a, dn, x, v, w


@jit_inline
def _scaled_det1_held(c, sxx, syy, sxy):
    """:func:`_scaled_det1` and whether it held the pair at parallel (x v - w^2 taken as 0).

    A duplicate row's sxy (a product) and sxx (a squared norm) differ by rounding, ~eps, and at
    large variance eps x^2 swamps the 1/a terms of dn (erf's duplicate entry was 1e-42 of its
    diagonal at input scale 1e50).  The gradients (``erf_grad``, ``gelu_grad``, ``gaussian_grad``)
    then take the partials of the held quantity: x v - w^2 = 0 has partials 0, since a change of
    W_std or b_std keeps a parallel pair parallel.
    """
    one = like(sxy, 1.0)
    zero = like(sxy, 0.0)
    tol = like(sxy, _PARALLEL_TOL32) if is_single(sxy) else like(sxy, _PARALLEL_TOL64)
    a = one + c * sxx
    ia = one / a
    x = c * sxx * ia
    v = c * syy * ia
    w = c * sxy * ia
    # x v - w^2 as x (v - |w|) + |w| (x - |w|): exactly 0 for a parallel pair (x = v = |w|) however
    # LLVM contracts it into fused multiply-adds (x v - w w gave +-1 ulp of x^2 depending on
    # the inlining context), and without the cancellation of x v - w^2 near parallel
    aw = abs(w)
    m = x * (v - aw) + aw * (x - aw)
    held = not (m > tol * (x * v))
    dn = ia * (ia + x + v) + (zero if held else m)
    return a, dn, x, v, w, held


@jit
def _scaled_det1_unheld(c, sxx, syy, sxy):
    """:func:`_scaled_det1` without holding parallel pairs (GELU: its gradient's partials, summed
    with those of a held det, cancelled to 1e34 times the diagonal's at input scale 1e50; not
    resolved yet, so GELU keeps the rounding-level x v - w^2 of a duplicate row)."""
    one = like(sxy, 1.0)
    a = one + c * sxx
    ia = one / a
    x = c * sxx * ia
    v = c * syy * ia
    w = c * sxy * ia
    aw = abs(w)
    dn = ia * (ia + x + v) + max(x * (v - aw) + aw * (x - aw), like(sxy, 0.0))
    return a, dn, x, v, w


def variance_underflow(activation, first, steps, feats, sig, nngp, ntk) -> str | None:
    """Why the diagonal recursion of these rows left the float range at the small end, or None.

    The overflow side shows as inf/NaN (the caller refuses those); underflow is silent: a
    variance that rounds to 0 or to a subnormal number makes every pair of that row look
    orthogonal or parallel (sign gives K(x, x) = 0 instead of 1).  Flagged: any subnormal
    variance or output, and a variance that is 0 where it cannot be (a non-zero input row with
    W_std > 0 at the first layer; a positive variance into a step with W_std > 0 and an
    activation that is not identically zero).  O(n d + n L), outside the tile loops.

    Parameters
    ----------
    activation : ntkfast.spec.Activation
    first, steps : ndarray
        ``MLP.layer_coefficients``.
    feats : ndarray of shape (n, d)
        The rows after the input map.
    sig : ndarray of shape (n_steps, n)
        Sigma(x, x) entering each step.
    nngp, ntk : ndarray of shape (n,)
        The diagonal kernels.

    Returns
    -------
    str or None
        A message for the caller's error, naming the inputs and W_std.
    """
    tiny = np.finfo(sig.dtype).tiny

    def subnormal(a):
        a = np.abs(a)
        return bool(((a > 0) & (a < tiny)).any())

    if subnormal(sig) or subnormal(nngp) or subnormal(ntk):
        bad = True
    else:
        levels = np.concatenate([sig, nngp[None, :]]) if sig.size else nngp[None, :]
        bad = False
        if first[0] > 0:
            small = np.flatnonzero(levels[0] < tiny)  # usually none: only those rows are read
            bad = bool(np.any(feats[small] != 0))
        if not bad:
            for layer in range(steps.shape[0]):
                if steps[layer, 1] > 0 and ((levels[layer] >= tiny) & (levels[layer + 1] < tiny)).any():
                    # only then is phi evaluated (a NumPy phi may import scipy.special: ~0.1 s)
                    bad = bool(np.any(activation.phi(np.array([-1.7, -0.6, 0.45, 1.3])) != 0))
                    break
    if not bad:
        return None
    return (
        f"the variances of the recursion underflow {sig.dtype} for these inputs (below {tiny:.3g}): "
        "the kernel cannot be resolved there; scale the inputs or W_std up"
    )


# ------------------------------------------------------------------------------ ABReLU family
@jit
def abrelu(a, b, sxx, syy, sxy):
    """phi = a min(x, 0) + b max(x, 0): K = f r + Kdot sxy, Kdot = (a^2+b^2)/2 - f theta."""
    r, theta = _angle(sxx, syy, sxy)
    return abrelu_angle(a, b, sxy, r, theta)


@jit
def abrelu_angle(a, b, sxy, r, theta):
    """:func:`abrelu` from the (r, theta) of :func:`_angle`."""
    f = (a - b) * (a - b) * like(sxy, _INV_2PI)
    kdot = (a * a + b * b) * like(sxy, 0.5) - f * theta
    return f * r + kdot * sxy, kdot


@jit
def abrelu_diag(a, b, sxx):
    """theta = 0 exactly; a zero variance takes the off-diagonal convention theta = pi/2."""
    if sxx > like(sxx, 0.0):
        h = (a * a + b * b) * like(sxx, 0.5)
        return h * sxx, h
    return abrelu(a, b, sxx, sxx, sxx)


# --------------------------------------------------------------------------------------- Erf
@jit
def erf(a, b, c, sxx, syy, sxy):
    """phi = a erf(b x) + c (Williams 1997): with r^2 = det(I + 2 b^2 Sigma),
    K = a^2 (2/pi) atan2(2 b^2 sxy, r) + c^2, Kdot = a^2 b^2 (4/pi) / r.

    r = a' sqrt(dn) from :func:`_scaled_det1` (no overflow of b^4 sxx syy at large variances).
    """
    b2 = b * b
    two = like(sxy, 2.0)
    ra, dn, x, v, w = _scaled_det1(two * b2, sxx, syy, sxy)
    sdn = math.sqrt(dn)  # r / ra, >= 1 / ra
    k = like(sxy, 2.0 / math.pi) * atan2(w, sdn)  # atan2(2 b^2 sxy, r), both divided by ra
    kdot = like(sxy, 4.0 / math.pi) / (ra * sdn)
    return a * a * k + c * c, a * a * b2 * kdot


@jit
def erf_diag(a, b, c, sxx):
    return erf(a, b, c, sxx, sxx, sxx)


# -------------------------------------------------------------------------------------- GELU
@jit
def gelu(sxx, syy, sxy):
    """phi = x Phi(x) (exact GELU).  With a = 1 + sxx, b = 1 + syy, P = a b, D = P - sxy^2, q = sxy^2 / P:

    K    = sxy/4 + sxy atan2(sxy, sqrt D)/(2 pi) + (sxx syy + sxy^2 (1 - sxx syy)/P) / (2 pi sqrt D)
    Kdot = 1/4 + atan2(sxy, sqrt D)/(2 pi) + sxy ((sxx+syy+3) - sxy^2 (sxx+syy+2)/P) / (2 pi D^1.5)
    (derived with Gaussian integration by parts; checked against quadrature in the tests).

    Evaluated without cancellation, using 1 - q = D/P:
    sxx syy + q (1 - sxx syy) = sxx syy D/P + q and (s + 3) - q (s + 2) = (a + b) D/P + 1, and in
    units of a (:func:`_scaled_det1`, D = a^2 dn, y = b/a), so that neither large variances
    (sxx syy and P overflow) nor float32 near-duplicates at large variance (the plain form lost
    1e-4 of the diagonal to the cancellation) lose digits.
    """
    one = like(sxy, 1.0)
    a, dn, x, v, w = _scaled_det1_unheld(one, sxx, syy, sxy)
    ia = one / a  # hoisted with a
    y = ia + v  # b / a
    iy = one / y
    sdn = math.sqrt(dn)  # sqrt(D) / a
    rsq = one / sdn
    inv_2pi = like(sxy, _INV_2PI)
    angle = atan2(w, sdn) * inv_2pi  # atan2(sxy, sqrt D)
    q = w * w * iy
    quarter = like(sxy, 0.25)
    # (sxx/a)(syy/b) sqrt(D) + q / sqrt(D)
    k = quarter * sxy + sxy * angle + (x * (syy * iy) * sdn + q * ia * rsq) * inv_2pi
    # sxy (a + b) / (P sqrt D) + sxy / D^1.5
    u = ia * rsq
    kdot = quarter + angle + w * ((one + y) * iy * u + u * u * rsq) * inv_2pi
    return k, kdot


@jit
def gelu_diag(sxx):
    return gelu(sxx, sxx, sxx)


# sxx + syy - 2 sxy within this many eps of sxx + syy is rounding noise of the inner products
# (BLAS and the row norms round differently): such pairs get the parallel distance.
_DISTANCE_ULPS = 64.0


@jit
def _sq_distance(sxx, syy, sxy):
    """E(u - v)^2 = sxx + syy - 2 sxy, never below its Cauchy-Schwarz floor (sqrt sxx - sqrt syy)^2.

    The sum cancels for (nearly) parallel pairs: at variance 1e8 an exact duplicate pair got
    1e-8 of relative noise into sin's K, at 1e18 exp of a negative distance (K ~ 1e55).  A
    distance within rounding of 0 (``_DISTANCE_ULPS`` eps of sxx + syy) is the parallel one, so
    duplicates are exact and no distance is negative.  (Genuinely distinct pairs keep an error
    ~ eps (sxx + syy) b^2 from the inner products: the kernel only sees Sigma.)
    """
    d, floor, held = _distance_and_floor(sxx, syy, sxy)
    return floor if held else d


@jit_inline
def _distance_and_floor(sxx, syy, sxy):
    """(sxx + syy - 2 sxy, its floor, whether :func:`_sq_distance` holds the pair at the floor)."""
    eps = like(sxy, 1.1920929e-07) if is_single(sxy) else like(sxy, 2.220446049250313e-16)
    total = sxx + syy
    d = total - like(sxy, 2.0) * sxy
    floor = math.sqrt(sxx) - math.sqrt(syy)
    floor = floor * floor
    return d, floor, d <= like(sxy, _DISTANCE_ULPS) * eps * total or d < floor


# ------------------------------------------------------------------ Sin family (Cos, Rbf too)
@jit_inline
def sin(a, b, c, sxx, syy, sxy):
    """phi = a sin(b x + c): E[sin A sin B] = (E cos(A-B) - E cos(A+B))/2.

    With e- = exp(-b^2 (sxx + syy - 2 sxy)/2), e+ = exp(-b^2 (sxx + syy + 2 sxy)/2):
    K = a^2/2 (e- - cos(2c) e+),  Kdot = a^2 b^2/2 (e- + cos(2c) e+), written as
    e- -+ cos(2c) e+ = (e- - e+) + 2 {sin^2 c, cos^2 c} e+ with e- - e+ = -e- expm1(-2 b^2 sxy),
    so that small variances do not cancel (sin at inputs of size 1e-6 otherwise loses every digit).
    """
    b2 = b * b
    half_a2 = like(sxy, 0.5) * a * a
    if rbf_like(c):  # cos(2c) = 0: K = a^2/2 e-, no e+ (a condition on the parameters: unswitched)
        e_minus = vexp(like(sxy, -0.5) * b2 * _sq_distance(sxx, syy, sxy))
        return half_a2 * e_minus, half_a2 * b2 * e_minus
    e_minus, e_plus = sin_exps(b, sxx, syy, sxy)
    x = like(sxy, -2.0) * b2 * sxy
    # e- - e+ = -e- expm1(x): accurate for small |x|; for large |x| the plain difference is (and
    # expm1 could overflow against an underflowed e-)
    diff = -e_minus * expm1_small(x) if abs(x) < like(sxy, 0.5) else e_minus - e_plus
    sc = math.sin(c)
    cc = math.cos(c)
    two = like(sxy, 2.0)
    return half_a2 * (diff + two * sc * sc * e_plus), half_a2 * b2 * (diff + two * cc * cc * e_plus)


@jit_inline
def rbf_like(c):
    """Whether cos(2c) is 0 to rounding (c = pi/4 + k pi/2 as a float: ``spec.Rbf``), where the sin
    family's kernel is a^2/2 e- exactly: the float c's cos(2c) ~ 6e-17 would otherwise add
    6e-17 e+, which for anticorrelated pairs at large variance (e+ / e- = exp(-2 b^2 sxy)) exceeds
    the RBF kernel itself."""
    eps = like(c, 1.1920929e-07) if is_single(c) else like(c, 2.220446049250313e-16)
    return abs(math.cos(like(c, 2.0) * c)) <= like(c, 4.0) * eps


@jit_inline
def sin_exps(b, sxx, syy, sxy):
    """The (e-, e+) of :func:`sin`."""
    h = like(sxy, -0.5) * (b * b)
    return vexp(h * _sq_distance(sxx, syy, sxy)), vexp(h * _sq_distance(sxx, syy, -sxy))


@jit
def sin_diag(a, b, c, sxx):
    return sin(a, b, c, sxx, sxx, sxx)


# -------------------------------------------------------------------------------------- Sign
@jit
def sign(sxx, syy, sxy):
    """phi = sign(x): K = 1 - 2 theta/pi; Kdot = 0 (the derivative vanishes almost everywhere)."""
    r, theta = _angle(sxx, syy, sxy)
    return sign_angle(sxy, theta)


@jit
def sign_angle(sxy, theta):
    """:func:`sign` from the theta of :func:`_angle`."""
    # as (2/pi)(pi/2 - theta): exactly 0 at theta = pi/2 whether or not LLVM fuses a multiply-add
    return like(sxy, 2.0 / math.pi) * (like(sxy, math.pi / 2) - theta), like(sxy, 0.0)


@jit
def sign_diag(sxx):
    return like(sxx, 1.0) if sxx > like(sxx, 0.0) else like(sxx, 0.0), like(sxx, 0.0)


# --------------------------------------------------------------------------------------- Exp
@jit
def exp(a, b, sxx, syy, sxy):
    """phi = a exp(b x): K = a^2 exp(b^2 (sxx + syy + 2 sxy)/2), Kdot = b^2 K."""
    k = a * a * vexp(like(sxy, 0.5) * b * b * (sxx + syy + like(sxy, 2.0) * sxy))
    return k, b * b * k


@jit
def exp_diag(a, b, sxx):
    return exp(a, b, sxx, sxx, sxx)


# ---------------------------------------------------------------------------------- Gaussian
@jit
def gaussian(a, b, sxx, syy, sxy):
    """phi = a exp(b x^2): with D = det(I - 2 b Sigma), K = a^2 / sqrt(D), Kdot = 4 a^2 b^2 sxy / D^1.5.

    Finite only while I - 2 b Sigma is positive definite (always for b <= 0); the public
    functions check the diagonal, which bounds every pair.  D = a^2 dn (:func:`_scaled_det1`), so
    that b < 0 at large variances does not overflow.
    """
    one = like(sxy, 1.0)
    ra, dn, x, v, w = _scaled_det1(like(sxy, -2.0) * b, sxx, syy, sxy)
    inv_sqrt = one / (ra * math.sqrt(max(dn, like(sxy, 0.0))))  # inf where not positive definite
    k = a * a * inv_sqrt
    return k, like(sxy, 4.0) * b * b * (sxy * k) * inv_sqrt * inv_sqrt


@jit
def gaussian_diag(a, b, sxx):
    return gaussian(a, b, sxx, sxx, sxx)


# ------------------------------------------------------------------- arc-cosine (rectified) n
@jit
def _arccos_bracket(n, pi_minus_theta, r, c, s):
    """2 pi E[max(u,0)^n max(v,0)^n] = (pi - theta) Q_n(c, S) + r R_n(c, S), S = sxx syy.

    From Cho & Saul's J_n(theta) with sin = r/sqrt(S), cos = c/sqrt(S), times S^(n/2); the
    polynomials are homogeneous of degree n, so no division by norms is needed.
    """
    if n == 0:
        q, rr = like(c, 1.0), like(c, 0.0)
    elif n == 1:
        q, rr = c, like(c, 1.0)
    elif n == 2:
        q, rr = s + like(c, 2.0) * c * c, like(c, 3.0) * c
    elif n == 3:
        q = c * (like(c, 6.0) * c * c + like(c, 9.0) * s)
        rr = like(c, 11.0) * c * c + like(c, 4.0) * s
    elif n == 4:
        c2 = c * c
        q = like(c, 24.0) * c2 * c2 + like(c, 72.0) * c2 * s + like(c, 9.0) * s * s
        rr = c * (like(c, 50.0) * c2 + like(c, 55.0) * s)
    else:
        c2 = c * c
        q = c * (like(c, 120.0) * c2 * c2 + like(c, 600.0) * c2 * s + like(c, 225.0) * s * s)
        rr = like(c, 274.0) * c2 * c2 + like(c, 607.0) * c2 * s + like(c, 64.0) * s * s
    return pi_minus_theta * q + r * rr


@jit
def rectified_monomial(n, sxx, syy, sxy):
    """phi = max(x, 0)^n: the arc-cosine kernel of order n; Kdot = n^2 K_{n-1} (0 for n = 0)."""
    r, theta = _angle(sxx, syy, sxy)
    return rectified_monomial_angle(n, sxx, syy, sxy, r, theta)


@jit
def rectified_monomial_angle(n, sxx, syy, sxy, r, theta):
    """:func:`rectified_monomial` from the (r, theta) of :func:`_angle`."""
    pmt = like(sxy, math.pi) - theta
    s = sxx * syy
    k = _arccos_bracket(n, pmt, r, sxy, s) * like(sxy, _INV_2PI)
    if n == 0:
        return k, like(sxy, 0.0)
    kdot = like(sxy, n * n * _INV_2PI) * _arccos_bracket(n - 1, pmt, r, sxy, s)
    return k, kdot


@jit
def _double_factorial_odd(m):
    """(2m - 1)!! for m >= 0 (1 for m = 0)."""
    out = 1
    for k in range(1, 2 * m, 2):
        out *= k
    return out


@jit
def rectified_monomial_diag(n, sxx):
    """E[max(u,0)^(2n)] = (2n-1)!!/2 sxx^n exactly; Kdot = n^2 (2n-3)!!/2 sxx^(n-1).

    A zero variance takes the off-diagonal convention (theta = pi/2), as for ABReLU.
    """
    if not sxx > like(sxx, 0.0):
        return rectified_monomial(n, sxx, sxx, sxx)
    k = like(sxx, 0.5 * _double_factorial_odd(n)) * sxx**n
    if n == 0:
        return k, like(sxx, 0.0)
    return k, like(sxx, 0.5 * n * n * _double_factorial_odd(n - 1)) * sxx ** (n - 1)


# ---------------------------------------------------------------------------------- Monomial
@jit
def _isserlis_coefficient(n, k):
    """C(n, k)^2 k! ((n - k - 1)!!)^2: the number of pairings with k cross pairs."""
    binom = 1
    for i in range(k):
        binom = binom * (n - i) // (i + 1)
    fact = 1
    for i in range(2, k + 1):
        fact *= i
    dfact = _double_factorial_odd((n - k) // 2)
    return binom * binom * fact * dfact * dfact


@jit
def _isserlis(n, sxx, syy, sxy):
    """E[u^n v^n] = sum_{k = n mod 2} C(n,k)^2 k! ((n-k-1)!!)^2 sxy^k (sxx syy)^((n-k)/2)."""
    s = sxx * syy
    total = like(sxy, 0.0)
    for k in range(n % 2, n + 1, 2):
        coef = _isserlis_coefficient(n, k)
        total += like(sxy, coef) * sxy**k * s ** ((n - k) // 2)
    return total


@jit
def monomial(n, sxx, syy, sxy):
    """phi = x^n: K by Isserlis' theorem, Kdot = n^2 E[u^(n-1) v^(n-1)]."""
    if n == 0:
        return like(sxy, 1.0), like(sxy, 0.0)
    return _isserlis(n, sxx, syy, sxy), like(sxy, n * n) * _isserlis(n - 1, sxx, syy, sxy)


@jit
def monomial_diag(n, sxx):
    """E[u^(2n)] = (2n-1)!! sxx^n exactly."""
    k = like(sxx, _double_factorial_odd(n)) * sxx**n
    if n == 0:
        return k, like(sxx, 0.0)
    return k, like(sxx, n * n * _double_factorial_odd(n - 1)) * sxx ** (n - 1)


# ---------------------------------------------------------------------------------- dispatch
@jit_inline
def dual(code, p0, p1, p2, sxx, syy, sxy):
    """(K, Kdot) of the activation with integer ``code`` and parameters (p0, p1, p2).

    Kernels pass ``code`` as a compile-time literal, so the chain folds to one family.
    """
    if code == ABRELU:
        return abrelu(p0, p1, sxx, syy, sxy)
    elif code == ERF:
        return erf(p0, p1, p2, sxx, syy, sxy)
    elif code == GELU:
        return gelu(sxx, syy, sxy)
    elif code == SIN:
        return sin(p0, p1, p2, sxx, syy, sxy)
    elif code == SIGN:
        return sign(sxx, syy, sxy)
    elif code == EXP:
        return exp(p0, p1, sxx, syy, sxy)
    elif code == GAUSSIAN:
        return gaussian(p0, p1, sxx, syy, sxy)
    elif code < MONOMIAL:
        return rectified_monomial(code - RECTIFIED_MONOMIAL, sxx, syy, sxy)
    else:
        return monomial(code - MONOMIAL, sxx, syy, sxy)


# The families whose (K, Kdot) is a function of the angle of the pair (``_angle``'s r and theta):
# the tile loops compute r, theta and the rest in three loops of their own (``dual_angle``).
ANGLE_CODES = (ABRELU, SIGN) + tuple(range(RECTIFIED_MONOMIAL, MONOMIAL))


@jit_inline
def dual_angle(code, p0, p1, p2, sxx, syy, sxy, r, theta):
    """``dual`` for ``code`` in ``ANGLE_CODES``, given the (r, theta) of ``_angle(sxx, syy, sxy)``."""
    if code == ABRELU:
        return abrelu_angle(p0, p1, sxy, r, theta)
    elif code == SIGN:
        return sign_angle(sxy, theta)
    else:
        return rectified_monomial_angle(code - RECTIFIED_MONOMIAL, sxx, syy, sxy, r, theta)


@jit
def dual_diag(code, p0, p1, p2, sxx):
    """(K(x, x), Kdot(x, x)), exact."""
    if code == ABRELU:
        return abrelu_diag(p0, p1, sxx)
    elif code == ERF:
        return erf_diag(p0, p1, p2, sxx)
    elif code == GELU:
        return gelu_diag(sxx)
    elif code == SIN:
        return sin_diag(p0, p1, p2, sxx)
    elif code == SIGN:
        return sign_diag(sxx)
    elif code == EXP:
        return exp_diag(p0, p1, sxx)
    elif code == GAUSSIAN:
        return gaussian_diag(p0, p1, sxx)
    elif code < MONOMIAL:
        return rectified_monomial_diag(code - RECTIFIED_MONOMIAL, sxx)
    else:
        return monomial_diag(code - MONOMIAL, sxx)


@jit
def step(k, kdot, sigma, theta, res, w2, b2, alpha, beta, residual=True):
    """One (activation, Dense) step, given the activation's (K, Kdot).

    Sigma <- res Sigma + W^2 K + b^2
    Theta <- res Theta + alpha K + beta + W^2 Kdot Theta
    NTK parameterization: alpha = W^2, beta = b^2; standard: alpha = fan-in, beta = 1 (bias) or 0.
    res = 1 inside a residual block (the identity branch adds its kernels), else 0.
    ``residual`` False (a constant at the call: the tile loops' step where res = 0) leaves out
    the res terms, which our fastmath flags cannot fold away (0 * x is not 0 for x = inf).
    """
    ns = w2 * k
    nt = alpha * k
    if residual:
        ns = res * sigma + ns
        nt = res * theta + nt
    return ns + b2, nt + beta + w2 * kdot * theta


# ------------------------------------------------------------------ derivatives (float64 only)
# For hyper-parameter gradients (``ntkfast.sklearn.NTKKernel``): each ``*_grad`` returns
# (K, Kdot, dK/dsxx, dK/dsyy, dK/dsxy, dKdot/dsxx, dKdot/dsyy, dKdot/dsxy).  dK/dsxy = Kdot is
# Price's theorem (except for sign, whose Kdot = 0 is the almost-everywhere convention).
# Where r = 0 (parallel pairs, zero variances) the Kdot partials of the angle families are
# singular, but a change of W_std or b_std keeps such a pair parallel (rho = 1 is a fixed point
# of every layer), so the derivative along it is 0: the partials are set to 0 there.
_HOMOGENEOUS_CODES = tuple(range(RECTIFIED_MONOMIAL, RECTIFIED_MONOMIAL + 6)) + tuple(range(MONOMIAL, MONOMIAL + 9))
GRADIENT_CODES = (ABRELU, ERF, GELU, SIN, SIGN, EXP, GAUSSIAN) + _HOMOGENEOUS_CODES


_TINY64 = 2.2250738585072014e-308


@jit_inline
def abrelu_grad(a, b, sxx, syy, sxy):
    # 1/sxx depends on the row only (hoisted)
    k, kdot, h, gs, g = abrelu_grad_log(a, b, sxx, syy, sxy)
    isx = 1.0 / max(sxx, _TINY64)
    isy = 1.0 / max(syy, _TINY64)
    return k, kdot, h * isx, h * isy, kdot, gs * isx, gs * isy, g


@jit_inline
def abrelu_grad_log(a, b, sxx, syy, sxy):
    """(K, Kdot, h, gs, g): ABReLU's partials in the log variances, which are the same in sxx and syy:
    sxx dK/dsxx = syy dK/dsyy = h, sxx dKdot/dsxx = syy dKdot/dsyy = gs, and dKdot/dsxy = g
    (dK/dsxy = Kdot), so that a tile's chain rule needs no division by a variance per pair
    (``backends.cpu``'s ``layer_grad_row`` uses this form, with ``dual_grad_log``).

    Branch-free (the tile loops vectorise it): where r = 0 the Kdot partials are 0 (see above) and
    the K partials f r / 2 vanish with r.
    """
    r, theta = _angle(sxx, syy, sxy)
    f = (a - b) * (a - b) * _INV_2PI
    kdot = (a * a + b * b) * 0.5 - f * theta
    k = f * r + kdot * sxy
    g = f / r if r > 0.0 else 0.0
    h = 0.5 * f * r
    gs = -0.5 * g * sxy
    return k, kdot, h, gs, g


@jit_inline
def erf_grad(a, b, c, sxx, syy, sxy):
    # K and Kdot exactly as ``erf`` computes them, and the partials from the same scaled variables
    # (r = ra sqrt(dn), w = 2 b^2 sxy / ra, v = 2 b^2 syy / ra), so that r^2 = det(I + 2 b^2 Sigma),
    # which overflows at variances around 1e154, is never formed.  Two divisions per pair (1/(ra sqrt(dn)),
    # 1/(ia + v)); 1/ra depends on the row only.  A pair held at parallel (``_scaled_det1_held``:
    # D = 1 + 2 s'xx + 2 s'yy) takes the partials of K = (2/pi) atan2(2 s'xy, sqrt D) and
    # Kdot = (4/pi)/sqrt D with that D, whose sum along a change that keeps the pair parallel
    # does not cancel (the general ones cancel to 1/ra of their size).
    b2 = b * b
    ra, dn, x, v, w, held = _scaled_det1_held(2.0 * b2, sxx, syy, sxy)
    sdn = math.sqrt(dn)
    ia = 1.0 / ra
    k_out = a * a * ((2.0 / math.pi) * atan2(w, sdn)) + c * c
    kdot = (4.0 / math.pi) / (ra * sdn)  # as in ``erf``
    kdot_out = a * a * b2 * kdot
    u = kdot * (math.pi / 4.0)  # 1 / (ra sqrt(dn))
    # partials in the b^2-scaled variables s' (1 + 2 s'xx = ra, 1 + 2 s'yy = ra (ia + v), s'xy = ra w / 2),
    # then the chain rule (d/ds = b^2 d/ds') and the a^2 factor
    iy = 1.0 / (ia + v)
    kx = -kdot * 0.5 * w
    ky = kx * iy
    irdn = u * u * ra  # 1 / (ra dn)
    dy = -kdot * irdn
    dx = dy * (ia + v)
    dxy = -2.0 * w * dy
    kxy = kdot
    if held:  # dD/ds'xx = dD/ds'yy = 2, dD/ds'xy = 0; dK/ds'xy at fixed D = kdot D / P, P = ra^2 (ia + v)
        kx = ky * ia
        ky = kx
        kxy = kdot * dn * iy
        dy = dy * ia
        dx = dy
        dxy = 0.0
    s1 = a * a * b2
    s2 = s1 * b2
    return k_out, kdot_out, s1 * kx, s1 * ky, s1 * kxy, s2 * dx, s2 * dy, s2 * dxy


@jit_inline
def erf_grad_log(a, b, c, sxx, syy, sxy):
    """(K, Kdot, KL, DL, dKdot/dsxy, KXY, PX, PZ) of erf, its partials in the variables log(1 + 2 b^2 s), which are
    the same in sxx and syy (K and Kdot depend on the variances through (1 + 2 b^2 sxx)(1 + 2 b^2 syy)
    only): (1 + 2 b^2 sxx) dK/dsxx = (1 + 2 b^2 syy) dK/dsyy = KL, the same for Kdot with DL, and
    dK/dsxy = Kdot.  K and Kdot exactly as ``erf``; the partials as ``erf_grad``'s times
    1 + 2 b^2 s, taken in an order that neither overflows nor underflows at variances ~1e300
    (``backends.cpu``'s ``layer_grad_row`` uses this form: no division per pair beyond ``erf``'s),
    KXY = Kdot, PX = 1, PZ = 0.  A pair held at parallel (``_scaled_det1_held``; see ``erf_grad``)
    has dK/dsxx = dK/dsyy, which this form takes as KL (PX dlx + dly) with PX = (1 + 2 b^2 sxx) /
    (1 + 2 b^2 syy) (dlx, dly the changes of the log variables), the same for Kdot with DL, and
    dK/dsxy = KL PZ, KXY = 0 there (two more divisions, for such pairs).
    """
    b2 = b * b
    cc = 2.0 * b2
    ra, dn, x, v, w, held = _scaled_det1_held(cc, sxx, syy, sxy)
    sdn = math.sqrt(dn)
    k_out = a * a * ((2.0 / math.pi) * atan2(w, sdn)) + c * c
    kdot = (4.0 / math.pi) / (ra * sdn)  # as in ``erf``
    s1 = a * a * b2
    s2 = s1 * b2
    kdot_out = s1 * kdot
    u = kdot * (math.pi / 4.0)  # 1 / (ra sqrt(dn))
    # ra kx = -kdot w ra / 2 = -kdot b^2 sxy (in ``erf_grad``'s scaled variables, then s1)
    kl = -s1 * (kdot * (b2 * sxy))
    # ra dx = dy (1 + 2 b^2 syy), dy = -kdot u^2 ra: u ra = 1 / sqrt(dn) and u (1 + 2 b^2 syy) are O(1)
    dl = -s2 * kdot * (u * ra) * (u * (1.0 + cc * syy))
    irdn = u * u * ra  # 1 / (ra dn), in ``erf_grad``'s order (kdot u u underflows where irdn does not)
    dxy = s2 * (-2.0 * w * (-kdot * irdn))  # ``erf_grad``'s -2 w dy
    kxy = kdot_out
    px = 1.0
    pz = 0.0
    if held:  # ``erf_grad``'s held partials: dK/dsxx = kl / (ra ay) (ay = ra (ia + v)), dK/dsxy = kdot D / P
        ia = 1.0 / ra
        px = 1.0 / (ia + v)
        kl = kl * ia
        dl = dl * ia
        # dK/dsxy = kl pz: kdot D / P itself underflows at variances ~1e300 (~1e-450)
        kxy = 0.0
        pz = -2.0 * (dn * px) / w if w != 0.0 else 0.0
        dxy = 0.0
    return k_out, kdot_out, kl, dl, dxy, kxy, px, pz


@jit_inline
def gelu_grad(sxx, syy, sxy):
    # K and Kdot exactly as ``gelu`` computes them, and their partials from the same quantities
    # (two divisions per pair: 1/(b/a) and 1/sqrt(dn); 1/a is the row's).  With a = 1 + sxx,
    # b = 1 + syy, D = a b - sxy^2 (partials simplified with sympy; the tests check them against
    # finite differences), each term divided through by D^2 so that nothing of order variance^4 is
    # formed (D^2 overflowed at variances around 1e77): sqrt(D) = a sqrt(dn)
    a, dn, x, v, w = _scaled_det1_unheld(1.0, sxx, syy, sxy)
    ia = 1.0 / a
    y = ia + v  # b / a
    iy = 1.0 / y
    sdn = math.sqrt(dn)
    rsq = 1.0 / sdn
    angle = atan2(w, sdn) * _INV_2PI
    q = w * w * iy
    k = 0.25 * sxy + sxy * angle + (x * (syy * iy) * sdn + q * ia * rsq) * _INV_2PI
    u = ia * rsq  # 1 / sqrt(D)
    kdot = 0.25 + angle + w * ((1.0 + y) * iy * u + u * u * rsq) * _INV_2PI
    b = 1.0 + syy
    ib = iy * ia
    i_d = u * u  # 1 / D
    i_dsq = i_d * u  # 1 / (D sqrt D)
    ab = a + b
    c = 0.25 / math.pi
    # (a + 2) / a^2 = (1 + 2/a) / a, and sqrt(D) / a = sqrt(dn)
    kx = c * (sdn * (1.0 + 2.0 * ia) - ab * ia * u - b * i_dsq)
    ky = c * (sdn * iy * (1.0 + 2.0 * ib) - ab * ib * u - a * i_dsq)
    # sxy / a (resp. / b) taken first: sxy times terms of order 1/variance^2 would underflow
    cross = 3.0 * (a * i_d) * (b * i_dsq)
    dx = -c * (sxy * ia) * ((1.0 + 2.0 * ia) * u + ab * i_dsq + cross)
    dy = -c * (sxy * ib) * ((1.0 + 2.0 * ib) * u + ab * i_dsq + cross)
    dxy = 2.0 * c * (u + (ab - 2.0) * i_dsq + cross)
    return k, kdot, kx, ky, kdot, dx, dy, dxy


@jit
def _sq_distance_grad(sxx, syy, sxy):
    """The partials (d/dsxx, d/dsyy, d/dsxy) of :func:`_sq_distance`: (1, 1, -2), or those of its
    floor (sqrt sxx - sqrt syy)^2 where it takes the floor (a pair parallel to rounding, whose
    distance is then held at the floor: along any change that keeps it parallel, such as a
    duplicate row's W_std, the distance does not move, where 1 + 1 - 2 would leave the rounding
    of three derivatives of size sxx)."""
    if _distance_and_floor(sxx, syy, sxy)[2]:
        if sxx > 0.0 and syy > 0.0:
            q = math.sqrt(syy / sxx)
            return 1.0 - q, 1.0 - 1.0 / q, 0.0
        return 1.0, 1.0, 0.0
    return 1.0, 1.0, -2.0


@jit
def sin_grad(a, b, c, sxx, syy, sxy):
    """K and Kdot are a^2/2 (e- -+ cos(2c) e+) (times b^2 for Kdot), e-+ = exp(-b^2 d-+ / 2) with
    d-+ = sxx + syy -+ 2 sxy (:func:`sin`): the partials through those of the distances
    (:func:`_sq_distance_grad`), so that a parallel pair's stay exact at any variance."""
    k, kdot = sin(a, b, c, sxx, syy, sxy)
    b2 = b * b
    h = -0.5 * b2
    e_minus, e_plus = sin_exps(b, sxx, syy, sxy)
    m0, m1, m2 = _sq_distance_grad(sxx, syy, sxy)
    p0, p1, p2 = _sq_distance_grad(sxx, syy, -sxy)
    p2 = -p2  # d+ as a function of sxy
    half_a2 = 0.5 * a * a
    cc = 0.0 if rbf_like(c) else math.cos(2.0 * c)  # as ``sin``: no e+ term for the RBF
    # d e-/dv = h e- dm_v, d e+/dv = h e+ dp_v
    gm = half_a2 * h * e_minus
    gp = half_a2 * h * cc * e_plus
    kx, ky, kxy = gm * m0 - gp * p0, gm * m1 - gp * p1, gm * m2 - gp * p2
    dx, dy, dxy = b2 * (gm * m0 + gp * p0), b2 * (gm * m1 + gp * p1), b2 * (gm * m2 + gp * p2)
    return k, kdot, kx, ky, kxy, dx, dy, dxy


@jit
def _step_grad(scale, k, sxx, syy, sxy):
    """K = const - scale theta, Kdot = 0 (sign: scale 2/pi; the step max(x, 0)^0: 1/(2 pi))."""
    r, theta = _angle(sxx, syy, sxy)
    if r > 0.0:
        g = scale / r  # dK/dsxy = -scale dtheta/dsxy
        return k, 0.0, -0.5 * g * sxy / sxx, -0.5 * g * sxy / syy, g, 0.0, 0.0, 0.0
    return k, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0


@jit
def sign_grad(sxx, syy, sxy):
    return _step_grad(2.0 / math.pi, sign(sxx, syy, sxy)[0], sxx, syy, sxy)


@jit
def _homogeneous_grad(n, k, kdot, dxy, sxx, syy, sxy):
    """Partials of a phi homogeneous of degree n >= 2, given K, Kdot and dKdot/dsxy.

    K(c^2 sxx, syy, c sxy) = c^n K gives 2 sxx dK/dsxx + sxy dK/dsxy = n K (Euler), and the
    same for Kdot with degree n - 1; dK/dsxy = Kdot (Price).
    """
    kx = (n * k - sxy * kdot) / (2.0 * sxx) if sxx > 0.0 else 0.0
    ky = (n * k - sxy * kdot) / (2.0 * syy) if syy > 0.0 else 0.0
    dx = ((n - 1) * kdot - sxy * dxy) / (2.0 * sxx) if sxx > 0.0 else 0.0
    dy = ((n - 1) * kdot - sxy * dxy) / (2.0 * syy) if syy > 0.0 else 0.0
    return k, kdot, kx, ky, kdot, dx, dy, dxy


@jit
def rectified_monomial_grad(n, sxx, syy, sxy):
    if n == 0:
        return _step_grad(_INV_2PI, rectified_monomial(0, sxx, syy, sxy)[0], sxx, syy, sxy)
    if n == 1:
        return abrelu_grad(0.0, 1.0, sxx, syy, sxy)
    k, kdot = rectified_monomial(n, sxx, syy, sxy)
    # dKdot/dsxy = E[phi'' phi''] (Price) with phi'' = n (n - 1) max(x, 0)^(n-2)
    dxy = (n * (n - 1)) ** 2 * rectified_monomial(n - 2, sxx, syy, sxy)[0]
    return _homogeneous_grad(n, k, kdot, dxy, sxx, syy, sxy)


@jit
def monomial_grad(n, sxx, syy, sxy):
    if n == 0:
        return 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    if n == 1:
        return sxy, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0
    k, kdot = monomial(n, sxx, syy, sxy)
    dxy = (n * (n - 1)) ** 2 * monomial(n - 2, sxx, syy, sxy)[0]
    return _homogeneous_grad(n, k, kdot, dxy, sxx, syy, sxy)


@jit
def exp_grad(a, b, sxx, syy, sxy):
    k, kdot = exp(a, b, sxx, syy, sxy)
    b2 = b * b
    return k, kdot, 0.5 * b2 * k, 0.5 * b2 * k, kdot, 0.5 * b2 * kdot, 0.5 * b2 * kdot, b2 * kdot


@jit
def gaussian_grad(a, b, sxx, syy, sxy):
    k, kdot = gaussian(a, b, sxx, syy, sxy)
    two_b = 2.0 * b
    # a pair that ``gaussian`` holds at parallel (``_scaled_det1_held``) has det(Sigma) = 0, with
    # partials 0 (a change of W_std, b_std keeps it parallel): the general ones' sum over them
    # cancels to rounding times (2 b Sigma)^2 (a duplicate row's gradient was 4.6e7 times off at input scale 1e8)
    held = _scaled_det1_held(-two_b, sxx, syy, sxy)[5]
    h = 0.0 if held else 1.0
    det = 1.0 - two_b * (sxx + syy) + h * (two_b * two_b * _det(sxx, syy, sxy))
    # dK = -K dD / (2 D), with D = det(I - 2 b Sigma)
    d_x = -two_b + h * (two_b * two_b * syy)
    d_y = -two_b + h * (two_b * two_b * sxx)
    d_xy = -2.0 * h * (two_b * two_b * sxy)
    inv = 1.0 / det
    dxy = 4.0 * b * b * k * inv - 1.5 * kdot * d_xy * inv
    kx, ky = -0.5 * k * d_x * inv, -0.5 * k * d_y * inv
    kxy = -0.5 * k * d_xy * inv  # = kdot unless held
    return k, kdot, kx, ky, kxy, -1.5 * kdot * d_x * inv, -1.5 * kdot * d_y * inv, dxy


# The families whose partials in sxx and syy are one partial in a log variable of each
# (``dual_grad_log``): the tile loops then take dSigma in that variable, computed once per row and
# column (``grad_hoist``), and do no per-pair division for the partials.
LOG_GRAD_CODES = (ABRELU, ERF)


@jit_inline
def grad_hoist(code, p0, p1, p2, s):
    """d(log variable)/ds of ``dual_grad_log``'s family at a variance s: 1/s (ABReLU: log s, 1/max(s,
    tiny)) or 1/(1 + 2 b^2 s) (erf: log(1 + 2 b^2 s)); 0 for the other families."""
    if code == ABRELU:
        return 1.0 / max(s, _TINY64)
    elif code == ERF:
        return 1.0 / (1.0 + 2.0 * (p1 * p1) * s)
    return 0.0


@jit_inline
def dual_grad_log(code, p0, p1, p2, sxx, syy, sxy):
    """(K, Kdot, KL, DL, dKdot/dsxy, KXY, PX, PZ) for ``code`` in ``LOG_GRAD_CODES``: the change of K is
    KL (PX dlx + dly + PZ dsxy) + KXY dsxy, dlx = grad_hoist(sxx) dsxx, dly = grad_hoist(syy) dsyy,
    the same for Kdot with DL (and dKdot/dsxy dsxy); PX = 1, PZ = 0 and KXY = Kdot except for a
    pair ``erf_grad_log`` holds at parallel (zeros for other codes)."""
    if code == ABRELU:
        k, kdot, kl, dl, dxy = abrelu_grad_log(p0, p1, sxx, syy, sxy)
        return k, kdot, kl, dl, dxy, kdot, 1.0, 0.0
    elif code == ERF:
        return erf_grad_log(p0, p1, p2, sxx, syy, sxy)
    return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0


@jit_inline
def dual_grad(code, p0, p1, p2, sxx, syy, sxy):
    """(K, Kdot) and their partial derivatives in (sxx, syy, sxy); ``code`` in ``GRADIENT_CODES``."""
    if code == ABRELU:
        return abrelu_grad(p0, p1, sxx, syy, sxy)
    elif code == ERF:
        return erf_grad(p0, p1, p2, sxx, syy, sxy)
    elif code == GELU:
        return gelu_grad(sxx, syy, sxy)
    elif code == SIN:
        return sin_grad(p0, p1, p2, sxx, syy, sxy)
    elif code == SIGN:
        return sign_grad(sxx, syy, sxy)
    elif code == EXP:
        return exp_grad(p0, p1, sxx, syy, sxy)
    elif code == GAUSSIAN:
        return gaussian_grad(p0, p1, sxx, syy, sxy)
    elif code < MONOMIAL:
        return rectified_monomial_grad(code - RECTIFIED_MONOMIAL, sxx, syy, sxy)
    else:
        return monomial_grad(code - MONOMIAL, sxx, syy, sxy)


@jit
def dual_diag_grad(code, p0, p1, p2, sxx):
    """(K(x, x), Kdot(x, x)) and their derivatives in sxx along the diagonal."""
    if code == ABRELU:  # K = (a^2 + b^2)/2 sxx, Kdot constant
        k, kdot = abrelu_diag(p0, p1, sxx)
        return k, kdot, 0.5 * (p0 * p0 + p1 * p1), 0.0
    elif code == SIGN:  # constant in sxx > 0
        k, kdot = sign_diag(sxx)
        return k, kdot, 0.0, 0.0
    elif code == ERF:  # K = a^2 (2/pi) asin(2 b^2 s / (1 + 2 b^2 s)) + c^2, Kdot = a^2 b^2 (4/pi) / sqrt(1 + 4 b^2 s)
        # (the sum of the general partials cancels at large variances: 1e20 times too large at s = 1e40)
        k, kdot = erf_diag(p0, p1, p2, sxx)
        b2 = p1 * p1
        q = 1.0 + 4.0 * b2 * sxx
        iq = 1.0 / math.sqrt(q)
        dk = p0 * p0 * (4.0 / math.pi) * b2 / (1.0 + 2.0 * b2 * sxx) * iq
        return k, kdot, dk, -p0 * p0 * b2 * b2 * (8.0 / math.pi) * iq * iq * iq
    elif code == GELU:  # closed forms on the diagonal (the general partials' sum cancels at large s):
        # K = s/4 + s A/(2 pi) + s^2/(pi (1+s) sqrt(1+2s)), Kdot = 1/4 + A/(2 pi) + s (5s+3)/(2 pi (1+s) (1+2s)^1.5),
        # A = atan(s / sqrt(1+2s)), A' = 1/((1+s) sqrt(1+2s)); polynomial quotients taken first, so that
        # nothing of order s^3 is formed
        k, kdot = gelu_diag(sxx)
        u = 1.0 / (1.0 + sxx)
        r = 1.0 / math.sqrt(1.0 + 2.0 * sxx)
        angle = atan2(sxx * r, 1.0)
        dk = (0.25 + angle * _INV_2PI + sxx * u * r * _INV_2PI
              + ((sxx + 2.0) - (3.0 * sxx + 2.0) * u * u) * (r * r * r) / math.pi)  # fmt: skip
        dkdot = (u * r + ((11.0 - 5.0 * sxx) - (10.0 * sxx + 8.0) * u * u) * (r * r) * (r * r) * r) * _INV_2PI
        return k, kdot, dk, dkdot
    elif code >= RECTIFIED_MONOMIAL:  # homogeneous of degree n: K(s) = s^n K(1)
        n = code - RECTIFIED_MONOMIAL if code < MONOMIAL else code - MONOMIAL
        k, kdot = dual_diag(code, p0, p1, p2, sxx)
        if sxx > 0.0:
            return k, kdot, n * k / sxx, (n - 1) * kdot / sxx
        return k, kdot, 0.0, 0.0
    k, kdot, kx, ky, kxy, dx, dy, dxy = dual_grad(code, p0, p1, p2, sxx, sxx, sxx)
    return k, kdot, kx + ky + kxy, dx + dy + dxy
