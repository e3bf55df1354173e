"""scikit-learn integration: the estimator checks, and accuracy on bundled data."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from ntkfast import Gaussian, Monomial, RectifiedMonomial
from ntkfast.sklearn import NTKClassifier, NTKRegressor


@parametrize_with_checks([NTKRegressor(depth=1), NTKClassifier(depth=1)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_accuracy_on_bundled_data():
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for loader, floor in ((load_digits, 0.95), (load_breast_cancer, 0.94)):
        X, y = loader(return_X_y=True)
        scores = cross_val_score(make_pipeline(StandardScaler(), NTKClassifier()), X, y, cv=5)
        assert scores.mean() > floor, (loader.__name__, scores)


def test_pipeline_grid_search_pickle_and_options(tmp_path):
    import pickle

    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True)
    X, y = X[:200], y[:200]
    search = GridSearchCV(
        make_pipeline(StandardScaler(), NTKRegressor()),
        {"ntkregressor__depth": [1, 3], "ntkregressor__diag_reg": [1e-3, 1e-1]},
        cv=3,
    ).fit(X, y)
    assert search.best_score_ > 0.2
    model = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_allclose(model.predict(X[:5]), search.predict(X[:5]))
    # a finite training time gives a smaller-norm function than t = inf, reaching it as t grows
    inf = NTKRegressor().fit(X, y).predict(X[:20])
    early = NTKRegressor(t=1.0, solver="eigh").fit(X, y).predict(X[:20])
    late = NTKRegressor(t=1e9, solver="eigh").fit(X, y).predict(X[:20])
    assert np.abs(early - y.mean()).mean() < np.abs(inf - y.mean()).mean()
    np.testing.assert_allclose(late, inf, rtol=1e-3)
    mean, std = NTKRegressor(kernel="nngp").fit(X, y).predict(X[:5], return_std=True)
    assert mean.shape == std.shape == (5,) and np.all(std >= 0)
    with pytest.raises(ValueError, match="return_std"):
        NTKRegressor().fit(X, y).predict(X[:5], return_std=True)
    with pytest.raises(ValueError, match="kernel"):
        NTKRegressor(kernel="rbf").fit(X, y)


# ------------------------------------------------------------------ calibration of predict_proba
@pytest.mark.parametrize("solver", ["cholesky", "eigh"])
def test_leave_one_out_decision_equals_refits(solver):
    """The closed-form leave-one-out values equal kernel ridge refitted without each point
    (same regulariser and target mean, dense NumPy solves)."""
    import ntkfast as nf

    rng = np.random.default_rng(0)
    X = rng.standard_normal((25, 3))
    y = (X[:, 0] > 0).astype(int)
    clf = NTKClassifier(solver=solver, diag_reg=1e-2).fit(X, y)
    K = nf.kernel(clf.arch_, X)
    reg = 1e-2 * np.mean(np.diag(K))
    Y = np.stack([1 - y, y], axis=1).astype(float)
    Yc = Y - Y.mean(axis=0)
    for i in range(len(X)):
        m = np.arange(len(X)) != i
        alpha = np.linalg.solve(K[np.ix_(m, m)] + reg * np.eye(m.sum()), Yc[m])
        np.testing.assert_allclose(clf.loo_[i], K[i, m] @ alpha + Y.mean(axis=0), rtol=0, atol=1e-11)


def test_fitted_temperature_improves_held_out_log_loss():
    from sklearn.datasets import load_digits
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    X_train, X_test, y_train, y_test = train_test_split(X, y, train_size=600, random_state=0, stratify=y)
    clf = NTKClassifier().fit(X_train, y_train)
    calibrated = log_loss(y_test, clf.predict_proba(X_test))
    T = clf.temperature_
    clf.temperature_ = 1.0
    raw = log_loss(y_test, clf.predict_proba(X_test))
    assert 0 < T < 1 and calibrated < 0.5 * raw, (T, calibrated, raw)


# ----------------------------------------------------------------------- Gaussian-process kernels
def _fd_theta(kernel, X, h=1e-4):
    """Richardson-extrapolated central differences of K in the kernel's log hyper-parameters."""
    out = []
    for e in np.eye(len(kernel.theta)):

        def K(step, e=e):
            return kernel.clone_with_theta(kernel.theta + step * e)(X)

        d1 = (K(h) - K(-h)) / (2 * h)
        d2 = (K(h / 2) - K(-h / 2)) / h
        out.append((4 * d2 - d1) / 3)
    return np.stack(out, axis=-1)


