"""NTKRegressorCV / NTKClassifierCV: the closed-form leave-one-out against explicit refits, the
scikit-learn estimator checks, the k-fold fallback, and what the fitted model is."""

import numpy as np
import pytest
import scipy.special
from sklearn.metrics import r2_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from ntkfast.sklearn import DEPTHS, DIAG_REGS, NTKClassifier, NTKClassifierCV, NTKRegressor, NTKRegressorCV
from ntkfast.sklearn._loo import EigenLOO

GRID = {"depths": (1, 3), "diag_regs": (1e-4, 1e-2, 1.0)}


@parametrize_with_checks([NTKRegressorCV(depths=(1, 2)), NTKClassifierCV(depths=(1, 2))])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(n=30, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, rng


def _explicit_loo(make, X, y, method):
    """Refit the plain estimator without each point and predict it (the truth)."""
    out = []
    for i in range(len(X)):
        keep = np.arange(len(X)) != i
        est = make().fit(X[keep], y[keep])
        out.append(getattr(est, method)(X[i : i + 1])[0])
    return np.array(out)


def test_regression_loo_equals_explicit_refits():
    """Every (depth, diag_reg) score of NTKRegressorCV is the R^2 of n refits of NTKRegressor
    without each point (own target mean, own relative ridge), to 1e-10."""
    X, rng = _data()
    Y = np.stack([np.sin(2 * X[:, 0]) + 0.1 * rng.standard_normal(30), X[:, 1] * X[:, 2]], axis=1)
    cv = NTKRegressorCV(**GRID, W_std=1.3, b_std=0.2).fit(X, Y)
    assert cv.cv_method_ == "loo" and len(cv.cv_results_["params"]) == 6
    for params, score in zip(cv.cv_results_["params"], cv.cv_results_["mean_test_score"]):
        assert (params["W_std"], params["b_std"]) == (1.3, 0.2)
        loo = _explicit_loo(lambda p=params: NTKRegressor(**p, solver="cholesky"), X, Y, "predict")
        explicit = r2_score(Y, loo)  # uniform average over the two outputs
        assert abs(score - explicit) <= 1e-10 * abs(explicit), (params, score, explicit)
    # and the left-out predictions themselves, point by point (one candidate)
    ref = NTKRegressor(depth=3, W_std=1.3, b_std=0.2, diag_reg=1e-2).fit(X, Y)
    pred = EigenLOO(np.asarray(ref._gram(X), dtype=np.float64), Y).predictions(1e-2)
    loo = _explicit_loo(lambda: NTKRegressor(depth=3, W_std=1.3, b_std=0.2, diag_reg=1e-2), X, Y, "predict")
    np.testing.assert_allclose(pred, loo, rtol=0, atol=1e-10 * np.abs(Y).max())
    # the best candidate is refitted on all the data
    best = cv.cv_results_["params"][int(np.argmin(cv.cv_results_["rank_test_score"]))]
    assert best == cv.best_params_ and cv.best_score_ == cv.cv_results_["mean_test_score"].max()
    refit = NTKRegressor(**best).fit(X, Y)  # the refit reuses the search's eigenpairs: equal to round-off
    np.testing.assert_allclose(cv.predict(X[:5]), refit.predict(X[:5]), rtol=0, atol=1e-10 * np.abs(Y).max())


def test_classification_loo_equals_explicit_refits():
    """LOO accuracy and log-loss (at the fitted temperature) of NTKClassifierCV equal those of
    explicit refits of NTKClassifier without each point, to 1e-10; ties go to the lower log-loss."""
    X, rng = _data(n=36)
    y = np.array(["a", "b", "c"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    cv = NTKClassifierCV(**GRID).fit(X, y)
    labels = np.searchsorted(cv.classes_, y)
    rows = np.arange(len(y))
    for i, params in enumerate(cv.cv_results_["params"]):
        decision = _explicit_loo(lambda p=params: NTKClassifier(**p, solver="cholesky"), X, y, "decision_function")
        T = cv.cv_results_["temperature"][i]
        log_loss = -np.mean(scipy.special.log_softmax(decision / T, axis=1)[rows, labels])
        assert cv.cv_results_["mean_test_score"][i] == np.mean(decision.argmax(axis=1) == labels)
        assert abs(cv.cv_results_["mean_test_log_loss"][i] - log_loss) <= 1e-10 * log_loss
    res = cv.cv_results_
    top = res["mean_test_score"] == res["mean_test_score"].max()
    assert cv.best_score_ == res["mean_test_score"].max()
    chosen = res["params"].index(cv.best_params_)
    assert res["mean_test_log_loss"][chosen] == res["mean_test_log_loss"][top].min()
    assert cv.best_estimator_.temperature_ == cv.temperature_ == res["temperature"][chosen]
    assert cv.predict_proba(X[:4]).shape == (4, 3) and set(cv.predict(X)) <= set(cv.classes_)


def test_binary_classifier_cv_and_grids_of_W_std_b_std():
    X, _ = _data(n=40)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    cv = NTKClassifierCV(depths=(1, 2), diag_regs=(1e-3, 1e-1), W_std=[0.8, 1.6], b_std=[None, 0.3]).fit(X, y)
    res = cv.cv_results_
    assert len(res["params"]) == 2 * 2 * 2 * 2
    assert {p["b_std"] for p in res["params"]} == {None, 0.3} and {p["W_std"] for p in res["params"]} == {0.8, 1.6}
    assert cv.best_estimator_.arch_.W_std == cv.W_std_ and cv.best_estimator_.arch_.b_std == cv.b_std_
    assert cv.decision_function(X[:3]).shape == (3,)
    # the binary decision values are the difference of the two one-hot columns: same scores from LOO
    params = res["params"][0]
    decision = _explicit_loo(lambda: NTKClassifier(**params), X, y, "decision_function")
    assert res["mean_test_score"][0] == np.mean((decision > 0) == y)


def test_kfold_fallback_and_explicit_cv(monkeypatch):
    """Above the dense limit the search says so and scores by 5-fold CV with the plain estimator;
    an explicit ``cv`` gives the k-fold scores of cross_val_predict."""
    from sklearn.model_selection import KFold, cross_val_predict

    X, rng = _data(n=40)
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(40)
    folds = KFold(4, shuffle=True, random_state=1)
    cv = NTKRegressorCV(depths=(2,), diag_regs=(1e-3, 1e-1), cv=folds).fit(X, y)
    assert cv.cv_method_ == "4-fold"
    for params, score in zip(cv.cv_results_["params"], cv.cv_results_["mean_test_score"]):
        pred = cross_val_predict(NTKRegressor(**params), X, y, cv=folds)
        np.testing.assert_allclose(score, r2_score(y, pred), rtol=1e-12)
    monkeypatch.setenv("NTKFAST_DENSE_MAX_N", "20")
    with pytest.warns(UserWarning, match="5-fold cross-validation"):
        fallback = NTKRegressorCV(depths=(1, 2), diag_regs=(1e-2, 1.0)).fit(X, y)
    assert fallback.cv_method_ == "5-fold" and len(fallback.cv_results_["params"]) == 4
    with pytest.warns(UserWarning, match="above the dense eigendecomposition limit"):
        clf = NTKClassifierCV(depths=(1,), diag_regs=(1e-2,)).fit(X, y > 0)
    assert clf.cv_method_ == "5-fold" and 0 < clf.temperature_


def test_options_reach_the_refitted_model():
    from ntkfast import MLP

    X, _ = _data(n=20)
    y = X[:, 0]
    options = dict(activation="erf", parameterization="standard", width=7, residual=True)
    for cls, target in ((NTKRegressorCV, y), (NTKClassifierCV, y > 0)):
        cv = cls(depths=(2,), diag_regs=(1e-2,), W_std=1.1, b_std=None, kernel="nngp", **options).fit(X, target)
        expect = MLP(depth=2, W_std=1.1, b_std=None, **options)
        assert cv.best_estimator_.arch_ == expect and cv.best_estimator_.kernel == "nngp"


@pytest.mark.parametrize(
    "params, match",
    [({"depths": ()}, "depths"), ({"depths": (1, 1)}, "depths"), ({"depths": (-1,)}, "depths"),
     ({"depths": 3}, "depths"), ({"diag_regs": (0.0,)}, "diag_regs"), ({"diag_regs": (np.nan,)}, "diag_regs"),
     ({"diag_regs": ()}, "diag_regs"), ({"kernel": "rbf"}, "kernel"), ({"W_std": [1.0, -1.0]}, "W_std"),
     ({"b_std": ["x"]}, "b_std"), ({"verbose": -1}, "verbose"), ({"solver": "lu"}, "solver")],
)  # fmt: skip
def test_bad_parameters_are_refused_at_fit(params, match):
    X, _ = _data(n=10)
    with pytest.raises((ValueError, TypeError), match=match):
        NTKRegressorCV(**params).fit(X, X[:, 0])


def test_defaults_and_verbose(capsys):
    assert NTKRegressorCV().depths == DEPTHS == (1, 2, 3, 4, 5)
    assert len(DIAG_REGS) == 15 and DIAG_REGS[0] == pytest.approx(1e-5) and DIAG_REGS[-1] == pytest.approx(100.0)
    X, _ = _data(n=25)
    NTKRegressorCV(depths=(1, 2), verbose=1).fit(X, X[:, 0])
    out = capsys.readouterr().out
    assert "exact leave-one-out" in out and "depth 2" in out and "best" in out and "solver 'eigh'" in out
    NTKRegressorCV(depths=(1,)).fit(X, X[:, 0])
    assert capsys.readouterr().out == ""


def test_one_pass_loo_equals_the_numpy_formula_and_refits():
    """``EigenLOO.predictions_all`` (the Numba pass over V for every ridge) equals the NumPy formula
    per ridge and explicit refits, for several outputs, whatever the thread count; with
    ``overwrite_k`` the eigenvectors live in K's memory and the scores do not change."""
    X, rng = _data(n=70, d=4)
    Y = np.stack([np.sin(X[:, 0]) + 0.1 * rng.standard_normal(70), X[:, 1] ** 2, X[:, 2]], axis=1)
    K = np.asarray(NTKRegressor(depth=2).fit(X, Y)._gram(X), dtype=np.float64)
    regs = (1e-5, 3e-3, 0.2, 10.0)
    K0 = K.copy()
    loo = EigenLOO(K, Y)
    ref = np.stack([loo.predictions(r) for r in regs])
    for n_jobs in (1, 3):
        np.testing.assert_allclose(loo.predictions_all(regs, n_jobs), ref, rtol=0, atol=1e-12 * np.abs(Y).max())
    scratch = K.copy()
    own = EigenLOO(scratch, Y, overwrite_k=True)
    assert np.shares_memory(own.V, scratch)
    np.testing.assert_allclose(own.predictions_all(regs), ref, rtol=0, atol=1e-12 * np.abs(Y).max())
    assert np.array_equal(K, K0) and not np.shares_memory(loo.V, K)  # without overwrite_k, K is left alone
    many = tuple(np.logspace(-5, 2, 20))  # more ridges than one group of iter_predictions holds at n = 70
    got = list(own.iter_predictions(many, n_jobs=2))
    assert [r for r, _ in got] == list(many)
    np.testing.assert_array_equal(np.stack([p for _, p in got]), own.predictions_all(many))
    explicit = _explicit_loo(lambda: NTKRegressor(depth=2, diag_reg=3e-3), X, Y, "predict")
    np.testing.assert_allclose(own.predictions_all((3e-3,))[0], explicit, rtol=0, atol=1e-10 * np.abs(Y).max())


def test_fit_temperature_minimises_the_log_loss():
    """The fitted temperature is the minimiser of the log-loss written with scipy's log_softmax."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 300)
    decision = 0.5 * rng.standard_normal((300, 4)) + np.eye(4)[labels]
    decision[:3, 0] = -np.inf  # a class absent from a k-fold training fold

    def log_loss(T):
        return -np.mean(scipy.special.log_softmax(decision / T, axis=1)[np.arange(300), labels])

    from ntkfast.sklearn._loo import fit_temperature

    T = fit_temperature(decision, labels)
    assert log_loss(T) <= min(log_loss(T * 1.001), log_loss(T / 1.001)) + 1e-12


def _assert_same_fit(got, plain, X_test, atol):
    """``got`` (refitted from the search's eigenpairs) is the fitted ``plain`` up to round-off: the
    same attributes, coefficients, predictions (and their pickles)."""
    import pickle

    assert set(vars(got)) == set(vars(plain)), set(vars(got)) ^ set(vars(plain))
    assert got.solver_ == "eigh" and got.n_iter_ == plain.n_iter_ == 1 and got._large is None
    assert got.arch_ == plain.arch_ and got.diag_reg_ == plain.diag_reg_ and got._reg == plain._reg
    np.testing.assert_array_equal(got.X_fit_, plain.X_fit_)
    np.testing.assert_allclose(got.y_mean_, plain.y_mean_, rtol=1e-15)
    scale = np.abs(plain.dual_coef_).max()
    np.testing.assert_allclose(got.dual_coef_, plain.dual_coef_, rtol=0, atol=atol * scale)
    for method in ("predict", "decision_function", "predict_proba"):
        if hasattr(plain, method):
            want = getattr(plain, method)(X_test)
            if want.dtype.kind == "f":
                tol = atol * max(1.0, np.abs(want).max())
                np.testing.assert_allclose(getattr(got, method)(X_test), want, rtol=0, atol=tol)
            else:  # labels
                np.testing.assert_array_equal(getattr(got, method)(X_test), want)
            again = getattr(pickle.loads(pickle.dumps(got)), method)(X_test)
            np.testing.assert_array_equal(again, getattr(got, method)(X_test))


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_regressor_refit_from_the_eigenpairs_is_the_plain_fit(kernel):
    """The refit does not compute the chosen Gram or factorise it again: it is the plain
    NTKRegressor's fit from the search's eigenpairs, equal to its Cholesky and eigh fits to 1e-10
    (predictions, the NNGP predictive std, pickling) with the same fitted attributes."""
    X, rng = _data(n=50)
    X_test = rng.standard_normal((7, 3))
    for y in (np.sin(X[:, 0]) + 0.05 * rng.standard_normal(50), np.stack([X[:, 0], X[:, 1] * X[:, 2]], axis=1)):
        cv = NTKRegressorCV(depths=(1, 2, 3), diag_regs=(1e-4, 1e-2, 1.0), kernel=kernel).fit(X, y)
        params = {**cv.best_estimator_.get_params()}
        for solver in ("auto", "eigh"):
            plain = NTKRegressor(**{**params, "solver": solver}).fit(X, y)
            _assert_same_fit(cv.best_estimator_, plain, X_test, 1e-10)
            if kernel == "nngp":
                for got, want in zip(cv.predict(X_test, return_std=True), plain.predict(X_test, return_std=True)):
                    np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)
                np.testing.assert_allclose(cv.best_estimator_.kernel_scale_, plain.kernel_scale_, rtol=1e-10)
                V = cv.best_estimator_._posterior[2]
                assert V.flags.owndata or V.base.size == V.size  # not a view of the search's stack of Grams


def test_classifier_refit_from_the_eigenpairs_is_the_plain_fit():
    """Multiclass and binary: the refitted classifier is the plain NTKClassifier's fit to 1e-10
    (its ``loo_`` included), with the temperature the search fitted on its own leave-one-out values."""
    X, rng = _data(n=48)
    X_test = rng.standard_normal((9, 3))
    for y in (np.array(["a", "b", "c"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)], X[:, 0] + X[:, 2] > 0):
        cv = NTKClassifierCV(depths=(1, 2, 4), diag_regs=(1e-3, 1e-1)).fit(X, y)
        plain = NTKClassifier(**{**cv.best_estimator_.get_params(), "solver": "eigh"}).fit(X, y)
        plain.temperature_ = cv.temperature_  # what the CV estimator sets
        _assert_same_fit(cv.best_estimator_, plain, X_test, 1e-10)
        np.testing.assert_allclose(cv.best_estimator_.loo_, plain.loo_, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(cv.best_estimator_.classes_, plain.classes_)
    # an explicit solver="cholesky" is honoured: the refit is the plain fit itself
    cv = NTKClassifierCV(depths=(1, 2), diag_regs=(1e-2,), solver="cholesky").fit(X, y)
    assert cv.best_estimator_.solver_ == "cholesky"


def test_search_does_not_depend_on_threads_or_memory(monkeypatch):
    """Decompositions on parallel threads, and a memory budget that allows one Gram at a time (the
    best depth's eigenvectors copied out of each group), give the same scores and choice as one
    thread with room for everything, for grids of W_std too."""
    X, rng = _data(n=40)
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(40)
    grid = dict(depths=(1, 2, 3, 4), diag_regs=(1e-3, 1e-1, 10.0), W_std=[1.0, 1.6])
    ref = NTKRegressorCV(**grid, n_jobs=1).fit(X, y)
    assert ref._dense_fits(40, 4)[2:] == (4, 1, False)
    runs = [NTKRegressorCV(**grid, n_jobs=jobs).fit(X, y) for jobs in (2, 3)]  # back-transforms shared
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", str(int(4.5 * 8 * 40 * 40)))
    small = NTKRegressorCV(**grid, n_jobs=3)
    assert small._dense_fits(40, 4)[2:] == (1, 1, False)
    runs.append(small.fit(X, y))
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", str(int(8.5 * 8 * 40 * 40)))
    assert small._dense_fits(40, 4)[2:] == (2, 2, True)
    runs.append(small.fit(X, y))
    from ntkfast.sklearn import _cv

    monkeypatch.setattr(_cv, "blocks_are_safe", lambda: False)  # a LAPACK other than reference: whole dsyevd
    assert small._dense_fits(40, 4)[2:] == (3, 2, False)
    runs.append(small.fit(X, y))
    for cv in runs:
        assert cv.best_params_ == ref.best_params_ and cv.cv_results_["params"] == ref.cv_results_["params"]
        np.testing.assert_allclose(cv.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], rtol=1e-12)
        np.testing.assert_allclose(cv.predict(X[:5]), ref.predict(X[:5]), rtol=0, atol=1e-12)


def test_eigh_inplace_is_lapacks_dsyevd():
    """The GIL-free in-place decomposition is SciPy's divide-and-conquer eigh, in A's memory, for a
    C- or Fortran-ordered matrix; bad input is refused."""
    import scipy.linalg

    from ntkfast.errors import ArgumentError
    from ntkfast.sklearn._loo_eigh import eigh_inplace

    rng = np.random.default_rng(5)
    for n in (1, 2, 17, 120):
        B = rng.standard_normal((n, n))
        A = B @ B.T
        w0, V0 = scipy.linalg.eigh(A, driver="evd")
        for order in "CF":
            M = np.array(A, order=order)
            w, V = eigh_inplace(M)
            assert np.shares_memory(V, M) and V.flags.f_contiguous
            np.testing.assert_allclose(w, w0, rtol=0, atol=1e-12 * np.abs(w0).max())
            np.testing.assert_allclose(V @ (w[:, None] * V.T), A, rtol=0, atol=1e-12 * np.abs(A).max())
            np.testing.assert_allclose(V.T @ V, np.eye(n), rtol=0, atol=1e-12)
    assert eigh_inplace(np.empty((0, 0)))[0].shape == (0,)
    for bad in (np.eye(3, dtype=np.float32), np.ones((2, 3)), np.eye(4)[::2, ::2]):
        with pytest.raises(ArgumentError):
            eigh_inplace(bad)
    frozen = np.eye(3)
    frozen.flags.writeable = False
    with pytest.raises(ArgumentError):
        eigh_inplace(frozen)


def test_a_failing_decomposition_stops_the_search(monkeypatch):
    """An error in one depth's decomposition (on a worker thread) reaches the caller as itself, the
    other threads stop, and the BLAS thread count the search lowered is restored."""
    import threading

    from threadpoolctl import threadpool_info

    from ntkfast.sklearn import _loo_eigh

    before = [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"]
    calls = []

    def broken(self):
        calls.append(self.n)
        raise np.linalg.LinAlgError("dsyevd: info = 7")

    monkeypatch.setattr(_loo_eigh._Phased, "tridiagonalize", broken)
    X, _ = _data(n=20)
    for jobs in (1, 2):
        with pytest.raises(np.linalg.LinAlgError, match="info = 7"):
            NTKRegressorCV(depths=(1, 2, 3), n_jobs=jobs).fit(X, X[:, 0])
    assert 2 <= len(calls) <= 4  # one, then the ones already running when the first failed
    assert not [t for t in threading.enumerate() if t.name.startswith("ntkfast-eigh")]
    assert [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"] == before


def test_decompositions_run_on_the_blas_threads_the_caller_allows(monkeypatch):
    """Each decomposition runs on n_jobs // workers BLAS threads, never more than a limit the caller set."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from ntkfast.sklearn import _loo_eigh

    seen = []
    real = _loo_eigh._Phased.tridiagonalize

    def spy(self):
        seen.append({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})
        return real(self)

    monkeypatch.setattr(_loo_eigh._Phased, "tridiagonalize", spy)
    X, _ = _data(n=20)
    NTKRegressorCV(depths=(1, 2), n_jobs=2).fit(X, X[:, 0])  # two workers
    assert seen == [{1}, {1}]
    seen.clear()
    with threadpool_limits(limits=1, user_api="blas"):
        NTKRegressorCV(depths=(1,), n_jobs=4).fit(X, X[:, 0])  # one worker, the caller's one thread
    assert seen == [{1}]


def test_eigh_inplace_many_is_dsyevd_on_threads():
    """The phased decomposition (dsytrd + dstedc, then dormtr in column blocks on any thread) equals
    dsyevd to round-off for every matrix, thread count, memory order and scale (dsyevd's scaling
    near overflow and underflow reproduced), each matrix's memory holding its eigenvectors."""
    from ntkfast.sklearn._loo_eigh import eigh_inplace, eigh_inplace_many

    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 3, 40, 131):
        for scale in (1.0, 1e-200, 1e200):
            mats = []
            for _ in range(5):
                B = rng.standard_normal((n, n))
                mats.append((B @ B.T) * scale)
            ref = [eigh_inplace(M.copy()) for M in mats]
            for workers in (1, 2, 3):
                copies = [np.array(M, order="CF"[k % 2]) for k, M in enumerate(mats)]
                held = list(copies)
                got = {i: (w, V) for i, w, V in eigh_inplace_many(copies, workers)}
                assert copies == [] and sorted(got) == list(range(5))
                for i, (w, V) in got.items():
                    if n == 0:
                        assert w.shape == (0,) and V.shape == (0, 0)
                        continue
                    assert np.shares_memory(V, held[i])
                    top = np.abs(ref[i][0]).max()
                    np.testing.assert_allclose(w, ref[i][0], rtol=0, atol=1e-13 * top)
                    np.testing.assert_allclose((V * w) @ V.T, mats[i], rtol=0, atol=1e-12 * np.abs(mats[i]).max())
                    np.testing.assert_allclose(V.T @ V, np.eye(n), rtol=0, atol=1e-12)
