"""``ntkfast fit``: fit preprocessing + a model to a CSV file, save with joblib.

By default the model is ``NTKRegressorCV`` / ``NTKClassifierCV``: depth and diag_reg chosen by
exact leave-one-out (k-fold above the dense limit), the choice printed and saved with the model
(``bundle["selection"]``).  What the command line fixes is not selected (:func:`selection_of`):
``--depth`` (or a finite ``--t``) fits the plain NTKRegressor / NTKClassifier; ``--diag-reg``
alone makes the selection's ridge grid that one value.

The network is built once from the command line (``MLP.from_params(args)``) and every network
option reaches the estimator: the options the estimator has as parameters are passed to it by
name; one it does not have (an older ntkfast) is refused rather than silently dropped.  The
model file is written atomically (temporary file + rename): a failure never leaves a truncated
model under the requested name and never destroys a good one that was there.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np

from ... import __version__
from ...spec import MLP
from ..console import describe, format_seconds, progress, say
from ..errors import EXIT_OK, CommandError
from ..estimate import cholesky_seconds, kernel_seconds
from ..files import atomic_output, output_file
from ..network import ARCH_OPTIONS, network
from ..parser import B_STD_OF_ESTIMATOR, MAX_AUTO_CLASSES
from ..preprocess import feature_kinds, make_preprocessor, model_frame
from ..report import describe_without_depth, selection_lines, selection_table, selection_table_text
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


@dataclasses.dataclass(frozen=True)
class Selection:
    """What ``fit`` selects: ``select`` (the CV estimator, over ``depths`` x ``diag_regs``; None: its
    default grid) or the plain estimator, with ``fixed`` saying which option fixed what."""

    select: bool
    depths: tuple | None = None
    diag_regs: tuple | None = None
    fixed: str = ""


def selection_of(args) -> Selection:
    """The command line's choice: what the user fixed is not selected (usage errors for the
    combinations that contradict each other)."""
    finite_t = args.t is not None and math.isfinite(args.t)
    if args.lr is not None and not finite_t:
        args.parser.error("--lr: the learning rate matters only for a finite training time --t")
    if args.depth is not None or finite_t:
        fixed = f"--depth {args.depth}" if args.depth is not None else f"--t {args.t:g}"
        if args.depths is not None:
            args.parser.error(f"--depths: the depths the selection tries; {fixed} fits one model: give one of them")
        if args.cv:
            args.parser.error(
                f"--cv: the score table is the selection's; {fixed} fits one model (for a one-depth selection "
                "of the ridge, use --depths D instead of --depth D)"
            )
        return Selection(False, fixed=fixed)
    if args.diag_reg == 0:
        args.parser.error("--diag-reg 0: no ridge cannot be scored by leave-one-out; add --depth D to fit it as given")
    diag_regs = None if args.diag_reg in (None, "auto") else (float(args.diag_reg),)
    depths = None if args.depths is None else tuple(args.depths)
    return Selection(True, depths, diag_regs, "" if diag_regs is None else f"--diag-reg {args.diag_reg:g}")


def _arch_for(args, selection: Selection) -> MLP:
    """The network of the command line; without --depth, at the deepest candidate depth (so that
    every option is checked against the largest network the selection builds)."""
    from ...sklearn import CV_B_STD, DEPTHS, NTKRegressor

    if args.b_std is B_STD_OF_ESTIMATOR:  # not given: the default of the estimator that fits
        args.b_std = CV_B_STD if selection.select else NTKRegressor().b_std
    if args.depth is not None:
        return network(args)

    depth = max(selection.depths or DEPTHS) if selection.select else NTKRegressor().depth  # its default
    return network(argparse.Namespace(**{**vars(args), "depth": depth}))


def make_estimator(task: str, args, arch: MLP, selection: Selection):
    """NTKRegressor(CV) or NTKClassifier(CV) with the command line's options, the network's
    included; an option the estimator of this ntkfast does not have is refused, not dropped."""
    from ... import sklearn as nf_sklearn

    name = ("NTKClassifier" if task == "classification" else "NTKRegressor") + ("CV" if selection.select else "")
    Estimator = getattr(nf_sklearn, name, None)
    if Estimator is None:
        raise CommandError(f"this ntkfast has no ntkfast.sklearn.{name}; fix the depth with --depth D")
    if selection.select:
        given = {"kernel": args.kernel, "solver": args.solver, "n_centers": args.n_centers or None,
                 "depths": selection.depths, "diag_regs": selection.diag_regs}  # fmt: skip
        names = [n for n in ARCH_OPTIONS if n != "depth"]  # the depth is selected
    else:
        given = {"kernel": args.kernel, "t": args.t, "lr": args.lr, "diag_reg": args.diag_reg, "solver": args.solver,
                 "n_centers": args.n_centers or None}  # fmt: skip
        names = list(ARCH_OPTIONS)
    est = Estimator(**{k: v for k, v in given.items() if v is not None})  # the rest: the estimator's defaults
    accepted = est.get_params()
    default = MLP()
    values = {name: getattr(arch, name) for name in names}
    missing = [n for n in names if n not in accepted and values[n] != getattr(default, n)]
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


def selection_record(est, selection: Selection) -> dict:
    """What the saved model records about the choice of depth and diag_reg."""
    if selection.select:
        return {"method": est.cv_method_, "depth": int(est.depth_), "diag_reg": float(est.diag_reg_),
                "score": float(est.best_score_), "candidates": len(est.cv_results_["params"]),
                "fixed": selection.fixed or None}  # fmt: skip
    auto = est.get_params().get("diag_reg") == "auto"
    reg = float(getattr(est, "diag_reg_", est.diag_reg))
    return {"method": "fixed", "depth": int(est.arch_.depth), "diag_reg": reg, "diag_reg_auto": auto,
            "fixed": selection.fixed}  # fmt: skip


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


def _selection_plan(est, n: int) -> str:
    """One line: how the CV estimator will score its candidates (and the cost of a k-fold fallback)."""
    depths, regs = tuple(est.depths), tuple(est.diag_regs)
    grid = f"depths {','.join(map(str, depths))} x {len(regs)} diag_reg{'s' if len(regs) > 1 else ''}"
    method, why = est.search_plan(n)
    if method == "loo":
        return f"selection: {grid} by exact leave-one-out (one eigendecomposition per depth), then one refit"
    k = method.split("-")[0]
    fits = f"{int(k) * len(depths) * len(regs)} fits" if k.isdigit() else "a fit per fold and candidate"
    return (f"selection: {grid} by {method} cross-validation ({why}): {fits}, then one refit; "
            "--depth D --diag-reg R fits once")  # fmt: skip


def run(args) -> int:
    selection = selection_of(args)
    arch = _arch_for(args, selection)  # option errors before any reading
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
    est = make_estimator(task, args, arch, selection)
    if args.n_centers and args.n_centers > len(X):
        raise CommandError(f"--n-centers {args.n_centers}: more Nystrom centres than the {len(X)} training rows")
    if selection.select and len(X) < 2:
        raise CommandError(
            f"{args.train}: {len(X)} training row: leave-one-out selection needs at least 2 (or fix --depth D)"
        )
    if args.kfold:
        if args.kfold < 2:
            args.parser.error(f"--kfold: expected 0 (off) or at least 2 folds, got {args.kfold}")
        if args.kfold > len(X):
            raise CommandError(f"--kfold {args.kfold}: more folds than the {len(X)} rows")
    preprocess = make_preprocessor(names, kinds)
    model = Pipeline([("preprocess", preprocess), ("model", est)])
    what = "accuracy" if task == "classification" else "R^2"
    kind = f"classification, {len(np.unique(y))} classes" if task == "classification" else "regression"
    n_cat = sum(k != "numeric" for k in kinds)
    cat = f" ({n_cat} categorical, one-hot encoded)" if n_cat else ""
    say(f"{args.train}: {len(X)} rows, {len(names)} features{cat}, target {table.names[t]!r} ({kind}; see --task)")
    say(f"network: {describe(arch) if not selection.select else describe_without_depth(arch)}")
    if selection.select:
        say(_selection_plan(est, len(X)))
    else:
        plan = _plan(est, arch, preprocess.fit_transform(X), len(X), 1 if task == "regression" else len(np.unique(y)))
        if plan:
            say(plan)
    with progress(args.progress, args.log_every):
        if args.kfold:
            scores = cross_val_score(model, X, y, cv=args.kfold)
            inside = " (the selection rerun inside each fold)" if selection.select else ""
            say(f"{args.kfold}-fold cross-validated {what}{inside}: {scores.mean():.4f} +- {scores.std():.4f}")
        t0 = time.perf_counter()
        model.fit(X, y)
    fitted = est.best_estimator_ if selection.select else est
    solver = getattr(fitted, "solver_", None)
    how = f" (solver {solver!r})" if solver else ""
    say(f"fitted {type(est).__name__} in {time.perf_counter() - t0:.2f} s{how}")
    record = selection_record(est, selection)
    for line in selection_lines(record, what, table=args.cv):
        say(line)
    if args.cv:
        say(selection_table_text(selection_table(est, what)))
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
        "selection": record,  # how depth and diag_reg were chosen (selection_record)
        "ntkfast_version": __version__,
    }
    with atomic_output(out_path) as partial:
        joblib.dump(bundle, partial)
    say(f"saved the model to {out_path}")
    return EXIT_OK