@pytest.mark.parametrize(
    "activation, parameterization",
    [("relu", "ntk"), ("relu", "standard"), ("leaky_relu", "ntk"), ("erf", "ntk"), ("gelu", "ntk"),
     ("sin", "ntk"), ("sign", "ntk"), ("identity", "ntk"), ("rbf", "standard"),
     (RectifiedMonomial(2), "ntk"), (Monomial(3), "ntk"), (Gaussian(1.0, -0.5), "ntk")],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_kernel_gradient_matches_finite_differences(activation, parameterization, kind):
    from ntkfast.sklearn import NNGPKernel, NTKKernel

    X = np.random.default_rng(1).standard_normal((30, 4))
    cls = NTKKernel if kind == "ntk" else NNGPKernel
    k = cls(depth=3, activation=activation, W_std=1.3, b_std=0.2, parameterization=parameterization)
    K, dK = k(X, eval_gradient=True)
    np.testing.assert_allclose(K, k(X), rtol=1e-13, atol=1e-15)
    assert np.array_equal(np.diag(K), k.diag(X)) and np.array_equal(K, K.T)
    fd = _fd_theta(k, X)
    assert dK.shape == (30, 30, 2)
    assert np.abs(dK - fd).max() <= 1e-8 * np.abs(fd).max()


def test_kernel_fixed_hyperparameters_and_errors():
    from ntkfast.sklearn import NTKKernel

    X = np.random.default_rng(2).standard_normal((10, 3))
    k = NTKKernel(b_std=0.0, b_std_bounds="fixed")
    K, dK = k(X, eval_gradient=True)
    assert dK.shape == (10, 10, 1) and len(k.theta) == 1
    np.testing.assert_allclose(dK[..., 0], _fd_theta(k, X)[..., 0], rtol=1e-8, atol=1e-12)
    assert not k.is_stationary()
    with pytest.raises(ValueError, match="Gradient can only be evaluated when Y is None"):
        k(X, X, eval_gradient=True)
    with pytest.raises(ValueError, match="NaN"):
        NTKKernel()(np.full((3, 3), np.nan))


def test_gaussian_process_optimises_the_kernel_on_real_data():
    """The log-marginal-likelihood gradient equals finite differences, and optimising W_std,
    b_std (with a constant and a noise level) raises the likelihood on the diabetes data."""
    from sklearn.datasets import load_diabetes
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel
    from sklearn.preprocessing import StandardScaler

    from ntkfast.sklearn import NTKKernel

    X, y = load_diabetes(return_X_y=True)
    X, y = StandardScaler().fit_transform(X[:200]), (y[:200] - y[:200].mean()) / y[:200].std()
    kernel = ConstantKernel() * NTKKernel() + WhiteKernel()
    start = GaussianProcessRegressor(kernel, optimizer=None).fit(X, y)
    theta = kernel.theta + 0.1
    lml, grad = start.log_marginal_likelihood(theta, eval_gradient=True)
    h = 1e-5
    fd = [
        (start.log_marginal_likelihood(theta + h * e) - start.log_marginal_likelihood(theta - h * e)) / (2 * h)
        for e in np.eye(len(theta))
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)
    fitted = GaussianProcessRegressor(kernel, random_state=0).fit(X, y)
    assert fitted.log_marginal_likelihood_value_ > start.log_marginal_likelihood_value_ + 50


def test_kernel_serves_kernel_ridge_and_svc_and_pickles():
    import pickle

    from sklearn.base import clone
    from sklearn.datasets import load_breast_cancer
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    import ntkfast as nf
    from ntkfast.sklearn import NNGPKernel, NTKKernel

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X[:150])
    y = y[:150]
    k = NTKKernel(depth=2)
    svc = SVC(kernel=k).fit(X, y)
    assert svc.score(X, y) > 0.95
    ridge = KernelRidge(kernel=NNGPKernel()).fit(X, y)
    arch = nf.MLP(depth=3, activation="relu", W_std=1.4, b_std=0.1)
    np.testing.assert_allclose(ridge.predict(X[:5]), nf.kernel(arch, X[:5], X, get="nngp") @ ridge.dual_coef_)
    assert pickle.loads(pickle.dumps(k)) == k and clone(k) == k


