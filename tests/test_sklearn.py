"""scikit-learn integration: the estimator checks, and accuracy on bundled data."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

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
