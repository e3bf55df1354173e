"""``ntkfast fit`` selects depth and diag_reg by default (issue 15 item 3).

Truth: the model the command saves equals NTKRegressorCV / NTKClassifierCV (or the plain
estimator, for what the command line fixes) fitted here on the same preprocessed data; the ``--cv``
table is the estimator's ``cv_results_``; ``predict`` gives the saved model's predictions.
"""

from __future__ import annotations

import csv

import joblib
import numpy as np
import pytest
from cli_helpers import assert_error, call

from ntkfast.cli.report import selection_table

DEPTHS = "1,2"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    rng = np.random.default_rng(4)
    X = rng.standard_normal((60, 3))
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(60)
    label = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, "yes", "no")

    def write(name, header, rows):
        path = tmp / name
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        return path

    reg = write("reg.csv", ["a", "b", "c", "y"], [[*map(repr, x.tolist()), repr(float(t))] for x, t in zip(X, y)])
    cls = write("cls.csv", ["a", "b", "c", "label"], [[*map(repr, x.tolist()), t] for x, t in zip(X, label)])
    one = write("one.csv", ["a", "y"], [["0.5", "1.5"]])
    return {"tmp": tmp, "reg": reg, "cls": cls, "one": one, "X": X, "y": y, "label": label}


def _saved(path):
    bundle = joblib.load(path)
    return bundle, bundle["model"][-1]


def _scaled(X):
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(X)


def test_fit_selects_by_default_and_predict_uses_the_selected_model(capsys, files):
    from ntkfast.sklearn import NTKRegressorCV

    model, preds = files["tmp"] / "sel.joblib", files["tmp"] / "sel.csv"
    code, out, err = call(capsys, "fit", files["reg"], "--target", "y", "-o", model, "--depths", DEPTHS)
    assert code == 0, err
    bundle, est = _saved(model)
    expected = NTKRegressorCV(depths=(1, 2)).fit(_scaled(files["X"]), files["y"])  # the CV estimator's own b_std
    assert type(est).__name__ == "NTKRegressorCV" and est.best_params_ == expected.best_params_
    record = dict(bundle["selection"])
    assert record.pop("score") == pytest.approx(expected.best_score_, rel=1e-10)
    assert record == {"method": "loo", "depth": expected.depth_, "diag_reg": expected.diag_reg_, "candidates": 58,
                      "fixed": None}  # fmt: skip
    assert "by exact leave-one-out (one eigendecomposition per depth)" in out
    assert f"selected by exact leave-one-out among 58 candidates: depth {expected.depth_}, " in out
    assert f"diag_reg {expected.diag_reg_:.3g} (leave-one-out R^2 {expected.best_score_:.4f}" in out
    code, out, err = call(capsys, "predict", model, files["reg"], "-o", preds)
    assert code == 0, err
    with open(preds) as f:
        got = np.array([float(r[0]) for r in list(csv.reader(f))[1:]])
    np.testing.assert_allclose(got, expected.predict(_scaled(files["X"])), rtol=1e-10, atol=1e-12)


def test_cv_prints_every_candidate(capsys, files):
    from ntkfast.sklearn import NTKClassifierCV

    model = files["tmp"] / "cls.joblib"
    code, out, err = call(capsys, "fit", files["cls"], "--target", "label", "-o", model, "--depths", DEPTHS, "--cv")
    assert code == 0, err
    _, est = _saved(model)
    expected = NTKClassifierCV(depths=(1, 2)).fit(_scaled(files["X"]), files["label"])  # the CV estimator's own b_std
    assert est.best_params_ == expected.best_params_
    table = selection_table(est, "accuracy")
    assert len(table) == 58 and list(table.columns) == ["depth", "diag_reg", "leave-one-out accuracy", "log_loss",
                                                        "rank", "chosen"]  # fmt: skip
    np.testing.assert_array_equal(table["leave-one-out accuracy"], expected.cv_results_["mean_test_score"])
    np.testing.assert_allclose(table["log_loss"], expected.cv_results_["mean_test_log_loss"], rtol=1e-10)
    assert (table["chosen"] == "*").sum() == 1
    chosen = table[table["chosen"] == "*"].iloc[0]
    assert (chosen["depth"], chosen["diag_reg"], chosen["rank"]) == (est.depth_, est.diag_reg_, 1)
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["depth", "diag_reg"])
    rows = [line.split() for line in lines[head + 1 : head + 59]]
    assert [int(r[0]) for r in rows] == list(table["depth"])
    assert [float(r[2]) for r in rows] == pytest.approx(list(table["leave-one-out accuracy"]), abs=5e-5)
    assert sum(r[-1] == "*" for r in rows) == 1 and "--cv prints every candidate" not in out


