"""FiniteMLP: analytic Jacobians, the structured empirical NTK, training, Monte-Carlo kernels."""

import numpy as np
import pytest

import ntkfast as nf

SMOOTH = ["erf", "gelu", "sin"]


def central_differences(net, X, eps=1e-6):
    """d f / d params by central differences of apply(), in the documented flat order."""
    flat = np.concatenate([np.r_[W.ravel(), [] if b is None else b] for W, b in net.params])
    shapes = [(W.shape, None if b is None else b.shape) for W, b in net.params]

    def unflatten(v):
        out, i = [], 0
        for ws, bs in shapes:
            W = v[i : i + int(np.prod(ws))].reshape(ws)
            i += W.size
            b = None
            if bs is not None:
                b = v[i : i + bs[0]]
                i += bs[0]
            out.append((W, b))
        return out

    J = np.empty((X.shape[0], net.out_dim, flat.size))
    for p in range(flat.size):
        e = np.zeros_like(flat)
        e[p] = eps
        plus = nf.FiniteMLP.from_params(net.arch, unflatten(flat + e)).apply(X)
        minus = nf.FiniteMLP.from_params(net.arch, unflatten(flat - e)).apply(X)
        J[:, :, p] = (plus - minus) / (2 * eps)
    return J


ARCHS = [
    nf.MLP(depth=2, activation="erf", W_std=1.3, b_std=0.2, width=6),
    nf.MLP(depth=2, activation="gelu", b_std=None, width=(5, 4)),
    nf.MLP(depth=1, activation="sin", b_std=0.3, parameterization="standard", width=7),
    nf.MLP(depth=2, activation="erf", b_std=0.1, residual=True, width=5),
    nf.MLP(depth=1, activation="gelu", input_map=nf.FourierFeatures(np.array([[0.3, -0.2], [0.5, 0.1]])), width=4),
]


