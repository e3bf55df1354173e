"""``ntkfast demo`` (the default command): NTKClassifier next to an RBF SVC and a random forest on
scikit-learn's bundled digits (nothing is downloaded), the NTK's spectrum, and a figure of both."""

from __future__ import annotations

import time

import numpy as np

from ... import __version__
from ..console import describe, say
from ..errors import EXIT_OK
from ..files import output_file
from ..report import encode_targets, spectrum_report


def run(args) -> int:
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from ...gram import kernel
    from ...sklearn import NTKClassifier
    from ...spec import MLP
    from ...spectrum import analyze
    from ..plots import plot_demo, pyplot

    if not args.no_figure:
        output_file(args.figure)
        pyplot()  # matplotlib missing: say so now, not after the work
    X, y = load_digits(return_X_y=True)
    if args.quick:
        keep = np.random.default_rng(0).permutation(len(y))[:500]
        X, y = X[keep], y[keep]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    clf = NTKClassifier()
    ntk = make_pipeline(StandardScaler(), clf)
    arch = MLP.from_params(clf)
    say(f"ntkfast {__version__} demo: scikit-learn's digits, {X.shape[0]} images x {X.shape[1]} pixels, 10 classes")
    say(f"network: {describe(arch)}")
    t0 = time.perf_counter()
    kernel(arch, X[:4].astype(np.float64))  # Numba compiles or loads its cache once, outside the timings
    say(f"(Numba kernels compiled or loaded from cache in {time.perf_counter() - t0:.1f} s)")
    say("5-fold cross-validated accuracy (same shuffled folds for every model):")
    results = []

    def report(name, short, scores, seconds, note=""):
        results.append((short, np.asarray(scores, dtype=float)))
        say(f"  {name:<38} {np.mean(scores):.4f} +- {np.std(scores):.4f}   {seconds:6.1f} s{note}")

    t0 = time.perf_counter()
    scores = cross_val_score(ntk, X, y, cv=folds)
    report("NTKClassifier (StandardScaler + NTK)", "NTK\n(ntkfast)", scores, time.perf_counter() - t0)

    grid = {"svc__C": [1.0, 10.0, 100.0], "svc__gamma": [0.003, 0.01, 0.03]}
    if args.quick:
        grid = {"svc__C": [10.0], "svc__gamma": [0.003, 0.01]}
    t0 = time.perf_counter()
    search = GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel="rbf")), grid, cv=folds).fit(X, y)
    best = search.best_index_
    svc_scores = [search.cv_results_[f"split{i}_test_score"][best] for i in range(folds.n_splits)]
    C, gamma = search.best_params_["svc__C"], search.best_params_["svc__gamma"]
    report(
        f"RBF SVC (C={C:g}, gamma={gamma:g})",
        "RBF SVC\n(grid-tuned)",
        svc_scores,
        time.perf_counter() - t0,
        f"   best of {len(search.cv_results_['params'])} on these folds (optimistic)",
    )

    t0 = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=50 if args.quick else 100, random_state=0)
    rf_scores = cross_val_score(rf, X, y, cv=folds)
    report(f"random forest ({rf.n_estimators} trees)", "random\nforest", rf_scores, time.perf_counter() - t0)

    # the spectrum of the NTK on the (standardized) images, with the centred one-hot targets
    # NTKClassifier regresses on
    Xs = StandardScaler().fit_transform(X)
    t0 = time.perf_counter()
    K = kernel(arch, Xs)
    Y, _ = encode_targets(y, one_hot=True)
    res = analyze(K, Y)
    say(
        f"\nNTK spectrum on all {len(y)} images ({K.shape[0]} x {K.shape[0]} Gram + eigh, "
        f"{time.perf_counter() - t0:.1f} s), 10 centred one-hot outputs:"
    )
    spectrum_report(res)
    if args.no_figure:
        return EXIT_OK
    plot_demo(results, res, args.figure, f"ntkfast demo on digits: NTK of a {describe(arch)}")
    say(f"\nsaved the figure to {args.figure}")
    return EXIT_OK
