"""NTKRegressorCV against GridSearchCV(NTKRegressor(), same grid, cv=5): time and held-out R^2.

The grid is the CV estimator's default, 5 depths x 15 diag_regs.  Synthetic data: n training
points (default 2000) and 1000 test points, d = 8, a smooth target plus noise.  GridSearchCV
over all 75 candidates means 375 fits; to stay short the script times it on ``--regs`` of the
15 ridges at every depth and scales the time by 15 / regs (a candidate's cost does not depend on
its ridge: the same Gram and Cholesky per fold; pass ``--regs 15`` for the full run).

    python benchmarks/cv_speed.py [--n 2000] [--regs 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, KFold

from ntkfast.sklearn import DEPTHS, DIAG_REGS, NTKRegressor, NTKRegressorCV


def data(n: int, n_test: int = 1000, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + n_test, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] / 2 + 0.3 * rng.standard_normal(n + n_test)
    return X[:n], y[:n], X[n:], y[n:]


def main(n: int = 2000, regs: int = 3) -> dict:
    X, y, X_test, y_test = data(n)
    NTKRegressorCV(depths=(1,), diag_regs=(1e-2,)).fit(X[:50], y[:50])  # compile
    t0 = time.perf_counter()
    cv = NTKRegressorCV().fit(X, y)
    t_cv = time.perf_counter() - t0
    sub = DIAG_REGS[:: max(1, len(DIAG_REGS) // regs)][:regs]
    folds = KFold(5, shuffle=True, random_state=0)
    grid = GridSearchCV(NTKRegressor(), {"depth": list(DEPTHS), "diag_reg": list(sub)}, cv=folds, refit=False)
    t0 = time.perf_counter()
    grid.fit(X, y)
    t_grid = (time.perf_counter() - t0) * len(DIAG_REGS) / len(sub)
    t0 = time.perf_counter()
    refit = NTKRegressor(**grid.best_params_).fit(X, y)  # GridSearchCV's one refit, not scaled
    t_grid += time.perf_counter() - t0
    return {
        "n": n,
        "cv_seconds": t_cv,
        "gridsearch_seconds_scaled": t_grid,
        "speedup": t_grid / t_cv,
        "cv_choice": cv.best_params_,
        "cv_test_r2": r2_score(y_test, cv.predict(X_test)),
        "grid_choice": grid.best_params_,
        "grid_test_r2": r2_score(y_test, refit.predict(X_test)),
        "grid_regs_timed": len(sub),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--regs", type=int, default=3)
    a = p.parse_args()
    r = main(a.n, a.regs)
    print(f"n = {r['n']}: NTKRegressorCV (5 depths x 15 diag_regs, closed-form LOO) {r['cv_seconds']:.1f} s")
    print(
        f"GridSearchCV(NTKRegressor(), same grid, cv=5): {r['gridsearch_seconds_scaled']:.1f} s "
        f"(timed on {r['grid_regs_timed']} of the 15 ridges, scaled)"
    )
    print(f"speed-up {r['speedup']:.1f}x")
    print(f"held-out R^2: CV {r['cv_test_r2']:.4f} ({r['cv_choice']}), GridSearchCV {r['grid_test_r2']:.4f} "
          f"({r['grid_choice']}, best of its timed sub-grid)")  # fmt: skip
