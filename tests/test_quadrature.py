"""The closed-form dual kernels of ``ntkfast.recursion`` against truths that do not come from our code.

For (u, v) ~ N(0, [[sxx, sxy], [sxy, syy]]) the package claims

    dual(code, p0, p1, p2, sxx, syy, sxy) = (E[phi(u) phi(v)], E[phi'(u) phi'(v)])

Here both expectations are computed by a two-dimensional quadrature written in this file, with
the activation's own NumPy ``phi``/``dphi`` as integrands (nothing from ``ntkfast.recursion``).

Quadrature.  Write u = sqrt(sxx) z1 and v = sqrt(syy) (rho z1 + sqrt(1 - rho^2) z2) with z1, z2
iid N(0, 1), and go to polar coordinates z = R (cos a, sin a).  With rho = cos(theta):

    u = sqrt(sxx) R cos(a),   v = sqrt(syy) R cos(a - theta),
    E[g(u) h(v)] = (1 / 2 pi) int_0^{2 pi} da int_0^inf R exp(-R^2 / 2) g(u) h(v) dR.

Every kink or jump of the activations tested here sits at u = 0 or v = 0, i.e. on the rays
a = pi/2, 3 pi/2, theta + pi/2, theta + 3 pi/2.  Splitting the angle at those rays (and into
pieces no wider than pi/4), each piece has an analytic integrand, so composite Gauss-Legendre in a
and in R converges exponentially even for sign, step and ReLU, and for rho -> 1 (the piece between
two almost coinciding rays is integrated on its own).  R is cut at 16 (the Gaussian weight is
below e^-120 there; the fastest-growing integrand here, exp(0.1 (u^2 + v^2)) at variance <= 1.5,
still decays like exp(-0.2 R^2)).  Checked below against closed forms: about 1e-15 relative.
At rho = +-1 exactly v = +-sqrt(syy/sxx) u and a 1-D Gauss-Legendre rule split at 0 is used.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial.legendre import leggauss

from ntkfast import spec
from ntkfast.recursion import dual, dual_diag

# ------------------------------------------------------------------------------- quadrature
R_MAX = 16.0


def _composite(edges, n):
    """Composite n-point Gauss-Legendre nodes and weights on consecutive intervals."""
    x, w = leggauss(n)
    edges = np.asarray(edges, dtype=float)
    lo, hi = edges[:-1, None], edges[1:, None]
    return (0.5 * (hi - lo) * x + 0.5 * (hi + lo)).ravel(), (0.5 * (hi - lo) * w).ravel()


_R, _RW = _composite(np.linspace(0.0, R_MAX, 17), 20)
_RW = _RW * _R * np.exp(-0.5 * _R * _R)  # the radial Gaussian weight R exp(-R^2/2)

# 1-D standard normal rule, split at 0 (the kink of every activation here)
_Z, _ZW = _composite(np.r_[np.linspace(-R_MAX, 0.0, 17), np.linspace(0.0, R_MAX, 17)[1:]], 24)
_ZW = _ZW * np.exp(-0.5 * _Z * _Z) / math.sqrt(2.0 * math.pi)


def _angular_rule(theta, n=32, max_width=math.pi / 4):
    two_pi = 2.0 * math.pi
    rays = {
        0.0,
        two_pi,
        math.pi / 2,
        3 * math.pi / 2,
        (theta + math.pi / 2) % two_pi,
        (theta + 3 * math.pi / 2) % two_pi,
    }
    rays = sorted(rays)
    edges = [rays[0]]
    for b in rays[1:]:
        a = edges[-1]
        if b <= a:
            continue
        k = max(1, math.ceil((b - a) / max_width))
        edges.extend(a + (b - a) * np.arange(1, k + 1) / k)
    return _composite(edges, n)


def expect2(g, h, sxx, syy, rho):
    """E[g(u) h(v)], (u, v) ~ N(0, [[sxx, c], [c, syy]]), c = rho sqrt(sxx syy), |rho| < 1."""
    theta = math.atan2(math.sqrt(max(1.0 - rho * rho, 0.0)), rho)
    a, wa = _angular_rule(theta)
    u = math.sqrt(sxx) * np.cos(a)[:, None] * _R
    v = math.sqrt(syy) * np.cos(a - theta)[:, None] * _R
    return float(wa @ (g(u) * h(v)) @ _RW) / (2.0 * math.pi)


def expect1(g, sxx, h=None, c=1.0):
    """E[g(u) h(c u)] for u ~ N(0, sxx) (h = 1 if None)."""
    u = math.sqrt(sxx) * _Z
    vals = g(u) if h is None else g(u) * h(c * u)
    return float(np.sum(_ZW * vals))


def truth(act, sxx, syy, rho):
    """(K, Kdot) by quadrature; rho = +-1 uses the 1-D rule with v = +-sqrt(syy/sxx) u."""
    if abs(rho) == 1.0:
        c = rho * math.sqrt(syy / sxx)
        return expect1(act.phi, sxx, act.phi, c), expect1(act.dphi, sxx, act.dphi, c)
    return expect2(act.phi, act.phi, sxx, syy, rho), expect2(act.dphi, act.dphi, sxx, syy, rho)


def scales(act, sxx, syy):
    """Cauchy-Schwarz bounds sqrt(E phi(u)^2 E phi(v)^2) (same for phi'): the natural size of K, Kdot."""
    k = math.sqrt(expect1(lambda x: act.phi(x) ** 2, sxx) * expect1(lambda x: act.phi(x) ** 2, syy))
    kd = math.sqrt(expect1(lambda x: act.dphi(x) ** 2, sxx) * expect1(lambda x: act.dphi(x) ** 2, syy))
    return k, kd


# ------------------------------------------------------------------------------ activations
ACTS = [
    spec.ReLU(),
    spec.LeakyReLU(0.2),
    spec.Abs(),
    spec.ABReLU(-0.3, 1.7),
    spec.Erf(),
    spec.Erf(1.3, 0.7, 0.2),
    spec.Gelu(),
    spec.Sin(),
    spec.Sin(0.8, 1.5, 0.3),
    spec.Cos(),
    spec.Rbf(0.5),
    spec.Sign(),
    spec.Exp(1.0, 0.5),
    spec.Gaussian(1.0, -1.0),
    spec.Gaussian(0.7, 0.1),
    *[spec.RectifiedMonomial(n) for n in range(6)],
    *[spec.Monomial(n) for n in range(6)],
    spec.Identity(),
]


def _id(act):
    n = getattr(act, "n", None)
    if n is not None:
        return f"{act.name}{n}"
    return f"{act.name}({','.join(f'{p:g}' for p in act.params)})"


ZERO_KDOT = {spec.SIGN, spec.RECTIFIED_MONOMIAL + 0}  # sign, step: phi' = 0 a.e., Kdot defined as 0

RHOS = [-1.0, -0.999, -0.5, 0.0, 0.3, 0.9, 0.999999, 1.0]


def variance_pairs(act):
    # Gaussian(a, b > 0): E[phi(u)^2] = E[a^2 exp(2 b u^2)] is finite only for 4 b sxx < 1
    # (sxx < 2.5 at b = 0.1), so that family is tested at variances <= 1.5.
    if isinstance(act, spec.Gaussian) and act.b > 0:
        return [(1.0, 1.0), (0.3, 1.5), (1.5, 0.3)]
    return [(1.0, 1.0), (0.3, 2.5), (2.5, 0.3)]


def _call(act, sxx, syy, sxy):
    return dual(act.code, *act.params, sxx, syy, sxy)


# Tolerances: |got - want| <= RTOL |want| + ATOL * scale, scale = the Cauchy-Schwarz bound.
# The quadrature is good to ~1e-15 of the scale (test_quadrature_harness_against_closed_forms).
# Observed agreement of package vs quadrature over all cases below: <= 6e-14 relative (worst:
# the ReLU family and sign at rho = 0.999999, where theta ~ sqrt(1 - rho) amplifies the rounding
# of sxy) and <= 4e-14 of the scale.  The absolute part covers values that vanish or cancel
# (odd activations at rho = 0, Sin at large variance = difference of two exponentials).
RTOL = 1e-10
ATOL = 1e-12


def _check(name, got, want, scale, failures, rtol=RTOL, atol=ATOL):
    if not (math.isfinite(got) and abs(got - want) <= rtol * abs(want) + atol * scale):
        failures.append(f"{name}: got {got!r}, quadrature {want!r}, diff {got - want:.3e}, scale {scale:.3e}")


# ------------------------------------------------------------------------------------ tests
def test_quadrature_harness_against_closed_forms():
    """The quadrature itself, on integrands with textbook closed forms (no ntkfast formulas)."""
    relu = lambda x: np.maximum(x, 0.0)  # noqa: E731
    for sxx, syy in [(1.0, 1.0), (0.3, 2.5)]:
        for rho in [-0.999, -0.5, 0.0, 0.3, 0.9, 0.999999]:
            sxy = rho * math.sqrt(sxx * syy)
            s = math.sqrt(sxx * syy)
            # E[u v] and E[u^2 v^2] = sxx syy + 2 sxy^2 (Isserlis)
            assert expect2(lambda x: x, lambda x: x, sxx, syy, rho) == pytest.approx(sxy, abs=1e-14 * s)
            assert expect2(np.square, np.square, sxx, syy, rho) == pytest.approx(sxx * syy + 2 * sxy**2, rel=1e-13)
            # E[ReLU(u) ReLU(v)] (Cho & Saul, n = 1)
            t = math.acos(rho)
            want = s * (math.sin(t) + (math.pi - t) * math.cos(t)) / (2 * math.pi)
            assert expect2(relu, relu, sxx, syy, rho) == pytest.approx(want, rel=1e-12, abs=1e-14 * s)
            # P(u > 0, v > 0) = (pi - theta) / (2 pi)
            step = lambda x: (x > 0).astype(float)  # noqa: E731
            assert expect2(step, step, sxx, syy, rho) == pytest.approx((math.pi - t) / (2 * math.pi), rel=1e-13)
    assert expect1(lambda x: x**10, 2.5) == pytest.approx(945 * 2.5**5, rel=1e-13)
    assert expect1(lambda x: np.exp(0.2 * x * x), 1.5) == pytest.approx(1 / math.sqrt(1 - 0.6), rel=1e-13)


@pytest.mark.parametrize("act", ACTS, ids=_id)
def test_dual_against_2d_quadrature(act):
    failures = []
    for sxx, syy in variance_pairs(act):
        k_scale, kd_scale = scales(act, sxx, syy)
        for rho in RHOS:
            sxy = rho * math.sqrt(sxx * syy)
            k, kd = _call(act, sxx, syy, sxy)
            k_ref, kd_ref = truth(act, sxx, syy, rho)
            tag = f"sxx={sxx} syy={syy} rho={rho}"
            _check(f"K {tag}", k, k_ref, k_scale, failures)
            if act.code in ZERO_KDOT:
                if kd != 0.0:
                    failures.append(f"Kdot {tag}: {kd!r}, expected exactly 0 (phi' = 0 a.e.)")
            else:
                _check(f"Kdot {tag}", kd, kd_ref, kd_scale, failures)
    assert not failures, "\n".join(failures)


def _side_average(f):
    """(f(0+) + f(0-)) / 2: the sxx -> 0+ limit of E[f(u)] (u = +-|u| with probability 1/2)."""
    vals = np.asarray(f(np.array([1e-300, -1e-300])), dtype=float)
    vals[np.abs(vals) < 1e-250] = 0.0  # x^n, n >= 1, at x = 1e-300 is the value 0
    return 0.5 * float(vals[0] + vals[1])


@pytest.mark.parametrize("act", ACTS, ids=_id)
def test_zero_variance_is_finite_and_the_limit(act):
    """sxx = 0, sxy = 0: finite, and the limit sxx -> 0+ (DESIGN.md: a zero-variance input is
    treated as uncorrelated, theta = pi/2).  For continuous phi this is E[phi(0) phi(v)]; for a
    jump at 0 (sign, step, ReLU's phi') it uses the average of the one-sided values at 0, since
    u -> 0 keeps the sign of z1, + or - with probability 1/2 independently of v."""
    failures = []
    syy = 1.3
    for f, idx, name in ((act.phi, 0, "K"), (act.dphi, 1, "Kdot")):
        m0 = _side_average(f)
        ev = expect1(f, syy)
        ev2 = expect1(lambda x, f=f: f(x) ** 2, syy)
        # sizes: |f(0)| (rounded: Cos's phi'(0) = cos(pi/2) comes out as 6e-17) and sqrt(E f(v)^2)
        m_abs, size = abs(m0) + 1e-5 * math.sqrt(ev2), math.sqrt(ev2)
        for args, want, scale in (
            ((0.0, syy, 0.0), m0 * ev, m_abs * size),
            ((syy, 0.0, 0.0), m0 * ev, m_abs * size),
            ((0.0, 0.0, 0.0), m0 * m0, m_abs * m_abs),
        ):
            got = _call(act, *args)[idx]
            _check(f"{name} {args}", got, want, scale, failures)
        got = dual_diag(act.code, *act.params, 0.0)[idx]
        _check(f"{name} diag(0)", got, m0 * m0, m_abs * m_abs, failures)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("act", ACTS, ids=_id)
def test_dual_diag(act):
    """dual_diag = 1-D quadrature of E[phi(u)^2], E[phi'(u)^2], and = dual(s, s, s) to 1e-12."""
    failures = []
    variances = [0.3, 1.0, 1.5] if isinstance(act, spec.Gaussian) and act.b > 0 else [0.3, 1.0, 2.5]
    for s in variances:
        k, kd = dual_diag(act.code, *act.params, s)
        k_ref = expect1(lambda x: act.phi(x) ** 2, s)
        kd_ref = expect1(lambda x: act.dphi(x) ** 2, s)
        _check(f"K({s})", k, k_ref, k_ref, failures)
        if act.code in ZERO_KDOT:
            if kd != 0.0:
                failures.append(f"Kdot({s}) = {kd!r}, expected 0")
        else:
            _check(f"Kdot({s})", kd, kd_ref, kd_ref, failures)
        k_gen, kd_gen = _call(act, s, s, s)
        _check(f"K({s}) vs dual(s,s,s)", k, k_gen, 0.0, failures, rtol=1e-12)
        _check(f"Kdot({s}) vs dual(s,s,s)", kd, kd_gen, 0.0, failures, rtol=1e-12)
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------- known closed forms
def _J(n, t):
    """Cho & Saul (2009) angular functions J_n(theta)."""
    s, c = math.sin(t), math.cos(t)
    return [math.pi - t, s + (math.pi - t) * c, 3 * s * c + (math.pi - t) * (1 + 2 * c * c)][n]


def _arccos_expectation(n, sxx, syy, sxy):
    """E[max(u,0)^n max(v,0)^n] = (sxx syy)^(n/2) J_n(theta) / (2 pi), cos(theta) = rho."""
    t = math.acos(sxy / math.sqrt(sxx * syy))
    return (sxx * syy) ** (n / 2) * _J(n, t) / (2 * math.pi)


COVARIANCES = [
    (sxx, syy, rho * math.sqrt(sxx * syy))
    for sxx, syy in [(1.0, 1.0), (0.3, 2.5), (4.0, 0.7)]
    for rho in [-0.999, -0.5, 0.0, 0.3, 0.9, 0.999999]
]


@pytest.mark.parametrize("n", [0, 1, 2])
def test_arccos_kernel_cho_saul(n):
    for sxx, syy, sxy in COVARIANCES:
        scale = (sxx * syy) ** (n / 2)  # Cauchy-Schwarz scale up to O(1) factors
        k, kd = dual(spec.RECTIFIED_MONOMIAL + n, 0.0, 0.0, 0.0, sxx, syy, sxy)
        # J_2 near theta = pi cancels to ~1e-9 of its size in double precision: absolute tolerance
        assert k == pytest.approx(_arccos_expectation(n, sxx, syy, sxy), rel=1e-12, abs=1e-13 * scale)
        kd_want = 0.0 if n == 0 else n * n * _arccos_expectation(n - 1, sxx, syy, sxy)
        assert kd == pytest.approx(kd_want, rel=1e-12, abs=1e-13 * scale)
        if n == 1:  # ReLU is the same kernel through the ABReLU family
            relu = spec.ReLU()
            np.testing.assert_allclose(_call(relu, sxx, syy, sxy), (k, kd), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("a,b,c", [(1.0, 1.0, 0.0), (1.3, 0.7, 0.2), (0.5, 3.0, -1.0)])
def test_erf_kernel_williams(a, b, c):
    """Williams (1997): E[erf(u) erf(v)] = (2/pi) arcsin(2 sxy / sqrt((1 + 2 sxx)(1 + 2 syy))),
    and E[erf'(u) erf'(v)] = (4/pi) / sqrt((1 + 2 sxx)(1 + 2 syy) - 4 sxy^2); phi = a erf(b x) + c
    rescales the covariance by b^2 (E[erf] = 0 so c only adds c^2)."""
    for sxx, syy, sxy in COVARIANCES:
        p, q, r = b * b * sxx, b * b * syy, b * b * sxy
        want_k = a * a * (2 / math.pi) * math.asin(2 * r / math.sqrt((1 + 2 * p) * (1 + 2 * q))) + c * c
        want_kd = a * a * b * b * (4 / math.pi) / math.sqrt((1 + 2 * p) * (1 + 2 * q) - 4 * r * r)
        k, kd = dual(spec.ERF, a, b, c, sxx, syy, sxy)
        assert k == pytest.approx(want_k, rel=1e-13, abs=1e-15)
        assert kd == pytest.approx(want_kd, rel=1e-12)


@pytest.mark.parametrize("gamma", [0.1, 0.5, 2.0])
def test_rbf_kernel(gamma):
    """Rbf(gamma) is the activation whose NNGP is exp(-gamma (sxx + syy - 2 sxy)).

    Absolute tolerance 1e-15 (K(x, x) = 1 is the scale): Rbf is Sin with c = pi/4, and
    cos(2c) = cos(fl(pi/2)) = 6e-17 instead of 0 leaves an absolute 6e-17 term."""
    act = spec.Rbf(gamma)
    for sxx, syy, sxy in COVARIANCES:
        assert _call(act, sxx, syy, sxy)[0] == pytest.approx(
            math.exp(-gamma * (sxx + syy - 2 * sxy)), rel=1e-13, abs=1e-15
        )


# --------------------------------------------------------------------------------- float32
# float32 dual at a float32 covariance vs float64 dual at the same (rounded) covariance, in units
# of max(scale, |K|).  Observed worst case for |rho| <= 0.99: 3.3e-7 (a few float32 ulps), so
# FLOAT32_TOL = 2e-6.  Near |rho| = 1 the ReLU family, sign and the step function lose accuracy by
# design: float32 snaps 1 - rho^2 < 1e-5 (theta < 3.2e-3) to parallel (recursion._PARALLEL_TOL32),
# and those kernels move like theta there: observed 2.8e-6 at rho = 0.99999, 9.1e-4 at
# rho = 0.999999 (sign, abs), 1.8e-4 at rho = 1 (where the float32-rounded sxy gives float64 a
# theta ~ 1e-4).  Bound: (2/pi) theta_snap = 2.0e-3 for sign, (a-b)^2/(2 pi) theta_snap for ABReLU,
# so NEAR_ONE_TOL = 2.5e-3.  Smooth activations stay at ~3e-7 there too.
FLOAT32_TOL = 2e-6
NEAR_ONE_TOL = 2.5e-3


@pytest.mark.parametrize("act", ACTS, ids=_id)
def test_float32_close_to_float64(act):
    f32 = np.float32
    failures = []
    for sxx, syy in variance_pairs(act):
        k_scale, kd_scale = scales(act, sxx, syy)
        for rho in [-0.999, -0.9, -0.5, 0.0, 0.3, 0.9, 0.99, 0.99999, 0.999999, 1.0]:
            tol = FLOAT32_TOL if abs(rho) <= 0.99 else NEAR_ONE_TOL
            args32 = [f32(sxx), f32(syy), f32(rho * math.sqrt(sxx * syy))]
            k64, kd64 = _call(act, *map(float, args32))
            k32, kd32 = dual(act.code, *map(f32, act.params), *args32)
            for name, got, want, scale in (("K", k32, k64, k_scale), ("Kdot", kd32, kd64, kd_scale)):
                # Numba boxes a float32 result as a Python float: it must be a float32 value
                if f32(got) != got:
                    failures.append(f"{name} rho={rho}: {got!r} is not a float32 value")
                err = abs(got - want) / max(scale, abs(want), 1e-300)
                if not err <= tol:
                    failures.append(
                        f"{name} sxx={sxx} syy={syy} rho={rho}: float32 {got!r} float64 {want!r} "
                        f"error {err:.2e} of the scale > {tol:g}"
                    )
    assert not failures, "\n".join(failures)
