"""NTKRegressorCV against GridSearchCV(NTKRegressor(), same grid, cv=5): time and held-out R^2.

The grid is the issue's, 5 depths x the 15 diag_regs of ``DIAG_REGS`` (the plain estimators' ridge
grid), at NTKRegressor's b_std on both sides (the CV estimators' own defaults are denser, 29
ridges, and b_std 0.5: docs/guide.md).  Synthetic data: n training
points (default 2000) and 1000 test points, d = 8, a smooth target plus noise.  GridSearchCV
over all 75 candidates means 375 fits; to stay short the script times it on ``--regs`` of the
15 ridges at every depth and scales the time by 15 / regs (a candidate's cost does not depend on
its ridge: the same Gram and Cholesky per fold; pass ``--regs 15`` for the full run).

Times are wall-clock and CPU seconds of this process (the CPU figures are steadier on a shared
machine).  ``--parts`` also times the parts of the closed-form search, old against new: the five
eigendecompositions one after the other with BLAS on every core (SciPy's ``eigh`` holds the GIL)
against several at once on one BLAS thread each (``ntkfast.sklearn._loo_eigh``: whole, and with the
back-transformations shared by the threads), the left-out
predictions of the 15 ridges, and the refit (a plain fit against one from the chosen depth's
eigenpairs).  On a loaded machine a threaded OpenBLAS decomposition can take ten times its
single-threaded CPU time (its threads spin while they wait for a core).

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
from ntkfast.tiling import default_n_jobs


def data(n: int, n_test: int = 1000, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + n_test, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] / 2 + 0.3 * rng.standard_normal(n + n_test)
    return X[:n], y[:n], X[n:], y[n:]


def main(n: int = 2000, regs: int = 3) -> dict:
    X, y, X_test, y_test = data(n)
    # warm-up on 100 points through the same paths as the timed calls (compiled kernels, the threads of
    # the parallel eigendecompositions, LAPACK's first calls), so that neither side pays one-time costs
    NTKRegressorCV(diag_regs=DIAG_REGS[:2]).fit(X[:100], y[:100])
    NTKRegressor().fit(X[:100], y[:100])
    t0, c0 = time.perf_counter(), time.process_time()
    cv = NTKRegressorCV(diag_regs=DIAG_REGS, b_std=NTKRegressor().b_std).fit(X, y)  # the grid's candidates
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


def _clock():
    return time.perf_counter(), time.process_time()


def _since(t0) -> tuple[float, float]:
    t1 = _clock()
    return t1[0] - t0[0], t1[1] - t0[1]


def parts(n: int = 2000, old: bool = True) -> dict:
    """(wall, CPU) seconds of the closed-form search's parts over the 5 depths, old way against new.

    Old: each eigendecomposition in turn (``scipy.linalg.eigh(driver="evd")`` in place, BLAS on
    every core; SciPy holds the GIL, so they cannot overlap), and the refit as a plain
    ``NTKRegressor.fit`` (a new Gram and its Cholesky factorisation).  Mid: whole ``dsyevd`` calls,
    ``workers`` at once (GIL released) on ``n_jobs // workers`` BLAS threads each (5 on 2 threads
    take 3 rounds).  New: as the search runs them (``eigh_inplace_many``: each tridiagonalised on
    one thread, back-transformed in column blocks any thread takes), and the refit from the chosen
    depth's eigenpairs.
    """
    import scipy.linalg
    from threadpoolctl import ThreadpoolController

    from ntkfast.sklearn._cv import _decompose_and_score
    from ntkfast.sklearn._estimators import fit_from_eigenpairs

    X, y, _, _ = data(n)
    Y = y[:, None]
    EigenLOO(np.eye(3) + 1.0, np.ones((3, 1))).predictions_all(DIAG_REGS)  # compile
    est = NTKRegressorCV()
    workers = est._dense_fits(n, len(DEPTHS))[3]
    jobs = default_n_jobs()
    out = {}
    t0 = _clock()
    grams = [np.asarray(K) for K in nf.kernel(nf.MLP(), X, depths=DEPTHS)]
    out["kernel, 5 depths in one pass"] = _since(t0)
    if old:  # on a loaded machine this one can take a minute or two
        copies = [K.copy() for K in grams]
        t0 = _clock()
        for K in copies:
            scipy.linalg.eigh(K.T, driver="evd", overwrite_a=True, check_finite=False)
        out["old: 5 eigh in turn, BLAS on every core"] = _since(t0)
        del copies
    threads = max(1, jobs // workers)
    blas = ThreadpoolController().select(user_api="blas")
    t0 = _clock()
    list(_decompose_and_score([K.copy() for K in grams], Y, None, DIAG_REGS, workers, blas, threads, 1, False))
    out[f"mid: 5 whole dsyevd + LOO sums, {workers} at once, {threads} BLAS thread(s) each"] = _since(t0)
    t0 = _clock()
    scored = list(_decompose_and_score(grams, Y, None, DIAG_REGS, workers, blas, threads, 1, True))
    scored = [(loo, scores) for _, loo, scores in sorted(scored, key=lambda item: item[0])]
    out[f"new: 5 shared (dormtr in column blocks) + LOO sums, {workers} threads, {threads} BLAS thread(s)"] = (
        _since(t0)
    )
    t0 = _clock()
    for loo, _ in scored:
        loo.predictions_all(DIAG_REGS, jobs)
    out["(of which, timed alone) LOO sums of 15 ridges x 5 depths"] = _since(t0)
    depth, diag_reg = 2, 0.3
    t0 = _clock()
    NTKRegressor(depth=depth, diag_reg=diag_reg).fit(X, y)
    out["old refit: plain fit (Gram + Cholesky)"] = _since(t0)
    t0 = _clock()
    fit_from_eigenpairs(NTKRegressor(depth=depth, diag_reg=diag_reg), X, y, Y, scored[DEPTHS.index(depth)][0],
                        diag_reg, False)  # fmt: skip
    out["new refit: from the eigenpairs"] = _since(t0)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--regs", type=int, default=3)
    p.add_argument("--parts", action="store_true", help="also the seconds of the search's parts, old vs new")
    a = p.parse_args()
    if a.parts:
        print(f"n = {a.n}, 5 depths x 15 ridges, seconds (wall, CPU):")
        for what, (wall, cpu) in parts(a.n).items():
            print(f"  {what}: {wall:.2f} wall, {cpu:.2f} CPU")
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