@pytest.mark.parametrize("arch", ARCHS, ids=range(len(ARCHS)))
def test_jacobian_matches_finite_differences(arch, rng):
    net = nf.FiniteMLP(arch, out_dim=2, seed=1, in_dim=2)
    X = rng.standard_normal((3, 2))
    J = net.jacobian(X)
    assert J.shape == (3, 2, net.n_params)
    np.testing.assert_allclose(J, central_differences(net, X), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("arch", ARCHS + [nf.MLP(depth=3, activation="relu", width=16, b_std=0.1)], ids=range(6))
def test_empirical_ntk_equals_jacobian_gram(arch, rng):
    net = nf.FiniteMLP(arch, out_dim=3, seed=2, in_dim=2)
    X, Y = rng.standard_normal((5, 2)), rng.standard_normal((4, 2))
    Jx, Jy = net.jacobian(X), net.jacobian(Y)
    full = np.einsum("ikp,jlp->ijkl", Jx, Jy)
    scale = np.abs(full).max()
    np.testing.assert_allclose(net.empirical_ntk(X, Y, trace_outputs=False), full, atol=1e-12 * scale)
    np.testing.assert_allclose(net.empirical_ntk(X, Y), np.einsum("ijkk->ij", full) / 3, atol=1e-12 * scale)
    self_full = np.einsum("ikp,jlp->ijkl", Jx, Jx)
    np.testing.assert_allclose(
        net.empirical_ntk(X, block_size=2), np.einsum("ijkk->ij", self_full) / 3, atol=1e-12 * scale
    )
    np.testing.assert_allclose(
        net.empirical_ntk(X, diagonal=True, trace_outputs=False), np.einsum("iikl->ikl", self_full), atol=1e-12 * scale
    )
    np.testing.assert_allclose(
        net.empirical_ntk(X, diagonal=True), np.einsum("iikk->i", self_full) / 3, atol=1e-12 * scale
    )
    np.testing.assert_allclose(net.empirical_nngp(X, Y), net.apply(X) @ net.apply(Y).T / 3)


def test_params_conventions_and_round_trip(rng):
    arch = nf.MLP(depth=1, activation="relu", W_std=2.0, b_std=0.5, width=3)
    W1, b1 = rng.standard_normal((2, 3)), rng.standard_normal(3)
    W2, b2 = rng.standard_normal((3, 1)), rng.standard_normal((1, 1))
    net = nf.FiniteMLP.from_params(arch, [(W1, b1), (W2, b2)])
    X = rng.standard_normal((4, 2))
    h = np.maximum(X @ (2.0 / np.sqrt(2) * W1) + 0.5 * b1, 0)
    np.testing.assert_allclose(net.apply(X), h @ (2.0 / np.sqrt(3) * W2) + 0.5 * b2.ravel(), rtol=1e-14)
    std = nf.FiniteMLP.from_params(nf.MLP(depth=1, width=3, parameterization="standard", b_std=0.5), net.params)
    np.testing.assert_allclose(std.apply(X), np.maximum(X @ W1 + b1, 0) @ W2 + b2.ravel(), rtol=1e-14)
    again = nf.FiniteMLP.from_params(arch, net.params)
    np.testing.assert_array_equal(again.apply(X), net.apply(X))
    # standard parameterization draws W ~ N(0, W_std^2 / fan_in)
    wide = nf.FiniteMLP(nf.MLP(depth=1, width=4000, W_std=2.0, parameterization="standard"), in_dim=100)
    assert wide.params[0][0].std() == pytest.approx(2.0 / 10, rel=0.02)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_empirical_ntk_converges_to_analytic(activation, rng):
    """Error shrinks roughly like 1/sqrt(width) (Jacot et al. 2018)."""
    arch = nf.MLP(depth=2, activation=activation, W_std=1.4, b_std=0.1)
    X = rng.standard_normal((6, 4))
    exact = nf.kernel(arch, X)
    errors = []
    for width in (64, 256, 1024, 4096):
        errs = [
            np.abs(
                nf.FiniteMLP(nf.MLP(2, activation, 1.4, 0.1, width=width), seed=s, in_dim=4).empirical_ntk(X) - exact
            ).max()
            for s in range(4)
        ]
        errors.append(np.mean(errs) / np.abs(exact).max())
    errors = np.array(errors)
    # 64x the width: expect about 8x smaller; allow noise
    assert errors[-1] < errors[0] / 4
    slope = np.polyfit(np.log([64, 256, 1024, 4096]), np.log(errors), 1)[0]
    assert -0.8 < slope < -0.3, (errors, slope)


def test_wide_network_training_follows_linearised_prediction(rng):
    """Lee et al. 2019: a wide network trained by gradient descent stays close to its
    linearisation, f_t = f_0 + Theta_0(x, X) Theta_0^-1 (I - (I - lr Theta_0 / N)^t)(y - f_0(X))."""
    X, Xt = rng.uniform(-1, 1, (8, 2)), rng.uniform(-1, 1, (5, 2))
    y = np.sin(3 * X[:, :1])
    gaps = []
    for width in (256, 8192):
        net = nf.FiniteMLP(nf.MLP(depth=1, activation="erf", W_std=1.5, b_std=0.1, width=width), seed=3, in_dim=2)
        theta = net.empirical_ntk(X)
        theta_t = net.empirical_ntk(Xt, X)
        N, lr, steps = y.size, 0.5 * 2 * y.size / np.linalg.eigvalsh(theta)[-1], 200
        res = net.train(X, y, lr=lr, steps=steps)
        assert res.loss.shape == (steps + 1,) and res.loss[-1] < res.loss[0]
        decay = np.eye(len(X)) - np.linalg.matrix_power(np.eye(len(X)) - lr * theta / N, steps)
        pred = net.apply(Xt) + theta_t @ np.linalg.solve(theta, decay @ (y - net.apply(X)))
        gaps.append(np.abs(res.net.apply(Xt) - pred).max() / np.abs(pred).max())
    assert gaps[1] < 0.02 and gaps[1] < gaps[0] / 2, gaps


def test_training_diverges_above_the_stable_rate(rng):
    X, y = rng.standard_normal((6, 3)), rng.standard_normal(6)
    net = nf.FiniteMLP(nf.MLP(depth=1, activation="relu", width=128), seed=0, in_dim=3)
    lr_max = 2 * y.size / np.linalg.eigvalsh(net.empirical_ntk(X))[-1]
    assert net.train(X, y, lr=0.9 * lr_max, steps=300).loss[-1] < 1e-2
    with pytest.raises(nf.TrainingDivergedError, match=r"largest stable learning rate is 2N / lambda_max = [0-9.]+"):
        net.train(X, y, lr=3 * lr_max, steps=1000)


def test_monte_carlo_kernel_approaches_analytic(rng):
    arch = nf.MLP(depth=1, activation="erf", b_std=0.2)
    X = rng.standard_normal((4, 3))
    mc = nf.monte_carlo_kernel(arch, X, n_samples=40, width=512, seed=0, get="ntk")
    np.testing.assert_allclose(mc, nf.kernel(arch, X), rtol=0.05, atol=0.02 * np.abs(mc).max())
    nngp = nf.monte_carlo_kernel(arch, X, n_samples=200, width=256, seed=0)
    np.testing.assert_allclose(nngp, nf.kernel(arch, X, get="nngp"), atol=0.1 * np.abs(nngp).max())


def test_bad_inputs(rng):
    arch = nf.MLP(depth=1, width=8)
    net = nf.FiniteMLP(arch, in_dim=3)
    with pytest.raises(ValueError, match="X: has 2 features, the network expects 3"):
        net.apply(rng.standard_normal((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        net.apply(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="out_dim"):
        nf.FiniteMLP(arch, out_dim=0)
    with pytest.raises(ValueError, match="width"):
        nf.MLP(depth=1, width=0)
    with pytest.raises(ValueError, match="lr"):
        net.train(np.ones((2, 3)), np.ones(2), lr=0.0, steps=1)
    with pytest.raises(ValueError, match="steps"):
        net.train(np.ones((2, 3)), np.ones(2), lr=0.1, steps=-1)
    with pytest.raises(ValueError, match="y: expected shape"):
        net.train(np.ones((2, 3)), np.ones(3), lr=0.1, steps=1)
    with pytest.raises(ValueError, match=r"expected W shapes \[\(3, 8\), \(8, 1\)\]"):
        nf.FiniteMLP.from_params(arch, [(np.ones((3, 8)), np.ones(8)), (np.ones((7, 1)), np.ones(1))])
    with pytest.raises(ValueError, match="b must be given"):
        nf.FiniteMLP.from_params(arch, [(np.ones((3, 8)), None), (np.ones((8, 1)), None)])
    with pytest.raises(TypeError, match="params"):
        nf.FiniteMLP.from_params(arch, [])
    with pytest.raises(AttributeError, match="in_dim"):
        nf.FiniteMLP(arch).params  # noqa: B018


def test_empirical_ntk_on_the_gpu_without_cupy_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)
    net = nf.FiniteMLP(nf.MLP(depth=1, width=8), in_dim=3)
    with pytest.raises(ImportError, match=r"pip install ntkfast\[gpu\]"):
        net.empirical_ntk(np.ones((2, 3)), backend="gpu")
    with pytest.raises(ValueError, match="backend"):
        net.empirical_ntk(np.ones((2, 3)), backend="tpu")
