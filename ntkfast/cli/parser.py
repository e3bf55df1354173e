"""The argument parser of the ``ntkfast`` command.

Each subcommand is a module ``ntkfast.cli.commands.<name>`` with a function ``run(args) -> int``;
the parser only records the command's name (``args.command``) and :func:`ntkfast.cli.main`
imports the module when it runs, so ``ntkfast --help`` imports no command.

The network options' ``dest`` names are MLP's field names (depth, activation, W_std, b_std,
parameterization, width, residual): :meth:`ntkfast.MLP.from_params` builds the network from the
parsed arguments, so every option reaches it.
"""

from __future__ import annotations

import argparse
import inspect
import math

from .. import __version__
from ..spec import ACTIVATIONS
from .errors import EXIT_CODES

__all__ = ["build_parser", "COMMANDS", "MAX_AUTO_CLASSES"]

# integer targets with at most this many distinct values count as class labels for --task auto
MAX_AUTO_CLASSES = 20

COMMANDS = ("demo", "kernel", "fit", "predict", "spectrum", "bench")


def _number(convert, strict: bool, what: str):
    """An argparse type: ``convert(text)``, then > 0 (``strict``) or >= 0; NaN fails both."""

    def parse(text: str):
        try:
            value = convert(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > 0 if strict else value >= 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _number(int, True, "a positive integer")
nonneg_int = _number(int, False, "an integer >= 0")
nonneg_float = _number(float, False, "a number >= 0")
positive_float = _number(float, True, "a number > 0")  # 'inf' allowed: t = inf means convergence


def finite_positive_float(text: str) -> float:
    value = positive_float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _depths(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated depths such as 1,2,3, got {text!r}") from None
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct depths >= 0, got {text!r}")
    return values


def _b_std(text: str) -> float | None:
    if text.lower() == "none":
        return None
    return nonneg_float(text)


def _diag_reg(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    return nonneg_float(text)


def _names(text: str) -> list[str]:
    """'a,b,c' -> ['a', 'b', 'c'] (column names or indices)."""
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated column names, got {text!r}")
    return names


def _activation(text: str):
    """NAME or NAME:P1,P2,... -> the activation (parameters as its constructor takes them)."""
    name, _, params = text.partition(":")
    key = name.strip().lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise argparse.ArgumentTypeError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    if not params:
        return key
    make = ACTIVATIONS[key]
    allowed = [q for q in inspect.signature(make).parameters if q != "name"]
    try:
        values = [int(v) if v.strip().lstrip("+-").isdigit() else float(v) for v in params.split(",")]
        if len(values) > len(allowed):
            raise TypeError(f"takes at most {len(allowed)}: {', '.join(allowed) or 'none'}")
        return make(*values)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"bad parameters for activation {key!r}: {params!r} ({exc})") from None


class _EstimatorDefault:
    """A default the command resolves to the fitting estimator's own (not a string: argparse would parse it)."""

    def __repr__(self) -> str:
        return "the estimator's"


B_STD_OF_ESTIMATOR = _EstimatorDefault()  # fit's --b-std default


def _arch_parent(depth_help: str | None = None) -> argparse.ArgumentParser:
    """The network options shared by kernel, fit and spectrum (defaults = NTKRegressor's).

    Every ``dest`` is an ``MLP`` field name (``MLP.from_params(args)`` reads them).  With
    ``depth_help`` (``fit``), ``--depth`` has no default (None: chosen by the command) and that help,
    and ``--b-std`` defaults to :data:`B_STD_OF_ESTIMATOR` (the command uses the estimator's default)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("network (an MLP: depth x (Dense, activation), then a Dense readout)")
    if depth_help is None:
        g.add_argument("--depth", type=nonneg_int, default=3, help="hidden layers (default: %(default)s)")
    else:
        g.add_argument("--depth", type=nonneg_int, default=None, help=depth_help)
    g.add_argument(
        "--activation",
        type=_activation,
        default="relu",
        metavar="NAME[:P,...]",
        help=f"one of {', '.join(ACTIVATIONS)}; parameters after a colon, e.g. leaky_relu:0.2, erf:1,2,0, "
        "rectified_monomial:2 (default: %(default)s)",
    )
    g.add_argument("--W-std", dest="W_std", type=nonneg_float, default=1.4, help="weight std (default: %(default)s)")
    if depth_help is None:
        g.add_argument(
            "--b-std", dest="b_std", type=_b_std, default=0.1,
            help="bias std, or 'none' for no bias (default: %(default)s)",
        )  # fmt: skip
    else:
        g.add_argument(
            "--b-std", dest="b_std", type=_b_std, default=B_STD_OF_ESTIMATOR,
            help="bias std, or 'none' for no bias (default: the estimator's own: NTKRegressorCV's / NTKClassifierCV's "
            "when selecting, NTKRegressor's / NTKClassifier's with --depth or --t)",
        )  # fmt: skip
    g.add_argument("--parameterization", choices=("ntk", "standard"), default="ntk", help="(default: %(default)s)")
    g.add_argument(
        "--width", type=positive_int, default=512, help="hidden width, used by the standard parameterization"
    )
    g.add_argument("--residual", action="store_true", help="pre-activation residual blocks")
    return p


def _table_parent() -> argparse.ArgumentParser:
    """How to read CSV input files."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("input files (.npy, or .csv/.tsv text read with pandas)")
    g.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the first CSV line holds column names (default: detected; an ambiguous first line is refused)",
    )
    g.add_argument(
        "--delimiter", default=None, help="CSV field separator (default: sniffed among , ; tab |; a tab for .tsv)"
    )
    g.add_argument("--encoding", default=None, help="text encoding of CSV files (default: UTF-8)")
    g.add_argument(
        "--decimal", choices=(".", ","), default=".", help="decimal mark of CSV numbers (default: %(default)s)"
    )
    g.add_argument(
        "--na-values",
        type=_names,
        default=None,
        metavar="A,B",
        help="extra cell values that mean 'missing' (besides the empty cell, NA, NaN, null, ...)",
    )
    return p


def _progress_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("progress")
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr: a bar in a terminal, a log line with the ETA every --log-every seconds "
        "otherwise (default: on)",
    )
    g.add_argument(
        "--log-every",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between progress lines when stderr is not a terminal (default: %(default)s)",
    )
    return p


