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


def test_depth_zero_and_mirrored_blocks_equal_the_jacobian_gram(rng, monkeypatch):
    """The traced kernel's shortcuts (readout and last hidden layer without (n k)-row products), the
    mirrored lower triangle of K(X, X), and the path that recomputes features when they do not fit."""
    for arch in (nf.MLP(depth=0, b_std=0.2), nf.MLP(depth=1, activation="gelu", b_std=None, width=9)):
        net = nf.FiniteMLP(arch, out_dim=3, seed=4, in_dim=2)
        X = rng.standard_normal((5, 2))
        J = net.jacobian(X)
        full = np.einsum("ikp,jlp->ijkl", J, J)
        scale = np.abs(full).max()
        np.testing.assert_allclose(net.empirical_ntk(X, trace_outputs=False), full, atol=1e-12 * scale)
        np.testing.assert_allclose(net.empirical_ntk(X), np.einsum("ijkk->ij", full) / 3, atol=1e-12 * scale)
        diag = np.einsum("iikk->i", full) / 3
        np.testing.assert_allclose(net.empirical_ntk(X, diagonal=True), diag, atol=1e-12 * scale)
    net = nf.FiniteMLP(nf.MLP(depth=2, activation="erf", b_std=0.1, width=8), out_dim=2, seed=5, in_dim=3)
    X = rng.standard_normal((600, 3))
    K = net.empirical_ntk(X)  # blocks of 256 rows on and above the diagonal, mirrored
    np.testing.assert_array_equal(K, K.T)
    one = net.empirical_ntk(X, block_size=600)
    np.testing.assert_allclose(K, one, rtol=1e-13, atol=1e-13 * np.abs(one).max())
    full = net.empirical_ntk(X[:40], trace_outputs=False, block_size=16)
    np.testing.assert_array_equal(full, full.transpose(1, 0, 3, 2))
    np.testing.assert_allclose(np.einsum("ijkk->ij", full) / 2, one[:40, :40], rtol=1e-13, atol=1e-13)
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "200K")  # Y's features no longer cached
    np.testing.assert_allclose(net.empirical_ntk(X[:100], block_size=8), one[:100, :100], rtol=1e-13, atol=1e-13)


def test_fill_ntk_is_public_and_takes_a_device_hook(rng):
    net = nf.FiniteMLP(nf.MLP(depth=2, activation="relu", b_std=0.3, width=12), out_dim=3, seed=6)
    X = net.check_input(rng.standard_normal((7, 4)).tolist())
    Y = net.check_input(rng.standard_normal((5, 4)), "Y")
    assert X.dtype == np.float64 and X.flags.c_contiguous and net._check_X == net.check_input
    moved = []
    out = net.fill_ntk(X, Y, False, True, 3, np.zeros((7, 5)), lambda a: moved.append(a.shape) or a.copy())
    np.testing.assert_allclose(out, net.empirical_ntk(X, Y), rtol=1e-14)
    assert moved and net._fill_ntk == net.fill_ntk
    with pytest.raises(ValueError, match="Y: has 3 features"):
        net.check_input(np.ones((2, 3)), "Y")


def test_train_step_is_the_gradient_step(rng):
    """One step of train = params - lr * J^T (f - y) / N, with J the analytic Jacobian (itself
    checked against finite differences above); the network trained is a copy."""
    arch = nf.MLP(depth=2, activation="erf", W_std=1.2, b_std=0.3, width=(7, 5))
    net = nf.FiniteMLP(arch, out_dim=2, seed=8, in_dim=3)
    before = [(W.copy(), b.copy()) for W, b in net.params]
    X, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    res = net.train(X, y, lr=0.3, steps=1)
    flat = np.concatenate([np.r_[W.ravel(), b] for W, b in before])
    J = net.jacobian(X)  # (n, k, p)
    grad = np.einsum("ikp,ik->p", J, net.apply(X) - y) / y.size
    got = np.concatenate([np.r_[W.ravel(), b] for W, b in res.net.params])
    np.testing.assert_allclose(got, flat - 0.3 * grad, rtol=1e-13, atol=1e-14)
    for (W, b), (W0, b0) in zip(net.params, before):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    # residual blocks and standard parameterization take the same path
    for arch in (nf.MLP(depth=2, activation="gelu", b_std=0.2, residual=True, width=6),
                 nf.MLP(depth=1, activation="sin", b_std=None, parameterization="standard", width=6)):
        net = nf.FiniteMLP(arch, out_dim=1, seed=9, in_dim=3)
        flat = np.concatenate([np.r_[W.ravel(), [] if b is None else b] for W, b in net.params])
        grad = np.einsum("ikp,ik->p", net.jacobian(X), net.apply(X) - y[:, :1]) / 6
        res = net.train(X, y[:, 0], lr=0.2, steps=1)
        got = np.concatenate([np.r_[W.ravel(), [] if b is None else b] for W, b in res.net.params])
        np.testing.assert_allclose(got, flat - 0.2 * grad, rtol=1e-13, atol=1e-14)


