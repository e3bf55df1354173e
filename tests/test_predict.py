"""ntkfast.predict and ntkfast.spectrum: closed forms against direct solves, each other, and
trained finite networks."""

import numpy as np
import pytest
import scipy.linalg
from scipy.sparse.linalg import expm_multiply

import ntkfast as nf
from ntkfast import predict, spectrum

ARCH = nf.MLP(depth=2, activation="erf", W_std=1.5, b_std=0.1)


@pytest.fixture
def problem(rng):
    X, Xt = rng.uniform(-1, 1, (30, 3)), rng.uniform(-1, 1, (7, 3))
    y = np.stack([np.sin(3 * X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    return nf.kernel(ARCH, X), nf.kernel(ARCH, Xt, X), y, X, Xt


def test_t_inf_is_kernel_regression(problem):
    K, Kt, y, *_ = problem
    direct = Kt @ np.linalg.solve(K, y)
    np.testing.assert_allclose(predict.gradient_descent_mse(K, y, Kt), direct, rtol=1e-8)
    np.testing.assert_allclose(predict.gradient_descent_mse(K, y, Kt, t=[np.inf])[0], direct, rtol=1e-8)
    reg = 1e-2 * np.mean(np.diag(K))
    np.testing.assert_allclose(
        predict.gradient_descent_mse(K, y, Kt, diag_reg=1e-2), Kt @ np.linalg.solve(K + reg * np.eye(30), y), rtol=1e-8
    )
    np.testing.assert_allclose(
        predict.gradient_descent_mse(K, y, Kt, diag_reg=0.3, diag_reg_absolute_scale=True),
        Kt @ np.linalg.solve(K + 0.3 * np.eye(30), y),
        rtol=1e-8,
    )
    np.testing.assert_allclose(predict.gp_inference(K, y, Kt), direct, rtol=1e-8)


def test_times_against_matrix_exponential(problem, rng):
    K, Kt, y, *_ = problem
    f0, ft0 = 0.1 * rng.standard_normal(y.shape), 0.1 * rng.standard_normal((7, 2))
    lr, N = 0.7, y.size
    t = np.array([0.0, 1.0, 50.0, 3000.0])
    train, test = predict.gradient_descent_mse(K, y, Kt, t=t, lr=lr, fx_train_0=f0, fx_test_0=ft0, return_train=True)
    assert train.shape == (4, 30, 2) and test.shape == (4, 7, 2)
    np.testing.assert_allclose(train[0], f0, atol=1e-12)  # t -> 0: the initial outputs
    np.testing.assert_allclose(test[0], ft0, atol=1e-12)
    for i, s in enumerate(t):
        resid = expm_multiply(-lr * s / N * K, y - f0)  # independent: scipy's expm action
        np.testing.assert_allclose(train[i], y - resid, atol=1e-8)
        expected = ft0 + Kt @ np.linalg.solve(K, (y - f0) - resid)
        np.testing.assert_allclose(test[i], expected, atol=1e-6 * np.abs(expected).max())
    single = predict.gradient_descent_mse(K, y[:, 0], Kt, t=50.0, lr=lr)
    assert single.shape == (7,)


def test_discrete_gradient_descent_matches_iteration(problem):
    K, Kt, y, *_ = problem
    N = y.size
    lr = 0.5 * predict.max_learning_rate(K, n_outputs=2)
    f = np.zeros_like(y)
    ft = np.zeros((7, 2))
    Kinv = np.linalg.inv(K)
    for _ in range(25):  # the linearised model: f <- f - lr/N K (f - y)
        step = -lr / N * K @ (f - y)
        f, ft = f + step, ft + Kt @ Kinv @ step
    train, test = predict.gradient_descent(K, y, Kt, steps=25, lr=lr, return_train=True)
    np.testing.assert_allclose(train, f, atol=1e-9)
    np.testing.assert_allclose(test, ft, atol=1e-6 * np.abs(ft).max())
    # heavy-ball momentum against the same iteration with a velocity
    m, f, prev = 0.5, np.zeros_like(y), np.zeros_like(y)
    for _ in range(25):
        f, prev = f - lr / N * K @ (f - y) + m * (f - prev), f
    np.testing.assert_allclose(predict.gradient_descent(K, y, steps=[25], lr=lr, momentum=m)[0], f, atol=1e-9)


def test_spectrum_loss_curve_matches_predict(problem):
    K, _, y, *_ = problem
    res = spectrum.analyze(K, y=y, lr=0.8)
    t = np.array([0.0, 5.0, 100.0, 1e4])
    train = predict.gradient_descent_mse(K, y, t=t, lr=0.8)
    direct = 0.5 * np.sum((train - y) ** 2, axis=(1, 2)) / y.size
    np.testing.assert_allclose(res.loss(t), direct, rtol=1e-8, atol=1e-15)
    steps = np.array([0, 3, 40])
    disc = predict.gradient_descent(K, y, steps=steps, lr=0.8)
    np.testing.assert_allclose(res.loss(steps, discrete=True), 0.5 * np.sum((disc - y) ** 2, axis=(1, 2)) / y.size)
    assert res.max_lr == pytest.approx(predict.max_learning_rate(K, n_outputs=2))
    assert res.condition_number == pytest.approx(np.linalg.cond(K), rel=1e-6)
    np.testing.assert_allclose(res.alignment.sum(), 1.0)
    tol = 1e-3 * res.loss(0.0)
    t_tol = res.time_to_loss(tol)
    assert res.loss(t_tol) == pytest.approx(tol, rel=1e-6)
    assert res.learned_fraction(t_tol) == pytest.approx(1 - 1e-3, rel=1e-6)
    np.testing.assert_allclose(res.flow_rates, 0.8 * res.eigenvalues / y.size)


def test_top_k_with_eigsh_and_lobpcg_on_the_operator(rng):
    X = rng.standard_normal((300, 5))
    arch = nf.MLP(depth=3, activation="relu", b_std=0.1)
    dense = np.linalg.eigvalsh(nf.kernel(arch, X))[::-1][:6]
    op = nf.GramOperator(arch, X)
    for method in ("eigsh", "lobpcg"):
        np.testing.assert_allclose(spectrum.analyze(op, k=6, method=method).eigenvalues, dense, rtol=1e-7)
    np.testing.assert_allclose(spectrum.analyze(nf.kernel(arch, X), k=6).eigenvalues, dense, rtol=1e-10)


def test_fourier_features_slow_the_spectral_decay():
    res = spectrum.fourier_feature_spectra(n=128, scales=(1.0, 8.0), depth=2, n_features=128)
    plain, ff = res["plain"].power_law_exponent(), res[8.0].power_law_exponent()
    assert ff < plain, (plain, ff)
    # more of the spectrum's mass sits in high-index modes with Fourier features
    tail = {key: r.eigenvalues[20:].sum() / r.eigenvalues.sum() for key, r in res.items()}
    assert tail[8.0] > tail["plain"]


def test_wide_network_follows_predicted_loss_and_outputs(rng):
    """Lee et al. 2019: a wide FiniteMLP trained by gradient descent matches the closed form
    (computed from its own NTK at initialisation), and the analytic max learning rate is the
    boundary between convergence and divergence."""
    X, Xt = rng.uniform(-1, 1, (10, 2)), rng.uniform(-1, 1, (4, 2))
    y = np.cos(2 * X[:, :1])
    net = nf.FiniteMLP(nf.MLP(depth=1, activation="erf", W_std=1.5, b_std=0.1, width=8192), seed=0, in_dim=2)
    theta, theta_t = net.empirical_ntk(X), net.empirical_ntk(Xt, X)
    f0, ft0 = net.apply(X), net.apply(Xt)
    lr_max = predict.max_learning_rate(theta)
    lr, steps = 0.5 * lr_max, 100
    trained = net.train(X, y, lr=lr, steps=steps)
    pred_train, pred_test = predict.gradient_descent(
        theta, y, theta_t, steps=np.arange(steps + 1), lr=lr, fx_train_0=f0, fx_test_0=ft0, return_train=True
    )
    predicted_loss = 0.5 * np.sum((pred_train - y) ** 2, axis=(1, 2)) / y.size
    np.testing.assert_allclose(trained.loss, predicted_loss, rtol=0.02)
    np.testing.assert_allclose(trained.net.apply(Xt), pred_test[-1], atol=0.01 * np.abs(pred_test[-1]).max())
    # analytic kernel too: the same curve within the finite-width error
    res = spectrum.analyze(nf.kernel(net.arch, X), y=y - f0, lr=lr)
    assert res.loss(steps, discrete=True) == pytest.approx(trained.loss[-1], rel=0.2, abs=1e-6)
    below = net.train(X, y, lr=0.95 * lr_max, steps=400).loss
    assert np.all(np.diff(below) <= 1e-12) and below[-1] < below[0]  # monotone below the bound
    # just above it the linearised dynamics diverge: the loss explodes at first (a wide network
    # can then escape through the "catapult" of Lewkowycz et al. 2020 and converge) ...
    above = net.train(X, y, lr=1.1 * lr_max, steps=60).loss
    assert above.max() > 10 * above[0]
    # ... and well above it training diverges outright, reporting the bound
    with pytest.raises(nf.TrainingDivergedError, match="2N / lambda_max"):
        net.train(X, y, lr=3 * lr_max, steps=3000)


def test_gp_inference_posteriors(problem):
    K, Kt, y, X, Xt = problem
    Ktt = nf.kernel(ARCH, Xt, get="nngp")
    nngp, nngp_t = nf.kernel(ARCH, X, get="nngp"), nf.kernel(ARCH, Xt, X, get="nngp")
    mean, cov = predict.gp_inference(nngp, y, nngp_t, Ktt)
    np.testing.assert_allclose(mean, nngp_t @ np.linalg.solve(nngp, y), rtol=1e-8)
    np.testing.assert_allclose(cov, Ktt - nngp_t @ np.linalg.solve(nngp, nngp_t.T), atol=1e-8)
    assert np.linalg.eigvalsh(cov).min() > -1e-8
    mean, cov = predict.gp_inference(K, y, Kt, nngp_train=nngp, nngp_test_train=nngp_t, nngp_test_test=Ktt)
    A = Kt @ np.linalg.inv(K)
    np.testing.assert_allclose(mean, A @ y, rtol=1e-7)
    np.testing.assert_allclose(cov, Ktt + A @ nngp @ A.T - (A @ nngp_t.T + nngp_t @ A.T), atol=1e-6)
    # finite time: the NTK-GP mean equals gradient flow from zero outputs
    m_t = predict.gp_inference(K, y, Kt, nngp_train=nngp, nngp_test_train=nngp_t, t=20.0, lr=0.5)
    np.testing.assert_allclose(m_t, predict.gradient_descent_mse(K, y, Kt, t=20.0, lr=0.5), rtol=1e-8)


def test_bad_inputs(problem):
    K, Kt, y, *_ = problem
    with pytest.raises(ValueError, match="square"):
        predict.gradient_descent_mse(K[:5], y, Kt)
    with pytest.raises(ValueError, match="symmetric"):
        predict.gradient_descent_mse(K + np.triu(np.ones_like(K)), y, Kt)
    with pytest.raises(ValueError, match="y_train: has 29 rows"):
        predict.gradient_descent_mse(K, y[:29], Kt)
    with pytest.raises(ValueError, match="K_test_train"):
        predict.gradient_descent_mse(K, y, Kt[:, :5])
    with pytest.raises(ValueError, match="t: expected times >= 0"):
        predict.gradient_descent_mse(K, y, Kt, t=-1.0)
    with pytest.raises(ValueError, match="lr"):
        predict.gradient_descent_mse(K, y, Kt, t=1.0, lr=0.0)
    with pytest.raises(ValueError, match="NaN"):
        predict.gradient_descent_mse(K, np.full_like(y, np.nan), Kt)
    with pytest.raises(ValueError, match="steps"):
        predict.gradient_descent(K, y, steps=-1)
    with pytest.raises(ValueError, match="k: expected an integer in 1..30"):
        spectrum.analyze(K, k=31)
    with pytest.raises(ValueError, match="symmetric"):
        spectrum.analyze(K + np.triu(np.ones_like(K)))
    with pytest.raises(ValueError, match="y: expected shape"):
        spectrum.analyze(K, y=y[:3])
    with pytest.raises(ValueError, match="method"):
        spectrum.analyze(K, method="qr")
    with pytest.raises(ValueError, match="lr"):
        spectrum.analyze(K, lr=-1.0)
    # indefinite from round-off: clipped, not NaN
    lam, V = scipy.linalg.eigh(K)
    K_bad = (V * np.r_[-1e-14, lam[1:]]) @ V.T
    res = spectrum.analyze(0.5 * (K_bad + K_bad.T), y=y)
    assert np.isfinite(res.loss(np.array([0.0, 10.0]))).all() and res.eigenvalues.min() >= 0


def test_plots(problem, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K, _, y, *_ = problem
    res = spectrum.analyze(K, y=y)
    fig, axes = plt.subplots(1, 3)
    res.plot_spectrum(axes[0])
    res.plot_alignment(axes[1])
    t = np.linspace(0, 100, 20)
    res.plot_loss(t, measured=res.loss(t), ax=axes[2])
    fig.savefig(tmp_path / "spectrum.png")
    assert (tmp_path / "spectrum.png").stat().st_size > 1000
    assert len(axes[0].lines[0].get_xdata()) == len(K)
    plt.close(fig)