def _add_command(sub, name: str, help: str, description: str, parents=()) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=EXIT_CODES,
        parents=list(parents),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(parser=p)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ntkfast`` command (one subparser per command)."""
    parser = argparse.ArgumentParser(
        prog="ntkfast",
        description=(
            "Infinite-width NTK/NNGP kernels of MLPs: kernel matrices, kernel regression models and\n"
            "spectra from the command line.  With no command, runs `demo`.\n"
            "Run `ntkfast COMMAND --help` for a command's options."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ntkfast {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    arch, table, progress = _arch_parent(), _table_parent(), _progress_parent()

    p = _add_command(
        sub,
        "demo",
        help="the default: NTK classifier vs SVC and random forest on scikit-learn's digits, spectrum, figure",
        description=(
            "On scikit-learn's bundled digits data (1797 images, 64 features; nothing is downloaded):\n"
            "5-fold cross-validated accuracy of NTKClassifier next to a grid-tuned RBF SVC and a random\n"
            "forest, then the NTK's spectrum and the convergence rates it predicts, and a figure of both."
        ),
    )
    p.add_argument("--figure", default="ntkfast_demo.png", help="where to save the figure (default: %(default)s)")
    p.add_argument("--no-figure", action="store_true", help="do not make the figure")
    p.add_argument("--quick", action="store_true", help="a 500-image subset and smaller baselines (a smoke test)")

    p = _add_command(
        sub,
        "kernel",
        help="the Gram matrix K(X, X) or K(X, Y) of a data file, written to .npy",
        description=(
            "Compute the NTK (or NNGP) Gram matrix between the rows of INPUT (and of --Y) and write it\n"
            "to a .npy file.  The output is written through a memory map, so it may be larger than\n"
            "memory; its disk space is checked and reserved first, and it appears under its name only\n"
            "once complete (an interrupted or failed run leaves no partial file)."
        ),
        parents=[arch, table, progress],
    )
    p.add_argument("input", metavar="INPUT", help="data file, one row per point (.npy or .csv)")
    p.add_argument("-o", "--output", required=True, help="output .npy file")
    p.add_argument("--Y", dest="Y", metavar="INPUT2", help="second data file: compute K(INPUT, INPUT2)")
    p.add_argument("--get", choices=("ntk", "nngp"), default="ntk", help="which kernel (default: %(default)s)")
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="default: float64 unless the inputs are float32 .npy",
    )
    p.add_argument(
        "--standardize",
        action="store_true",
        help="scale INPUT's columns to mean 0, std 1 first (INPUT2 with INPUT's statistics)",
    )
    p.add_argument("--n-jobs", type=positive_int, default=None, help="threads (default: all cores)")

    p = _add_command(
        sub,
        "fit",
        help="fit an NTK regressor or classifier to a CSV file (depth and ridge chosen for you) and save it",
        description=(
            "Fit a scikit-learn Pipeline to TRAIN and save it with joblib: a ColumnTransformer\n"
            "(numeric columns: median imputation + StandardScaler; text columns: most-frequent\n"
            "imputation + one-hot encoding), then the model.  The features are every column except the\n"
            "target, --id and --drop (or exactly --features).  `predict` applies the same transformation.\n"
            "\n"
            "Model selection (the default): NTKRegressorCV / NTKClassifierCV score every depth of\n"
            "--depths and every ridge of ntkfast.sklearn.DIAG_REGS (1e-5 to 100) by exact closed-form\n"
            "leave-one-out (one eigendecomposition per depth; above the dense eigendecomposition limit\n"
            "or the memory budget, 5-fold cross-validation instead, and the command says so), then refit\n"
            "the best on all rows; the chosen depth and diag_reg are printed and saved with the model.\n"
            "What you fix is not selected:\n"
            "  --depth D       the plain NTKRegressor / NTKClassifier of depth D is fitted (its diag_reg\n"
            "                  'auto' still picks the ridge by leave-one-out, unless --diag-reg fixes it);\n"
            "  --diag-reg R    (without --depth) the selection over depths with the one-value grid R;\n"
            "  --t / --lr      a network trained for a finite time: the plain estimator (depth 3 unless\n"
            "                  --depth), since the selection scores kernel regression (t = inf)."
        ),
        parents=[_arch_parent("hidden layers: fixes the depth and fits the plain estimator (default: chosen "
                              "among --depths by leave-one-out)"), table, progress],
    )  # fmt: skip
    p.add_argument("train", metavar="TRAIN", help="training data (.csv)")
    p.add_argument(
        "--target", required=True, metavar="COLUMN", help="target column: a header name, or a 0-based index (-1: last)"
    )
    p.add_argument("-o", "--output", required=True, help="model file to write (e.g. model.joblib)")
    p.add_argument("--features", type=_names, default=None, metavar="A,B", help="the feature columns (default: all)")
    p.add_argument("--drop", type=_names, default=None, metavar="A,B", help="columns that are not features")
    p.add_argument(
        "--id", default=None, metavar="COLUMN", help="an ID column: not a feature; `predict` copies it to its output"
    )
    p.add_argument(
        "--task",
        choices=("auto", "regression", "classification"),
        default="auto",
        help=f"auto: classification for text, or integers with at most {MAX_AUTO_CLASSES} distinct values "
        "(default: %(default)s)",
    )
    # estimator options: None (not given) leaves the estimator's own default
    p.add_argument("--kernel", choices=("ntk", "nngp"), default=None, help="(default: ntk)")
    p.add_argument(
        "--depths",
        type=_depths,
        default=None,
        metavar="D1,D2",
        help="the depths the selection tries (default: 1,2,3,4,5); not with --depth",
    )
    p.add_argument(
        "--diag-reg",
        type=_diag_reg,
        default=None,
        help="ridge, relative to the mean of diag K: fixes it (a one-value grid for the selection); 'auto': "
        "chosen by leave-one-out (default: auto)",
    )
    p.add_argument(
        "--t",
        type=positive_float,
        default=None,
        help="training time of the infinitely wide network: a finite t fits the plain estimator "
        "(default: inf, kernel regression)",
    )
    p.add_argument(
        "--lr", type=finite_positive_float, default=None, help="learning rate, used with a finite --t (default: 1)"
    )
    p.add_argument(
        "--solver",
        choices=("auto", "cholesky", "eigh", "cg", "nystrom"),
        default=None,
        help="of the final fit (and of k-fold selection fits): auto: exact when the Gram fits in memory, "
        "else CG or Nystrom (default: auto)",
    )
    p.add_argument("--n-centers", type=nonneg_int, default=None, help="Nystrom centres (default: 2 sqrt(n))")
    p.add_argument(
        "--cv",
        action="store_true",
        help="print the cross-validated score of every candidate (depth x diag_reg) of the selection",
    )
    p.add_argument(
        "--kfold",
        type=nonneg_int,
        default=0,
        metavar="K",
        help="also print the K-fold cross-validated score of the whole fit, the selection rerun inside "
        "each fold (default: off)",
    )

    p = _add_command(
        sub,
        "predict",
        help="predict with a model saved by `ntkfast fit`",
        description=(
            "Predict for the rows of TEST with a model written by `ntkfast fit`.  Columns are matched by\n"
            "name when both files have a header, else by position; the target column is dropped if\n"
            "present (and the score is printed).  The predictions are in a column <target>_pred, after\n"
            "the ID column when the model has one.  Model files are pickles: load only files you trust."
        ),
        parents=[table],
    )
    p.add_argument("model", metavar="MODEL", help="model file from `ntkfast fit`")
    p.add_argument("test", metavar="TEST", help="data to predict for (.csv or .npy)")
    p.add_argument("-o", "--output", default="-", help="predictions CSV (default: stdout)")
    p.add_argument(
        "--target", metavar="COLUMN", default=None, help="target column to drop (default: the model's, if present)"
    )
    p.add_argument(
        "--id", default=None, metavar="COLUMN", help="ID column to copy to the output (default: the model's --id)"
    )
    p.add_argument("--proba", action="store_true", help="also write class probabilities (classifiers)")

    p = _add_command(
        sub,
        "spectrum",
        help="eigenvalues of the NTK of a data file and the convergence rates they predict",
        description=(
            "Eigendecompose the NTK (or NNGP) Gram matrix of INPUT (or, with --precomputed, the square\n"
            "matrix in INPUT) and report the top eigenvalues, condition number, power-law decay, largest\n"
            "stable learning rate and, with --y, the predicted training-loss curve of gradient descent."
        ),
        parents=[arch, table],
    )
    p.add_argument("input", metavar="INPUT", help="data file (.npy or .csv), or a kernel matrix with --precomputed")
    p.add_argument(
        "--y",
        metavar="COLUMN|FILE",
        default=None,
        help="targets: a column of INPUT (name or index; removed from the features) or a .npy/.csv file",
    )
    p.add_argument("--one-hot", action="store_true", help="treat the targets as class labels (text labels always are)")
    p.add_argument(
        "--precomputed", action="store_true", help="INPUT is a square kernel matrix (e.g. from `ntkfast kernel`)"
    )
    p.add_argument("-k", type=positive_int, default=None, help="only the top k eigenpairs (default: all)")
    p.add_argument(
        "--lr", type=finite_positive_float, default=None, help="learning rate for the rates (default: N / lambda_max)"
    )
    p.add_argument("--kernel", choices=("ntk", "nngp"), default="ntk", help="(default: %(default)s)")
    p.add_argument("--standardize", action="store_true", help="scale the feature columns to mean 0, std 1 first")
    p.add_argument("--plot", metavar="PNG", default=None, help="save a figure")

    p = _add_command(
        sub,
        "bench",
        help="time the kernel against a bare X @ X.T in this process (speed ratios)",
        description="Ratio benchmarks: the kernel's time over a BLAS X @ X.T of the same array, in one process.",
    )
    # every option here is passed to ntkfast.bench.main by its dest name
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--spectrum", action="store_true", help="top-50 eigenpairs: matrix-free eigsh vs dense eigh")
    p.add_argument("--fit", action="store_true", help="NTKRegressor().fit, n = 10 000, d = 50: kernel vs solver")
    p.add_argument("--scale", action="store_true", help="Nystrom NTK regression at n = 1 000 000 vs the exact solver")
    p.add_argument("--dask", action="store_true", help="the Nystrom fit at n = 200 000: one process vs a LocalCluster")
    p.add_argument("--startup", action="store_true", help="import and first-call times in fresh processes (warm cache)")
    p.add_argument("--activations", action="store_true",
                   help="tanh, SiLU, ELU, ... (Hermite series) vs ReLU: depth-3 NTK, n = 4000, d = 784")
    p.add_argument(
        "--limits", action="store_true", help="one core's sqrt/div and bare-recursion rates (in cache) vs the engine's"
    )
    p.add_argument("--depths", action="store_true",
                   help="kernel(..., depths=(1..5)) vs the deepest call, with the floor of writing the extra outputs")
    p.add_argument("--grad", action="store_true", help="GP-gradient pass (K with dK/dW_std, dK/db_std) vs the kernel")
    return parser
