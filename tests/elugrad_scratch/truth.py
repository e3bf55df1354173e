import math, warnings
import numpy as np
from scipy import integrate

_GX, _GW = np.polynomial.legendre.leggauss(160)
RMAX = 13.0
_R = 0.5 * RMAX * (_GX + 1.0)
_RW = 0.5 * RMAX * _GW * _R * np.exp(-0.5 * _R * _R) / (2 * math.pi)


def elu_parts(alpha):
    phi = lambda x: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))
    dphi = lambda x: np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))
    g = lambda x: np.where(x < 0, np.exp(np.minimum(x, 0.0)), 0.0)
    return phi, dphi, g


def quad(f, lo, hi, points=()):
    edges = [lo, *sorted(p for p in set(points) if lo < p < hi), hi]
    tot = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for a, b in zip(edges[:-1], edges[1:]):
            if b > a:
                tot += integrate.quad(f, a, b, epsabs=0.0, epsrel=2e-14, limit=400)[0]
    return tot


def expect2(F, sxx, syy, sxy):
    """E[F(u, v)], polar: adaptive in the angle (breaks at the kinks u = 0, v = 0), Gauss-Legendre radially."""
    s1, s2 = math.sqrt(sxx), math.sqrt(syy)
    r = sxy / (s1 * s2)
    s = math.sqrt(max(0.0, (1 - r) * (1 + r)))
    def inner(th):
        c, sn = math.cos(th), math.sin(th)
        u = s1 * _R * c
        v = s2 * _R * (r * c + s * sn)
        return float(F(u, v) @ _RW)
    tv = math.atan2(-r, s)
    pts = [-math.pi / 2, math.pi / 2, tv, tv + math.pi if tv < 0 else tv - math.pi]
    return quad(inner, -math.pi, math.pi, pts)


def expect1(f, sd):
    """E[f(sd z)], z ~ N(0, 1), split at 0."""
    w = lambda z: f(np.array(sd * z)) * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return quad(lambda z: float(w(z)), -14.0, 14.0, [0.0])


def truth(sxx, syy, sxy, alpha, singular=True):
    """(K, Kdot, dK/dsxx, dK/dsyy, dKdot/dsxx, dKdot/dsyy, dKdot/dsxy) by Price's theorem, quadrature."""
    phi, dphi, g = elu_parts(alpha)
    b = 1 - alpha
    s1, s2 = math.sqrt(sxx), math.sqrt(syy)
    r = sxy / (s1 * s2)
    omr2 = (1 - r) * (1 + r)
    K = expect2(lambda u, v: phi(u) * phi(v), sxx, syy, sxy)
    Kd = expect2(lambda u, v: dphi(u) * dphi(v), sxx, syy, sxy)
    out = [K, Kd]
    for (a, sa, sb, c, swap) in ((sxx, s1, s2, sxy, False), (syy, s2, s1, sxy, True)):
        pa = 1 / math.sqrt(2 * math.pi * a)
        sd = sb * math.sqrt(omr2)  # other variable given this one = 0
        F = (lambda u, v: g(v) * phi(u)) if swap else (lambda u, v: g(u) * phi(v))
        kx = 0.5 * (alpha * expect2(F, sxx, syy, sxy) + b * pa * expect1(phi, sd))
        F = (lambda u, v: g(v) * dphi(u)) if swap else (lambda u, v: g(u) * dphi(v))
        # E[delta'(x) f(y)] = int f(y) P_12 y p(0, y) dy = -p_x(0) (c / a) E[f(sd z) z] / sd
        dd = -pa * (c / a) * expect1(lambda x: dphi(x) * x, sd) / sd**2 if sd > 0 else 0.0
        kdx = 0.5 * (alpha * expect2(F, sxx, syy, sxy) - alpha * pa * expect1(dphi, sd) + b * dd)
        out.append((kx, kdx))
    (kx, kdx), (ky, kdy) = out[2], out[3]
    kdxy = alpha**2 * expect2(lambda u, v: g(u) * g(v), sxx, syy, sxy)
    kdxy += alpha * b * (expect1(g, s2 * math.sqrt(omr2)) / math.sqrt(2 * math.pi * sxx)
                         + expect1(g, s1 * math.sqrt(omr2)) / math.sqrt(2 * math.pi * syy))
    if omr2 > 0:
        kdxy += b * b / (2 * math.pi * s1 * s2 * math.sqrt(omr2))
    return np.array([K, Kd, kx, ky, kdx, kdy, kdxy])
