"""``ntkfast fit``: fit preprocessing + NTKRegressor/NTKClassifier to a CSV file, save with joblib.

The network is built once from the command line (``MLP.from_params(args)``) and every network
option reaches the estimator: the options the estimator has as parameters are passed to it by
name; one it does not have (an older ntkfast) is refused rather than silently dropped.  The
model file is written atomically (temporary file + rename): a failure never leaves a truncated
model under the requested name and never destroys a good one that was there.
"""

from __future__ import annotations

import time

import numpy as np

from ... import __version__
from ...spec import MLP
from ..console import describe, format_seconds, progress, say
from ..errors import EXIT_OK, CommandError
from ..estimate import cholesky_seconds, kernel_seconds
from ..files import atomic_output, output_file
from ..network import ARCH_OPTIONS, network
from ..parser import MAX_AUTO_CLASSES
from ..preprocess import feature_kinds, make_preprocessor, model_frame
from ..tables import read_table

MODEL_FORMAT = "ntkfast-model/2"  # /1: StandardScaler + estimator on a numeric array (still read by predict)
# state the plan (solver, memory, estimated time) from this many training rows on
PLAN_N = 2000


def task_of(task: str, y: np.ndarray) -> str:
    """--task auto: classification for text targets and integers with few distinct values."""
    if task != "auto":
        return task
    if y.dtype.kind not in "if":
        return "classification"
    if y.dtype.kind == "i" and len(np.unique(y)) <= min(MAX_AUTO_CLASSES, max(2, len(y) // 2)):
        return "classification"
    return "regression"


def make_estimator(task: str, args, arch: MLP):
    """NTKRegressor or NTKClassifier with the command line's options, the network's included."""
    from ...sklearn import NTKClassifier, NTKRegressor

    Estimator = NTKClassifier if task == "classification" else NTKRegressor
    given = {"kernel": args.kernel, "t": args.t, "lr": args.lr, "diag_reg": args.diag_reg, "solver": args.solver,
             "n_centers": args.n_centers or None}  # fmt: skip
    est = Estimator(**{k: v for k, v in given.items() if v is not None})  # the rest: the estimator's defaults
    accepted = est.get_params()
    default = MLP()
    values = {name: getattr(arch, name) for name in ARCH_OPTIONS}
    missing = [n for n in ARCH_OPTIONS if n not in accepted and values[n] != getattr(default, n)]
    # width only shapes the standard parameterization: the default width is no request
    if "width" in missing and arch.parameterization == "ntk" and args.width == default.width:
        missing.remove("width")
    if missing:
        raise CommandError(
            f"{Estimator.__name__} of this ntkfast has no parameter {', '.join(missing)}: the option(s) "
            f"{', '.join('--' + n.replace('_', '-') for n in missing)} cannot reach the model"
        )
    est.set_params(**{n: v for n, v in values.items() if n in accepted})
    if "verbose" in accepted and args.progress is not False:
        est.set_params(verbose=1)  # the estimators' own plan and progress lines
    return est


def cv_estimator(task: str, args, arch: MLP):
    """``--select``: ``NTKRegressorCV`` / ``NTKClassifierCV`` (depth and diag_reg chosen by exact
    leave-one-out) with the command line's network and solver options, or a CommandError where
    this ntkfast does not have them.  ``--cv K`` stays a report of the K-fold score."""
    from ... import sklearn as nf_sklearn

    name = "NTKClassifierCV" if task == "classification" else "NTKRegressorCV"
    Estimator = getattr(nf_sklearn, name, None)
    if Estimator is None:
        raise CommandError(f"--select: this ntkfast has no ntkfast.sklearn.{name}; fit a fixed depth instead")
    est = Estimator()
    accepted = est.get_params()
    if args.diag_reg is not None or args.t is not None or args.lr is not None:
        args.parser.error("--select chooses diag_reg itself and fits kernel regression: drop --diag-reg/--t/--lr")
    values = {n: getattr(arch, n) for n in ARCH_OPTIONS if n != "depth"}
    options = {"kernel": args.kernel, "solver": args.solver, "n_centers": args.n_centers or None, "depths": args.depths}
    values.update({k: v for k, v in options.items() if v is not None})
    missing = [n for n in values if n not in accepted and values[n] != getattr(MLP(), n, None)]
    if missing:
        raise CommandError(f"--select: {name} of this ntkfast has no parameter {', '.join(missing)}")
    est.set_params(**{n: v for n, v in values.items() if n in accepted})
    if "verbose" in accepted and args.progress is not False:
        est.set_params(verbose=1)
    return est


def _columns(table, args):
    """(target, id, feature columns, dropped columns) as column indices of ``table``."""
    t = table.column(args.target)
    id_col = None if args.id is None else table.column(args.id)
    if id_col == t:
        args.parser.error("--id: the ID column cannot be the target")
    if args.features is not None and args.drop is not None:
        args.parser.error("--features and --drop: give one of them")
    dropped = [table.column(c) for c in args.drop or []]
    if args.features is not None:
        features = [table.column(c) for c in args.features]
        clash = [table.names[c] for c in features if c in (t, id_col)]
        if clash:
            raise CommandError(f"--features: {', '.join(map(repr, clash))} is the target or the ID column")
        if len(set(features)) != len(features):
            raise CommandError("--features: a column is listed twice")
        dropped = [c for c in range(table.n_cols) if c not in features and c not in (t, id_col)]
    else:
        features = [c for c in range(table.n_cols) if c not in (t, id_col) and c not in dropped]
    if not features:
        raise CommandError(f"{table.path}: no feature columns besides the target {table.names[t]!r}")
    return t, id_col, features, dropped


def _plan(est, arch, X, n: int, k: int) -> str | None:
    """One line: solver, memory and estimated time of the fit (None for small n)."""
    if n < PLAN_N or not np.isinf(getattr(est, "t", np.inf)) or est.solver not in ("auto", "cholesky", "cg", "nystrom"):
        return None
    from ... import solvers
    from ...config import format_bytes

    m = None if est.n_centers is None else min(est.n_centers, n)
    plan = solvers.plan_solver(n, 0, k, X.shape[1], m, 8, None, est.solver)
    seconds = kernel_seconds(arch, X, get=est.kernel)
    if plan.method == "cholesky":
        seconds += cholesky_seconds(n)
    what = {"cholesky": "the n x n Gram then a Cholesky solve", "cg": "conjugate gradients on the matrix-free Gram",
            "nystrom": f"Nystrom with m = {plan.m} centres"}.get(plan.method, plan.method)  # fmt: skip
    memory = format_bytes(plan.needs.get(plan.method, 0))
    eta = f", about {format_seconds(seconds)} (estimated from samples)" if plan.method == "cholesky" else ""
    return f"plan: solver {plan.method!r} ({what}), {memory} of memory{eta}"


def run(args) -> int:
    arch = network(args)  # option errors before any reading
    out_path = output_file(args.output, inputs=(args.train,))
    table = read_table(args.train, args)  # file errors before slow imports

    import joblib
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import Pipeline

    t, id_col, features, dropped = _columns(table, args)
    y = table.labels(t)
    task = task_of(args.task, y)
    if task == "regression":
        if y.dtype.kind not in "if":
            raise CommandError(
                f"{args.train}: target column {table.names[t]!r} is not numeric; use --task classification"
            )
        y = y.astype(np.float64)
    elif len(np.unique(y)) < 2:
        raise CommandError(
            f"{args.train}: target column {table.names[t]!r} has a single class; classification needs two"
        )
    kinds = feature_kinds(table, features)
    names = [table.names[c] for c in features]
    X = model_frame(table, features, kinds, names)
    if args.depths is not None and not args.select:
        args.parser.error("--depths: only with --select")
    est = cv_estimator(task, args, arch) if args.select else make_estimator(task, args, arch)
    if args.n_centers and args.n_centers > len(X):
        raise CommandError(f"--n-centers {args.n_centers}: more Nystrom centres than the {len(X)} training rows")
    preprocess = make_preprocessor(names, kinds)
    model = Pipeline([("preprocess", preprocess), ("model", est)])
    what = "accuracy" if task == "classification" else "R^2"
    kind = f"classification, {len(np.unique(y))} classes" if task == "classification" else "regression"
    n_cat = sum(k != "numeric" for k in kinds)
    cat = f" ({n_cat} categorical, one-hot encoded)" if n_cat else ""
    say(f"{args.train}: {len(X)} rows, {len(names)} features{cat}, target {table.names[t]!r} ({kind}; see --task)")
    say(f"network: {describe(arch)}")
    plan = _plan(est, arch, preprocess.fit_transform(X), len(X), 1 if task == "regression" else len(np.unique(y)))
    if plan:
        say(plan)
    with progress(args.progress, args.log_every):
        if args.cv:
            if args.cv < 2:
                args.parser.error(f"--cv: expected 0 (off) or at least 2 folds, got {args.cv}")
            if args.cv > len(X):
                raise CommandError(f"--cv {args.cv}: more folds than the {len(X)} rows")
            scores = cross_val_score(model, X, y, cv=args.cv)
            say(f"{args.cv}-fold cross-validated {what}: {scores.mean():.4f} +- {scores.std():.4f}")
        t0 = time.perf_counter()
        model.fit(X, y)
    solver = getattr(est, "solver_", None)
    how = f" (solver {solver!r})" if solver else ""
    say(f"fitted {type(est).__name__} in {time.perf_counter() - t0:.2f} s{how}")
    if args.select:
        say(f"selected by {getattr(est, 'cv_method_', 'cross-validation')}: depth {est.depth_}, diag_reg "
            f"{est.diag_reg_:.3g} (best score {est.best_score_:.4g})")  # fmt: skip
    bundle = {
        "format": MODEL_FORMAT,
        "model": model,  # the sklearn Pipeline: joblib.load(path)["model"].predict(a DataFrame)
        "features": names,
        "kinds": kinds,
        "positions": features,  # column positions in TRAIN (for headerless test files)
        "n_columns": table.n_cols,
        "has_header": table.has_header,
        "target": table.names[t],
        "target_position": t,
        "id": None if id_col is None else table.names[id_col],
        "id_position": id_col,
        "dropped": [table.names[c] for c in dropped],
        "task": task,
        "ntkfast_version": __version__,
    }
    with atomic_output(out_path) as partial:
        joblib.dump(bundle, partial)
    say(f"saved the model to {out_path}")
    return EXIT_OK
