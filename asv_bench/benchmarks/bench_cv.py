"""asv benchmarks of model selection: NTKRegressorCV's closed-form leave-one-out over 5 depths x 15
ridges against GridSearchCV(NTKRegressor(), ...) on one ridge per depth (the full GridSearchCV costs
15 times that: a candidate's fits do not depend on its ridge).  ``benchmarks/cv_speed.py`` reports
the ratio and the held-out scores."""

import numpy as np
from sklearn.model_selection import GridSearchCV, KFold

from ntkfast.sklearn import DEPTHS, NTKClassifierCV, NTKRegressor, NTKRegressorCV


def _data(n, d=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(X[:, 0]) + X[:, 1] * X[:, 2] / 2 + 0.3 * rng.standard_normal(n)


class TimeRegressorCV:
    """The default grid, 5 depths x 15 diag_regs, at n = 2000."""

    params = [500, 2000]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        self.X, self.y = _data(n)
        NTKRegressorCV(depths=(1,), diag_regs=(1e-2,)).fit(self.X[:20], self.y[:20])  # compile

    def time_cv_fit(self, n):
        NTKRegressorCV().fit(self.X, self.y)

    def peakmem_cv_fit(self, n):
        NTKRegressorCV().fit(self.X, self.y)

    def time_gridsearch_one_ridge_per_depth(self, n):
        GridSearchCV(
            NTKRegressor(), {"depth": list(DEPTHS), "diag_reg": [1e-2]}, cv=KFold(5, shuffle=True, random_state=0)
        ).fit(self.X, self.y)


class TimeClassifierCV:
    """10 classes, n = 2000: LOO accuracy, log-loss and a temperature per candidate."""

    timeout = 600

    def setup(self):
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((2000, 20))
        self.y = rng.integers(0, 10, 2000)

    def time_cv_fit(self):
        NTKClassifierCV().fit(self.X, self.y)


class TimeLOOParts:
    """The closed-form search's parts at n = 2000, one depth: the eigendecomposition, and the 15
    ridges' left-out predictions by the NumPy formula per ridge against the one pass over V."""

    timeout = 600

    def setup(self):
        import ntkfast as nf
        from ntkfast.sklearn import DIAG_REGS
        from ntkfast.sklearn._loo import EigenLOO

        X, y = _data(2000)
        self.K = np.asarray(nf.kernel(nf.MLP(depth=3), X))
        self.Y = y[:, None]
        self.regs = DIAG_REGS
        self.loo = EigenLOO(self.K, self.Y)
        self.loo.predictions_all(self.regs[:1])  # compile

    def time_eigendecomposition_in_place(self):
        from ntkfast.sklearn._loo import EigenLOO

        EigenLOO(self.K.copy(), self.Y, overwrite_k=True)

    def time_predictions_numpy_per_ridge(self):
        for r in self.regs:
            self.loo.predictions(r)

    def time_predictions_one_pass(self):
        self.loo.predictions_all(self.regs)


class TimeSearchEigendecompositions:
    """The five depths' eigendecompositions at n = 2000: one after the other with BLAS on every core
    (SciPy's eigh, which holds the GIL) against as the search runs them on threads, one BLAS
    thread each (``_loo_eigh.eigh_inplace_many``, GIL released), scoring included."""

    timeout = 600

    def setup(self):
        import ntkfast as nf
        from ntkfast.sklearn import DIAG_REGS

        X, y = _data(2000)
        self.grams = [np.asarray(K) for K in nf.kernel(nf.MLP(), X, depths=DEPTHS)]
        self.Y = y[:, None]
        self.regs = DIAG_REGS
        self.workers = NTKRegressorCV()._dense_fits(2000, len(DEPTHS))[3]

    def time_in_turn_scipy(self):
        import scipy.linalg

        for K in self.grams:
            scipy.linalg.eigh(K.copy().T, driver="evd", overwrite_a=True, check_finite=False)

    def time_parallel_as_the_search(self):
        from threadpoolctl import ThreadpoolController

        from ntkfast.sklearn._cv import _decompose_and_score
        from ntkfast.tiling import default_n_jobs

        threads = max(1, default_n_jobs() // self.workers)
        blas = ThreadpoolController().select(user_api="blas")
        list(_decompose_and_score([K.copy() for K in self.grams], self.Y, None, self.regs, self.workers, blas,
                                  threads, 1))  # fmt: skip
