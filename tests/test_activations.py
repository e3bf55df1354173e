"""The Hermite-series activations (issue 14) against truths that do not come from the series.

* adaptive 2-D quadrature (nested ``scipy.integrate.quad``, split at the kinks) of
  E[phi(u) phi(v)] and E[phi'(u) phi'(v)], incl. rho = +-1, +-(1 - 1e-9), zero and large variance;
* the closed-form erf kernel (``Elementwise(erf)`` through the series = ``"erf"`` through its
  closed form), over whole networks;
* finite differences of ``phi`` for every ``dphi``.

Worst case measured (float64): 7e-15 of sqrt(K(x,x) K(y,y)) for the smooth activations over the
grid below; ELU/SELU: the stated bound of the series holds (the kernel is exact: the pairs beyond
the series' reach get a closed form, tests/test_elu_exact.py).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, special

import ntkfast as nf
from ntkfast import config, series, spec
from ntkfast.backends import cpu_series
from ntkfast.errors import ArgumentError

SMOOTH = {
    "tanh": spec.Tanh(),
    "sigmoid": spec.Sigmoid(),
    "softplus": spec.Softplus(),
    "softplus_b3": spec.Softplus(3.0),
    "silu": spec.SiLU(),
    "swish_b2": spec.Swish(2.0),
    "mish": spec.Mish(),
    "gelu_tanh": spec.GeluTanh(),
}
KINKED = {"elu": spec.ELU(), "elu_a05": spec.ELU(0.5), "selu": spec.SELU()}


def _pdf(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _quad(f, points=None):
    lo, hi = -40.0, 40.0
    pts = None if points is None else [p for p in points if lo < p < hi] or None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return integrate.quad(f, lo, hi, points=pts, epsabs=1e-300, epsrel=1e-12, limit=400)[0]


def truth(fn, sxx, syy, sxy):
    """E[fn(u) fn(v)], (u, v) ~ N(0, [[sxx, sxy], [sxy, syy]]), by nested adaptive quadrature.

    u = sqrt(sxx) z1, v = sqrt(syy) (rho z1 + sqrt(1 - rho^2) z2); the kink of fn at 0 is a
    breakpoint of both integrals (z1 = 0, z2 = -rho z1 / sqrt(1 - rho^2)).
    """
    f = lambda x: float(fn(np.float64(x)))  # noqa: E731
    ax, ay = math.sqrt(sxx), math.sqrt(syy)
    if ax == 0.0 or ay == 0.0:
        return f(0.0) * _quad(lambda z: _pdf(z) * f((ax + ay) * z), [0.0])
    rho = max(-1.0, min(1.0, sxy / (ax * ay)))
    q = math.sqrt(max(1.0 - rho * rho, 0.0))
    if q == 0.0:
        return _quad(lambda z: _pdf(z) * f(ax * z) * f(rho * ay * z), [0.0])

    def inner(z1):
        return _quad(lambda z2: _pdf(z2) * f(ay * (rho * z1 + q * z2)), [-rho * z1 / q])

    return _quad(lambda z1: _pdf(z1) * f(ax * z1) * inner(z1), [0.0])


def _series_pair(act, sxx, syy, sxy, tol=None):
    ls = series.layer_series(act, np.array([sxx, syy]), tol)
    inv = series.inverse_sqrt(np.array([sxx, syy]))
    rho = sxy * inv[0] * inv[1]
    k, kd = series.evaluate(ls, ls, np.array([0]), np.array([1]), np.array([rho]))
    return k[0], kd[0], ls


RHOS = (0.0, 0.37, -0.81, 1 - 1e-9, -(1 - 1e-9), 1.0, -1.0)
QUICK = [(0.8, 1.9), (1e-4, 0.5)]


def _check(act, sxx, syy, rho, rel):
    sxy = rho * math.sqrt(sxx * syy)
    k, kd, ls = _series_pair(act, sxx, syy, sxy)
    tk = truth(act.phi, sxx, syy, sxy)
    tkd = truth(act.dphi, sxx, syy, sxy)
    scale_k = math.sqrt(ls.e2[0] * ls.e2[1])
    scale_kd = math.sqrt(ls.e2d[0] * ls.e2d[1])
    assert abs(k - tk) <= rel * scale_k, (act.name, sxx, syy, rho, k, tk)
    assert abs(kd - tkd) <= rel * scale_kd, (act.name, sxx, syy, rho, kd, tkd)
    return max(abs(k - tk) / scale_k, abs(kd - tkd) / scale_kd)


@pytest.mark.parametrize("name", sorted(SMOOTH))
@pytest.mark.parametrize("rho", [0.37, 1 - 1e-9, -1.0])
def test_smooth_against_quadrature(name, rho):
    for sxx, syy in QUICK[:1]:
        _check(SMOOTH[name], sxx, syy, rho, 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_smooth_against_quadrature_grid(name):
    worst = 0.0
    for sxx, syy in [(0.8, 1.9), (1e-4, 0.5), (3.0, 3.0), (1e-10, 2.0)]:
        for rho in RHOS:
            worst = max(worst, _check(SMOOTH[name], sxx, syy, rho, 1e-12))
    assert worst <= 1e-12


@pytest.mark.parametrize("name", ["sigmoid", "silu", "softplus"])
def test_zero_variance(name):
    """A zero-variance row: only c_0 = phi(0) survives, K = phi(0) E[phi(v)], Kdot = phi'(0) E[phi'(v)]."""
    act = SMOOTH[name]
    k, kd, _ = _series_pair(act, 0.0, 1.3, 0.0)
    assert k == pytest.approx(truth(act.phi, 0.0, 1.3, 0.0), rel=1e-13, abs=1e-15)
    assert kd == pytest.approx(truth(act.dphi, 0.0, 1.3, 0.0), rel=1e-13, abs=1e-15)


def test_large_variance_warns_and_bound_holds():
    """tanh at variance 400 is nearly sign(x): the degree cap binds, the warning states the
    bound, and the error against quadrature is within it (at rho = 1 and elsewhere)."""
    act = spec.Tanh()
    with pytest.warns(series.SeriesAccuracyWarning, match="tanh.*degree cap"):
        ls = series.layer_series(act, np.array([400.0, 250.0]))
    assert ls.degree == config.SERIES_MAX_DEGREE and 1e-12 < ls.bound < 1.0
    for rho in (0.5, 1.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", series.SeriesAccuracyWarning)
            k, kd, _ = _series_pair(act, 400.0, 250.0, rho * math.sqrt(400.0 * 250.0))
        tk = truth(act.phi, 400.0, 250.0, rho * math.sqrt(400.0 * 250.0))
        assert abs(k - tk) <= ls.bound * math.sqrt(ls.e2[0] * ls.e2[1])


@pytest.mark.parametrize("name", sorted(KINKED))
def test_kinked_warn_with_a_bound_that_holds(name):
    act = KINKED[name]
    # the CPU kernel takes ELU's pairs near rho = +-1 in closed form (tests/test_elu_exact.py) for
    # variances in series.ELU_EXACT_VARIANCES: the series warns only with a row outside them
    with pytest.warns(series.SeriesAccuracyWarning, match=act.name):
        ls = series.layer_series(act, np.array([0.9, 1.6, 2.0 * series.ELU_EXACT_VARIANCES[1]]))
    assert ls.bound > config.SERIES_TOL
    for rho in (0.6, 1 - 1e-9, -1.0):
        sxy = rho * math.sqrt(0.9 * 1.6)
        inv = series.inverse_sqrt(np.array([0.9, 1.6]))
        k, kd = series.evaluate(ls, ls, np.array([0]), np.array([1]), np.array([sxy * inv[0] * inv[1]]))
        assert abs(k[0] - truth(act.phi, 0.9, 1.6, sxy)) <= ls.bound * math.sqrt(ls.e2[0] * ls.e2[1])
        assert abs(kd[0] - truth(act.dphi, 0.9, 1.6, sxy)) <= ls.bound * math.sqrt(ls.e2d[0] * ls.e2d[1])


def test_quadrature_rule_is_orthonormal():
    for level in series._LEVELS:
        z, wl, e = series._hermite_rule(level)
        gram = (e * wl) @ e.T  # integral of e_j e_k dz = sum_q w_q h_j(z_q) h_k(z_q) pdf
        assert np.abs(gram - np.eye(level + 1)).max() < 1e-13
        assert abs(series._rule(level)[1].sum() - 1.0) < 1e-14


def test_energies_against_quadrature():
    """The exact diagonal K(x, x) = E[phi(sqrt(s) z)^2] (and E[phi'^2]) from the same rule."""
    s = np.array([1e-6, 0.3, 2.0, 9.0])
    for act in (*SMOOTH.values(), *KINKED.values()):
        _, _, e2, e2d = series.hermite_coefficients(act, s, 64)
        for i, v in enumerate(s):
            sg = math.sqrt(v)
            for fn, got in ((act.phi, e2[i]), (act.dphi, e2d[i])):
                want = _quad(lambda z, fn=fn, sg=sg: _pdf(z) * float(fn(np.float64(sg * z))) ** 2, [0.0])
                assert got == pytest.approx(want, rel=1e-13, abs=1e-300)


# ---------------------------------------------------------------------- whole networks
ERF_SERIES = spec.Elementwise(special.erf, lambda x: 2.0 / math.sqrt(math.pi) * np.exp(-x * x), name="erf_series")


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("residual", [False, True])
def test_series_equals_closed_form_erf(parameterization, residual):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 7))
    Y = rng.standard_normal((30, 7))
    kw = dict(depth=3, W_std=1.4, b_std=0.2, parameterization=parameterization, residual=residual, width=64)
    for y in (None, Y):
        got = cpu_series.kernel(nf.MLP(activation=ERF_SERIES, **kw), X, y, get=("nngp", "ntk"))
        want = nf.kernel(nf.MLP(activation="erf", **kw), X, y, get=("nngp", "ntk"))
        for g, w in zip(got, want):
            assert np.abs(g - w).max() <= 1e-11 * np.abs(w).max()  # tol = 1e-12 per layer


