"""ELU and SELU exact to float64 (issue 14): the closed form for pairs near rho = +-1.

Truths that do not come from the code under test:

* ``bivariate.bvnu`` against the 1-D conditional integral of the bivariate normal (adaptive
  ``scipy.integrate.quad``, in the variable where the integrand stays smooth as |r| -> 1) over
  a grid with r = +-1, +-(1 - 1e-12), h, k in {0, +-40, ...}, and against SciPy's
  ``multivariate_normal.cdf``;
* ``bivariate.elu_dual`` against the 1-D conditional form of E[phi(u) phi(v)] and
  E[phi'(u) phi'(v)] (the inner expectation over v given u in univariate closed form, the outer
  by adaptive quadrature split at the kink and, for |rho| near 1, where the inner expectation
  changes on the scale sqrt(1 - rho^2));
* whole networks (``nf.kernel``, depth 1-3, with duplicate and near-duplicate rows) against the
  layer recursion with that quadrature per pair.

Worst cases measured: bvnu 3.3e-16 absolute over the grid; elu_dual 1e-13 relative
(variances in ``series.ELU_EXACT_VARIANCES``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, special, stats

import ntkfast as nf
from ntkfast import config, series, spec
from ntkfast.bivariate import bvnu, elu_dual
from ntkfast.recursion import step

L = 38.0


def _quad(f, lo, hi, points=()):
    edges = [lo, *sorted(p for p in set(points) if lo < p < hi), hi]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return sum(integrate.quad(f, a, b, epsabs=0.0, epsrel=1e-13, limit=400)[0] for a, b in zip(edges, edges[1:]))


def bvnu_truth(h, k, r):
    """P(x > h, y > k) by 1-D quadrature: y = r x + s z, integrate over z the x-probability."""
    if r == 1.0:
        return special.ndtr(-max(h, k))
    if r == -1.0:
        return max(0.0, special.ndtr(-h) - special.ndtr(k)) if h < -k else 0.0
    s = math.sqrt((1.0 - r) * (1.0 + r))
    if abs(r) <= 0.5:
        f = lambda x: stats.norm.pdf(x) * special.ndtr(-(k - r * x) / s)  # noqa: E731
        return _quad(f, max(h, -40.0), 40.0, [0.0, k / r if r else 0.0])
    if r > 0:
        f = lambda z: stats.norm.pdf(z) * special.ndtr(-max(h, (k - s * z) / r))  # noqa: E731
    else:
        f = lambda z: stats.norm.pdf(z) * max(0.0, special.ndtr((k - s * z) / r) - special.ndtr(h))  # noqa: E731
    return _quad(f, -40.0, 40.0, [(k - r * h) / s])


R_GRID = (-1.0, -(1 - 1e-12), -0.99, -0.93, -0.92, -0.5, -0.2, 0.0, 0.1, 0.5, 0.8, 0.93, 0.999, 1 - 1e-9,
          1 - 1e-12, 1.0)  # fmt: skip


@pytest.mark.parametrize("r", R_GRID)
def test_bvnu_against_quadrature(r):
    worst = 0.0
    for h in (-40.0, -5.0, -1.0, 0.0, 0.3, 2.0, 6.0, 40.0):
        for k in (-40.0, -3.0, 0.0, 0.7, 5.0, 40.0):
            got = bvnu(h, k, r, (1.0 - r) * (1.0 + r))
            worst = max(worst, abs(got - bvnu_truth(h, k, r)))
    assert worst <= 2e-15


def test_bvnu_against_scipy_and_limits():
    for h, k, r in [(0.3, -0.4, 0.6), (-1.0, 1.5, -0.95), (0.0, 0.0, 0.97), (2.0, 2.5, -0.3)]:
        cov = [[1.0, r], [r, 1.0]]
        want = stats.multivariate_normal(mean=[0.0, 0.0], cov=cov).cdf([-h, -k])  # P(-x < -h, -y < -k)
        assert bvnu(h, k, r, 1.0 - r * r) == pytest.approx(want, abs=1e-7)
    assert bvnu(0.0, 0.0, 0.5, 0.75) == pytest.approx(0.25 + math.asin(0.5) / (2 * math.pi), abs=1e-16)
    assert bvnu(math.inf, 0.0, 0.5, 0.75) == 0.0 and bvnu(-math.inf, -math.inf, 0.5, 0.75) == 1.0


def _elu(x, a):
    return x if x > 0 else a * math.expm1(x)


def _delu(x, a):
    return 1.0 if x > 0 else a * math.exp(x)


def _inner(m, tau, a, which):
    """E[g(m + tau Z)], Z ~ N(0, 1), g = ELU(a) (which 0) or its derivative (1): univariate
    closed forms in Phi (the e^v factor is a tilt of the 1-D normal)."""
    if tau == 0.0:
        return (_elu, _delu)[which](m, a)
    w = m / tau
    tilt = math.exp(m + 0.5 * tau * tau + special.log_ndtr(-(m + tau * tau) / tau))  # E[e^v 1[v < 0]]
    if which == 0:
        return m * special.ndtr(w) + tau * stats.norm.pdf(w) + a * (tilt - special.ndtr(-w))
    return special.ndtr(w) + a * tilt


def dual_truth(sxx, syy, sxy, a):
    """(K, Kdot) of ELU(a) by the 1-D conditional form: u = s1 x, v = s2 (r x + s z); the inner
    expectation over z in univariate closed form, the outer by adaptive quadrature split at the
    kink x = 0 and, for s -> 0, where the inner expectation changes on the scale s."""
    s1, s2 = math.sqrt(sxx), math.sqrt(syy)
    r = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
    s = math.sqrt((1.0 - r) * (1.0 + r))
    cuts = [0.0, *(c * s for c in (1.0, 4.0, 12.0)), *(-c * s for c in (1.0, 4.0, 12.0))]
    out = []
    for which, g in enumerate((_elu, _delu)):
        f = lambda x, g=g, which=which: (stats.norm.pdf(x) * g(s1 * x, a)  # noqa: E731
                                         * _inner(s2 * r * x, s2 * s, a, which))  # fmt: skip
        out.append(_quad(f, -L, L, cuts))
    return tuple(out)


def _check_dual(a, sxx, syy, r):
    sxy = r * math.sqrt(sxx * syy)
    k, kd = elu_dual(sxx, syy, sxy, a, 0.0)
    tk, tkd = dual_truth(sxx, syy, sxy, a)
    # relative to the diagonal scale sqrt(K(x,x) K(y,y)) (K itself crosses zero at negative rho)
    kx, _ = elu_dual(sxx, sxx, sxx, a, 0.0)
    ky, _ = elu_dual(syy, syy, syy, a, 0.0)
    err_k = abs(k - tk) / math.sqrt(kx * ky)
    err_kd = abs(kd - tkd) / abs(tkd)
    return max(err_k, err_kd)


@pytest.mark.parametrize("a", [0.5, 1.0, spec.SELU_ALPHA])
@pytest.mark.parametrize("r", [-1.0, -(1 - 1e-9), 0.4, 1 - 1e-9, 1.0])
def test_elu_dual_against_quadrature(a, r):
    assert _check_dual(a, 0.8, 1.9, r) <= 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("a", [0.5, 1.0, spec.SELU_ALPHA, 2.0])
def test_elu_dual_against_quadrature_grid(a):
    lo, hi = series.ELU_EXACT_VARIANCES
    worst = 0.0
    for sxx, syy in [(1.0, 1.0), (0.3, 2.5), (lo, lo), (lo, 4.0), (hi, hi), (0.5 * hi, hi)]:
        for r in (-1.0, -(1 - 1e-9), -0.7, 0.0, 0.4, 0.95, 1 - 1e-9, 1.0):
            worst = max(worst, _check_dual(a, sxx, syy, r))
    assert worst <= 1e-10


def _recursion_truth(arch, X):
    """NNGP and NTK of ``arch`` on the rows X by the layer recursion, quadrature per pair."""
    a, lam = arch.activation.alpha, arch.activation.scale
    first, steps = arch.layer_coefficients(X.shape[1])
    G = X @ X.T
    n = X.shape[0]
    nngp, ntk = np.empty((n, n)), np.empty((n, n))
    diag_s = first[0] * np.diag(G) + first[1]
    for i in range(n):
        for j in range(i, n):
            s, t = first[0] * G[i, j] + first[1], first[2] * G[i, j] + first[3]
            sx, sy = first[0] * G[i, i] + first[1], first[0] * G[j, j] + first[1]
            for res, w2, b2, alpha, beta in steps:
                if sx * sy - s * s < 1e-12 * sx * sy:  # parallel within rounding (the project's convention)
                    s = math.copysign(math.sqrt(sx * sy), s)
                k, kd = dual_truth(sx, sy, s, a)
                kx, _ = dual_truth(sx, sx, sx, a)
                ky, _ = dual_truth(sy, sy, sy, a)
                s, t = step(lam * lam * k, lam * lam * kd, s, t, res, w2, b2, alpha, beta)
                sx = res * sx + w2 * lam * lam * kx + b2
                sy = res * sy + w2 * lam * lam * ky + b2
            nngp[i, j] = nngp[j, i] = s
            ntk[i, j] = ntk[j, i] = t
    assert diag_s.shape == (n,)
    return nngp, ntk


def _rows():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((4, 5)) / math.sqrt(5.0)
    X[1] = X[0]  # duplicate: parallel in every layer
    X[2] = X[0] + 1e-4 * rng.standard_normal(5)  # close: 1 - rho ~ 1e-8, far above rounding noise
    return X


def _assert_equals_recursion_truth(arch, X, nngp, ntk):
    """Both kernels within 1e-10 of sqrt(K(x,x) K(y,y)) of the quadrature recursion."""
    want_nngp, want_ntk = _recursion_truth(arch, X)
    for got, want in ((nngp, want_nngp), (ntk, want_ntk)):
        scale = np.sqrt(np.outer(np.diag(want), np.diag(want)))
        assert np.abs(got - want).max() <= 1e-10 * scale.min(), np.abs(got - want) / scale


@pytest.mark.parametrize("act", [spec.ELU(0.5), spec.ELU(1.0), spec.ELU(2.0), spec.SELU()], ids=repr)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_kernel_against_quadrature_recursion(act, depth):
    X = _rows()
    arch = nf.MLP(depth=depth, activation=act, W_std=1.3, b_std=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", series.SeriesAccuracyWarning)  # no warning any more
        nngp, ntk = nf.kernel(arch, X, get=("nngp", "ntk"))
    _assert_equals_recursion_truth(arch, X, nngp, ntk)


def test_no_warning_in_range_and_warning_outside():
    with warnings.catch_warnings():
        warnings.simplefilter("error", series.SeriesAccuracyWarning)
        for act in (spec.ELU(), spec.ELU(0.5), spec.SELU()):
            series.layer_series(act, np.array([0.05, 1.0, 3.0]))
    hi = series.ELU_EXACT_VARIANCES[1]
    with pytest.warns(series.SeriesAccuracyWarning, match="selu"):
        series.layer_series(spec.SELU(), np.array([1.0, 2.0 * hi]))


def test_exact_cut_and_tables():
    """The series part meets the requested bound up to the cut; the cut is below 1."""
    rows = series.prepare(spec.SELU(), *nf.MLP(depth=2, activation="selu").layer_coefficients(3),
                          np.array([1.0, 2.0, 3.0]))  # fmt: skip
    cut, exact = series.exact_args(spec.SELU(), rows, None, None, np.float64)
    assert exact[0] == 1.0 and exact[1] == spec.SELU_ALPHA and exact[2] == spec.SELU_SCALE
    assert np.all((cut > 0.5) & (cut < 1.0))
    table = series.degree_table(rows, None, None, exact=True)
    assert table.max() <= rows.degrees.max()


def test_config_switch_restores_the_series(monkeypatch):
    monkeypatch.setattr(config, "ELU_EXACT", False)
    assert series.exact_params(spec.SELU()) is None
    with pytest.warns(series.SeriesAccuracyWarning, match="selu"):
        series.layer_series(spec.SELU(), np.array([1.0, 2.0]))


def test_float32_duplicates_and_far_pairs():
    """float32: the closed form runs in float64 and is cast; duplicate rows are parallel."""
    X = _rows()
    arch = nf.MLP(depth=2, activation=spec.SELU(), W_std=1.3, b_std=0.2)
    k64 = nf.kernel(arch, X)
    k32 = nf.kernel(arch, X.astype(np.float32))
    assert k32.dtype == np.float32
    assert np.abs(k32 - k64).max() <= 1e-5 * np.abs(k64).max()
    assert k64[0, 1] == pytest.approx(k64[0, 0], rel=1e-14)  # closed form at rho = 1 vs the 1-D diagonal


def test_plan_warns_for_a_backend_without_the_closed_form():
    first, steps = nf.MLP(depth=2, activation="selu").layer_coefficients(3)
    plan = series.SeriesPlan(spec.SELU(), first, steps)
    with warnings.catch_warnings():
        warnings.simplefilter("error", series.SeriesAccuracyWarning)
        plan.add_side(np.array([1.0, 2.0]))  # the CPU: no warning
    with pytest.warns(series.SeriesAccuracyWarning, match="selu.*no closed form"):
        plan.warn_without_exact()


def test_elu_dual_row_equals_elu_dual():
    """The gathered, vectorised closed form (the tile's path) against elu_dual pair by pair: the
    vectorised pairs (|rho| >= 0.925) and those it hands to elu_dual (parallel, |rho| < 0.925),
    both signs, the ends of the variance range.

    Each entry is held to 1e-13 of its Cauchy-Schwarz bound sqrt(K(x, x) K(y, y)) (the same for
    Kdot), the scale of the terms whose sum it is.  The two paths round differently: an
    anticorrelated pair's K is a cancellation (-0.07 at variances 40 and 1e-4, rho = -0.94), where
    they differ by up to 1.2e-14 of that bound (measured on AMD EPYC Zen 4; 1e-14 of K itself).
    Which rounding a process runs also depends on whether Numba compiled the callees or loaded
    them from its cache (the copies linked into each caller are contracted differently), so the
    earlier bound, 1e-14 of K, held only in a process that compiled them."""
    from ntkfast.bivariate import PARALLEL_TOL64, WORK_ROWS, elu_dual_row

    rng = np.random.default_rng(3)
    lo, hi = series.ELU_EXACT_VARIANCES
    rho = np.concatenate([rng.uniform(0.925, 1.0, 40), -rng.uniform(0.925, 1.0, 40), [1.0, -1.0, 1 - 1e-13, 0.93],
                          rng.uniform(-0.925, 0.925, 8), [0.9249, -0.9251, 1 - 1e-9, -(1 - 1e-9)]])  # fmt: skip
    syy = np.exp(rng.uniform(math.log(lo), math.log(hi), rho.size))
    syy[:4] = (lo, hi, lo, hi)
    for sxx, alpha in ((1.7, 1.0), (lo, 0.5), (hi, 2.0), (0.3, spec.SELU_ALPHA)):
        sxy = rho * np.sqrt(sxx * syy)
        k = np.empty(rho.size)
        kd = np.empty(rho.size)
        elu_dual_row(sxx, syy, sxy, alpha, PARALLEL_TOL64, k, kd, rho.size, np.empty((WORK_ROWS + 1, rho.size)))
        k_xx, kd_xx = elu_dual(sxx, sxx, sxx, alpha, PARALLEL_TOL64)
        for q in range(rho.size):
            want_k, want_kd = elu_dual(sxx, syy[q], sxy[q], alpha, PARALLEL_TOL64)
            k_yy, kd_yy = elu_dual(syy[q], syy[q], syy[q], alpha, PARALLEL_TOL64)
            assert abs(k[q] - want_k) <= 1e-13 * math.sqrt(k_xx * k_yy)
            assert abs(kd[q] - want_kd) <= 1e-13 * math.sqrt(kd_xx * kd_yy)


def test_kernel_of_correlated_rows_against_quadrature_recursion():
    """Rows whose correlations lie between the cut (0.926) and 1 in every layer, where each tile row
    gathers several closed-form pairs (bivariate.elu_dual_row), and one far row."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal(5) / math.sqrt(5.0)
    X = np.stack([base + eps * rng.standard_normal(5) / math.sqrt(5.0) for eps in (0.0, 0.08, 0.15, 0.25, 0.35)]
                 + [rng.standard_normal(5) / math.sqrt(5.0)])  # fmt: skip
    arch = nf.MLP(depth=2, activation=spec.SELU(), W_std=1.3, b_std=0.2)
    nngp, ntk = nf.kernel(arch, X, get=("nngp", "ntk"))
    _assert_equals_recursion_truth(arch, X, nngp, ntk)


def test_series_part_stops_at_the_cut_and_a_plan_can_keep_the_cap():
    """With the closed form the rows' series stops at the degree that meets the bound up to the cut
    (the quadrature level, so the energies and the diagonal, unchanged); a plan for a backend
    without it (``closed_form = False``: the GPU) keeps the cap's degree."""
    first, steps = nf.MLP(depth=2, activation="elu").layer_coefficients(3)
    sq = np.array([1.0, 2.0, 3.0])
    sides = {}
    for flag in (True, False):
        plan = series.SeriesPlan(spec.ELU(0.5), first, steps)
        plan.closed_form = flag
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", series.SeriesAccuracyWarning)
            sides[flag] = plan.add_side(sq).rows
        cut, _ = plan.exact_args(np.float64)
        if flag:
            assert np.all(cut >= 0.925)  # every closed-form pair in elu_dual_row's vectorised branch
    assert np.all(sides[False].degrees == config.SERIES_MAX_DEGREE)
    assert np.all(sides[True].degrees < sides[False].degrees // 1.5)
    np.testing.assert_array_equal(sides[True].nngp, sides[False].nngp)
    np.testing.assert_array_equal(sides[True].ntk, sides[False].ntk)
    low = sides[True].degrees[0] + 1
    np.testing.assert_array_equal(sides[True].c[:, 0, :low], sides[False].c[:, 0, :low])


def test_backends_without_the_closed_form_prepare_rows_to_the_cap():
    """The GPU paths (``gpu.run`` and ``GramOperator(backend="gpu")``) prepare their rows with
    ``closed_form=False``: ELU's series then runs to the cap's degree, the CPU's stops at the cut."""
    from ntkfast import engine

    X = np.random.default_rng(0).standard_normal((5, 3))
    arch = nf.MLP(depth=2, activation="elu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", series.SeriesAccuracyWarning)
        cpu_rows, cpu_coef = engine.prepare_rows(arch, X)
        gpu_rows, gpu_coef = engine.prepare_rows(arch, X, closed_form=False)
    assert cpu_coef.series.closed_form and not gpu_coef.series.closed_form
    assert np.all(gpu_rows.series.rows.degrees == config.SERIES_MAX_DEGREE)
    assert np.all(cpu_rows.series.rows.degrees < gpu_rows.series.rows.degrees)
    np.testing.assert_array_equal(cpu_rows.ntk, gpu_rows.ntk)
