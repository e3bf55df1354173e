"""``ntkfast spectrum``: eigenvalues of the NTK of a data file and the convergence rates they predict."""

from __future__ import annotations

from pathlib import Path

from ..console import describe, say
from ..errors import EXIT_OK, CommandError
from ..files import output_file
from ..network import network
from ..report import encode_targets, spectrum_report
from ..tables import read_table, standardize


def _targets(args, table, n: int):
    """(targets or None, feature columns) for --y: a column of INPUT, or a file."""
    spec = args.y
    if spec is None:
        return None, list(range(table.n_cols))
    if Path(spec).is_file() and not (table.has_header and spec in table.names):
        ytab = read_table(spec, args)
        if ytab.n_rows != n:
            raise CommandError(f"{spec}: has {ytab.n_rows} rows, but {args.input} has {n}")
        y = ytab.labels(0) if ytab.n_cols == 1 else ytab.numeric(range(ytab.n_cols))
        return y, list(range(table.n_cols))
    if args.precomputed:
        raise CommandError(f"--y {spec}: no such file (with --precomputed, targets come from a file)")
    try:
        t = table.column(spec)
    except CommandError as exc:
        raise CommandError(f"--y {spec}: not a file, and {exc}") from None
    features = [c for c in range(table.n_cols) if c != t]
    if not features:
        raise CommandError(f"{table.path}: no feature columns besides the target {table.names[t]!r}")
    return table.labels(t), features


def run(args) -> int:
    from ...gram import kernel
    from ...spectrum import analyze
    from ..plots import plot_spectrum

    arch = None if args.precomputed else network(args)
    if args.plot is not None:
        output_file(args.plot, inputs=(args.input,))
    table = read_table(args.input, args)
    n = table.n_rows
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
            (X,) = standardize(X)
        K = kernel(arch, X, get=args.kernel)
        what = f"{args.kernel.upper()} of a {describe(arch)} on {args.input} ({X.shape[0]} x {X.shape[1]})"
    Y, how = (None, "") if y is None else encode_targets(y, args.one_hot)
    res = analyze(K, Y, lr=args.lr, k=args.k)
    say(f"spectrum of {what}")
    if Y is not None:
        say(f"  targets: {Y.shape[1] if Y.ndim == 2 else 1} output(s), {how}")
    spectrum_report(res)
    if args.plot is not None:
        plot_spectrum(res, args.plot, f"spectrum of {Path(args.input).name}")
        say(f"saved the figure to {args.plot}")
    return EXIT_OK