def test_sizes_beyond_the_memory_budget_are_refused_up_front(monkeypatch):
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "1G")
    X = np.ones((3, 2))
    cases = [
        (lambda: nf.FiniteMLP(nf.MLP(depth=2, width=10**6), in_dim=784), "FiniteMLP with 1000787000001 parameters"),
        (lambda: nf.monte_carlo_kernel(nf.MLP(depth=2), X, width=10**7), "parameters"),
        (lambda: nf.FiniteMLP(nf.MLP(), out_dim=10**9, in_dim=3), "parameters"),
        (lambda: nf.RandomFourierFeatures(10**9).matrix(784), r"B of shape \(1000000000, 784\)"),
        (lambda: nf.FiniteMLP(nf.MLP(input_map=nf.RandomFourierFeatures(10**9))).apply(X), "parameters"),
        (lambda: nf.FiniteMLP(nf.MLP(), in_dim=2).train(X, np.ones(3), lr=0.1, steps=10**12), "loss history"),
        (lambda: nf.FiniteMLP(nf.MLP(), in_dim=2, out_dim=300).empirical_ntk(np.ones((300, 2)), trace_outputs=False),
         "empirical NTK of shape"),
        (lambda: nf.FiniteMLP(nf.MLP(width=4000), in_dim=2, out_dim=3000).empirical_ntk(X, trace_outputs=False),
         r"a block of 1 row\(s\) needs"),
    ]
    for call, message in cases:
        with pytest.raises(nf.InsufficientMemoryError, match=message):
            call()


def test_bad_sizes_seeds_and_ragged_inputs_give_clear_errors():
    X = np.ones((3, 2))
    cases = [
        (lambda: nf.MLP(depth=10**10), ValueError, "depth: 10000000000 is above the largest supported value, 100000"),
        (lambda: nf.MLP(width=10**400), ValueError, "width: 1000.* above the largest supported width"),
        (lambda: nf.MLP(W_std=10**400), ValueError, "W_std: 1000.* beyond the float64 range"),
        (lambda: nf.MLP(b_std=-(10**400)), ValueError, "b_std: -1000.* beyond the float64 range"),
        (lambda: nf.MLP(width=[3, "a"]), TypeError, "width must be an int or a tuple of ints"),
        (lambda: nf.MLP(parameterization=["ntk"]), ValueError, "parameterization"),
        (lambda: nf.RandomFourierFeatures(seed=-1), ValueError, "seed: expected an integer >= 0"),
        (lambda: nf.RandomFourierFeatures(seed=np.random.default_rng(0)), TypeError, "seed: expected an integer"),
        (lambda: nf.RandomFourierFeatures(scale=10**400), ValueError, "scale: 1000.* beyond the float64 range"),
        (lambda: nf.FourierFeatures([[1.0, 2.0], [3.0]]), ValueError, "B: expected a 2-D numeric array"),
        (lambda: nf.FiniteMLP(nf.MLP(), seed=-3), ValueError, "seed: expected an integer >= 0"),
        (lambda: nf.FiniteMLP(nf.MLP(), seed="x"), ValueError, "seed"),
        (lambda: nf.monte_carlo_kernel(nf.MLP(), X, seed=1.5), TypeError, "seed: expected an integer >= 0"),
        (lambda: nf.monte_carlo_kernel(nf.MLP(), X, n_samples=10**12), ValueError, "n_samples: .* above the largest"),
        (lambda: nf.monte_carlo_kernel(nf.MLP(), X, width=10**400), ValueError, "width: .* above the largest"),
        (lambda: nf.monte_carlo_kernel(nf.MLP(), X, get="ntkk"), ValueError, "get: expected one of"),
        (lambda: nf.monte_carlo_kernel(nf.MLP(), [[1.0, 2.0], [3.0]]), ValueError, "X: .*rows of different lengths"),
        (lambda: nf.FiniteMLP(nf.MLP(), in_dim=2).apply([[1.0, 2.0], [3.0]]), ValueError, "X: could not be read"),
        (lambda: nf.FiniteMLP(nf.MLP(), in_dim=2).empirical_ntk(X, block_size=0), ValueError, "block_size"),
        (lambda: nf.FiniteMLP(nf.MLP(), in_dim=2).empirical_ntk(X, trace_outputs="no"), TypeError, "trace_outputs"),
        (lambda: nf.FiniteMLP(nf.MLP(), in_dim=2).train(X, [[1.0], [2.0, 3.0], [4.0]], lr=0.1, steps=1),
         ValueError, "y: expected a numeric array"),
        (lambda: nf.FiniteMLP(nf.MLP(), in_dim=2).train(X, np.ones(3), lr=0.1, steps=1.5), TypeError, "steps"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message) as info:
            call()
        assert isinstance(info.value, nf.NtkfastError), (message, type(info.value))
