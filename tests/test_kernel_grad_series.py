"""Hyper-parameter gradients of the Hermite-series activations (issue 14): central finite differences.

The truth is Richardson-extrapolated central differences (float64) of the forward kernel
(``nf.kernel``), which does not share the gradient's derivative coefficients, its Stein
quadrature of the diagonal slopes, nor its chain rule.  Step h = 1e-3 in log W_std / log b_std:
the forward series' truncation (1e-12 of the diagonal) divided by h stays below 1e-9, and the
extrapolated difference's own error is O(h^4).
"""

import warnings

import numpy as np
import pytest

import ntkfast as nf
from ntkfast.errors import ArgumentError
from ntkfast.kernel_grad import has_gradient, kernel_with_gradient

SERIES = ["tanh", "sigmoid", "softplus", "silu", "mish", "gelu_tanh", "elu", "selu", "elementwise"]
# ELU and SELU: pairs beyond the series' cut near rho = +-1 take the closed form of
# bivariate.elu_dual_grad, as the forward kernel takes bivariate.elu_dual (test_..._nearly_parallel_pairs).


def _act(name):
    return nf.Elementwise(np.tanh) if name == "elementwise" else name  # phi' by the complex step


def _arch(name, depth, parameterization, W_std=1.3, b_std=0.2, **structure):
    return nf.MLP(depth=depth, activation=_act(name), W_std=W_std, b_std=b_std, parameterization=parameterization,
                  **structure)  # fmt: skip


def _fd(name, depth, parameterization, X, h=1e-3, **structure):
    """(nngp, ntk) derivatives in (log W_std, log b_std) by Richardson-extrapolated central differences."""
    out = {"nngp": [], "ntk": []}
    for dw, db in ((1.0, 0.0), (0.0, 1.0)):

        def K(step, dw=dw, db=db):
            arch = _arch(name, depth, parameterization, 1.3 * np.exp(step * dw), 0.2 * np.exp(step * db), **structure)
            return nf.kernel(arch, X, get=("nngp", "ntk"))

        n1, t1 = ((a - b) / (2 * h) for a, b in zip(K(h), K(-h)))
        n2, t2 = ((a - b) / h for a, b in zip(K(h / 2), K(-h / 2)))
        out["nngp"].append((4 * n2 - n1) / 3)
        out["ntk"].append((4 * t2 - t1) / 3)
    return {k: np.stack(v, axis=-1) for k, v in out.items()}


def _check(name, depth, parameterization, X, rtol, ktol=None, **structure):
    # The forward kernel picks its degree per row (from the row's largest |rho|), the gradient pass
    # per layer: for ELU/SELU the two agree to their series' stated accuracy (SeriesAccuracyWarning),
    # and so do the finite differences of the forward kernel, whose degrees move with W_std, b_std;
    # for the others both agree to round-off.
    accuracy = {"elu": 1e-5, "selu": 3e-3}.get(name, 0.0)
    ktol = max(1e-12 if ktol is None else ktol, accuracy)
    rtol = max(rtol, accuracy)
    arch = _arch(name, depth, parameterization, **structure)
    assert has_gradient(arch)
    fd = _fd(name, depth, parameterization, X, **structure)
    for get in ("nngp", "ntk"):
        K, dK = kernel_with_gradient(arch, X, get=get)
        ref = nf.kernel(arch, X, get=get)
        assert np.abs(K - ref).max() <= ktol * np.abs(ref).max()
        assert np.array_equal(K, K.T) and np.array_equal(dK, dK.transpose(1, 0, 2))
        np.testing.assert_array_equal(np.diag(K), nf.kernel_diag(arch, X, get=get))
        err = np.abs(dK - fd[get]).max() / np.abs(fd[get]).max()
        assert err <= rtol, (name, depth, parameterization, get, err)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nf.SeriesAccuracyWarning)  # ELU/SELU state their ~1e-5 bound
        yield