# ------------------------------------------------------------------------- large-scale solvers
def test_estimators_with_iterative_solvers_match_the_exact_one(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    exact = NTKRegressor(diag_reg=1e-3).fit(X, y)
    assert exact.solver_ == "cholesky"
    for solver in ("cg", "nystrom"):
        fit = NTKRegressor(diag_reg=1e-3, solver=solver, n_centers=200, tol=1e-10).fit(X, y)
        np.testing.assert_allclose(fit.predict(X[:30]), exact.predict(X[:30]), rtol=0, atol=1e-7)
    # a budget too small for the Gram: "auto" turns to conjugate gradient
    from ntkfast.solvers import plan_solver

    needs = plan_solver(200, 0, 1, 4).needs
    assert needs["cg"] < needs["cholesky"]
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", str((needs["cg"] + needs["cholesky"]) // 2))
    auto = NTKRegressor(diag_reg=1e-3).fit(X, y)
    assert auto.solver_ == "cg"
    np.testing.assert_allclose(auto.predict(X[:30]), exact.predict(X[:30]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="finite t"):
        NTKRegressor(solver="nystrom", t=10.0).fit(X, y)
    with pytest.raises(ValueError, match="return_std"):
        NTKRegressor(kernel="nngp", solver="cg").fit(X, y).predict(X, return_std=True)
    clf = NTKClassifier(solver="nystrom", n_centers=50, random_state=0).fit(X, y > 0)
    assert clf.score(X, y > 0) > 0.85 and clf.temperature_ == 1.0


def test_randomized_search_joblib_round_trip_and_threads(tmp_path):
    import joblib
    from scipy.stats import loguniform
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import RandomizedSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:150], y[:150]
    search = RandomizedSearchCV(
        make_pipeline(StandardScaler(), NTKClassifier()),
        {
            "ntkclassifier__W_std": loguniform(0.5, 2.0),
            "ntkclassifier__b_std": loguniform(1e-3, 1.0),
            "ntkclassifier__depth": [1, 2, 3],
            "ntkclassifier__t": [np.inf, 100.0],
        },
        n_iter=4,
        cv=3,
        random_state=0,
    ).fit(X, y)
    assert search.best_score_ > 0.85
    path = tmp_path / "model.joblib"
    joblib.dump(search.best_estimator_, path)
    np.testing.assert_array_equal(joblib.load(path).predict_proba(X[:10]), search.predict_proba(X[:10]))
    # the engine's thread count does not change the fitted model beyond rounding
    one = NTKClassifier(n_jobs=1).fit(X, y).decision_function(X[:10])
    two = NTKClassifier(n_jobs=2).fit(X, y).decision_function(X[:10])
    np.testing.assert_allclose(one, two, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------- options, uncertainty, refusals
def test_every_option_reaches_the_fitted_model():
    """Estimators and GP kernels build their network with MLP.from_params: every structure
    option they expose is in the fitted architecture."""
    import ntkfast as nf
    from ntkfast.sklearn import NNGPKernel, NTKKernel

    X = np.random.default_rng(0).standard_normal((20, 3))
    fourier = nf.FourierFeatures(np.random.default_rng(1).standard_normal((4, 3)))
    options = dict(depth=2, activation="erf", W_std=1.1, b_std=None, parameterization="standard", width=7,
                   residual=True, input_map=fourier)  # fmt: skip
    expect = nf.MLP(**options)
    for est, y in ((NTKRegressor(**options), X[:, 0]), (NTKClassifier(**options), X[:, 0] > 0)):
        fitted = est.fit(X, y)
        assert fitted.arch_ == expect
        np.testing.assert_allclose(fitted._gram(X[:3]), nf.kernel(expect, X[:3]), rtol=1e-14)
    for cls, get in ((NTKKernel, "ntk"), (NNGPKernel, "nngp")):
        k = cls(**options)
        np.testing.assert_array_equal(k(X), nf.kernel(expect, X, get=get))
        assert "residual=True" in repr(k) and "b_std=None" in repr(k)


def test_nngp_predictive_std_is_calibrated_in_target_units():
    """Targets drawn from the NNGP prior (amplitude 5, offset 3) plus noise of the fitted ridge:
    the posterior predictive std covers about 95 % of held-out targets at +-2 std."""
    import ntkfast as nf

    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 3))
    arch = nf.MLP(depth=3, activation="relu", W_std=1.4, b_std=0.1)
    K = nf.kernel(arch, X, get="nngp")
    noise = 0.1 * np.mean(np.diag(K))
    L = np.linalg.cholesky(K + noise * np.eye(600))
    y = 3.0 + 5.0 * (L @ rng.standard_normal(600))
    train, test = slice(0, 300), slice(300, 600)
    reg = NTKRegressor(kernel="nngp", diag_reg=0.1).fit(X[train], y[train])
    mean, std = reg.predict(X[test], return_std=True)
    z = (y[test] - mean) / std
    coverage = np.mean(np.abs(z) <= 2)
    assert 0.90 <= coverage <= 0.99, coverage
    assert 0.8 < np.mean(z**2) < 1.25 and 15 < reg.kernel_scale_[0] < 40  # true amplitude^2: 25
    # two outputs: one std column each, scaled by its own amplitude
    Y = np.stack([y[train], 10 * y[train]], axis=1)
    _, std2 = NTKRegressor(kernel="nngp", diag_reg=0.1).fit(X[train], Y).predict(X[test], return_std=True)
    assert std2.shape == (300, 2)
    np.testing.assert_allclose(std2[:, 1], 10 * std2[:, 0], rtol=1e-10)
    np.testing.assert_allclose(std2[:, 0], std, rtol=1e-10)
    # the eigendecomposition solver gives the same posterior
    _, std_eigh = (
        NTKRegressor(kernel="nngp", diag_reg=0.1, solver="eigh")
        .fit(X[train], y[train])
        .predict(X[test], return_std=True)
    )
    np.testing.assert_allclose(std_eigh, std, rtol=1e-8)
    with pytest.raises(ValueError, match="return_std.*t = inf"):
        NTKRegressor(kernel="nngp", t=10.0).fit(X[train], y[train]).predict(X[test], return_std=True)


