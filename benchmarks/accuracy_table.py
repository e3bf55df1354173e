"""Accuracy on every bundled scikit-learn data set: the default NTKClassifierCV / NTKRegressorCV (no
grid written by the user) against an RBF SVC / RBF kernel ridge tuned by a 4 x 4 GridSearchCV and a
500-tree random forest, on the same 5 shuffled folds, every model after a StandardScaler.

Classification (accuracy): iris, wine, breast_cancer, digits.  Regression (R^2, averaged over
outputs): diabetes, linnerud.  california_housing is not bundled (it downloads): skipped.

Every model runs on one thread (``n_jobs=1`` and BLAS limited to one thread by threadpoolctl), so
the seconds compare like with like; the scores do not depend on it.  The NTK's hyper-parameters are
chosen inside each training fold (closed-form leave-one-out), the grids' by a 4-fold inner
GridSearchCV; the reported score is that of the outer test folds.

    python benchmarks/accuracy_table.py [--before] [names...]

``--before`` adds two rows: the CV estimators with their defaults before issue 15's accuracy pass
(b_std=0.1 and the 15 ridges of ``DIAG_REGS``), and with ``kernel="nngp"``.  Besides the bundled
sets, ``names`` may be generated ones that played no part in choosing the defaults (a check held out
from that choice): friedman1, friedman2, sparse_regression, classification, moons, circles, hastie.
"""

from __future__ import annotations

import platform
import sys
import time

import numpy as np
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from ntkfast.sklearn import DIAG_REGS, NTKClassifierCV, NTKRegressorCV

CLASSIFICATION = ("iris", "wine", "breast_cancer", "digits")
REGRESSION = ("diabetes", "linnerud")
GAMMAS = [1e-3, 1e-2, 1e-1, 1.0]
BEFORE = {"b_std": 0.1, "diag_regs": DIAG_REGS}  # the CV estimators' defaults before the accuracy pass
# generated data sets (no download), used only to check the defaults chosen on the bundled ones
SYNTHETIC = {
    "friedman1": (False, lambda: datasets.make_friedman1(300, noise=1.0, random_state=0)),
    "friedman2": (False, lambda: datasets.make_friedman2(300, noise=10.0, random_state=0)),
    "sparse_regression": (
        False,
        lambda: datasets.make_regression(300, 20, n_informative=5, noise=20.0, random_state=0),
    ),
    "classification": (True, lambda: datasets.make_classification(500, 20, n_informative=6, random_state=0)),
    "moons": (True, lambda: datasets.make_moons(400, noise=0.3, random_state=0)),
    "circles": (True, lambda: datasets.make_circles(400, noise=0.2, factor=0.5, random_state=0)),
    "hastie": (True, lambda: datasets.make_hastie_10_2(600, random_state=0)),
}


def models(task: str, inner, before: bool = False) -> dict:
    if task == "classification":
        out = {"NTKClassifierCV": NTKClassifierCV(n_jobs=1)}
        if before:
            out["NTKClassifierCV (old defaults)"] = NTKClassifierCV(n_jobs=1, **BEFORE)
            out["NTKClassifierCV (kernel=nngp)"] = NTKClassifierCV(n_jobs=1, kernel="nngp")
        out["RBF SVC (4x4 grid)"] = GridSearchCV(SVC(), {"C": [0.1, 1, 10, 100], "gamma": GAMMAS}, cv=inner)
        out["random forest (500)"] = RandomForestClassifier(500, random_state=0, n_jobs=1)
        return out
    out = {"NTKRegressorCV": NTKRegressorCV(n_jobs=1)}
    if before:
        out["NTKRegressorCV (old defaults)"] = NTKRegressorCV(n_jobs=1, **BEFORE)
        out["NTKRegressorCV (kernel=nngp)"] = NTKRegressorCV(n_jobs=1, kernel="nngp")
    out["RBF kernel ridge (4x4 grid)"] = GridSearchCV(
        KernelRidge(kernel="rbf"), {"alpha": [1e-3, 1e-2, 1e-1, 1.0], "gamma": GAMMAS}, cv=inner
    )
    out["random forest (500)"] = RandomForestRegressor(500, random_state=0, n_jobs=1)
    return out


def row(name: str, before: bool = False) -> dict:
    if name in SYNTHETIC:
        classify, make = SYNTHETIC[name]
        (X, y), task = make(), "classification" if classify else "regression"
    else:
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        task = "classification" if name in CLASSIFICATION else "regression"
    Folds = StratifiedKFold if task == "classification" else KFold
    folds, inner = Folds(5, shuffle=True, random_state=0), Folds(4, shuffle=True, random_state=1)
    out = {}
    for label, model in models(task, inner, before).items():
        t0 = time.perf_counter()
        scores = cross_val_score(make_pipeline(StandardScaler(), model), X, y, cv=folds, n_jobs=1)
        out[label] = (scores.mean(), scores.std(), time.perf_counter() - t0)
    return {"name": name, "task": task, "n": X.shape[0], "d": X.shape[1], "scores": out}


def main(argv) -> None:
    before = "--before" in argv
    names = [a for a in argv if a != "--before"] or list(CLASSIFICATION + REGRESSION)
    print(f"{platform.processor() or platform.machine()}, 1 thread per model; 5 shuffled folds (random_state=0)")
    means: dict = {}
    t_start = time.perf_counter()
    with threadpool_limits(1):
        for name in names:
            r = row(name, before)
            what = "accuracy" if r["task"] == "classification" else "R^2"
            print(f"{name} (n = {r['n']}, d = {r['d']}, {what}, 5 folds)")
            best = max(r["scores"], key=lambda k: r["scores"][k][0])
            for label, (mean, std, seconds) in r["scores"].items():
                mark = "  <- best" if label == best else ""
                print(f"  {label:32s} {mean:.4f} +- {std:.4f}  ({seconds:.0f} s){mark}", flush=True)
                key = label if label.startswith("NTK") else label.split(" (")[0]
                means.setdefault((r["task"], key), []).append(mean)
    for task in ("classification", "regression"):
        rows = {label: v for (t, label), v in means.items() if t == task}
        if rows:
            print(f"mean over the {task} sets: " + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in rows.items()))
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