@pytest.mark.parametrize("tile", [16, 512])
def test_nearly_parallel_pairs_equal_closed_form_erf(tile):
    """The kernel takes one degree per row of a tile and sends pairs above |rho| = 0.984 to their
    own degree: rows with near-duplicates (rho = 1 - 1e-12, 1 - 1e-6, 0.99), an anti-parallel
    twin, a multiple and a zero row, mixed with unrelated rows, through nf.kernel (tiled, both
    one tile and many), against the closed-form erf."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((12, 6))
    near = [base[0] + 1e-6 * rng.standard_normal(6), base[1] + 1e-3 * rng.standard_normal(6),
            base[2] + 0.1 * rng.standard_normal(6), -base[3], 0.5 * base[4], np.zeros(6)]  # fmt: skip
    X = np.vstack([base, near, rng.standard_normal((30, 6))])
    Y = np.vstack([X[::2], rng.standard_normal((5, 6))])
    kw = dict(depth=3, W_std=1.5, b_std=0.1)
    for y in (None, Y):
        with warnings.catch_warnings():
            warnings.simplefilter("error", series.SeriesAccuracyWarning)  # the series reaches 1e-12 here
            got = nf.kernel(nf.MLP(activation=ERF_SERIES, **kw), X, y, get=("nngp", "ntk"), tile=tile)
        want = nf.kernel(nf.MLP(activation="erf", **kw), X, y, get=("nngp", "ntk"))
        for g, w in zip(got, want):
            assert np.abs(g - w).max() <= 1e-11 * np.abs(w).max()
        got32 = nf.kernel(nf.MLP(activation=ERF_SERIES, **kw), X.astype(np.float32),
                          None if y is None else y.astype(np.float32), get="ntk", tile=tile)  # fmt: skip
        assert got32.dtype == np.float32
        assert np.abs(got32 - want[1]).max() <= 1e-4 * np.abs(want[1]).max()


def test_elementwise_tanh_equals_tanh():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((25, 5))
    mine = spec.Elementwise(np.tanh)
    assert mine.dphi_method == "complex-step" and mine.name == "tanh"
    got = cpu_series.kernel(nf.MLP(depth=2, activation=mine, b_std=0.1), X, get=("nngp", "ntk"))
    want = cpu_series.kernel(nf.MLP(depth=2, activation="tanh", b_std=0.1), X, get=("nngp", "ntk"))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-14, atol=1e-15)


def test_float32_per_pair():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((30, 6))
    arch = nf.MLP(depth=2, activation="silu", W_std=1.3, b_std=0.1)
    k64 = cpu_series.kernel(arch, X)
    k32 = cpu_series.kernel(arch, X.astype(np.float32))
    assert k32.dtype == np.float32
    assert np.abs(k32 - k64).max() <= 2e-6 * np.abs(k64).max()


# ------------------------------------------------------------------ activation objects
@pytest.mark.parametrize("act", [*SMOOTH.values(), *KINKED.values()], ids=lambda a: a.name)
def test_dphi_matches_finite_differences(act):
    x = np.concatenate([np.linspace(-7, -0.05, 40), np.linspace(0.05, 7, 40)])
    h = 1e-6
    fd = (act.phi(x + h) - act.phi(x - h)) / (2 * h)
    np.testing.assert_allclose(act.dphi(x), fd, rtol=1e-7, atol=1e-8)


def test_names_and_objects():
    for name in ("tanh", "sigmoid", "softplus", "silu", "swish", "elu", "selu", "mish", "gelu_tanh"):
        act = spec.get_activation(name)
        assert act.code == spec.SERIES and act.name == name
    selu = spec.SELU()
    assert selu.alpha == pytest.approx(1.6732632423543772) and selu.scale == pytest.approx(1.0507009873554805)
    with pytest.raises(ValueError):
        spec.Softplus(0.0)
    with pytest.raises(TypeError):
        spec.Elementwise("tanh")
    with pytest.raises(TypeError):
        spec.Elementwise(np.tanh, dphi=3)


def test_elementwise_derivative_methods():
    assert spec.Elementwise(np.sin).dphi_method == "complex-step"
    # np.abs drops the imaginary part: the complex step would say 0, the probe catches it
    act = spec.Elementwise(lambda x: np.abs(x) + np.tanh(x))
    assert act.dphi_method == "central-difference"
    x = np.array([-1.5, -0.3, 0.4, 2.0])
    np.testing.assert_allclose(act.dphi(x), np.sign(x) + 1 - np.tanh(x) ** 2, rtol=1e-11)
    assert spec.Elementwise(np.tanh, dphi=lambda x: 1 - np.tanh(x) ** 2).dphi_method == "given"


def test_elementwise_refusals():
    with pytest.raises(ArgumentError, match="vectorised"):
        series.layer_series(spec.Elementwise(lambda x: 1.0, dphi=lambda x: 0.0 * x), np.array([1.0]))
    with pytest.raises(ArgumentError, match="not finite"):
        series.layer_series(spec.Elementwise(np.exp, dphi=np.exp), np.array([1e6]))
    with pytest.raises(ArgumentError, match="real"):
        series.layer_series(spec.Elementwise(lambda x: x + 0j, dphi=lambda x: x), np.array([1.0]))


# ------------------------------------------------------------------- through the engine
def _data(n=36, m=20, d=6, seed=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((m, d))


@pytest.mark.parametrize(
    "act, rel", [("tanh", 1e-11), ("silu", 1e-11), (spec.Elementwise(np.sin), 1e-11), (spec.ELU(0.7), 1e-11)], ids=str
)
def test_public_api_matches_the_reference_driver(act, rel):
    """kernel (tiled, threaded, symmetric schedule), kernel_diag and GramOperator agree with the
    one-tile reference driver; K(X, X) is exactly symmetric with the exact diagonal.  (The tiling
    changes which pairs share a degree, so they agree to the truncation bound: ~1e-12, ELU too:
    its pairs beyond the series' reach are in closed form, tests/test_elu_exact.py.)"""
    X, Y = _data()
    arch = nf.MLP(depth=3, activation=act, W_std=1.2, b_std=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", series.SeriesAccuracyWarning)
        nngp, ntk = nf.kernel(arch, X, get=("nngp", "ntk"), tile=16, n_jobs=2)
        ref = cpu_series.kernel(arch, X, get=("nngp", "ntk"))
        kxy = nf.kernel(arch, X, Y, tile=8)
        kyx = nf.kernel(arch, Y, X, tile=8)
        ref_xy = cpu_series.kernel(arch, X, Y)
        diag = nf.kernel_diag(arch, X, get=("nngp", "ntk"))
        op = nf.GramOperator(arch, X, Y, tile=8)
    for got, want in zip((nngp, ntk), ref):
        assert np.abs(got - want).max() <= rel * np.abs(want).max()
    assert np.array_equal(ntk, ntk.T)
    assert np.array_equal(np.diag(nngp), diag[0]) and np.array_equal(np.diag(ntk), diag[1])
    assert np.abs(kxy - ref_xy).max() <= rel * np.abs(ref_xy).max()
    assert np.abs(kxy - kyx.T).max() <= rel * np.abs(kxy).max()
    v = np.random.default_rng(0).standard_normal(Y.shape[0])
    assert np.abs(op @ v - kxy @ v).max() <= rel * np.abs(kxy).max() * np.abs(v).sum()


@pytest.mark.parametrize("residual", [False, True])
def test_depths_equal_separate_networks(residual):
    X, _ = _data(20)
    kw = dict(activation="tanh", W_std=1.1, b_std=0.1, residual=residual)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", series.SeriesAccuracyWarning)
        got = nf.kernel(nf.MLP(depth=3, **kw), X, depths=(1, 3), get=("nngp", "ntk"))
        for d, pair in zip((1, 3), got):
            want = nf.kernel(nf.MLP(depth=d, **kw), X, get=("nngp", "ntk"))
            for g, w in zip(pair, want):
                assert np.abs(g - w).max() <= 1e-12 * np.abs(w).max()


def test_standard_parameterization_fourier_and_float32():
    X, Y = _data(24, 10)
    archs = [
        nf.MLP(depth=2, activation="softplus", parameterization="standard", width=(50, 70), b_std=0.2),
        nf.MLP(depth=2, activation="mish", input_map=nf.RandomFourierFeatures(12, 0.5, seed=1)),
    ]
    for arch in archs:
        got = nf.kernel(arch, X, Y, tile=8)
        want = cpu_series.kernel(arch, X, Y)
        assert np.abs(got - want).max() <= 1e-11 * np.abs(want).max()
        k32 = nf.kernel(arch, X.astype(np.float32), Y.astype(np.float32))
        assert k32.dtype == np.float32 and np.abs(k32 - want).max() <= 3e-6 * np.abs(want).max()


def test_two_sides_are_brought_to_a_common_degree():
    """Y's rows need a higher degree than X's: X's coefficients are recomputed to match, and the
    result equals the transpose of K(Y, X) to the truncation bound."""
    rng = np.random.default_rng(5)
    X = 0.1 * rng.standard_normal((6, 4))  # small variance: a low degree
    Y = 1.5 * rng.standard_normal((5, 4))  # larger: a higher one
    arch = nf.MLP(depth=2, activation="tanh", W_std=1.0, b_std=0.0)
    first, steps = arch.layer_coefficients(4)
    plan = series.SeriesPlan(arch.activation, first, steps)
    sx = plan.add_side(np.einsum("ij,ij->i", X, X))
    low = sx.degrees
    sy = plan.add_side(np.einsum("ij,ij->i", Y, Y))
    assert sx.degrees == sy.degrees and sx.degrees[0] > low[0]
    kxy = nf.kernel(arch, X, Y)
    kyx = nf.kernel(arch, Y, X)
    assert np.abs(kxy - kyx.T).max() <= 1e-12 * np.abs(kxy).max()


def test_series_gradient_is_served():
    """(The series activations were refused before ntkfast.backends.cpu_series_grad; the gradient's
    finite-difference proofs are in tests/test_kernel_grad_series.py.)"""
    from ntkfast.kernel_grad import has_gradient
    from ntkfast.sklearn import NTKKernel

    assert has_gradient(nf.MLP(activation="tanh"))
    X, _ = _data(5)
    K, dK = NTKKernel(activation="tanh")(X, eval_gradient=True)
    assert dK.shape == (5, 5, 2) and np.isfinite(dK).all()


def test_cli_activation_names():
    from ntkfast.cli.parser import _activation

    assert _activation("tanh") == "tanh"
    assert _activation("elu:0.5") == spec.ELU(0.5)
    assert _activation("softplus:2") == spec.Softplus(2.0)


@pytest.mark.parametrize("name", ["tanh", "silu", "elu", pytest.param("sigmoid", marks=pytest.mark.slow),
                                  pytest.param("softplus", marks=pytest.mark.slow),
                                  pytest.param("mish", marks=pytest.mark.slow),
                                  pytest.param("gelu_tanh", marks=pytest.mark.slow),
                                  pytest.param("selu", marks=pytest.mark.slow)])  # fmt: skip
def test_monte_carlo_finite_networks(name):
    """NNGP and empirical NTK of wide random finite networks (phi/dphi of FiniteMLP) approach the
    series kernel: 100 (NNGP) and 20 (NTK) networks of width 512, fixed seeds (measured: at most
    5% of the largest entry; the bound here is 10%)."""
    X = np.array([[1.0, 0.5, -0.3], [0.2, -1.1, 0.7], [0.9, 0.4, -0.1]])
    arch = nf.MLP(depth=2, activation=name, W_std=1.2, b_std=0.1, width=512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", series.SeriesAccuracyWarning)
        nngp, ntk = nf.kernel(arch, X, get=("nngp", "ntk"))
    mc_nngp = nf.monte_carlo_kernel(arch, X, n_samples=100, width=512, get="nngp")
    mc_ntk = nf.monte_carlo_kernel(arch, X, n_samples=20, width=512, get="ntk")
    assert np.abs(mc_nngp - nngp).max() <= 0.1 * np.abs(nngp).max()
    assert np.abs(mc_ntk - ntk).max() <= 0.1 * np.abs(ntk).max()


def test_coefficients_within_the_memory_budget(monkeypatch):
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "1MB")
    X = np.random.default_rng(0).standard_normal((4000, 5))
    with pytest.raises(nf.InsufficientMemoryError, match="Hermite coefficients of 4000 rows"):
        nf.kernel_diag(nf.MLP(depth=2, activation="tanh"), X)


def test_dask_blocks():
    """Each Dask block is a local kernel call with its own degrees: equal to the local kernel to the bound."""
    pytest.importorskip("dask")
    from ntkfast import distributed

    X, _ = _data(60, 5)
    arch = nf.MLP(depth=2, activation="tanh")
    got = distributed.kernel(arch, X, chunks=25).compute(scheduler="synchronous")
    want = nf.kernel(arch, X)
    assert np.abs(got - want).max() <= 1e-11 * np.abs(want).max()


@pytest.mark.parametrize("act", [spec.Tanh(), spec.SiLU(), spec.ELU(0.5), spec.GeluTanh()], ids=lambda a: a.name)
def test_interpolated_coefficients_equal_direct_quadrature(act, monkeypatch):
    """Many rows: coefficients interpolated in sigma (accepted only when the M- and (2M-1)-point
    interpolants agree to 1e-13 at the midpoints and points) equal the direct quadrature of every
    row, and the truncation profile from the samples equals the profile over every row."""
    rng = np.random.default_rng(4)
    for s in (rng.uniform(1.5, 2.5, 700), np.exp(rng.uniform(-6, 1.5, 700)), np.full(700, 0.8)):
        got, samples, interp = series._coefficients(act, s, 128)
        if interp is not None:  # the rows' coefficients are formed from the points' only when kept
            got = (interp @ got[0], interp @ got[1], got[2], got[3])
        want = series.hermite_coefficients(act, s, 128)
        for g, w in zip(got, want):
            assert np.abs(g - w).max() <= 1e-14 * np.abs(w).max()
        rows, sampled = series._profile(*want), series._profile(*samples)
        # the samples include both ends of the rows' range; the max between two samples is missed
        # by at most 4e-7 relative here, which layer_series' margin covers
        margin = 1.0 if samples[0] is got[0] else series._SAMPLED_PROFILE_MARGIN
        assert np.all(sampled * margin >= rows - 1e-14)
        assert np.all(sampled <= rows * 1.5 + 1e-14)


def test_bench_activation_times_smoke(capsys):
    """``ntkfast bench --activations`` (bench.activation_times) at a tiny size: every row has the
    kernel, ReLU and per-row times and their ratio (no timed assertion)."""
    from ntkfast import bench

    rows = bench.activation_times(n=48, d=5, names=("tanh", "elu", "elementwise"), repeat=1)
    assert [r["activation"] for r in rows] == ["tanh", "elu", "elementwise"]
    for r in rows:
        assert r["kernel"] > 0 and r["relu"] > 0 and r["rows"] > 0
        assert r["ratio"] == pytest.approx(r["kernel"] / r["relu"])
        assert r["pair_ratio"] == pytest.approx(max(r["kernel"] - r["rows"], 0.0) / r["relu"])
    X = bench.correlated_rows(40, 6)
    R = np.corrcoef(X)
    assert np.median(R[np.triu_indices(40, 1)]) > 0.9  # strongly correlated, as its docstring says
    rows = bench.activation_times(names=("elu",), repeat=1, X=X)
    assert rows[0]["kernel"] > 0 and rows[0]["rows"] > 0



def test_series_settings_are_read_from_config_at_use_time(monkeypatch):
    """config.SERIES_MAX_DEGREE / SERIES_TOL / SERIES_WARN_BOUND are read when used; a cap outside
    the verified quadrature range is refused with a ConfigError."""
    from ntkfast.errors import ConfigError

    s = np.array([0.5, 30.0])
    monkeypatch.setattr(config, "SERIES_MAX_DEGREE", 64)
    with pytest.warns(series.SeriesAccuracyWarning):
        ls = series.layer_series(spec.Tanh(), s)
    assert ls.degree == 64
    monkeypatch.setattr(config, "SERIES_WARN_BOUND", 1.0)  # the bound reached is below it: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", series.SeriesAccuracyWarning)
        assert series.layer_series(spec.Tanh(), s).degree == 64
    monkeypatch.setattr(config, "SERIES_MAX_DEGREE", 512)
    monkeypatch.setattr(config, "SERIES_TOL", 1e-4)
    s = np.array([0.5, 2.0])
    assert series.layer_series(spec.Tanh(), s).degree < series.layer_series(spec.Tanh(), s, tol=1e-12).degree
    for bad in (1000, 0, 2.5, "64", True):
        monkeypatch.setattr(config, "SERIES_MAX_DEGREE", bad)
        with pytest.raises(ConfigError, match="SERIES_MAX_DEGREE"):
            series.layer_series(spec.Tanh(), s)
