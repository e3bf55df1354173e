"""NTKRegressorCV against GridSearchCV(NTKRegressor(), same grid, cv=5): time and held-out R^2.

The grid is the CV estimator's default, 5 depths x 15 diag_regs.  Synthetic data: n training
points (default 2000) and 1000 test points, d = 8, a smooth target plus noise.  GridSearchCV
over all 75 candidates means 375 fits; to stay short the script times it on ``--regs`` of the
15 ridges at every depth and scales the time by 15 / regs (a candidate's cost does not depend on
its ridge: the same Gram and Cholesky per fold; pass ``--regs 15`` for the full run).

Times are wall-clock and CPU seconds of this process (the CPU figures are steadier on a shared
machine).  ``--parts`` also times the parts of the closed-form search per depth, old against new:
the eigendecomposition (NumPy's ``eigh`` on a copy against LAPACK's divide-and-conquer in the
Gram's own memory) and the left-out predictions of the 15 ridges (the NumPy formula per ridge,
n x n temporaries each, against the one pass over the eigenvectors).

    python benchmarks/cv_speed.py [--n 2000] [--regs 3] [--parts]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, KFold

import ntkfast as nf
from ntkfast.sklearn import DEPTHS, DIAG_REGS, NTKRegressor, NTKRegressorCV
from ntkfast.sklearn._loo import EigenLOO


def data(n: int, n_test: int = 1000, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + n_test, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] / 2 + 0.3 * rng.standard_normal(n + n_test)
    return X[:n], y[:n], X[n:], y[n:]


def main(n: int = 2000, regs: int = 3) -> dict:
    X, y, X_test, y_test = data(n)
    NTKRegressorCV(depths=(1,), diag_regs=(1e-2,)).fit(X[:50], y[:50])  # compile
    t0, c0 = time.perf_counter(), time.process_time()
    cv = NTKRegressorCV().fit(X, y)
    t_cv, c_cv = time.perf_counter() - t0, time.process_time() - c0
    sub = DIAG_REGS[:: max(1, len(DIAG_REGS) // regs)][:regs]
    folds = KFold(5, shuffle=True, random_state=0)
    grid = GridSearchCV(NTKRegressor(), {"depth": list(DEPTHS), "diag_reg": list(sub)}, cv=folds, refit=False)
    t0, c0 = time.perf_counter(), time.process_time()
    grid.fit(X, y)
    t_grid = (time.perf_counter() - t0) * len(DIAG_REGS) / len(sub)
    c_grid = (time.process_time() - c0) * len(DIAG_REGS) / len(sub)
    t0, c0 = time.perf_counter(), time.process_time()
    refit = NTKRegressor(**grid.best_params_).fit(X, y)  # GridSearchCV's one refit, not scaled
    t_grid += time.perf_counter() - t0
    c_grid += time.process_time() - c0
    return {
        "n": n,
        "cv_seconds": t_cv,
        "gridsearch_seconds_scaled": t_grid,
        "speedup": t_grid / t_cv,
        "cv_cpu_seconds": c_cv,
        "gridsearch_cpu_seconds_scaled": c_grid,
        "cpu_speedup": c_grid / c_cv,
        "cv_choice": cv.best_params_,
        "cv_test_r2": r2_score(y_test, cv.predict(X_test)),
        "grid_choice": grid.best_params_,
        "grid_test_r2": r2_score(y_test, refit.predict(X_test)),
        "grid_regs_timed": len(sub),
    }


def parts(n: int = 2000) -> dict:
    """CPU seconds of the closed-form search's parts over the 5 depths, old way against new."""
    X, y, _, _ = data(n)
    Y = y[:, None]
    EigenLOO(np.eye(3) + 1.0, np.ones((3, 1))).predictions_all(DIAG_REGS)  # compile
    c0 = time.process_time()
    grams = [np.asarray(K) for K in nf.kernel(nf.MLP(), X, depths=DEPTHS)]
    out = {"kernel": time.process_time() - c0, "eigh_numpy": 0.0, "eigh_evd_inplace": 0.0, "predictions_numpy": 0.0,
           "predictions_one_pass": 0.0}  # fmt: skip
    for K in grams:
        c0 = time.process_time()
        np.linalg.eigh(K)
        out["eigh_numpy"] += time.process_time() - c0
        c0 = time.process_time()
        loo = EigenLOO(K, Y, overwrite_k=True)
        out["eigh_evd_inplace"] += time.process_time() - c0
        c0 = time.process_time()
        old = np.stack([loo.predictions(r) for r in DIAG_REGS])
        out["predictions_numpy"] += time.process_time() - c0
        c0 = time.process_time()
        new = loo.predictions_all(DIAG_REGS)
        out["predictions_one_pass"] += time.process_time() - c0
        assert np.allclose(old, new, rtol=0, atol=1e-10 * np.abs(y).max())
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--regs", type=int, default=3)
    p.add_argument("--parts", action="store_true", help="also the CPU seconds of the search's parts, old vs new")
    a = p.parse_args()
    if a.parts:
        cpu = parts(a.n)
        print(f"n = {a.n}, 5 depths x 15 ridges, CPU seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    r = main(a.n, a.regs)
    print(f"n = {r['n']}: NTKRegressorCV (5 depths x 15 diag_regs, closed-form LOO) {r['cv_seconds']:.1f} s")
    print(
        f"GridSearchCV(NTKRegressor(), same grid, cv=5): {r['gridsearch_seconds_scaled']:.1f} s "
        f"(timed on {r['grid_regs_timed']} of the 15 ridges, scaled)"
    )
    print(f"speed-up {r['speedup']:.1f}x wall-clock; CPU seconds {r['cv_cpu_seconds']:.1f} vs "
          f"{r['gridsearch_cpu_seconds_scaled']:.1f}: {r['cpu_speedup']:.1f}x")  # fmt: skip
    print(f"held-out R^2: CV {r['cv_test_r2']:.4f} ({r['cv_choice']}), GridSearchCV {r['grid_test_r2']:.4f} "
          f"({r['grid_choice']}, best of its timed sub-grid)")  # fmt: skip
