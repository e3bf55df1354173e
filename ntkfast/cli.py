"""The ``ntkfast`` command (also ``python -m ntkfast``).

Subcommands: ``demo`` (the default), ``kernel``, ``fit``, ``predict``, ``spectrum`` and ``bench``.
Each one is a function ``_cmd_<name>(args) -> int``; :func:`main` parses the arguments, runs the
command and turns the errors a user can cause (missing or malformed files, unknown columns, shape
mismatches, and the ``ValueError`` of the library's own input checks, which name the argument)
into one line ``ntkfast <command>: error: ...`` on stderr and exit code 1.  Argument errors are
argparse's (exit code 2).  Anything else is a bug and keeps its traceback (so does everything
with ``NTKFAST_DEBUG=1``).

Tables are read with NumPy (``np.loadtxt``; the ``csv`` module only to find and name a bad cell or
for text columns), since pandas is not a dependency.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import io
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .spec import ACTIVATIONS

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_FAILURE = 1  # the command could not do its job: bad file, bad data, out of memory, ...
EXIT_USAGE = 2  # the command line itself is wrong (argparse's convention)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

EXIT_CODES = """\
exit codes:
  0    success
  1    the command failed: missing or unreadable file, unknown column, non-numeric
       features, shape mismatch, not enough memory (one line on stderr says why)
  2    invalid command line: unknown command or option, bad option value
  130  interrupted (Ctrl-C)
Set NTKFAST_DEBUG=1 to get a traceback instead of the one-line error message."""

MODEL_FORMAT = "ntkfast-model/1"
# integer targets with at most this many distinct values count as class labels for --task auto
_MAX_AUTO_CLASSES = 20

# Where a command's arguments end and our own bookkeeping begins: vars(args) minus these is
# what a command receives as keyword arguments (bench), so adding an option is one line.
_INTERNAL = ("command", "func", "parser")


class CommandError(Exception):
    """An error the user can fix (a file, a column, a shape); reported without a traceback."""


# --------------------------------------------------------------------------------------- parser
def _number(convert, strict: bool, what: str):
    """An argparse type: ``convert(text)``, then > 0 (``strict``) or >= 0; NaN fails both."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > 0 if strict else value >= 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, True, "a positive integer")
_nonneg_int = _number(int, False, "an integer >= 0")
_nonneg_float = _number(float, False, "a number >= 0")
_positive_float = _number(float, True, "a number > 0")  # 'inf' allowed: t = inf means convergence


def _b_std(text: str) -> float | None:
    if text.lower() == "none":
        return None
    return _nonneg_float(text)


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


def _arch_parent() -> argparse.ArgumentParser:
    """The network options shared by kernel, fit and spectrum (defaults = NTKRegressor's)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("network (an MLP: depth x (Dense, activation), then a Dense readout)")
    g.add_argument("--depth", type=_nonneg_int, default=3, help="hidden layers (default: %(default)s)")
    g.add_argument(
        "--activation",
        type=_activation,
        default="relu",
        metavar="NAME[:P,...]",
        help=f"one of {', '.join(ACTIVATIONS)}; parameters after a colon, e.g. leaky_relu:0.2, erf:1,2,0, "
        "rectified_monomial:2 (default: %(default)s)",
    )
    g.add_argument("--W-std", dest="W_std", type=_nonneg_float, default=1.4, help="weight std (default: %(default)s)")
    g.add_argument(
        "--b-std", dest="b_std", type=_b_std, default=0.1, help="bias std, or 'none' for no bias (default: %(default)s)"
    )
    g.add_argument("--parameterization", choices=("ntk", "standard"), default="ntk", help="(default: %(default)s)")
    g.add_argument(
        "--width", type=_positive_int, default=512, help="hidden width, used by the standard parameterization"
    )
    g.add_argument("--residual", action="store_true", help="pre-activation residual blocks")
    return p


def _table_parent() -> argparse.ArgumentParser:
    """How to read CSV input files."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("input files (.npy, or .csv/.tsv text with numbers)")
    g.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the first CSV line holds column names (default: detected, a header when it is not all numbers)",
    )
    g.add_argument("--delimiter", default=None, help="CSV field separator (default: ',' or a tab for .tsv)")
    return p