@pytest.mark.parametrize("name", SERIES)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_series_gradient_matches_finite_differences_depth_2(name, parameterization):
    X = np.random.default_rng(1).standard_normal((24, 4))
    _check(name, 2, parameterization, X, 1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", SERIES)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("depth", [1, 3])
def test_series_gradient_matches_finite_differences_depths_1_and_3(name, parameterization, depth):
    X = np.random.default_rng(2).standard_normal((30, 4))
    _check(name, depth, parameterization, X, 1e-9)


# measured (this data): tanh 1e-11, SiLU 3e-12, ELU (alpha = 1: phi'' jumps) 9e-7, SELU (phi' jumps, so
# phi'' has a delta and the true dKdot/dsxy diverges like 1/sqrt(1 - rho^2) at rho = 1) 2e-3
# (against finite differences of the forward kernel, which now takes ELU/SELU's nearly parallel
# pairs in closed form while the gradient pass keeps the series: ELU measured 6e-5)
NEAR_PARALLEL_RTOL = {"tanh": 1e-9, "silu": 1e-9, "elu": 1e-9, "selu": 1e-8}


@pytest.mark.parametrize("name", sorted(NEAR_PARALLEL_RTOL))
def test_series_gradient_for_nearly_parallel_pairs(name):
    """Pairs at 1 - rho ~ 1e-8 (the series' hardest place): smooth activations as accurate as
    elsewhere; ELU and SELU through the closed form there (SELU's looser bound: its Kdot has an
    asin(rho) term whose derivative grows like 1 / sqrt(1 - rho^2), so the central differences carry
    the forward kernel's round-off amplified near rho = 1)."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((6, 3))
    X = np.concatenate([base, base + 1e-4 * rng.standard_normal(base.shape)])
    # K itself: both the forward kernel and the gradient pass take ELU/SELU's nearly parallel pairs
    # in closed form (bivariate.elu_dual, elu_dual_grad: the same building blocks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _check(name, 2, "ntk", X, NEAR_PARALLEL_RTOL[name], ktol={"elu": 1e-10, "selu": 1e-10}.get(name, 1e-12))
    said = any(issubclass(w.category, nf.SeriesAccuracyWarning) and "gradient" in str(w.message) for w in caught)
    assert not said  # ELU/SELU: closed form near rho = +-1, no warning


@pytest.mark.parametrize("structure", [{"residual": True}, {"input_map": "fourier"}])
def test_series_gradient_with_residual_blocks_and_an_input_map(structure):
    X = np.random.default_rng(8).standard_normal((20, 3))
    if "input_map" in structure:
        structure = {"input_map": nf.RandomFourierFeatures(n_features=8, scale=0.7, seed=0)}
    _check("silu", 2, "ntk", X, 1e-9, **structure)


def test_series_gradient_refuses_a_zero_variance_row():
    arch = nf.MLP(depth=2, activation="tanh", b_std=None)
    X = np.random.default_rng(4).standard_normal((5, 3))
    X[2] = 0.0
    with pytest.raises(ArgumentError, match="zero"):
        kernel_with_gradient(arch, X)


def test_series_gradient_tiles_and_threads_agree_with_one_tile(monkeypatch):
    """A Gram split over several tiles and threads equals the same rows in one call (the assembly:
    mirror images and exact diagonal of every plane), to the series' truncation: a chunk of pairs
    runs to the degree of its largest |rho|, so another split truncates some pairs at another
    degree, each within SERIES_TOL (1e-12) of sqrt(K(x,x) K(y,y)); measured 4.6e-15 of it, and
    2.3e-14 of the largest gradient."""
    from ntkfast import config

    arch = _arch("silu", 2, "ntk")
    X = np.random.default_rng(5).standard_normal((150, 5))
    K1, dK1 = kernel_with_gradient(arch, X, n_jobs=1)
    monkeypatch.setattr(config, "DEFAULT_TILE", 32)
    monkeypatch.setattr(config, "MIN_TILE", 32)
    monkeypatch.setattr(config, "DIAGONAL_TILE", 16)
    K2, dK2 = kernel_with_gradient(arch, X, n_jobs=2)
    scale = np.sqrt(np.outer(np.diag(K1), np.diag(K1)))
    assert np.all(np.abs(K2 - K1) <= config.SERIES_TOL * scale)
    np.testing.assert_allclose(dK2, dK1, rtol=0, atol=1e-12 * np.abs(dK1).max())
    assert np.array_equal(np.diag(K2), np.diag(K1))  # the exact diagonal


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_gaussian_process_with_a_series_activation(kind):
    """NNGPKernel/NTKKernel(tanh) in a GaussianProcessRegressor: the log-marginal-likelihood gradient
    equals finite differences, and the optimizer converges and raises the likelihood."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import WhiteKernel

    from ntkfast.sklearn import NNGPKernel, NTKKernel

    rng = np.random.default_rng(6)
    X = rng.standard_normal((60, 3))
    y = np.tanh(X @ np.array([1.0, -0.5, 0.25])) + 0.05 * rng.standard_normal(60)
    cls = NNGPKernel if kind == "nngp" else NTKKernel
    kernel = cls(depth=2, activation="tanh", W_std=1.0, b_std=0.5) + WhiteKernel(0.1)
    start = GaussianProcessRegressor(kernel, optimizer=None).fit(X, y)
    theta = kernel.theta
    lml, grad = start.log_marginal_likelihood(theta, eval_gradient=True)
    h = 1e-4
    fd = [
        (start.log_marginal_likelihood(theta + h * e) - start.log_marginal_likelihood(theta - h * e)) / (2 * h)
        for e in np.eye(len(theta))
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)  # no ConvergenceWarning from the optimizer
        fitted = GaussianProcessRegressor(kernel, random_state=0).fit(X, y)
    assert fitted.log_marginal_likelihood_value_ > lml + 1.0
    # the optimum: the gradient there is (near) zero in every free direction inside the bounds
    opt_theta = fitted.kernel_.theta
    _, g = fitted.log_marginal_likelihood(opt_theta, eval_gradient=True)
    bounds = fitted.kernel_.bounds
    inside = (opt_theta > bounds[:, 0] + 1e-3) & (opt_theta < bounds[:, 1] - 1e-3)
    assert np.all(np.abs(g[inside]) <= 1e-2 * max(1.0, abs(fitted.log_marginal_likelihood_value_)))
