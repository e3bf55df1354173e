"""Depth and ridge chosen for you: :class:`NTKRegressorCV` and :class:`NTKClassifierCV`.

Shaped like scikit-learn's ``RidgeCV`` / ``LogisticRegressionCV``: every candidate (depth x
diag_reg, optionally x W_std x b_std) is scored by exact leave-one-out in closed form (one
eigendecomposition of each depth's Gram serves every ridge, see ``_loo``), the best is refitted
as a plain :class:`NTKRegressor` / :class:`NTKClassifier`, and predictions go through it.
This is the model selection of Arora et al. (2020), who computed the kernel of every depth and
picked depth and regularisation per data set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import KFold, StratifiedKFold, check_cv
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import ThreadpoolController

from .. import config, tiling
from .._validation import check_backend, check_choice, check_nonnegative_int, check_positive_float, check_positive_int
from ..errors import ArgumentError, ArgumentTypeError
from ..gram import kernel
from ..spec import MLP
from ._common import Progress, check_verbose
from ._estimators import RUNTIME_DOC, SOLVERS, STRUCTURE_DOC, NTKClassifier, NTKRegressor, fit_from_eigenpairs
from ._loo import EigenLOO, best_index, classification_score, regression_score
from ._loo_eigh import blocks_are_safe, eigh_inplace_many

__all__ = ["NTKRegressorCV", "NTKClassifierCV", "DEPTHS", "CV_DIAG_REGS", "CV_B_STD"]

DEPTHS = (1, 2, 3, 4, 5)
# The CV estimators' defaults where they differ from the plain estimators' (issue 15, accuracy; measured
# with benchmarks/accuracy_table.py, figures in docs/guide.md "Accuracy on bundled data"):
# - the ridge grid: DIAG_REGS' span (1e-5 to 100) at quarter-decade steps (29 values, DIAG_REGS among
#   them): each extra ridge costs one O(n^2 k) pass over the eigenvectors, ~3 % of a fit at n = 2000;
# - b_std 0.5 (plain estimators: 0.1): after a StandardScaler the bias then carries ~11 % of the
#   first layer's variance (0.25 / (1.4^2 + 0.25)) instead of 0.5 %; with b_std = 0.1 the ReLU kernel is
#   nearly a function of the angle between inputs only.  Fixed, not a grid: choosing b_std by the same
#   leave-one-out did worse on the bundled data (the selection overfits on small n) and costs a
#   Gram and an eigendecomposition per value.
CV_DIAG_REGS = tuple(float(r) for r in np.logspace(-5, 2, 29))
CV_B_STD = 0.5

_STRUCTURE = ("activation", "parameterization", "width", "residual", "input_map", "kernel")
_RUNTIME = ("solver", "n_centers", "tol", "max_iter", "random_state", "dtype", "backend", "n_jobs")


def _grams_by_depth(arch: MLP, X, Y, depths, get: str, *, dtype, backend, n_jobs, progress=False) -> tuple:
    """The Gram of ``arch`` at every depth of ``depths`` (a tuple, same order), from one tile pass
    of ``kernel(..., depths=depths)`` at the cost of the deepest."""
    on_gpu = backend == "gpu" or (backend == "auto" and check_backend("auto", X, Y) == "gpu")
    if on_gpu:  # every-depth-in-one-pass is CPU only for now: one call per depth on the device
        grams = tuple(
            kernel(dataclasses.replace(arch, depth=d), X, Y, get=get, dtype=dtype, backend=backend, progress=progress)
            for d in depths
        )
    else:
        grams = kernel(arch, X, Y, get=get, depths=tuple(depths), dtype=dtype, backend=backend, n_jobs=n_jobs,
                       progress=progress)  # fmt: skip
    return tuple(np.asarray(K, dtype=np.float64) for K in grams)


def _score(loo: EigenLOO, Y, labels, diag_regs, n_jobs: int) -> list[dict]:
    """One score dict per ridge of ``diag_regs`` from the eigenpairs in ``loo``."""
    scores = []
    for _, pred in loo.iter_predictions(diag_regs, n_jobs):  # the ridges in one pass over V
        scores.append(regression_score(Y, pred) if labels is None else classification_score(pred, labels))
    return scores


def _decompose_and_score(
    grams: list, Y, labels, diag_regs, workers: int, blas, blas_threads: int, score_jobs: int, split: bool | None = None
):
    """``(index, EigenLOO, scores)`` for each Gram of ``grams`` (emptied: each Gram's memory becomes
    its eigenvectors), in the order they finish: ``workers`` threads decompose them
    (``eigh_inplace_many``) with the BLAS libraries of the threadpoolctl controller ``blas`` limited
    to ``blas_threads`` threads meanwhile, and this thread scores each one as it comes.  An
    exception or Ctrl-C stops the decompositions (a running LAPACK call finishes first)."""
    diags = [np.diag(K).copy() for K in grams]
    with blas.limit(limits=blas_threads):
        decompositions = eigh_inplace_many(grams, workers, split)
        with contextlib.closing(decompositions):
            for g, eigenvalues, V in decompositions:
                loo = EigenLOO.from_eigenpairs(eigenvalues, V, diags[g], Y)
                del eigenvalues, V
                yield g, loo, _score(loo, Y, labels, diag_regs, score_jobs)
                del loo


def _grid(value, name: str, allow_none: bool) -> tuple:
    """A scalar is a one-point grid; a list/tuple/array is the grid."""
    values = tuple(value) if isinstance(value, (list, tuple, np.ndarray)) else (value,)
    if not values:
        raise ArgumentError(f"{name}: an empty grid")
    out = []
    for v in values:
        if v is None and allow_none:
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ArgumentTypeError(f"{name}: expected a number >= 0{' or None' if allow_none else ''}, got {v!r}")
        if not np.isfinite(v) or v < 0:
            raise ArgumentError(f"{name}: expected a finite number >= 0, got {v!r}")
        out.append(float(v))
    return tuple(out)


class _CVBase(BaseEstimator):
    """Parameters and the search shared by the two CV estimators."""

    _plain = NTKRegressor

    def __init__(
        self,
        *,
        depths=DEPTHS,
        diag_regs=CV_DIAG_REGS,
        kernel: str = "ntk",
        activation="relu",
        W_std=1.4,
        b_std=CV_B_STD,
        parameterization: str = "ntk",
        width=512,
        residual: bool = False,
        input_map=None,
        cv=None,
        solver: str = "auto",
        n_centers: int | None = None,
        tol: float | None = None,
        max_iter: int | None = None,
        random_state=None,
        dtype=np.float64,
        backend: str = "auto",
        n_jobs: int | None = None,
        verbose: int = 0,
    ):
        self.depths = depths
        self.diag_regs = diag_regs
        self.kernel = kernel
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.width = width
        self.residual = residual
        self.input_map = input_map
        self.cv = cv
        self.solver = solver
        self.n_centers = n_centers
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.dtype = dtype
        self.backend = backend
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------------------------ checks
    def _check_grid(self):
        if isinstance(self.depths, (str, bytes)) or not hasattr(self.depths, "__iter__"):
            raise ArgumentTypeError(f"depths: expected a sequence of integers >= 0, got {self.depths!r}")
        depths = tuple(check_nonnegative_int(d, "depths") for d in self.depths)
        if not depths or len(set(depths)) != len(depths):
            raise ArgumentError(f"depths: expected distinct integers >= 0, got {self.depths!r}")
        if isinstance(self.diag_regs, (str, bytes)) or not hasattr(self.diag_regs, "__iter__"):
            raise ArgumentTypeError(f"diag_regs: expected a sequence of numbers > 0, got {self.diag_regs!r}")
        diag_regs = tuple(check_positive_float(r, "diag_regs") for r in self.diag_regs)
        if not diag_regs:
            raise ArgumentError("diag_regs: an empty grid")
        check_choice(self.kernel, "kernel", ("ntk", "nngp"))
        check_choice(self.solver, "solver", SOLVERS)
        check_positive_int(self.n_centers, "n_centers")
        check_positive_int(self.n_jobs, "n_jobs", maximum=tiling.max_n_jobs())
        check_verbose(self.verbose)
        W_grid = _grid(self.W_std, "W_std", allow_none=False)
        b_grid = _grid(self.b_std, "b_std", allow_none=True)
        # every option reaches the network: build (and so validate) it once here
        base = MLP.from_params({**self._structure(), "depth": depths[0], "W_std": W_grid[0], "b_std": b_grid[0]})
        return base, depths, diag_regs, W_grid, b_grid

    def _structure(self) -> dict:
        return {
            name: getattr(self, name) for name in ("activation", "parameterization", "width", "residual", "input_map")
        }

    def _plain_params(self, depth, W_std, b_std, diag_reg) -> dict:
        params = {name: getattr(self, name) for name in _STRUCTURE + _RUNTIME}
        return {**params, "depth": depth, "W_std": W_std, "b_std": b_std, "diag_reg": diag_reg, "verbose": self.verbose}

    def _dense_fits(self, n: int, n_depths: int) -> tuple[bool, str, int, int, bool]:
        """Whether the closed-form search fits (dense eigendecomposition), why not, how many depths'
        Grams to hold at once, how many eigendecompositions to run at once, and whether they share
        their back-transformations (``eigh_inplace_many(split=...)``).

        Memory in units of one n x n float64 matrix (8 n^2 bytes): the Grams of a group of depths
        (each overwritten by its eigenvectors) and the eigenpairs of the best depth so far, kept
        for the refit (1); whole decompositions add LAPACK's 2 n^2 workspace each, shared ones an
        n^2 scratch per depth of the group and an n^2 workspace per thread.
        """
        if n > config.dense_max_n():
            return False, f"n = {n} is above the dense eigendecomposition limit {config.dense_max_n()}", 0, 0, False
        per = 8 * n * n
        slots = config.memory_budget() // per
        if slots < 4:
            why = f"the eigendecomposition needs {config.format_bytes(4 * per)}, above the memory budget"
            return False, why, 0, 0, False
        jobs = tiling.default_n_jobs() if self.n_jobs is None else self.n_jobs
        split_ok = blocks_are_safe()
        for workers in range(max(1, min(jobs, n_depths)), 0, -1):
            group = min(n_depths, (slots - 1 - workers) // 2)
            if workers > 1 and split_ok and group >= workers:
                return True, "", group, workers, True
            group = min(n_depths, slots - 1 - 2 * workers)
            if group >= workers:
                return True, "", group, workers, False
        return True, "", 1, 1, False  # slots >= 4: one Gram, its workspace and the kept eigenpairs

    def search_plan(self, n_samples: int) -> tuple[str, str]:
        """How :meth:`fit` on ``n_samples`` rows will score the candidates, before any work.

        Returns
        -------
        method : str
            "loo" (exact closed-form leave-one-out) or "<k>-fold" (as ``cv_method_`` will be).
        reason : str
            Why k-fold ("" for "loo"): the explicit ``cv``, or the dense limit or memory budget the
            eigendecomposition would exceed.
        """
        n = check_positive_int(n_samples, "n_samples")
        if self.cv is not None:
            try:
                k = check_cv(self.cv).get_n_splits()
            except (TypeError, ValueError):  # a splitter that needs the data to count its folds
                return "k-fold", f"cv={self.cv!r}"
            return f"{k}-fold", f"cv={self.cv!r}"
        dense, why, *_ = self._dense_fits(n, 1)
        return ("loo", "") if dense else ("5-fold", why)

    # ------------------------------------------------------------------------------ search
    def _search(self, X, y, Y, labels):
        base, depths, diag_regs, W_grid, b_grid = self._check_grid()
        n = len(X)
        if n < 2:
            raise ArgumentError(f"X: leave-one-out needs at least 2 samples, got n_samples = {n}")
        progress = Progress(check_verbose(self.verbose), type(self).__name__)
        dense, why, group, workers, split = self._dense_fits(n, len(depths))
        n_cand = len(W_grid) * len(b_grid) * len(depths) * len(diag_regs)
        if self.cv is None and dense:
            self.cv_method_ = "loo"
            progress.say(
                f"n = {n}: {n_cand} candidates by exact leave-one-out, one eigendecomposition per depth "
                f"({len(depths)} depths x {len(W_grid) * len(b_grid)} (W_std, b_std))"
            )
            results, kept = self._loo_search(
                X, Y, labels, base, depths, diag_regs, W_grid, b_grid, group, workers, split, progress
            )
        else:
            if self.cv is None:
                splitter = (StratifiedKFold if labels is not None else KFold)(5, shuffle=True, random_state=0)
                warnings.warn(
                    f"{type(self).__name__}: {why}; scoring the {n_cand} candidates by 5-fold cross-validation "
                    f"with solver={self.solver!r} instead of closed-form leave-one-out",
                    UserWarning,
                    stacklevel=3,
                )
            else:
                splitter = check_cv(self.cv, y, classifier=labels is not None)
            self.cv_method_ = f"{splitter.get_n_splits(X, y)}-fold"
            progress.say(f"n = {n}: {n_cand} candidates by {self.cv_method_} cross-validation")
            results = self._kfold_search(X, y, Y, labels, splitter, depths, diag_regs, W_grid, b_grid, progress)
            kept = None
        best = best_index(results)
        self._set_results(results, labels is not None)
        r = results[best]
        self.depth_, self.diag_reg_, self.W_std_, self.b_std_ = r["depth"], r["diag_reg"], r["W_std"], r["b_std"]
        self.best_score_ = r["score"]
        self.best_params_ = {
            "depth": self.depth_,
            "diag_reg": self.diag_reg_,
            "W_std": self.W_std_,
            "b_std": self.b_std_,
        }
        progress.say(f"best: {self.best_params_}, score {self.best_score_:.6g}; refitting")
        self.best_estimator_ = self._plain(**self._plain_params(self.depth_, self.W_std_, self.b_std_, self.diag_reg_))
        if kept is not None and self.solver in ("auto", "eigh"):
            # the chosen Gram's eigenpairs are at hand: the refit is two products with V, no new
            # Gram and no factorisation (``solver_ == "eigh"``; predictions equal a plain fit's to round-off)
            fit_from_eigenpairs(self.best_estimator_, X, y, Y, kept, self.diag_reg_, labels is not None)
        else:
            self.best_estimator_.fit(X, y)
        self.n_iter_ = self.best_estimator_.n_iter_
        return r

    def _loo_search(self, X, Y, labels, base, depths, diag_regs, W_grid, b_grid, group, workers, split, progress):
        """Every candidate's leave-one-out score (in the order of ``cv_results_``) and the
        :class:`EigenLOO` of the best one's Gram (its eigenpairs, for the refit).

        The Grams of ``group`` depths come from one tile pass; ``workers`` of them are decomposed
        and scored at once on as many threads (LAPACK's ``dsyevd`` on ``n_jobs // workers`` BLAS
        threads each: on a few cores it gains little from its own threads, and a decomposition per
        thread keeps every core busy).  Only the best depth's eigenvectors outlive its scoring.
        """
        n_ridges = len(diag_regs)
        jobs = tiling.default_n_jobs() if self.n_jobs is None else self.n_jobs
        blas = ThreadpoolController().select(user_api="blas")
        # never more BLAS threads than the caller allows now (a threadpool_limits around fit, OPENBLAS_NUM_THREADS)
        blas_threads = max(1, min([jobs // workers] + [lib["num_threads"] for lib in blas.info()]))
        score_jobs = 1 if workers > 1 else jobs  # the scoring runs while the other decompositions do
        by_position = {}
        kept, kept_key = None, None
        structures = list(itertools.product(W_grid, b_grid))
        for c, (W_std, b_std) in enumerate(structures):
            arch = dataclasses.replace(base, W_std=W_std, b_std=b_std)
            for start in range(0, len(depths), group):
                chunk = depths[start : start + group]
                grams = list(_grams_by_depth(
                    arch, X, None, chunk, self.kernel, dtype=self.dtype, backend=self.backend, n_jobs=self.n_jobs,
                    progress=progress.bar,
                ))  # fmt: skip
                # each Gram is the search's scratch: its eigenvectors overwrite it
                scored = _decompose_and_score(
                    grams, Y, labels, diag_regs, workers, blas, blas_threads, score_jobs, split
                )
                del grams
                with contextlib.closing(scored):  # stops the decompositions at once if this loop raises
                    for g, loo, scores in scored:
                        depth = chunk[g]
                        position = (c * len(depths) + start + g) * n_ridges
                        by_position[position] = [
                            {"depth": depth, "diag_reg": r, "W_std": W_std, "b_std": b_std, **score}
                            for r, score in zip(diag_regs, scores)
                        ]
                        local = best_index(scores)
                        key = (-scores[local]["score"], scores[local].get("log_loss", 0.0), position + local)
                        if kept_key is None or key < kept_key:
                            kept, kept_key = loo, key
                        del loo
                        progress.say(f"W_std={W_std:g}, b_std={b_std}, depth {depth}: scored {n_ridges} ridges")
                last = c == len(structures) - 1 and start + group >= len(depths)
                if kept is not None and not last and not kept.V.flags.owndata:
                    # the Grams of a group are slices of one array: keep a copy of the best's
                    # eigenvectors so that the group's memory goes before the next group's comes
                    kept.V = kept.V.copy(order="F")
        results = [r for position in sorted(by_position) for r in by_position[position]]
        return results, kept

    def _kfold_search(self, X, y, Y, labels, splitter, depths, diag_regs, W_grid, b_grid, progress):
        folds = list(splitter.split(X, y))
        results = []
        for W_std, b_std, depth, r in itertools.product(W_grid, b_grid, depths, diag_regs):
            pred = np.empty_like(Y)
            for train, test in folds:
                params = {**self._plain_params(depth, W_std, b_std, r), "verbose": 0}
                est = self._plain(**params).fit(X[train], y[train])
                pred[test] = self._held_out(est, X[test], Y.shape[1])
            score = regression_score(Y, pred) if labels is None else classification_score(pred, labels)
            results.append({"depth": depth, "diag_reg": r, "W_std": W_std, "b_std": b_std, **score})
            progress.say(f"W_std={W_std:g}, b_std={b_std}, depth {depth}, diag_reg {r:.3g}: {score['score']:.6g}")
        return results

    def _set_results(self, results, classification: bool):
        scores = np.array([r["score"] for r in results])
        order = sorted(range(len(results)), key=lambda i: (-results[i]["score"], results[i].get("log_loss", 0.0)))
        rank = np.empty(len(results), dtype=np.int64)
        rank[order] = np.arange(1, len(results) + 1)
        self.cv_results_ = {
            "params": [{k: r[k] for k in ("depth", "diag_reg", "W_std", "b_std")} for r in results],
            "param_depth": np.array([r["depth"] for r in results]),
            "param_diag_reg": np.array([r["diag_reg"] for r in results]),
            "param_W_std": np.array([r["W_std"] for r in results]),
            "param_b_std": np.array([r["b_std"] for r in results], dtype=object),
            "mean_test_score": scores,
            "rank_test_score": rank,
        }
        if classification:
            self.cv_results_["mean_test_log_loss"] = np.array([r["log_loss"] for r in results])
            self.cv_results_["temperature"] = np.array([r["temperature"] for r in results])

    def _check_X(self, X):
        check_is_fitted(self, "best_estimator_")
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


_CV_DOC = (
    """
    Parameters
    ----------
    depths : sequence of int, default=(1, 2, 3, 4, 5)
        Candidate depths (``ntkfast.sklearn.DEPTHS``).
    diag_regs : sequence of float > 0, default=ntkfast.sklearn.CV_DIAG_REGS
        Candidate ridges relative to mean(diag K): 29 values from 1e-5 (noiseless data) to 100 (mostly
        noise), a quarter decade apart (the plain estimators' ``DIAG_REGS`` are every other one).
        Scoring them all costs one eigendecomposition per depth, plus one O(n^2 k) pass per ridge.
"""
    + STRUCTURE_DOC.replace(
        "    W_std : float, default=1.4\n    b_std : float or None, default=0.1\n        None: no bias.\n",
        "    W_std : float or sequence of float, default=1.4\n        A sequence is a grid.\n"
        "    b_std : float, None or a sequence of them, default=0.5 (``CV_B_STD``)\n"
        "        None: no bias.  A sequence is a grid.  0.5, not the plain estimators' 0.1: on standardised\n"
        "        inputs the bias then carries about a tenth of the first layer's variance, which scored\n"
        "        higher on the bundled data sets (docs/guide.md, \"Accuracy on bundled data\").\n",
    )
    + """    cv : None, int or cross-validation splitter, default=None
        None: exact closed-form leave-one-out (when n is too large for a dense eigendecomposition or
        the memory budget, 5-fold cross-validation on the solver the memory planner chooses, with a
        warning).  An int or splitter: that k-fold cross-validation, each fit by the plain estimator.
    solver, n_centers, tol, max_iter, random_state
        Passed to the refitted plain estimator (and to the k-fold fits); see :class:`NTKRegressor`.
"""
    + RUNTIME_DOC
    + """
    Attributes
    ----------
    depth_, diag_reg_, W_std_, b_std_ : the chosen candidate
    best_params_ : dict
        The same, as a dict.
    best_score_ : float
        Its cross-validated score.
    cv_results_ : dict of arrays
        Every candidate: ``params``, ``param_depth``, ``param_diag_reg``, ``param_W_std``,
        ``param_b_std``, ``mean_test_score``, ``rank_test_score`` (as ``GridSearchCV``).
    cv_method_ : str
        "loo" (closed form) or "<k>-fold".
    best_estimator_ : the plain estimator refitted with the chosen candidate on all the data
    n_iter_ : int
        The refit's solver iterations (1 for the direct solvers).
    n_features_in_ : int
"""
)


class NTKRegressorCV(RegressorMixin, _CVBase):
    """:class:`NTKRegressor` with depth and ridge chosen by exact leave-one-out (as ``RidgeCV``).

    The score is the leave-one-out R^2 (``1 - SSE / SST`` of the left-out predictions, averaged
    over outputs, so it reads like ``GridSearchCV``'s R^2 and ranks candidates by squared error);
    the closed form equals explicit refits of :class:`NTKRegressor` without each point (its target mean and its
    relative ridge recomputed, as a refit does), see ``ntkfast.sklearn._loo``.

    Cost: the Grams of every depth from one tile pass, one eigendecomposition per depth (LAPACK's
    divide-and-conquer, in the Gram's own memory; ``min(n_jobs, depths)`` threads share them, each
    on ``n_jobs // that`` BLAS threads, as the memory budget allows: ``_loo_eigh``), then one pass
    over the eigenvectors scores every ridge (O(n^2 k) per ridge, no n x n temporaries:
    ``ntkfast.sklearn._loo_sums``).  The eigendecompositions dominate.  The refit reuses the chosen
    depth's eigenpairs (no new Gram, no factorisation; ``best_estimator_.solver_ == "eigh"``) unless
    ``solver`` asks for another solver.  Memory: the Grams of the depths held at once, the best
    depth's eigenvectors, and up to one n^2 scratch per depth and one n^2 workspace per thread while
    they are decomposed (about 11 x 8 n^2 bytes for 5 depths on 2 threads).
    ``benchmarks/cv_speed.py`` times it against ``GridSearchCV(NTKRegressor(), same grid, cv=5)``
    (375 Cholesky fits for 5 x 15 candidates).

    Examples
    --------
    >>> import numpy as np
    >>> from ntkfast.sklearn import NTKRegressorCV
    >>> X = np.random.default_rng(0).standard_normal((60, 3))
    >>> reg = NTKRegressorCV(depths=(1, 2)).fit(X, np.sin(X[:, 0]))
    >>> reg.depth_ in (1, 2), len(reg.cv_results_["mean_test_score"])
    (True, 58)
    """

    _plain = NTKRegressor

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=[np.float64, np.float32])
        Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        self._search(X, np.asarray(y, dtype=np.float64), Y, None)
        return self

    @staticmethod
    def _held_out(est, X, k):
        return est.predict(X).reshape(len(X), k)

    def predict(self, X, return_std: bool = False):
        """The refitted :class:`NTKRegressor`'s predictions (``return_std`` as there)."""
        X = self._check_X(X)
        return self.best_estimator_.predict(X, return_std=return_std)


class NTKClassifierCV(ClassifierMixin, _CVBase):
    """:class:`NTKClassifier` with depth and ridge chosen by exact leave-one-out.

    Candidates are scored by leave-one-out accuracy of the one-hot kernel regression, ties broken
    by the leave-one-out log-loss at the temperature fitted on the same values; the refitted
    classifier keeps that temperature (``temperature_``).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from ntkfast.sklearn import NTKClassifierCV
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = NTKClassifierCV(depths=(1, 2)).fit(X, y)
    >>> clf.predict_proba(X[:1]).shape
    (1, 3)
    """

    _plain = NTKClassifier

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        binarizer = LabelBinarizer()
        Y = binarizer.fit_transform(y).astype(np.float64)
        self.classes_ = binarizer.classes_
        if len(self.classes_) < 2:
            raise ArgumentError(f"y: needs at least 2 classes, got {len(self.classes_)} class")
        if Y.shape[1] == 1:
            Y = np.hstack([1.0 - Y, Y])
        best = self._search(X, y, Y, Y.argmax(axis=1))
        self.temperature_ = best["temperature"]
        self.best_estimator_.temperature_ = self.temperature_  # from the same leave-one-out values
        return self

    def _held_out(self, est, X, k):
        """Held-out decision values in the columns of ``classes_`` (a class missing from the
        training fold gets -inf)."""
        d = est.decision_function(X)
        d = np.stack([np.zeros_like(d), d], axis=1) if d.ndim == 1 else d
        out = np.full((len(X), k), -np.inf)
        out[:, np.searchsorted(self.classes_, est.classes_)] = d
        return out

    def decision_function(self, X):
        X = self._check_X(X)
        return self.best_estimator_.decision_function(X)

    def predict(self, X):
        X = self._check_X(X)
        return self.best_estimator_.predict(X)

    def predict_proba(self, X):
        X = self._check_X(X)
        return self.best_estimator_.predict_proba(X)


NTKRegressorCV.__doc__ += _CV_DOC
NTKClassifierCV.__doc__ += (
    _CV_DOC
    + """    classes_ : ndarray of shape (n_classes,)
    temperature_ : float
        The softmax temperature fitted on the chosen candidate's leave-one-out decision values.
"""
)
