"""``ntkfast kernel``: the Gram matrix of a data file, written to ``.npy`` through a memory map.

The output's size is compared with the free disk space before any work, the space is reserved
(``posix_fallocate``) before the first entry is written (a full disk would otherwise kill the
process with SIGBUS halfway), and the file is written under a temporary name and renamed when
complete; every failure, Ctrl-C and SIGTERM included, removes the partial file.
"""

from __future__ import annotations

import time

import numpy as np

from ..console import describe, format_seconds, progress, say
from ..errors import EXIT_OK, CommandError
from ..estimate import PROBE_ROWS, kernel_seconds
from ..files import atomic_output, check_free_space, output_file, reserve
from ..network import network
from ..tables import read_matrix, standardize

# state the plan (size, disk, estimated time) when the Gram has at least this many entries
PLAN_ENTRIES = 4_000_000


def npy_bytes(shape: tuple[int, int], dtype: np.dtype) -> int:
    """Size of the .npy file of an array of ``shape`` and ``dtype`` (header included)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                                               "shape": shape})  # fmt: skip
    return len(buf.getvalue()) + shape[0] * shape[1] * dtype.itemsize


def run(args) -> int:
    from ...gram import kernel

    arch = network(args)
    out_path = output_file(args.output, inputs=(args.input, args.Y))
    if out_path.suffix != ".npy":
        args.parser.error(f"-o/--output: expected a .npy file name, got {args.output!r}")
    X = read_matrix(args.input, args)
    Y = None if args.Y is None else read_matrix(args.Y, args)
    if Y is not None and Y.shape[1] != X.shape[1]:
        raise CommandError(f"{args.Y}: has {Y.shape[1]} columns, but {args.input} has {X.shape[1]}; they must match")
    if args.standardize:
        X, *rest = standardize(X, *([] if Y is None else [Y]))
        Y = rest[0] if rest else None
    if args.dtype is not None:
        dtype = np.dtype(args.dtype)
    else:
        dtype = np.dtype(np.float32 if X.dtype == np.float32 and (Y is None or Y.dtype == np.float32) else np.float64)
    shape = (X.shape[0], X.shape[0] if Y is None else Y.shape[0])
    nbytes = npy_bytes(shape, dtype)
    half = "; --dtype float32 halves it" if dtype == np.float64 else ""
    check_free_space(out_path, nbytes, f"the {shape[0]} x {shape[1]} {dtype.name} {args.get} Gram", half)
    if shape[0] * shape[1] >= PLAN_ENTRIES and args.progress is not False:
        seconds = kernel_seconds(arch, X, Y, args.get, dtype, args.n_jobs)
        say(
            f"plan: {args.get} {shape[0]} x {shape[1]} {dtype.name} -> {out_path} ({_bytes(nbytes)} on disk, "
            f"reserved first), {'upper-triangle tiles, mirrored' if Y is None else 'all tiles'}, "
            f"about {format_seconds(seconds)} (estimated from a {min(PROBE_ROWS, shape[0])}-row sample)"
        )
    t0 = time.perf_counter()
    with atomic_output(out_path) as partial:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
        reserve(partial, nbytes, out_path)
        with progress(args.progress, args.log_every) as bar:
            kernel(arch, X, Y, get=args.get, dtype=dtype, out=out, progress=bar, n_jobs=args.n_jobs)
        out.flush()
        del out
    elapsed = time.perf_counter() - t0
    say(f"wrote {out_path}: {args.get} {shape[0]} x {shape[1]} {dtype.name} in {elapsed:.2f} s ({describe(arch)})")
    return EXIT_OK


def _bytes(n: int) -> str:
    from ...config import format_bytes

    return format_bytes(n)