def _add_command(sub, name: str, func, help: str, description: str, parents=()) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=EXIT_CODES,
        parents=list(parents),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func, parser=p)
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
    arch, table = _arch_parent(), _table_parent()

    p = _add_command(
        sub,
        "demo",
        _cmd_demo,
        help="the default: NTK classifier vs SVC and random forest on scikit-learn's digits, spectrum, figure",
        description=(
            "On scikit-learn's bundled digits data (1797 images, 64 features; nothing is downloaded):\n"
            "5-fold cross-validated accuracy of NTKClassifier next to a grid-tuned RBF SVC and a random\n"
            "forest, then the NTK's spectrum and the convergence rates it predicts, and a figure."
        ),
    )
    p.add_argument("--figure", default="ntkfast_demo.png", help="where to save the figure (default: %(default)s)")
    p.add_argument("--no-figure", action="store_true", help="do not make the figure")
    p.add_argument("--quick", action="store_true", help="a 500-image subset and smaller baselines (a smoke test)")

    p = _add_command(
        sub,
        "kernel",
        _cmd_kernel,
        help="the Gram matrix K(X, X) or K(X, Y) of a data file, written to .npy",
        description=(
            "Compute the NTK (or NNGP) Gram matrix between the rows of INPUT (and of --Y) and write it\n"
            "to a .npy file.  The output is written through a memory map, so it may be larger than\n"
            "memory; it appears under its name only once complete."
        ),
        parents=[arch, table],
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
    p.add_argument("--n-jobs", type=_positive_int, default=None, help="threads (default: all cores)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )

    p = _add_command(
        sub,
        "fit",
        _cmd_fit,
        help="fit an NTK regressor or classifier to a CSV file and save it with joblib",
        description=(
            "Fit StandardScaler + NTKRegressor (or NTKClassifier) to the feature columns of TRAIN and\n"
            "the --target column, and save the fitted model with joblib.  All other columns are the\n"
            "features and must be numeric; a classification target may be text."
        ),
        parents=[arch, table],
    )
    p.add_argument("train", metavar="TRAIN", help="training data (.csv)")
    p.add_argument(
        "--target", required=True, metavar="COLUMN", help="target column: a header name, or a 0-based index (-1: last)"
    )
    p.add_argument("-o", "--output", required=True, help="model file to write (e.g. model.joblib)")
    p.add_argument(
        "--task",
        choices=("auto", "regression", "classification"),
        default="auto",
        help=f"auto: classification for text, or integers with at most {_MAX_AUTO_CLASSES} distinct values "
        "(default: %(default)s)",
    )
    p.add_argument("--kernel", choices=("ntk", "nngp"), default="ntk", help="(default: %(default)s)")
    p.add_argument(
        "--diag-reg",
        type=_nonneg_float,
        default=1e-4,
        help="ridge, relative to the mean of diag K (default: %(default)s)",
    )
    p.add_argument(
        "--t",
        type=_positive_float,
        default=math.inf,
        help="training time of the infinitely wide network (default: inf, kernel regression)",
    )
    p.add_argument(
        "--lr", type=_positive_float, default=1.0, help="learning rate, used with a finite --t (default: %(default)s)"
    )
    p.add_argument(
        "--solver",
        choices=("auto", "cholesky", "eigh", "cg", "nystrom"),
        default="auto",
        help="auto: exact when the Gram fits in memory, else CG or Nystrom (default: %(default)s)",
    )
    p.add_argument("--n-centers", type=_nonneg_int, default=None, help="Nystrom centres (default: 2 sqrt(n))")
    p.add_argument(
        "--cv",
        type=_nonneg_int,
        default=0,
        metavar="K",
        help="also print the K-fold cross-validated score (default: off)",
    )

    p = _add_command(
        sub,
        "predict",
        _cmd_predict,
        help="predict with a model saved by `ntkfast fit`",
        description=(
            "Predict for the rows of TEST with a model written by `ntkfast fit`.  Columns are matched by\n"
            "name when both files have a header, else by position; the target column is dropped if\n"
            "present (and the score is printed).  Model files are pickles: load only files you trust."
        ),
        parents=[table],
    )
    p.add_argument("model", metavar="MODEL", help="model file from `ntkfast fit`")
    p.add_argument("test", metavar="TEST", help="data to predict for (.csv or .npy)")
    p.add_argument("-o", "--output", default="-", help="predictions CSV (default: stdout)")
    p.add_argument(
        "--target", metavar="COLUMN", default=None, help="target column to drop (default: the model's, if present)"
    )
    p.add_argument("--proba", action="store_true", help="also write class probabilities (classifiers)")

    p = _add_command(
        sub,
        "spectrum",
        _cmd_spectrum,
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
    p.add_argument("-k", type=_positive_int, default=None, help="only the top k eigenpairs (default: all)")
    p.add_argument(
        "--lr", type=_positive_float, default=None, help="learning rate for the rates (default: N / lambda_max)"
    )
    p.add_argument("--kernel", choices=("ntk", "nngp"), default="ntk", help="(default: %(default)s)")
    p.add_argument("--standardize", action="store_true", help="scale the feature columns to mean 0, std 1 first")
    p.add_argument("--plot", metavar="PNG", default=None, help="save a figure (needs matplotlib)")

    p = _add_command(
        sub,
        "bench",
        _cmd_bench,
        help="time the kernel against a bare X @ X.T in this process (speed ratios)",
        description="Ratio benchmarks: the kernel's time over a BLAS X @ X.T of the same array, in one process.",
    )
    # every option here is passed to ntkfast.bench.main by its dest name
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--spectrum", action="store_true", help="top-50 eigenpairs: matrix-free eigsh vs dense eigh")
    p.add_argument("--fit", action="store_true", help="NTKRegressor().fit, n = 10 000, d = 50: kernel vs solver")
    p.add_argument("--scale", action="store_true", help="Nystrom NTK regression at n = 1 000 000 vs the exact solver")
    p.add_argument("--dask", action="store_true", help="the Nystrom fit at n = 200 000: one process vs a LocalCluster")
    return parser


# ---------------------------------------------------------------------------------------- files
def _input_file(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CommandError(f"{path}: no such file")
    if p.is_dir():
        raise CommandError(f"{path}: is a directory, expected a file")
    return p


def _output_file(path: str, inputs=()) -> Path:
    """Check an output path before the work is done, not after."""
    p = Path(path)
    if p.is_dir():
        raise CommandError(f"{path}: is a directory, expected a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise CommandError(f"{path}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise CommandError(f"{path}: directory {str(parent)!r} is not writable")
    for q in inputs:
        if q is not None and p.exists() and Path(q).exists() and p.samefile(q):
            raise CommandError(f"{path}: the output would overwrite the input")
    return p


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass
class _Table:
    """A data file as columns: numbers from .npy, text cells from CSV, converted on request."""

    path: Path
    names: list[str]  # header names; "0", "1", ... without a header
    has_header: bool
    cells: np.ndarray  # (n_rows, n_cols): float64 (.npy) or str (CSV)
    lines: np.ndarray  # 1-based line (CSV) or 0-based row (.npy) of each row, for messages
    unit: str = "line"

    @property
    def n_cols(self) -> int:
        return self.cells.shape[1]

    def column(self, spec: str) -> int:
        """Index of a column given by header name or 0-based (negative from the end) index."""
        if self.has_header and spec in self.names:
            if self.names.count(spec) > 1:
                raise CommandError(f"{self.path}: column name {spec!r} appears more than once")
            return self.names.index(spec)
        try:
            i = int(spec)
        except ValueError:
            shown = ", ".join(repr(n) for n in self.names[:20]) + (", ..." if self.n_cols > 20 else "")
            what = f"columns are {shown}" if self.has_header else "the file has no header, give a 0-based index"
            raise CommandError(f"{self.path}: no column named {spec!r} ({what})") from None
        if not -self.n_cols <= i < self.n_cols:
            raise CommandError(f"{self.path}: column index {i} is out of range for {self.n_cols} columns")
        return i % self.n_cols

    def numeric(self, cols) -> np.ndarray:
        """float64 array (n_rows, len(cols)); names the first bad cell otherwise."""
        cols = list(cols)
        if self.cells.dtype.kind == "f":
            out = np.asarray(self.cells[:, cols], dtype=np.float64)
        else:
            out = np.empty((self.cells.shape[0], len(cols)))
            for k, c in enumerate(cols):
                try:
                    out[:, k] = self.cells[:, c].astype(np.float64)
                except ValueError:
                    row = next(r for r, v in enumerate(self.cells[:, c]) if not _is_number(v))
                    value = str(self.cells[row, c])
                    what = "an empty value" if value == "" else f"{value!r}, not a number"
                    raise CommandError(
                        f"{self.path}: column {self.names[c]!r} has {what} on line {self.lines[row]}"
                    ) from None
        bad = ~np.isfinite(out)
        if bad.any():
            row, k = np.argwhere(bad)[0]
            raise CommandError(
                f"{self.path}: column {self.names[cols[k]]!r} has a NaN or infinite value on "
                f"{self.unit} {self.lines[row]}"
            )
        return out

    def labels(self, col: int) -> np.ndarray:
        """A target column: int or float when every cell is a number, else the text."""
        return _labels(self.cells[:, col])


def _labels(cells: np.ndarray) -> np.ndarray:
    if cells.dtype.kind == "f":
        values = cells.astype(np.float64)
    elif all(_is_number(v) for v in cells):
        values = cells.astype(np.float64)
    else:
        return cells.astype(str)
    if np.isfinite(values).all() and np.all(values == np.round(values)):
        return values.astype(np.int64)  # 0/1 class labels print as 0 and 1, not 0.0
    return values


def _read_table(path: str, header: bool | None = None, delimiter: str | None = None) -> _Table:
    """Read a .npy array (1-D: one column) or a CSV file (header detected unless given)."""
    p = _input_file(path)
    if p.suffix.lower() == ".npy":
        return _read_npy(p)
    if delimiter is None:
        delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    first = next(_csv_rows(p, delimiter), None)
    if first is None:
        raise CommandError(f"{p}: the file is empty")
    row, line = first
    if header is None:
        header = not all(_is_number(c) for c in row)
    names = row if header else [str(i) for i in range(len(row))]
    # all numbers: NumPy's C parser, no per-cell Python objects (a large file stays affordable)
    try:
        with warnings.catch_warnings():  # "input contained no data": reported below as an error
            warnings.simplefilter("ignore", UserWarning)
            skip = line if header else 0
            cells = np.loadtxt(p, delimiter=delimiter, skiprows=skip, ndmin=2, comments=None, encoding="utf-8-sig")
    except ValueError:
        cells = None  # text cells, ragged lines, ...: the slow path below finds and names them
    if cells is not None and cells.shape[0] > 0 and cells.shape[1] == len(names) and np.isfinite(cells).all():
        return _Table(p, names, header, cells, np.arange(cells.shape[0]) + line + int(header))
    rows, lines = [], []
    for row, line in _csv_rows(p, delimiter):
        if len(row) != len(names):
            raise CommandError(f"{p}: line {line} has {len(row)} fields, expected {len(names)} like line {first[1]}")
        rows.append(row)
        lines.append(line)
    if header:
        rows, lines = rows[1:], lines[1:]
    if not rows:
        raise CommandError(f"{p}: no data rows")
    return _Table(p, names, header, np.array(rows, dtype=str), np.array(lines))


def _csv_rows(p: Path, delimiter: str):
    """(stripped fields, 1-based line number) of each non-blank CSV line."""
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for row in reader:
                row = [c.strip() for c in row]
                if any(row):
                    yield row, reader.line_num
    except UnicodeDecodeError:
        raise CommandError(f"{p}: not a UTF-8 text file (a binary file? .npy files need the .npy suffix)") from None
    except (csv.Error, TypeError) as exc:  # TypeError: a delimiter that is not one character
        raise CommandError(f"{p}: cannot parse as CSV ({exc})") from None


def _read_npy(p: Path) -> _Table:
    try:
        a = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CommandError(f"{p}: not a readable .npy array ({exc})") from None
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise CommandError(f"{p}: expected a non-empty 1-D or 2-D array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise CommandError(f"{p}: expected a real numeric array, got dtype {a.dtype}")
    names = [str(i) for i in range(a.shape[1])]
    return _Table(p, names, False, a, np.arange(a.shape[0]), unit="row")


def _read_matrix(path: str, args) -> np.ndarray:
    """A numeric data file as a 2-D float array (float32 .npy kept as float32)."""
    table = _read_table(path, args.header, args.delimiter)
    if table.cells.dtype == np.float32:
        X = np.asarray(table.cells)
        if not np.isfinite(X).all():
            table.numeric(range(table.n_cols))  # raises with the position
        return X
    return table.numeric(range(table.n_cols))


def _standardize(X: np.ndarray, *others):
    mean, std = X.mean(axis=0), X.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant columns stay 0, not NaN
    return [(A - mean) / std for A in (X, *others)]


def _arch(args):
    """The MLP of the network options; a bad combination is a usage error (exit 2)."""
    from .spec import MLP

    try:
        return MLP(
            depth=args.depth,
            activation=args.activation,
            W_std=args.W_std,
            b_std=args.b_std,
            parameterization=args.parameterization,
            width=args.width,
            residual=args.residual,
        )
    except (ValueError, TypeError) as exc:
        args.parser.error(str(exc))


def _describe(arch) -> str:
    """One line for an MLP: depth, activation, stds, parameterization."""
    act = arch.activation
    name = getattr(act, "name", None) or type(act).__name__
    if name in ACTIVATIONS and act != ACTIVATIONS[name]():
        name = repr(act)  # parameters other than the defaults: show them
    bias = "no bias" if arch.b_std is None else f"b_std {arch.b_std:g}"
    extra = " residual" if arch.residual else ""
    return f"depth-{arch.depth}{extra} {name} MLP, W_std {arch.W_std:g}, {bias}, {arch.parameterization} param."


def _say(*parts, file=None) -> None:
    print(*parts, file=file or sys.stdout, flush=True)


# ------------------------------------------------------------------------------------- commands
def _cmd_kernel(args) -> int:
    from .gram import kernel

    arch = _arch(args)
    out_path = _output_file(args.output, inputs=(args.input, args.Y))
    if out_path.suffix != ".npy":
        args.parser.error(f"-o/--output: expected a .npy file name, got {args.output!r}")
    X = _read_matrix(args.input, args)
    Y = None if args.Y is None else _read_matrix(args.Y, args)
    if Y is not None and Y.shape[1] != X.shape[1]:
        raise CommandError(f"{args.Y}: has {Y.shape[1]} columns, but {args.input} has {X.shape[1]}; they must match")
    if args.standardize:
        X, *rest = _standardize(X, *([] if Y is None else [Y]))
        Y = rest[0] if rest else None
    if args.dtype is not None:
        dtype = np.dtype(args.dtype)
    else:
        dtype = np.dtype(np.float32 if X.dtype == np.float32 and (Y is None or Y.dtype == np.float32) else np.float64)
    shape = (X.shape[0], X.shape[0] if Y is None else Y.shape[0])
    progress = sys.stderr.isatty() if args.progress is None else args.progress

    # written under a temporary name and renamed when complete: a crash never leaves a
    # plausible-looking but partly zero Gram under the requested name
    partial = out_path.with_name(f".{out_path.name}.partial")
    t0 = time.perf_counter()
    try:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
        kernel(arch, X, Y, get=args.get, dtype=dtype, out=out, progress=progress, n_jobs=args.n_jobs)
        out.flush()
        del out
        os.replace(partial, out_path)
    finally:
        if partial.exists():
            partial.unlink()
    elapsed = time.perf_counter() - t0
    _say(f"wrote {out_path}: {args.get} {shape[0]} x {shape[1]} {dtype.name} in {elapsed:.2f} s ({_describe(arch)})")
    return EXIT_OK


def _target_split(table: _Table, spec: str):
    t = table.column(spec)
    features = [c for c in range(table.n_cols) if c != t]
    if not features:
        raise CommandError(f"{table.path}: no feature columns besides the target {table.names[t]!r}")
    return t, features


def _task(task: str, y: np.ndarray) -> str:
    """--task auto: classification for text targets and integers with few distinct values."""
    if task != "auto":
        return task
    if y.dtype.kind not in "if":
        return "classification"
    if y.dtype.kind == "i" and len(np.unique(y)) <= min(_MAX_AUTO_CLASSES, max(2, len(y) // 2)):
        return "classification"
    return "regression"


def _cmd_fit(args) -> int:
    _arch(args)  # option errors before any reading
    out_path = _output_file(args.output, inputs=(args.train,))
    table = _read_table(args.train, args.header, args.delimiter)  # file errors before slow imports

    import joblib
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .sklearn import NTKClassifier, NTKRegressor

    t, features = _target_split(table, args.target)
    X = table.numeric(features)
    y = table.labels(t)
    task = _task(args.task, y)
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
    Estimator = NTKClassifier if task == "classification" else NTKRegressor
    est = Estimator(
        depth=args.depth,
        activation=args.activation,
        W_std=args.W_std,
        b_std=args.b_std,
        parameterization=args.parameterization,
        kernel=args.kernel,
        t=args.t,
        lr=args.lr,
        diag_reg=args.diag_reg,
        solver=args.solver,
        n_centers=args.n_centers or None,
    )
    model = make_pipeline(StandardScaler(), est)
    what = "accuracy" if task == "classification" else "R^2"
    kind = f"classification, {len(np.unique(y))} classes" if task == "classification" else "regression"
    _say(f"{args.train}: {X.shape[0]} rows, {X.shape[1]} features, target {table.names[t]!r} ({kind}; see --task)")
    if args.cv:
        if args.cv < 2:
            args.parser.error(f"--cv: expected 0 (off) or at least 2 folds, got {args.cv}")
        if args.cv > X.shape[0]:
            raise CommandError(f"--cv {args.cv}: more folds than the {X.shape[0]} rows")
        scores = cross_val_score(model, X, y, cv=args.cv)
        _say(f"{args.cv}-fold cross-validated {what}: {scores.mean():.4f} +- {scores.std():.4f}")
    t0 = time.perf_counter()
    model.fit(X, y)
    _say(f"fitted {type(est).__name__} in {time.perf_counter() - t0:.2f} s")
    bundle = {
        "format": MODEL_FORMAT,
        "model": model,  # the sklearn Pipeline: joblib.load(path)["model"].predict(X)
        "features": [table.names[c] for c in features],
        "has_header": table.has_header,
        "target": table.names[t],
        "task": task,
        "ntkfast_version": __version__,
    }
    joblib.dump(bundle, out_path)
    _say(f"saved the model to {out_path}")
    return EXIT_OK


def _load_model(path: str) -> dict:
    import pickle

    import joblib

    p = _input_file(path)
    try:
        obj = joblib.load(p)
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, AttributeError, ImportError) as exc:
        raise CommandError(f"{path}: not a model file written by `ntkfast fit` ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and obj.get("format") == MODEL_FORMAT:
        return obj
    if hasattr(obj, "predict") and hasattr(obj, "n_features_in_"):  # a fitted estimator saved by hand
        names = [str(i) for i in range(obj.n_features_in_)]
        task = "classification" if hasattr(obj, "classes_") else "regression"
        return {"model": obj, "features": names, "has_header": False, "target": None, "task": task}
    raise CommandError(f"{path}: not a model file written by `ntkfast fit`")


def _feature_columns(table: _Table, bundle: dict, target: str | None):
    """Columns of the test table holding the model's features, and the target column if present."""
    features = bundle["features"]
    if target is not None:
        t = table.column(target)
    elif table.has_header and bundle["target"] in table.names:
        t = table.names.index(bundle["target"])
    else:
        t = None
    if table.has_header and bundle["has_header"]:
        missing = [f for f in features if f not in table.names]
        if missing:
            raise CommandError(
                f"{table.path}: missing feature column(s) {', '.join(map(repr, missing))} the model was fitted on"
            )
        cols = [table.names.index(f) for f in features]
        extra = [table.names[c] for c in range(table.n_cols) if c not in cols and c != t]
        if extra:
            raise CommandError(
                f"{table.path}: column(s) {', '.join(map(repr, extra))} are not features of the model; "
                "remove them, or name the target with --target"
            )
        return cols, t
    cols = [c for c in range(table.n_cols) if c != t]
    if len(cols) != len(features):
        where = f" besides the target column {table.names[t]!r}" if t is not None else ""
        hint = "; name the target column with --target" if t is None and len(cols) == len(features) + 1 else ""
        raise CommandError(
            f"{table.path}: has {len(cols)} feature columns{where}, the model expects {len(features)}{hint}"
        )
    return cols, t


def _format(v) -> str:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def _cmd_predict(args) -> int:
    bundle = _load_model(args.model)
    model = bundle["model"]
    if args.proba and not hasattr(model, "predict_proba"):
        args.parser.error("--proba: the model is a regressor; class probabilities need a classifier")
    if args.output != "-":
        _output_file(args.output, inputs=(args.test, args.model))
    table = _read_table(args.test, args.header, args.delimiter)
    cols, t = _feature_columns(table, bundle, args.target)
    X = table.numeric(cols)
    pred = model.predict(X)
    header = [bundle["target"] or "prediction"]
    columns = [pred]
    if args.proba:
        P = model.predict_proba(X)
        header += [f"proba_{c}" for c in model.classes_]
        columns += list(P.T)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in zip(*columns):
        writer.writerow([_format(v) for v in row])
    if args.output == "-":
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
    else:
        Path(args.output).write_text(buf.getvalue())
    log = sys.stderr if args.output == "-" else sys.stdout
    if args.output != "-":
        _say(f"wrote {len(pred)} predictions to {args.output}", file=log)
    if t is not None:
        y = table.labels(t)
        if bundle["task"] == "classification":
            _say(f"accuracy on {args.test}: {np.mean(pred == y):.4f} ({len(y)} rows)", file=log)
        elif y.dtype.kind in "if":
            from sklearn.metrics import r2_score

            _say(f"R^2 on {args.test}: {r2_score(y, pred):.4f} ({len(y)} rows)", file=log)
    return EXIT_OK


def _targets(args, table: _Table, n: int):
    """(targets or None, feature columns) for spectrum's --y: a column of INPUT, or a file."""
    spec = args.y
    if spec is None:
        return None, list(range(table.n_cols))
    if Path(spec).is_file() and not (table.has_header and spec in table.names):
        ytab = _read_table(spec, args.header, args.delimiter)
        if ytab.cells.shape[0] != n:
            raise CommandError(f"{spec}: has {ytab.cells.shape[0]} rows, but {args.input} has {n}")
        y = ytab.labels(0) if ytab.n_cols == 1 else ytab.numeric(range(ytab.n_cols))
        return y, list(range(table.n_cols))
    if args.precomputed:
        raise CommandError(f"--y {spec}: no such file (with --precomputed, targets come from a file)")
    try:
        t, features = _target_split(table, spec)
    except CommandError as exc:
        raise CommandError(f"--y {spec}: not a file, and {exc}") from None
    return table.labels(t), features


def _encode_targets(y: np.ndarray, one_hot: bool) -> tuple[np.ndarray, str]:
    if y.ndim == 1 and (one_hot or y.dtype.kind not in "if"):
        classes, idx = np.unique(y, return_inverse=True)
        Y = np.eye(len(classes))[idx] - 1.0 / len(classes)  # centred one-hot, as NTKClassifier fits
        return Y, f"{len(classes)} classes, centred one-hot"
    return np.asarray(y, dtype=np.float64), "as given"


def _spectrum_report(res, say=_say) -> None:
    """Print what :func:`ntkfast.spectrum.analyze` found, one quantity per line."""
    lam = res.eigenvalues
    complete = len(lam) == res.n
    top = ", ".join(f"{v:.4g}" for v in lam[:6]) + (", ..." if len(lam) > 6 else "")
    say(f"  eigenvalues ({len(lam)} of {res.n}, {res.method}): {top}")
    line = f"  lambda_max {lam[0]:.6g}, lambda_min {lam[-1]:.4g}" if complete else f"  lambda_max {lam[0]:.6g}"
    if complete:
        line += (
            f", condition number {res.condition_number:.4g}, top-10 share of the trace {lam[:10].sum() / lam.sum():.3f}"
        )
    say(line)
    alpha = res.power_law_exponent() if len(lam) >= 20 else math.nan  # a fit needs a stretch of the spectrum
    if math.isfinite(alpha):
        say(f"  power-law decay lambda_i ~ i^-alpha: alpha = {alpha:.3f}")
    say(f"  largest stable gradient-descent learning rate 2N/lambda_max = {res.max_lr:.6g} (N = n x outputs = {res.N})")
    rates = [f"mode {i}: {res.flow_rates[i - 1]:.3g}" for i in (1, 10, 100, 1000) if i <= len(lam)]
    say(f"  decay rates lr*lambda_i/N at lr = {res.lr:.6g}: {', '.join(rates)}")
    if res.y_projection is None:
        return
    share = np.cumsum(res.alignment)
    parts = [f"top {i}: {share[i - 1]:.3f}" for i in (1, 10, 100) if i <= len(share)]
    say(f"  share of ||y||^2 along the top eigenvectors: {', '.join(parts)}")
    loss0 = float(res.loss(0.0))
    times = []
    for frac in (1e-1, 1e-2, 1e-3):
        t = res.time_to_loss(frac * loss0)
        times.append(f"{frac:g} x: {t:.4g}" if math.isfinite(t) else f"{frac:g} x: never")
    say(f"  predicted time (steps at lr) to bring the loss {loss0:.4g} down to {', '.join(times)}")
    if not complete:
        say("  ('never': part of the target lies outside the computed eigenvectors)")


def _plot_spectrum(res, path: str, title: str) -> str | None:
    """Save the spectrum (and, with targets, alignment and loss curves); None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = 3 if res.y_projection is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.8), squeeze=False)
    axes = axes[0]
    res.plot_spectrum(axes[0])
    axes[0].set_title("NTK eigenvalues")
    if panels == 3:
        res.plot_alignment(axes[1])
        axes[1].set_title("target energy by mode")
        finite = [res.time_to_loss(f * float(res.loss(0.0))) for f in (1e-3, 1e-2)]
        horizon = next((v for v in finite if math.isfinite(v) and v > 0), 1e4)
        t = np.unique(np.concatenate([[0.0], np.geomspace(1e-2, 3 * horizon, 200)]))
        axes[2].semilogy(t, res.loss(t), label="gradient flow")
        steps = np.unique(np.round(t)).astype(int)
        axes[2].semilogy(steps, res.loss(steps, discrete=True), "--", label=f"GD, lr={res.lr:.3g}")
        axes[2].set_xscale("symlog", linthresh=1.0)
        axes[2].set_xlabel("t (steps at lr)")
        axes[2].set_ylabel("predicted training loss")
        axes[2].legend()
        axes[2].set_title("predicted convergence")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cmd_spectrum(args) -> int:
    from .gram import kernel
    from .spectrum import analyze

    arch = None if args.precomputed else _arch(args)
    if args.plot is not None:
        _output_file(args.plot, inputs=(args.input,))
    table = _read_table(args.input, args.header, args.delimiter)
    n = table.cells.shape[0]
    if args.k is not None and args.k > n:
        args.parser.error(f"-k: expected at most the number of points {n}, got {args.k}")
    y, features = _targets(args, table, n)
    if args.precomputed:
        K = table.numeric(features)
        if K.shape[0] != K.shape[1]:
            raise CommandError(f"{args.input}: --precomputed needs a square kernel matrix, got shape {K.shape}")
        what = f"the precomputed kernel matrix in {args.input}"
    else:
        X = table.numeric(features)
        if args.standardize:
            (X,) = _standardize(X)
        K = kernel(arch, X, get=args.kernel)
        what = f"{args.kernel.upper()} of a {_describe(arch)} on {args.input} ({X.shape[0]} x {X.shape[1]})"
    Y, how = (None, "") if y is None else _encode_targets(y, args.one_hot)
    res = analyze(K, Y, lr=args.lr, k=args.k)
    _say(f"spectrum of {what}")
    if Y is not None:
        _say(f"  targets: {Y.shape[1] if Y.ndim == 2 else 1} output(s), {how}")
    _spectrum_report(res)
    if args.plot is not None:
        if _plot_spectrum(res, args.plot, f"spectrum of {Path(args.input).name}") is None:
            raise CommandError("--plot: matplotlib is not installed (pip install matplotlib); no figure saved")
        _say(f"saved the figure to {args.plot}")
    return EXIT_OK


def _cmd_demo(args) -> int:
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from .gram import kernel
    from .sklearn import NTKClassifier
    from .spec import MLP
    from .spectrum import analyze

    if not args.no_figure:
        _output_file(args.figure)
    X, y = load_digits(return_X_y=True)
    if args.quick:
        keep = np.random.default_rng(0).permutation(len(y))[:500]
        X, y = X[keep], y[keep]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    clf = NTKClassifier()
    ntk = make_pipeline(StandardScaler(), clf)
    arch = MLP(depth=clf.depth, activation=clf.activation, W_std=clf.W_std, b_std=clf.b_std)
    _say(f"ntkfast {__version__} demo: scikit-learn's digits, {X.shape[0]} images x {X.shape[1]} pixels, 10 classes")
    _say(f"network: {_describe(arch)}")
    t0 = time.perf_counter()
    kernel(arch, X[:4].astype(np.float64))  # Numba compiles or loads its cache once, outside the timings
    _say(f"(Numba kernels compiled or loaded from cache in {time.perf_counter() - t0:.1f} s)")
    _say("5-fold cross-validated accuracy (same shuffled folds for every model):")

    def report(name, scores, seconds, note=""):
        _say(f"  {name:<38} {np.mean(scores):.4f} +- {np.std(scores):.4f}   {seconds:6.1f} s{note}")

    t0 = time.perf_counter()
    scores = cross_val_score(ntk, X, y, cv=folds)
    report("NTKClassifier (StandardScaler + NTK)", scores, time.perf_counter() - t0)

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
        svc_scores,
        time.perf_counter() - t0,
        f"   best of {len(search.cv_results_['params'])} on these folds (optimistic)",
    )

    t0 = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=50 if args.quick else 100, random_state=0)
    report(f"random forest ({rf.n_estimators} trees)", cross_val_score(rf, X, y, cv=folds), time.perf_counter() - t0)

    # the spectrum of the NTK on the (standardized) training images, with the centred one-hot
    # targets NTKClassifier regresses on
    Xs = StandardScaler().fit_transform(X)
    t0 = time.perf_counter()
    K = kernel(arch, Xs)
    Y, _ = _encode_targets(y, one_hot=True)
    res = analyze(K, Y)
    _say(
        f"\nNTK spectrum on all {len(y)} images ({K.shape[0]} x {K.shape[0]} Gram + eigh, "
        f"{time.perf_counter() - t0:.1f} s), 10 centred one-hot outputs:"
    )
    _spectrum_report(res)
    if args.no_figure:
        return EXIT_OK
    if _plot_spectrum(res, args.figure, f"ntkfast demo: NTK of a {_describe(arch)}, digits") is None:
        _say("matplotlib is not installed (pip install matplotlib): no figure", file=sys.stderr)
    else:
        _say(f"\nsaved the figure to {args.figure}")
    return EXIT_OK


def _cmd_bench(args) -> int:
    from .bench import main as bench_main

    bench_main(**{k: v for k, v in vars(args).items() if k not in _INTERNAL})
    return EXIT_OK


# ----------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the ``ntkfast`` command and return its exit code (0, 1 or 2; see ``ntkfast --help``).

    ``argv`` defaults to ``sys.argv[1:]``; an empty command line runs ``demo``.  Usage errors
    (argparse's, exit 2) are returned like the others, not raised as ``SystemExit``.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    prog = parser.prog
    try:
        args = parser.parse_args(argv or ["demo"])
        prog = args.parser.prog
        return args.func(args)
    except SystemExit as exc:  # argparse: --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    except KeyboardInterrupt:
        print("ntkfast: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `ntkfast predict ... | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except (CommandError, ValueError, OSError, MemoryError) as exc:
        # ValueError: the library's checks of the data (they name the argument and what was
        # expected); OSError: files and disks; MemoryError: includes InsufficientMemoryError
        if os.environ.get("NTKFAST_DEBUG"):
            raise
        message = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
            message = f"{exc.filename}: {exc.strerror}"
        elif isinstance(exc, MemoryError) and not isinstance(exc, ValueError):
            message = f"out of memory ({message})"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_FAILURE
