"""The CV estimators' own defaults (issue 15, accuracy): b_std = CV_B_STD = 0.5 and the ridge grid
CV_DIAG_REGS (DIAG_REGS' span at quarter-decade steps), and that a default fit really uses them."""

import numpy as np
import pytest

import ntkfast as nf
from ntkfast.sklearn import CV_B_STD, CV_DIAG_REGS, DEPTHS, DIAG_REGS, NTKClassifierCV, NTKRegressorCV


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return X, np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)


def test_default_values():
    for cls in (NTKRegressorCV, NTKClassifierCV):
        params = cls().get_params()
        assert params["b_std"] == CV_B_STD == 0.5
        assert params["diag_regs"] == CV_DIAG_REGS and params["depths"] == DEPTHS
        assert params["kernel"] == "ntk" and params["W_std"] == 1.4


def test_default_ridge_grid_spans_the_plain_grid_at_quarter_decades():
    regs = np.array(CV_DIAG_REGS)
    assert len(regs) == 29 and regs[0] == pytest.approx(1e-5) and regs[-1] == pytest.approx(100.0)
    np.testing.assert_allclose(np.diff(np.log10(regs)), 0.25, rtol=1e-12)
    np.testing.assert_allclose(regs[::2], DIAG_REGS, rtol=1e-14)  # nothing the plain grid could choose is lost
    assert all(isinstance(r, float) for r in CV_DIAG_REGS)


def test_a_default_fit_scores_every_default_candidate_with_the_default_bias():
    X, y = _data()
    reg = NTKRegressorCV().fit(X, y)
    res = reg.cv_results_
    assert len(res["params"]) == len(DEPTHS) * len(CV_DIAG_REGS)
    assert {p["b_std"] for p in res["params"]} == {CV_B_STD} and reg.b_std_ == CV_B_STD
    assert sorted({p["diag_reg"] for p in res["params"]}) == sorted(CV_DIAG_REGS)
    # the refit is the plain estimator on the network with b_std 0.5 at the chosen depth
    assert reg.best_estimator_.arch_ == nf.MLP(depth=reg.depth_, W_std=1.4, b_std=CV_B_STD)
    assert reg.best_estimator_.diag_reg_ == reg.diag_reg_


def test_the_default_classifier_keeps_the_default_bias():
    X, y = _data(seed=1)
    clf = NTKClassifierCV().fit(X, y > 0)
    assert clf.b_std_ == CV_B_STD and clf.best_estimator_.arch_.b_std == CV_B_STD
    assert len(clf.cv_results_["mean_test_score"]) == len(DEPTHS) * len(CV_DIAG_REGS)


def test_an_explicit_b_std_still_wins():
    X, y = _data()
    reg = NTKRegressorCV(depths=(1,), b_std=0.1, diag_regs=DIAG_REGS).fit(X, y)
    assert reg.b_std_ == 0.1 and len(reg.cv_results_["params"]) == len(DIAG_REGS)
