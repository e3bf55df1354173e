"""Hermite-series dual kernels: any elementwise activation at closed-form speed.

For a pre-activation variance ``s`` the activation ``phi(sqrt(s) z)``, ``z ~ N(0, 1)``, has
coefficients in the orthonormal probabilists' Hermite polynomials ``h_k``
(``h_{k+1} = (z h_k - sqrt(k) h_{k-1}) / sqrt(k+1)``)::

    c_k(s) = E[phi(sqrt(s) z) h_k(z)],        d_k(s) = E[phi'(sqrt(s) z) h_k(z)].

Mehler's formula then gives, for a pair with variances ``(sxx, syy)`` and correlation
``rho = sxy / sqrt(sxx syy)``,

    K    = E[phi(u) phi(v)]   = sum_k c_k(sxx) c_k(syy) rho^k
    Kdot = E[phi'(u) phi'(v)] = sum_k d_k(sxx) d_k(syy) rho^k       (= dK/dsxy, Price's theorem)

so the per-row work is one-dimensional quadrature (``O(n L Q)`` activation calls, one
vectorised call per layer on an ``(n, Q)`` array) and the per-pair work is two short
polynomials in ``rho``.  The diagonal is exact: ``K(x, x) = E[phi(sqrt(s) z)^2]``.

Truncation error.  With ``tail_N(s) = E[phi^2] - sum_{k <= N} c_k(s)^2`` (Parseval), for any
``|rho| <= 1`` Cauchy-Schwarz gives ``|K - K_N| <= sqrt(tail_N(sxx) tail_N(syy))``, and the
same with ``d_k`` and ``E[phi'^2]`` for ``Kdot``.  :func:`layer_series` picks one degree ``N``
per layer (the largest over the rows of the call, so the bound holds for every pair) such that
both tails are at most ``tol`` times their diagonal values: then ``|K - K_N| <= tol
sqrt(K(x, x) K(y, y))`` for every pair, and the same for ``Kdot``.  When the degree cap
binds and the bound reached is above ``config.SERIES_WARN_BOUND`` (1e-10, the float64 accuracy the
project promises), a :class:`SeriesAccuracyWarning` names the activation and the bound reached.

Quadrature.  Every activation here is smooth except possibly at ``x = 0`` (ELU, SELU: a kink in
``phi'`` or ``phi''``), which is ``z = 0`` at every variance, so the integrals are taken with
Gauss-Legendre rules on ``[-Z, 0]`` and ``[0, Z]`` (``Z = sqrt(4 N + 2) + 10``, beyond the turning
point of the Hermite functions of degree ``N``): each panel's integrand is smooth and the rule
converges exponentially, also for the kinked activations.  The Hermite polynomials are carried
as Hermite functions ``h_k(z) exp(-z^2/4)`` (bounded by 1; their recurrence is stable), so nothing
overflows at high degree.  The nodes and weights integrate ``h_j h_k`` to 4e-13 for all
``j, k <= N`` (tested), and the energies ``E[phi^2]``, ``E[phi'^2]`` come from the same rule.

Per pair, only the degree its correlation needs: a pair with ``|rho| <= r`` truncated at ``N`` is
within ``r^(N+1) profile[N]`` (:func:`degree_table`), so the kernel (``backends/cpu_series``)
evaluates each row of a tile to the degree of the row's largest ``|rho|`` (nearly parallel pairs,
above 0.984, to their own); the full degree is paid only next to nearly parallel pairs.  Per row,
with 512 rows or more the coefficients are interpolated in ``sigma`` from Chebyshev points
(accepted only where two interpolants agree to 1e-13; 5e-15 from the direct quadrature in the
tests), and the truncation profile is taken at those points and their midpoints instead of at
every row.

Non-smooth activations converge slowly: ELU (``alpha != 1``) and SELU have a jump in ``phi'``,
so the ``d_k`` decay like ``k^(-3/4)`` and no feasible degree reaches 1e-12 near ``rho = +-1``.
On the CPU their pairs above ``|rho|`` ~0.926 get a closed form instead (:func:`exact_args`,
``bivariate.elu_dual_row``, ``config.ELU_EXACT``) for variances in ``ELU_EXACT_VARIANCES``, and no
warning, and the series is computed only to the degree that meets the bound up to there
(``ELU_SERIES_RHO``: ~230-290 instead of the cap); elsewhere (other variances) the degree cap and the
warning with the bound, and the GPU (no closed form) warns with the bound reached (far from
``rho = +-1`` the series is much more accurate than the bound: the terms carry ``|rho|^k``).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from dataclasses import replace as dataclasses_replace

import numpy as np

from . import config
from .errors import ArgumentError, ConfigError

__all__ = [
    "SeriesAccuracyWarning",
    "LayerSeries",
    "hermite_coefficients",
    "layer_series",
    "diag_recursion",
    "evaluate",
    "SeriesRows",
    "prepare",
    "inverse_sqrt",
    "degree_table",
    "RHO_BINS",
    "RHO_STEPS",
    "SeriesPlan",
    "SeriesSide",
    "exact_params",
    "exact_args",
]

# The requested truncation bound, the degree cap and the warning threshold are config.SERIES_TOL,
# config.SERIES_MAX_DEGREE and config.SERIES_WARN_BOUND, read at use time.
# degree levels tried in turn: the quadrature of each level resolves degrees up to its value
# (the cap, config.SERIES_MAX_DEGREE, is always the last one tried); the rules are verified
# orthonormal to 1e-13 up to the last one (tests), and not beyond: 768 is off by 0.1
_LEVELS = (32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512)


def _levels() -> tuple:
    """The degree levels up to the cap config.SERIES_MAX_DEGREE, the cap last."""
    cap = config.SERIES_MAX_DEGREE
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or not 1 <= cap <= _LEVELS[-1]:
        raise ConfigError(f"config.SERIES_MAX_DEGREE must be an integer in [1, {_LEVELS[-1]}] (the degrees "
                          f"the quadrature rules are verified for), got {cap!r}")  # fmt: skip
    return tuple(v for v in _LEVELS if v < cap) + (int(cap),)
# activation values per chunk of rows (the (rows, nodes) array phi is called on)
_CHUNK_VALUES = 1 << 22


class SeriesAccuracyWarning(UserWarning):
    """The Hermite series of an activation reached its degree cap before the requested accuracy."""


def _legendre(x: np.ndarray, m: int):
    """(P_m(x), P_m'(x)) by the three-term recurrence."""
    p0 = np.ones_like(x)
    p1 = x.copy()
    for k in range(2, m + 1):
        p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
    return p1, m * (x * p1 - p0) / (x * x - 1.0)


def _gauss_legendre(m: int):
    """Gauss-Legendre nodes and weights on [-1, 1] to rounding.

    Newton's method on P_m from the asymptotic guesses cos(pi (i + 3/4) / (m + 1/2)) (quadratic
    convergence; no eigenvalue problem), and the textbook weight formula.  (NumPy's ``leggauss``
    and SciPy's ``roots_legendre`` above 150 nodes give weights with relative errors near 1e-12
    that their normalisation hides: a Gaussian integrated with 700 of their nodes is off by 4e-13;
    these give 1e-15.)
    """
    x = np.cos(np.pi * (np.arange(m) + 0.75) / (m + 0.5))
    for _ in range(100):
        p, dp = _legendre(x, m)
        dx = p / dp
        x = x - dx
        if np.abs(dx).max() < 1e-16:
            break
    p, dp = _legendre(x, m)
    x = x - p / dp
    _, dp = _legendre(x, m)
    x = x[::-1].copy()
    dp = dp[::-1]
    return x, 2.0 / ((1.0 - x * x) * dp * dp)


@functools.cache
def _hermite_rule(nmax: int):
    """Split Gauss-Legendre nodes z (Q,) and weights wl (Q,) on [-Z, Z], and the Hermite functions
    e (nmax + 1, Q), e_k = h_k(z) sqrt(pdf(z)), orthonormal in L2(dz) and bounded by 1."""
    m = int(1.25 * nmax) + 64
    half = 0.5 * (math.sqrt(4.0 * nmax + 2.0) + 10.0)
    x, wl = _gauss_legendre(m)
    z = np.concatenate([half * (x - 1.0), half * (x + 1.0)])
    wl = np.concatenate([half * wl, half * wl])
    e = np.empty((nmax + 1, z.size))
    e[0] = (2.0 * math.pi) ** -0.25 * np.exp(-0.25 * z * z)
    if nmax > 0:
        e[1] = z * e[0]
    for k in range(1, nmax):
        e[k + 1] = (z * e[k] - math.sqrt(k) * e[k - 1]) / math.sqrt(k + 1)
    return z, wl, e


@functools.cache
def _rule(nmax: int):
    """Quadrature for degrees <= nmax: nodes z (Q,), weights w (Q,) for E[f(z)], and
    B (nmax + 1, Q) with B[k, q] = w_q h_k(z_q), so that c_k = sum_q B[k, q] f(z_q).

    B is formed as wl sqrt(pdf) e_k, never as w h_k: far out, w_q underflows while w_q h_k(z_q)
    does not."""
    z, wl, e = _hermite_rule(nmax)
    root_pdf = e[0]
    w = wl * root_pdf * root_pdf
    B = (wl * root_pdf) * e
    # entries below 1e-200 (far out, where the pdf is) change no sum at float64 precision, but
    # their products with small activation values are subnormal numbers, which make the products
    # ~100x slower on x86: flushed to zero (so are activation values below 1e-100 of their row's
    # largest, in hermite_coefficients)
    w[np.abs(w) < 1e-200] = 0.0
    B[np.abs(B) < 1e-200] = 0.0
    for a in (z, w, B):
        a.setflags(write=False)
    return z, w, B


def _call(fn, x: np.ndarray, what: str, activation) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        out = fn(x)
    out = np.asarray(out)
    if out.shape != x.shape:
        raise ArgumentError(
            f"activation {_name(activation)}: {what} returned shape {out.shape} for an input of shape "
            f"{x.shape}; it must be a vectorised elementwise NumPy function"
        )
    if np.iscomplexobj(out) or not np.issubdtype(out.dtype, np.number):
        raise ArgumentError(f"activation {_name(activation)}: {what} must return real numbers, got {out.dtype}")
    out = out.astype(np.float64, copy=False)
    if not np.isfinite(out).all():
        bad = np.abs(x[~np.isfinite(out)]).min()
        raise ArgumentError(
            f"activation {_name(activation)}: {what} is not finite at |x| = {bad:.3g} (needed for a "
            "pre-activation variance this large); scale the inputs or W_std down"
        )
    return out


def _name(activation) -> str:
    return getattr(activation, "name", type(activation).__name__)


def hermite_coefficients(activation, s: np.ndarray, nmax: int):
    """Coefficients and energies of ``activation`` at the variances ``s``.

    Parameters
    ----------
    activation : Activation
        Any object with vectorised ``phi`` and ``dphi``.
    s : ndarray of shape (n,)
        Non-negative pre-activation variances.
    nmax : int
        Highest degree (one of the quadrature levels).

    Returns
    -------
    c, d : ndarray of shape (n, nmax + 1)
        ``c_k(s_i)`` of ``phi`` and ``d_k(s_i)`` of ``phi'``.
    e2, e2d : ndarray of shape (n,)
        ``E[phi(sqrt(s) z)^2]`` and ``E[phi'(sqrt(s) z)^2]``.
    """
    z, w, B = _rule(nmax)
    half = z.size // 2  # the nodes are mirror images: z[half + q] = -z[half - 1 - q]
    b_even, b_odd = _folded(nmax)
    s = np.asarray(s, dtype=np.float64)
    n = s.shape[0]
    c = np.empty((n, nmax + 1))
    d = np.empty((n, nmax + 1))
    e2 = np.empty(n)
    e2d = np.empty(n)
    step = max(1, _CHUNK_VALUES // z.size)
    for a in range(0, n, step):
        b = min(n, a + step)
        x = np.sqrt(s[a:b])[:, None] * z[None, :]
        for fn, what, coef, energy in ((activation.phi, "phi", c, e2), (activation.dphi, "dphi", d, e2d)):
            f = _call(fn, x, what, activation)
            f[np.abs(f) < 1e-100 * np.abs(f).max(axis=1, keepdims=True)] = 0.0
            energy[a:b] = (f * f) @ w
            # h_k(-z) = (-1)^k h_k(z): even degrees see f(z) + f(-z), odd ones f(z) - f(-z), on
            # half the nodes each (half the multiply-adds of f @ B.T, the same sums)
            pos = f[:, half:]
            neg = f[:, half - 1 :: -1] if half > 0 else f[:, :0]
            coef[a:b, 0::2] = (pos + neg) @ b_even.T
            coef[a:b, 1::2] = (pos - neg) @ b_odd.T
    return c, d, e2, e2d


# Many rows: the coefficients as functions of sigma = sqrt(s) are analytic (the kink of ELU/SELU
# stays at z = 0 for every sigma), so they are computed at Chebyshev points of [sigma_min,
# sigma_max] and interpolated to the rows, accepted only where the interpolants on M and 2M points
# agree to rounding at every row (else the direct quadrature of every row).
_INTERP_MIN_ROWS = 512
_INTERP_POINTS = (17, 33, 65)  # m: interpolants on m and 2m - 1 points
_INTERP_TOL = 1e-13
_SAMPLED_PROFILE_MARGIN = 1.01


def _chebyshev_matrix(t: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Barycentric interpolation weights (len(t), len(nodes)) on Chebyshev points of the 2nd kind."""
    m = nodes.size
    w = np.ones(m)
    w[1::2] = -1.0
    w[0] *= 0.5
    w[-1] *= 0.5
    diff = t[:, None] - nodes[None, :]
    exact = diff == 0.0
    diff[exact] = 1.0
    M = w / diff
    M /= M.sum(axis=1, keepdims=True)
    rows = exact.any(axis=1)
    M[rows] = exact[rows].astype(np.float64)
    return M


def _coefficients(activation, s: np.ndarray, nmax: int):
    """:func:`hermite_coefficients` of the rows, and the same at the points the truncation
    profile is taken from.

    With many rows, by interpolation in sigma from 2M - 1 Chebyshev points, accepted when the
    interpolant on every other point (M) agrees with it to 1e-13 of the largest coefficient at
    the 2M - 2 midpoints between the points and at the points themselves (their difference is a
    polynomial of degree 2M - 2; these 4M - 3 samples resolve it); the finer one, which is used,
    is then at rounding.  The samples (the points, exact, and the midpoints, interpolated) stand
    for the rows in the truncation profile: every value of sigma the rows have lies in their
    range [sigma_min, sigma_max], both ends are points, and the relative tails are smooth
    functions of sigma that 4M - 3 samples resolve, so the profile costs O(M degree) instead of
    O(n degree).  Else (few rows, or the interpolants disagree) directly, and the rows themselves
    are the samples.

    Returns ``(rows, samples, interp)``: ``samples`` a tuple ``(c, d, e2, e2d)`` as from
    :func:`hermite_coefficients`, ``rows`` the same for the rows except that, where ``interp``
    (n, points) is not None, ``c`` and ``d`` are still at the Chebyshev points (the rows' are
    ``interp @ c``, formed only for the level and degrees that are kept, straight into their
    packed place: :meth:`LayerSeries.write`); the energies are always the rows'.
    """
    n = s.shape[0]
    if n < _INTERP_MIN_ROWS:
        vals = hermite_coefficients(activation, s, nmax)
        return vals, vals, None
    sigma = np.sqrt(s)
    lo, hi = float(sigma.min()), float(sigma.max())
    if hi == lo:
        one = hermite_coefficients(activation, s[:1], nmax)
        return (one[0], one[1], np.repeat(one[2], n), np.repeat(one[3], n)), one, np.ones((n, 1))
    t = np.clip((2.0 * sigma - (lo + hi)) / (hi - lo), -1.0, 1.0)
    for m in _INTERP_POINTS:
        if 2 * m - 1 > n // 4:
            break
        nodes = np.cos(np.pi * np.arange(2 * m - 1) / (2 * m - 2))  # the m-point set is every other one
        mid = np.cos(np.pi * (np.arange(2 * m - 2) + 0.5) / (2 * m - 2))
        at = np.maximum(0.5 * (lo + hi) + 0.5 * (hi - lo) * nodes, 0.0)
        vals = hermite_coefficients(activation, at * at, nmax)
        fine_mid = _chebyshev_matrix(mid, nodes)
        coarse_check = _chebyshev_matrix(np.concatenate([mid, nodes[1::2]]), nodes[::2])
        samples = []
        for v in vals:
            v2 = v if v.ndim == 2 else v[:, None]
            exact = np.concatenate([fine_mid @ v2, v2[1::2]])
            if np.abs(exact - coarse_check @ v2[::2]).max() > _INTERP_TOL * max(float(np.abs(v2).max()), 1e-300):
                break
            samples.append(np.concatenate([v2, exact[: mid.size]]))
        else:
            fine = _chebyshev_matrix(t, nodes)
            rows = (vals[0], vals[1], fine @ vals[2], fine @ vals[3])
            return rows, tuple(x if v.ndim == 2 else x[:, 0] for x, v in zip(samples, vals)), fine
    vals = hermite_coefficients(activation, s, nmax)
    return vals, vals, None


@functools.cache
def _folded(nmax: int):
    """The positive-node halves of B for the even and for the odd degrees (see hermite_coefficients)."""
    z, _, B = _rule(nmax)
    half = z.size // 2
    even = np.ascontiguousarray(B[0::2, half:])
    odd = np.ascontiguousarray(B[1::2, half:])
    for a in (even, odd):
        a.setflags(write=False)
    return even, odd


def _tails(c: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """tails[i, N] = e2[i] - sum_{k <= N} c[i, k]^2, as a reverse cumulative sum (no cancellation
    between e2 and the partial sums except for the part beyond the last degree)."""
    sq = c * c
    beyond = np.maximum(e2 - sq.sum(axis=1), 0.0)
    rev = np.cumsum(sq[:, ::-1], axis=1)[:, ::-1]  # rev[:, N] = sum_{k >= N}
    tails = np.empty_like(c)
    tails[:, :-1] = rev[:, 1:]
    tails[:, -1] = 0.0
    return tails + beyond[:, None]


def _profile(c, d, e2, e2d) -> np.ndarray:
    """max over rows of tail_N / energy for K and Kdot, N = 0..degree (rows of zero energy: 0)."""
    out = np.zeros(c.shape[1])
    for coef, energy in ((c, e2), (d, e2d)):
        pos = energy > 0
        if pos.any():
            rel = _tails(coef[pos], energy[pos]) / energy[pos, None]
            out = np.maximum(out, rel.max(axis=0))
    return out


@dataclass(frozen=True)
class LayerSeries:
    """The series of one layer for one set of rows.

    ``profile[N]`` is the relative truncation bound at degree ``N`` for ``|rho| = 1``; a pair with
    smaller ``|rho|`` is within ``|rho|^(N+1) profile[N]`` (see :func:`degree_table`).

    :attr:`c` and :attr:`d` have shape (degree + 1, n) (``c[k, i]`` = c_k of row i): transposed
    views of row-major arrays.  With many rows they are interpolated from the Chebyshev points
    (``values_c``, ``values_d`` (points, degree + 1) and ``interp`` (n, points)) only when asked
    for; :func:`_pack` has :meth:`write` form them straight into the packed arrays instead (one
    product per layer and no (n, degree + 1) temporaries: most of the per-row time of ELU, whose
    degree is the cap, went to those copies and their fresh pages).  ``bound`` is the truncation
    bound reached, relative to the diagonal (max over rows and over K, Kdot).
    """

    degree: int
    e2: np.ndarray
    e2d: np.ndarray
    bound: float
    profile: np.ndarray  # (degree + 1,): max over rows and (K, Kdot) of tail_N / energy
    values_c: np.ndarray  # (n or points, degree + 1), row-major
    values_d: np.ndarray
    interp: np.ndarray | None = None  # (n, points): the rows' coefficients are interp @ values

    @functools.cached_property
    def c(self) -> np.ndarray:
        return (self.values_c if self.interp is None else self.interp @ self.values_c).T

    @functools.cached_property
    def d(self) -> np.ndarray:
        return (self.values_d if self.interp is None else self.interp @ self.values_d).T

    def write(self, c_out: np.ndarray, d_out: np.ndarray) -> None:
        """Write the rows' coefficients into ``c_out``, ``d_out`` (n, degree + 1) (views)."""
        for values, out in ((self.values_c, c_out), (self.values_d, d_out)):
            if self.interp is None:
                out[...] = values
            else:
                np.matmul(self.interp, values, out=out)


def _next_level(profile: np.ndarray, level: int, tol: float) -> int:
    """The level to try after ``level`` fell short: where the tail, extrapolated as
    exp(a - b sqrt(N)) from degrees level/2 and level (the decay of an activation analytic in a
    strip), reaches ``tol``, with a 25% margin; the cap when the tail does not decay like that."""
    levels = _levels()
    lo, hi = profile[level // 2], profile[level]
    top = levels[-1]
    if not (lo > hi > 0.0):
        return top
    b = (math.log(lo) - math.log(hi)) / (math.sqrt(level) - math.sqrt(level // 2))
    target = (math.sqrt(level) + (math.log(hi) - math.log(tol)) / b) ** 2
    return next((v for v in levels if v > level and v >= 1.1 * target), top)


def layer_series(activation, s: np.ndarray, tol: float | None = None, min_degree: int = 0,
                 warn: bool = True, closed_form: bool = False) -> LayerSeries:
    """The truncated series of ``activation`` at the variances ``s`` (one layer, one set of rows).

    The degree is the smallest that meets ``tol`` (default ``config.SERIES_TOL``) for every row
    (at least ``min_degree``, so two sets of rows can be brought to a common degree), up to
    ``config.SERIES_MAX_DEGREE``; when the cap binds and the bound reached is above
    ``config.SERIES_WARN_BOUND``, a :class:`SeriesAccuracyWarning` states it.  With
    ``closed_form``, where ELU's closed form takes the pairs near rho = +-1 (:func:`exact_args`),
    the smallest degree that meets ``tol`` for ``|rho| <= ELU_SERIES_RHO`` instead (the pairs
    above it get the closed form).
    """  # fmt: skip
    tol = config.SERIES_TOL if tol is None else tol
    levels = _levels()
    s = np.asarray(s, dtype=np.float64)
    min_degree = min(int(min_degree), levels[-1])
    level = next(v for v in levels if v >= min_degree)
    covered = _exact_covers(activation, s)  # ELU/SELU: the closed form takes the pairs near rho = +-1
    reach_rho = _series_rho() if closed_form and covered else 1.0
    while True:
        # c, d and three (n, level + 1) temporaries of the tails
        config.check_fits(5 * 8 * s.shape[0] * (level + 1),
                          f"the Hermite coefficients of {s.shape[0]} rows to degree {level} ({_name(activation)})",
                          "Raise NTKFAST_MEMORY_BUDGET or pass fewer rows per call.")  # fmt: skip
        (c, d, e2, e2d), samples, interp = _coefficients(activation, s, level)
        full = _profile(*samples)  # max over the rows (their samples) of tail_N / energy, N = 0..level
        if samples[0] is not c or interp is not None:
            # the max over the rows can lie between two samples: 4e-7 above the sampled max at
            # worst in the tests (gelu_tanh, sigma from 0.05 to 2.1); 1% covers it many times
            full = full * _SAMPLED_PROFILE_MARGIN
        need = int(np.argmax(full <= tol)) if full[-1] <= tol else level + 1
        if need <= level or level == levels[-1]:
            break
        level = _next_level(full, level, tol)
    degree = max(min(need, level), min_degree)
    if reach_rho < 1.0:
        # the same level (so the same energies, the exact diagonal, as without closed_form), fewer
        # degrees kept: the interpolation to the rows and their packed coefficients are the cost
        degree = max(min(degree, _degree_at(full, reach_rho, tol)), min_degree)
    profile = full[: degree + 1]
    bound_reached = float(profile[-1])
    if need > level and warn and bound_reached > max(tol, config.SERIES_WARN_BOUND) and not covered:
        warnings.warn(
            f"activation {_name(activation)}: the Hermite series reached its degree cap {level} with a "
            f"truncation bound of {bound_reached:.1e} of sqrt(K(x,x) K(y,y)) (requested {tol:.0e}); it is "
            "attained only at rho = +-1 (nearly parallel pairs), the error decays like |rho|^k elsewhere",
            SeriesAccuracyWarning,
            stacklevel=3,
        )
    return LayerSeries(degree, e2, e2d, bound_reached, profile, c[:, : degree + 1], d[:, : degree + 1], interp)


def _degree_at(profile: np.ndarray, r: float, tol: float) -> int:
    """The smallest N with r^(N+1) profile[N] <= tol (as :func:`_table_bins` tests it), or
    len(profile) when none."""
    N = np.arange(profile.size)
    ok = (N + 1) * math.log(r) + np.log(np.maximum(profile, 1e-300)) <= math.log(tol) + 1e-12
    return int(np.argmax(ok)) if ok.any() else profile.size


# ELU/SELU: pairs too close to rho = +-1 for the series get the closed form of bivariate.elu_dual,
# for pre-activation variances in this range (measured to 1e-10 against quadrature; outside it
# the tilted orthant terms cancel: e^(t'St/2) times a tail probability at large variances,
# differences of O(1) terms for O(s) results at small ones), else the series to its cap
ELU_EXACT_VARIANCES = (1e-4, 40.0)
# ... and the series part of ELU/SELU is computed to the degree that meets SERIES_TOL for |rho| up to
# the upper edge of the |rho| bin holding this value (1 - 2^(-30/8) = 0.9257), about 230-290 instead
# of the cap 512 (what |rho| <= 0.966 needed): the per-row time and the coefficients' memory are
# proportional to it, and a row of a tile runs at the degree of its largest |rho| up to the cut.
# The pairs above get bivariate.elu_dual_row, whose vectorised path needs |rho| >= 0.925 (Genz's
# branch in sqrt(1 - rho^2)): ~0.34 us per pair and layer, what the series costs at degree ~450
ELU_SERIES_RHO = 0.925


def _series_rho() -> float:
    """The upper edge of the degree table's |rho| bin that holds ELU_SERIES_RHO."""
    b = math.ceil(-RHO_STEPS * math.log2(1.0 - ELU_SERIES_RHO))
    return 1.0 - 2.0 ** (-b / RHO_STEPS)


def exact_params(activation):
    """``(alpha, scale)`` where ``activation`` has the ELU closed form (``scale * ELU(alpha)``:
    ELU, SELU) and ``config.ELU_EXACT`` is on, else None."""
    if not config.ELU_EXACT or getattr(activation, "exact_dual", None) != "elu":
        return None
    return float(activation.alpha), float(activation.scale)


def _exact_covers(activation, s) -> bool:
    """Whether the closed form takes every pair beyond the series' reach (variances in range)."""
    if exact_params(activation) is None:
        return False
    lo, hi = ELU_EXACT_VARIANCES
    s = np.asarray(s)
    return bool(np.all((s == 0.0) | ((s >= lo) & (s <= hi))))


def diag_recursion(activation, first: np.ndarray, steps: np.ndarray, sqnorm: np.ndarray,
                   tol: float | None = None, min_degrees=None, warn: bool = True, closed_form: bool = True):
    """The diagonal recursion with the series of every layer.

    Parameters
    ----------
    activation : Activation
    first, steps : ndarray
        From :meth:`ntkfast.spec.MLP.layer_coefficients`.
    sqnorm : ndarray of shape (n,)
        Squared norms of the (input-mapped) rows.
    tol : float, optional
        Requested truncation bound relative to the diagonal (default ``config.SERIES_TOL``).
    min_degrees : sequence of int, optional
        Lowest degree per layer (to match the rows of the other side of a Gram).
    closed_form : bool
        For ELU/SELU, the degrees for the series part of the CPU's hybrid (see :func:`layer_series`).

    Returns
    -------
    sig : ndarray (n_steps, n)
        Sigma(x, x) entering each step.
    nngp, ntk : ndarray (n,)
        The exact diagonals.
    series : list of LayerSeries
        One per step.
    """  # fmt: skip
    with _one_blas_thread():
        return _diag_recursion(activation, first, steps, np.asarray(sqnorm, dtype=np.float64), tol, min_degrees, warn,
                               closed_form)


@functools.cache
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_blas_thread():
    """BLAS limited to one thread: the products here are small ((rows, nodes) x (nodes, degree) at
    a few dozen Chebyshev points); threaded BLAS gains nothing on them and, on a loaded machine,
    its spinning workers made them ~100x slower (0.37 s instead of 3 ms for 33 rows at degree 512,
    measured with 7 processes on 2 cores)."""
    return _blas().limit(limits=1, user_api="blas")


def _diag_recursion(activation, first, steps, sqnorm, tol, min_degrees, warn, closed_form):
    n_steps = steps.shape[0]
    s = first[0] * sqnorm + first[1]
    t = first[2] * sqnorm + first[3]
    sig = np.empty((n_steps, sqnorm.shape[0]))
    series = []
    for layer in range(n_steps):
        sig[layer] = s
        lo = 0 if min_degrees is None else min_degrees[layer]
        ls = layer_series(activation, np.maximum(s, 0.0), tol, lo, warn, closed_form)
        series.append(ls)
        res, w2, b2, alpha, beta = steps[layer]
        s, t = res * s + w2 * ls.e2 + b2, res * t + alpha * ls.e2 + beta + w2 * ls.e2d * t
    return sig, s, t, series


def inverse_sqrt(s: np.ndarray) -> np.ndarray:
    """1/sqrt(s), and 0 where s == 0 (a zero-variance row: only c_0 is nonzero, rho is taken as 0)."""
    s = np.asarray(s, dtype=np.float64)
    out = np.zeros_like(s)
    pos = s > 0
    out[pos] = 1.0 / np.sqrt(s[pos])
    return out


def evaluate(lx: LayerSeries, ly: LayerSeries, ix, iy, rho):
    """Reference NumPy evaluation of (K, Kdot) for the pairs (ix[p], iy[p]) at correlations rho[p].

    Both sides must have the same degree.  For tests and as the readable reference of the
    compiled per-pair kernel (``ntkfast.backends.cpu_series``).
    """
    if lx.degree != ly.degree:
        raise ArgumentError(f"the two sides have degrees {lx.degree} and {ly.degree}; bring them to a common one")
    rho = np.clip(np.asarray(rho, dtype=np.float64), -1.0, 1.0)
    k = np.zeros_like(rho)
    kd = np.zeros_like(rho)
    for m in range(lx.degree, -1, -1):
        k = k * rho + lx.c[m, ix] * ly.c[m, iy]
        kd = kd * rho + lx.d[m, ix] * ly.d[m, iy]
    return k, kd


@dataclass(frozen=True)
class SeriesRows:
    """One side of a Gram for a series activation: the diagonal recursion and packed coefficients.

    ``c``, ``d``: (n, n_steps, max_degree + 1) float64 (one row's coefficients contiguous), zero
    above each layer's degree;
    ``inv_sqrt``: (n_steps, n) 1/sqrt(Sigma(x, x)) (0 for a zero variance); ``degrees`` (n_steps,);
    ``profiles`` (n_steps, max_degree + 1): each layer's :attr:`LayerSeries.profile` (padded with
    its last value).
    """

    sig: np.ndarray
    nngp: np.ndarray
    ntk: np.ndarray
    degrees: np.ndarray
    c: np.ndarray
    d: np.ndarray
    inv_sqrt: np.ndarray
    bound: float
    profiles: np.ndarray

    def astype(self, dtype) -> SeriesRows:
        """The per-pair arrays in the working dtype (the coefficients are computed in float64)."""
        cast = [np.ascontiguousarray(a, dtype=dtype) for a in (self.sig, self.nngp, self.ntk)]
        return SeriesRows(*cast, self.degrees, np.ascontiguousarray(self.c, dtype=dtype),
                          np.ascontiguousarray(self.d, dtype=dtype), np.ascontiguousarray(self.inv_sqrt, dtype=dtype),
                          self.bound, self.profiles)  # fmt: skip


def _pack(sig, nngp, ntk, series) -> SeriesRows:
    n_steps, n = sig.shape
    degrees = np.array([ls.degree for ls in series], dtype=np.int64)
    top = int(degrees.max(initial=0))
    config.check_fits(2 * 8 * n * n_steps * (top + 1), f"the Hermite coefficients of {n} rows ({n_steps} layers, "
                      f"degree {top})", "Raise NTKFAST_MEMORY_BUDGET or pass fewer rows per call.")
    c = np.empty((n, n_steps, top + 1))
    d = np.empty((n, n_steps, top + 1))
    profiles = np.zeros((n_steps, top + 1))
    with _one_blas_thread():  # (n, points) x (points, degree): small products, see _one_blas_thread
        for layer, ls in enumerate(series):
            ls.write(c[:, layer, : ls.degree + 1], d[:, layer, : ls.degree + 1])
            c[:, layer, ls.degree + 1 :] = 0.0
            d[:, layer, ls.degree + 1 :] = 0.0
            profiles[layer, : ls.degree + 1] = ls.profile
            profiles[layer, ls.degree + 1 :] = ls.profile[-1]
    bound = max((ls.bound for ls in series), default=0.0)
    return SeriesRows(sig, nngp, ntk, degrees, c, d, inverse_sqrt(sig), bound, profiles)


# |rho| bins of the degree table: bin b holds |rho| <= 1 - 2^(-b/RHO_STEPS), b = 0..RHO_BINS - 1
# (bin 0 is rho = 0); the last bin, RHO_BINS, is everything closer to +-1 and gets the full degree.
RHO_STEPS = 8
RHO_BINS = 48 * RHO_STEPS + 1


def _table_bins(rows_x, rows_y, tol, exact):
    """(table, reach): the degree table and, per layer, the largest bin whose degree meets the
    target without the cap (``reach``)."""
    prof = rows_x.profiles if rows_y is None else np.maximum(rows_x.profiles, rows_y.profiles)
    return bin_degrees(prof, rows_x.degrees, tol, exact)


def bin_degrees(prof: np.ndarray, degrees: np.ndarray, tol: float | None, exact: bool):
    """(table, reach) of :func:`degree_table` from the layers' truncation profiles ``prof``
    (n_steps, max_degree + 1; :attr:`LayerSeries.profile` padded) and full ``degrees``."""
    tol = config.SERIES_TOL if tol is None else tol
    n_steps = prof.shape[0]
    table = np.empty((n_steps, RHO_BINS + 1), dtype=np.int64)
    reach = np.zeros(n_steps, dtype=np.int64)
    r = 1.0 - 2.0 ** (-np.arange(RHO_BINS) / RHO_STEPS)
    r[0] = 0.0
    for layer in range(n_steps):
        full = int(degrees[layer])
        p = prof[layer, : full + 1]
        target = tol if exact else max(tol, float(p[-1]))
        N = np.arange(full + 1)
        with np.errstate(divide="ignore"):
            # log(r^(N+1) p[N]) <= log(target), vectorised over (bins, N)
            lhs = (N[None, :] + 1) * np.log(r)[:, None] + np.log(np.maximum(p, 1e-300))[None, :]
        ok = lhs <= math.log(target) + 1e-12
        met = ok.any(axis=1)
        reach[layer] = int(np.nonzero(met)[0].max(initial=0))
        ok[:, -1] = True
        table[layer, :RHO_BINS] = np.argmax(ok, axis=1)
        table[layer, RHO_BINS] = full
    return table, reach


def exact_args(activation, rows_x: SeriesRows, rows_y: SeriesRows | None, tol, dtype):
    """``(cut, exact)`` for ``backends.cpu_series.tile``: per layer the |rho| above which a pair
    leaves its row's degree (the closed form's threshold for ELU/SELU: the largest |rho| bin the
    series meets ``tol`` in, 0.9257 with ``ELU_SERIES_RHO``, at most 0.984), and ``[flag, alpha, scale, vmin,
    vmax]`` of the closed form (flag 0: none)."""
    n_steps = rows_x.degrees.shape[0]
    high = 1.0 - 2.0 ** (-6.0)  # backends.cpu_series.HIGH_BIN / RHO_STEPS
    params = exact_params(activation)
    if params is None:
        return np.full(n_steps, high, dtype=dtype), np.zeros(5)
    _, reach = _table_bins(rows_x, rows_y, tol, True)
    cut = np.minimum(high, 1.0 - 2.0 ** (-reach / RHO_STEPS))
    cut[reach == 0] = 0.0
    return cut.astype(dtype), np.array([1.0, params[0], params[1], *ELU_EXACT_VARIANCES])


def degree_table(rows_x: SeriesRows, rows_y: SeriesRows | None = None, tol: float | None = None,
                 exact: bool = False) -> np.ndarray:
    """Degree needed per layer and |rho| bin, shape (n_steps, RHO_BINS + 1), int64.

    A pair with ``|rho| <= r`` truncated at degree ``N`` is within
    ``r^(N+1) sqrt(tail_N(x) tail_N(y)) <= r^(N+1) profile[N] sqrt(K(x,x) K(y,y))``
    (every term beyond ``N`` carries ``|rho|^k <= r^(N+1)``), so far from ``+-1`` few terms are
    needed: for a first layer of random inputs in high dimension (|rho| ~ 0.1) about a tenth of
    the full degree.  The target is ``tol`` or, where the cap bound, the bound reached; with
    ``exact`` (ELU/SELU: the pairs beyond the series' reach get a closed form) always ``tol``.
    """
    return _table_bins(rows_x, rows_y, tol, exact)[0]


def prepare(activation, first, steps, sqnorm_x, sqnorm_y=None, tol: float | None = None):
    """Series rows of one side (``sqnorm_y`` None) or of both sides of a Gram at common degrees.

    Returns a :class:`SeriesRows`, or a pair of them.  One warning at most per call.
    """
    tol = config.SERIES_TOL if tol is None else tol
    sig, nngp, ntk, sx = diag_recursion(activation, first, steps, sqnorm_x, tol)
    if sqnorm_y is None:
        return _pack(sig, nngp, ntk, sx)
    deg_x = [ls.degree for ls in sx]
    with warnings.catch_warnings():
        if any(ls.bound > tol for ls in sx):  # already warned for this call
            warnings.simplefilter("ignore", SeriesAccuracyWarning)
        sig_y, nngp_y, ntk_y, sy = diag_recursion(activation, first, steps, sqnorm_y, tol, deg_x)
        deg_y = [ls.degree for ls in sy]
        if deg_y != deg_x:
            warnings.simplefilter("ignore", SeriesAccuracyWarning)
            sig, nngp, ntk, sx = diag_recursion(activation, first, steps, sqnorm_x, tol, deg_y)
    return _pack(sig, nngp, ntk, sx), _pack(sig_y, nngp_y, ntk_y, sy)


class SeriesSide:
    """One side of a Gram (the rows of X or of Y) under a :class:`SeriesPlan`: its diagonal
    recursion and its packed coefficients, raised to the plan's common degrees when a later side
    needs more (so every pair is truncated at a degree both sides meet)."""

    def __init__(self, plan: SeriesPlan, sqnorm: np.ndarray):
        self.plan = plan
        self.sqnorm = np.asarray(sqnorm, dtype=np.float64)
        self.rows: SeriesRows | None = None
        self._cast: dict = {}

    def compute(self, min_degrees, warn: bool) -> None:
        p = self.plan
        sig, nngp, ntk, layers = diag_recursion(p.activation, p.first, p.steps, self.sqnorm, p.tol, min_degrees, warn,
                                                p.closed_form)  # fmt: skip
        self.rows = _pack(sig, nngp, ntk, layers)
        self._cast = {}

    @property
    def degrees(self) -> list[int]:
        return [int(v) for v in self.rows.degrees]

    def cast(self, dtype) -> SeriesRows:
        """The rows in the working dtype (memoized)."""
        dtype = np.dtype(dtype)
        if dtype not in self._cast:
            self._cast[dtype] = self.rows if dtype == np.float64 else self.rows.astype(dtype)
        return self._cast[dtype]


class SeriesPlan:
    """The series state shared by the sides of one Gram: the activation, the layer coefficients,
    the common degree of every layer and, once every side is there, the degree table.

    Sides are added before any tile runs (``add_side``); ``table`` is then computed once (under a
    lock: the tiles of a Gram run on threads).  One warning per plan at most.
    """

    def __init__(self, activation, first, steps, tol: float | None = None):
        import threading

        self.activation = activation
        self.first = np.asarray(first, dtype=np.float64)
        self.steps = np.asarray(steps, dtype=np.float64)
        self.tol = float(config.SERIES_TOL if tol is None else tol)
        self.sides: list[SeriesSide] = []
        self._tables: dict = {}
        self._exact: dict = {}
        self._lock = threading.Lock()
        self._warned = False
        # ELU/SELU: the rows' series only to the closed form's cut (the CPU tile); a backend without
        # the closed form (the GPU) sets this False before its sides are added, for the cap's degree
        self.closed_form = True

    def add_side(self, sqnorm: np.ndarray) -> SeriesSide:
        side = SeriesSide(self, sqnorm)
        current = [max(s.degrees[k] for s in self.sides) for k in range(self.steps.shape[0])] if self.sides else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SeriesAccuracyWarning)
            side.compute(current, warn=True)
            if current is not None and side.degrees != current:
                target = [max(a, b) for a, b in zip(side.degrees, current)]
                for s in self.sides:
                    if s.degrees != target:
                        s.compute(target, warn=False)
                if side.degrees != target:
                    side.compute(target, warn=False)
        self.sides.append(side)
        self._tables = {}
        if caught and not self._warned:
            self._warned = True
            warnings.warn(caught[0].message, SeriesAccuracyWarning, stacklevel=4)
        return side

    def table(self) -> np.ndarray:
        """The degree table of every side together (see :func:`degree_table`), memoized."""
        key = len(self.sides)
        with self._lock:
            if key not in self._tables:
                rows = [s.rows for s in self.sides]
                merged = rows[0]
                for r in rows[1:]:
                    merged = dataclasses_replace(merged, profiles=np.maximum(merged.profiles, r.profiles))
                exact = exact_params(self.activation) is not None
                self._tables[key] = degree_table(merged, None, self.tol, exact)
                self._exact[key] = exact_args(self.activation, merged, None, self.tol, np.float64)
            return self._tables[key]

    def warn_without_exact(self) -> None:
        """For a backend without ELU's closed form (the GPU): the SeriesAccuracyWarning that the
        CPU's closed form made unnecessary (bound reached at the cap), once per plan."""
        if exact_params(self.activation) is None or self._warned or not self.sides:
            return
        bound = max(s.rows.bound for s in self.sides)
        if bound > max(self.tol, config.SERIES_WARN_BOUND):
            self._warned = True
            warnings.warn(f"activation {_name(self.activation)}: the Hermite series (this backend has no closed form "
                          f"near rho = +-1) reached its degree cap with a truncation bound of {bound:.1e} of "
                          f"sqrt(K(x,x) K(y,y)) (requested {self.tol:.0e}), attained at rho = +-1",
                          SeriesAccuracyWarning, stacklevel=3)  # fmt: skip

    def exact_args(self, dtype) -> tuple:
        """``(cut, exact)`` of :func:`exact_args` for every side together, ``cut`` in ``dtype``."""
        self.table()
        cut, exact = self._exact[len(self.sides)]
        return cut.astype(dtype), exact