@pytest.mark.parametrize(
    "params, match",
    [({"lr": -1.0}, "lr"), ({"lr": np.nan}, "lr"), ({"lr": np.inf}, "lr"), ({"t": 0.0}, "t"),
     ({"t": np.nan}, "t"), ({"diag_reg": -1.0}, "diag_reg"), ({"diag_reg": "big"}, "diag_reg"),
     ({"diag_reg": np.nan}, "diag_reg"), ({"solver": "lu"}, "solver"), ({"verbose": "loud"}, "verbose"),
     ({"n_centers": 0}, "n_centers"), ({"width": 0}, "width"), ({"residual": "yes"}, "residual")],
)  # fmt: skip
def test_bad_parameters_are_refused_at_fit(params, match):
    from ntkfast.errors import NtkfastError

    X = np.random.default_rng(0).standard_normal((10, 2))
    for est in (NTKRegressor(**params), NTKClassifier(**params)):
        with pytest.raises((ValueError, TypeError), match=match) as info:
            est.fit(X, X[:, 0] > 0)
        assert isinstance(info.value, NtkfastError) or match in ("width", "residual")


def test_singular_gram_names_diag_reg_and_auto_falls_back():
    """A zero input row without bias has an exactly zero row of K: the Cholesky factorisation
    fails whatever the rounding.  "cholesky" names diag_reg; "auto" falls back to the minimum-norm fit."""
    from ntkfast.errors import SingularKernelError

    X = np.random.default_rng(0).standard_normal((10, 2))
    X[3] = 0.0
    y = np.arange(10.0)
    with pytest.raises(SingularKernelError, match="diag_reg"):
        NTKRegressor(b_std=None, diag_reg=0.0, solver="cholesky").fit(X, y)
    with pytest.raises(SingularKernelError, match="diag_reg"):
        NTKClassifier(b_std=None, diag_reg=0.0, solver="cholesky").fit(X, y % 2)
    auto = NTKRegressor(b_std=None, diag_reg=0.0).fit(X, y)
    assert auto.solver_ == "eigh"
    others = np.arange(10) != 3
    np.testing.assert_allclose(auto.predict(X[others]), y[others], atol=1e-6)  # interpolated
    np.testing.assert_allclose(auto.predict(X[3:4]), [y.mean()], atol=1e-12)  # k(0, .) = 0: the mean


def test_nngp_kernel_without_bias_in_a_gaussian_process():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import WhiteKernel

    import ntkfast as nf
    from ntkfast.sklearn import NNGPKernel, NTKKernel

    X = np.random.default_rng(0).standard_normal((30, 3))
    for cls in (NNGPKernel, NTKKernel):
        k = cls(b_std=None)
        assert len(k.theta) == 1 and k.hyperparameter_b_std.fixed
        K, dK = k(X, eval_gradient=True)
        assert dK.shape == (30, 30, 1)
        np.testing.assert_allclose(dK[..., 0], _fd_theta(k, X)[..., 0], rtol=1e-7, atol=1e-12)
        y = np.sin(X[:, 0]) + 0.1 * np.random.default_rng(1).standard_normal(30)
        gpr = GaussianProcessRegressor(k + WhiteKernel(), random_state=0).fit(X, y)
        assert gpr.kernel_.k1.b_std is None and np.isfinite(gpr.log_marginal_likelihood_value_)
        np.testing.assert_allclose(K, nf.kernel(nf.MLP(depth=3, W_std=1.4, b_std=None), X, get=cls._get), rtol=1e-13)


def test_default_ridge_is_chosen_from_data_and_verbose(capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3))
    noisy = np.sin(X[:, 0]) + 0.5 * rng.standard_normal(120)
    clean = np.sin(X[:, 0])
    assert NTKRegressor().fit(X, noisy).diag_reg_ > 100 * NTKRegressor().fit(X, clean).diag_reg_
    assert NTKRegressor(diag_reg=1e-3).fit(X, noisy).diag_reg_ == 1e-3
    capsys.readouterr()
    NTKClassifier(verbose=1).fit(X, noisy > 0)
    out = capsys.readouterr().out
    assert "[NTKClassifier]" in out and "solver 'cholesky'" in out and "diag_reg =" in out
