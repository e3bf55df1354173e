"""Accuracy on every bundled scikit-learn data set: the default NTKClassifierCV / NTKRegressorCV (no
grid written by the user) against an RBF SVC / RBF kernel ridge tuned by a 4 x 4 GridSearchCV and a
500-tree random forest, on the same 5 shuffled folds, every model after a StandardScaler.

Classification (accuracy): iris, wine, breast_cancer, digits.  Regression (R^2, averaged over
outputs): diabetes, linnerud.  california_housing is not bundled (it downloads): skipped.

    python benchmarks/accuracy_table.py [names...]
"""

from __future__ import annotations

import sys
import time

from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ntkfast.sklearn import NTKClassifierCV, NTKRegressorCV

CLASSIFICATION = ("iris", "wine", "breast_cancer", "digits")
REGRESSION = ("diabetes", "linnerud")
GAMMAS = [1e-3, 1e-2, 1e-1, 1.0]


def models(task: str, inner) -> dict:
    if task == "classification":
        return {
            "NTKClassifierCV": NTKClassifierCV(),
            "RBF SVC (4x4 grid)": GridSearchCV(SVC(), {"C": [0.1, 1, 10, 100], "gamma": GAMMAS}, cv=inner),
            "random forest (500)": RandomForestClassifier(500, random_state=0),
        }
    return {
        "NTKRegressorCV": NTKRegressorCV(),
        "RBF kernel ridge (4x4 grid)": GridSearchCV(
            KernelRidge(kernel="rbf"), {"alpha": [1e-3, 1e-2, 1e-1, 1.0], "gamma": GAMMAS}, cv=inner
        ),
        "random forest (500)": RandomForestRegressor(500, random_state=0),
    }


def row(name: str) -> dict:
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    task = "classification" if name in CLASSIFICATION else "regression"
    Folds = StratifiedKFold if task == "classification" else KFold
    folds, inner = Folds(5, shuffle=True, random_state=0), Folds(4, shuffle=True, random_state=1)
    out = {}
    for label, model in models(task, inner).items():
        t0 = time.perf_counter()
        scores = cross_val_score(make_pipeline(StandardScaler(), model), X, y, cv=folds)
        out[label] = (scores.mean(), scores.std(), time.perf_counter() - t0)
    return {"name": name, "task": task, "n": X.shape[0], "d": X.shape[1], "scores": out}


def main(names) -> None:
    for name in names:
        r = row(name)
        what = "accuracy" if r["task"] == "classification" else "R^2"
        print(f"{name} (n = {r['n']}, d = {r['d']}, {what}, 5 folds)")
        best = max(r["scores"], key=lambda k: r["scores"][k][0])
        for label, (mean, std, seconds) in r["scores"].items():
            mark = "  <- best" if label == best else ""
            print(f"  {label:30s} {mean:.4f} +- {std:.4f}  ({seconds:.0f} s){mark}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or CLASSIFICATION + REGRESSION)