def test_what_the_command_line_fixes_is_not_selected(capsys, files):
    from ntkfast.sklearn import NTKRegressor, NTKRegressorCV

    X, y = _scaled(files["X"]), files["y"]
    model = files["tmp"] / "fixed.joblib"
    # --depth: the plain estimator of that depth, its diag_reg 'auto' choosing the ridge
    code, out, err = call(capsys, "fit", files["reg"], "--target", "y", "-o", model, "--depth", "2")
    assert code == 0, err
    bundle, est = _saved(model)
    ref = NTKRegressor(depth=2).fit(X, y)
    assert type(est).__name__ == "NTKRegressor" and est.depth == 2 and est.diag_reg_ == ref.diag_reg_
    assert bundle["selection"] == {"method": "fixed", "depth": 2, "diag_reg": ref.diag_reg_, "diag_reg_auto": True,
                                   "fixed": "--depth 2"}  # fmt: skip
    assert f"depth 2 (fixed by --depth 2), diag_reg {ref.diag_reg_:.3g} (chosen by leave-one-out" in out
    # --depth and --diag-reg: nothing chosen
    words = ["--depth", "1", "--diag-reg", "0.05"]
    code, out, err = call(capsys, "fit", files["reg"], "--target", "y", "-o", model, *words)
    assert code == 0, err
    bundle, est = _saved(model)
    assert est.depth == 1 and est.diag_reg == 0.05 and "diag_reg 0.05 (fixed by --diag-reg)" in out
    np.testing.assert_allclose(est.predict(X), NTKRegressor(depth=1, diag_reg=0.05).fit(X, y).predict(X), rtol=1e-10)
    # --diag-reg alone: the depths are still selected, over a one-value ridge grid
    code, out, err = call(capsys, "fit", files["reg"], "--target", "y", "-o", model, "--depths", DEPTHS,
                          "--diag-reg", "0.05", "--cv")  # fmt: skip
    assert code == 0, err
    bundle, est = _saved(model)
    ref = NTKRegressorCV(depths=(1, 2), diag_regs=(0.05,)).fit(X, y)
    assert type(est).__name__ == "NTKRegressorCV" and tuple(est.diag_regs) == (0.05,)
    assert est.depth_ == ref.depth_ and bundle["selection"]["fixed"] == "--diag-reg 0.05"
    assert "among 2 candidates, diag_reg fixed by --diag-reg 0.05" in out and len(selection_table(est, "R^2")) == 2
    # a finite --t: the plain estimator at its default depth
    code, out, err = call(capsys, "fit", files["reg"], "--target", "y", "-o", model, "--t", "5")
    assert code == 0, err
    _, est = _saved(model)
    assert type(est).__name__ == "NTKRegressor" and est.depth == NTKRegressor().depth and est.t == 5
    assert "the default: --t 5 fits one network" in out


def test_kfold_scores_the_whole_fit(capsys, files):
    from sklearn.model_selection import cross_val_score

    from ntkfast.sklearn import NTKRegressorCV

    model = files["tmp"] / "kfold.joblib"
    code, out, err = call(capsys, "fit", files["reg"], "--target", "y", "-o", model, "--depths", "1", "--kfold", "3")
    assert code == 0, err
    _, est = _saved(model)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = NTKRegressorCV(depths=(1,))  # the CV estimator's own b_std
    scores = cross_val_score(make_pipeline(StandardScaler(), cv), files["X"], files["y"], cv=3)
    assert f"3-fold cross-validated R^2 (the selection rerun inside each fold): {scores.mean():.4f}" in out


def test_kfold_fallback_is_announced(capsys, files, monkeypatch):
    """Above the dense eigendecomposition limit the selection says, before it starts, that it scores
    by 5-fold cross-validation and how many fits that is."""
    monkeypatch.setenv("NTKFAST_DENSE_MAX_N", "20")
    model = files["tmp"] / "fallback.joblib"
    with pytest.warns(UserWarning, match="5-fold cross-validation"):
        code, out, err = call(capsys, "fit", files["reg"], "--target", "y", "-o", model, "--depths", "1")
    assert code == 0, err
    bundle, _ = _saved(model)
    assert bundle["selection"]["method"] == "5-fold"
    assert "by 5-fold cross-validation (n = 60 is above the dense eigendecomposition limit 20): 145 fits" in out
    assert "selected by 5-fold cross-validation among 29 candidates" in out


@pytest.mark.parametrize(
    "words, fragments",
    [
        (["--depths", "1,1"], ["--depths", "distinct"]),
        (["--depths", "two"], ["--depths", "comma-separated"]),
        (["--depths", "1,-2"], ["--depths"]),
        (["--depth", "2", "--depths", "1,2"], ["--depths", "--depth 2 fits one model"]),
        (["--depth", "2", "--cv"], ["--cv", "use --depths D"]),
        (["--diag-reg", "0"], ["--diag-reg 0", "--depth D"]),
        (["--lr", "0.5"], ["--lr", "finite training time"]),
        (["--kfold", "1"], ["--kfold"]),
        (["--cv", "3"], ["unrecognized arguments: 3"]),  # --cv is the table now; the old K-fold score is --kfold
        (["--select"], ["unrecognized arguments: --select"]),
    ],
)
def test_misuse_is_a_usage_error(capsys, files, words, fragments):
    model = files["tmp"] / "bad.joblib"
    assert_error(call(capsys, "fit", files["reg"], "--target", "y", "-o", model, *words), 2, *fragments)
    assert not model.exists()


def test_too_little_data_for_leave_one_out(capsys, files):
    model = files["tmp"] / "one.joblib"
    result = call(capsys, "fit", files["one"], "--target", "y", "--task", "regression", "-o", model)
    assert_error(result, 1, "1 training row", "leave-one-out selection needs at least 2", "--depth D")
    assert not model.exists()
    code, out, err = call(capsys, "fit", files["one"], "--target", "y", "--task", "regression", "-o", model,
                          "--depth", "1")  # fmt: skip
    assert code == 0 and model.exists(), err
