"""Public entry points for kernel matrices: :func:`kernel`, :func:`kernel_diag` (and, in
:mod:`ntkfast.gram_operator`, :class:`GramOperator`).

Every call goes validate (here) -> ``engine.prepare_rows`` (input map, diagonal recursion) ->
``tiling.plan_tiles`` -> backend tile (``engine.compute_tile`` on the CPU) -> assembly
(``engine.finish_tile``).  The diagonal of K(X, X) is the exact diagonal recursion, and the lower
triangle is a copy of the upper one, so K(X, X) is exactly symmetric.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import config, engine, tiling
from ._validation import (
    check_arch,
    check_array,
    check_backend,
    check_get,
    check_no_overlap,
    check_nonnegative_int,
    check_out,
    check_positive_int,
    resolve_dtype,
)
from .errors import ArgumentError, ArgumentTypeError
from .spec import MLP

__all__ = ["kernel", "kernel_diag", "GramOperator"]  # noqa: F822 (GramOperator: the module __getattr__ below)


def check_inputs(arch, X, Y, dtype):
    """``arch``, ``X``, ``Y`` and ``dtype`` checked and converted (the arrays in the resolved dtype)."""
    arch = check_arch(arch)
    dtype = resolve_dtype(dtype, X, Y)
    X = check_array(X, "X", dtype)
    Y = None if Y is None else check_array(Y, "Y", dtype, n_features=X.shape[1])
    return arch, X, Y, dtype


def check_threads(tile, n_jobs):
    """``tile`` and ``n_jobs`` as positive ints (or None), refused above their sane maxima."""
    tile = check_positive_int(tile, "tile")
    if tile is not None and tile > config.MAX_TILE:
        raise ArgumentError(
            f"tile: {tile} is above the largest tile edge, {config.MAX_TILE} (each thread holds tile^2 "
            "scratch); pass a smaller tile, or tile=None to choose it from the memory budget"
        )
    n_jobs = check_positive_int(n_jobs, "n_jobs")
    if n_jobs is not None and n_jobs > tiling.max_n_jobs():
        raise ArgumentError(
            f"n_jobs: {n_jobs} threads is above {tiling.max_n_jobs()} (4 per core on this machine, "
            f"{tiling.default_n_jobs()} cores); pass n_jobs=None for one thread per core"
        )
    return tile, n_jobs


def _check_depths(depths, arch):
    """``depths`` as a tuple of distinct ints >= 0 (or None), for a network that supports them."""
    if depths is None:
        return None
    if isinstance(depths, numbers.Integral) and not isinstance(depths, bool):
        raise ArgumentTypeError(f"depths: expected a tuple of depths, e.g. depths=({int(depths)},), got {depths!r}")
    try:
        values = tuple(depths)
    except TypeError:
        raise ArgumentTypeError(f"depths: expected a tuple of integers >= 0, got {depths!r}") from None
    if not values:
        raise ArgumentError("depths: expected at least one depth")
    values = tuple(check_nonnegative_int(d, "depths") for d in values)
    if len(set(values)) != len(values):
        raise ArgumentError(f"depths: repeated depths in {depths!r}")
    return values


def kernel(
    arch: MLP,
    X,
    Y=None,
    get: str | tuple[str, ...] = "ntk",
    *,
    backend: str = "auto",
    dtype=None,
    out=None,
    progress: bool = False,
    tile: int | None = None,
    n_jobs: int | None = None,
    depths=None,
):
    """Infinite-width NNGP and/or NTK of ``arch`` between the rows of X and Y.

    Parameters
    ----------
    arch : MLP
    X : array-like of shape (n, d)
    Y : array-like of shape (m, d), default=None
        ``None`` computes K(X, X): only tiles on and above the diagonal are computed, the rest
        is mirrored, so the result is exactly symmetric with the exact diagonal.
    get : {"ntk", "nngp"} or tuple of them, default="ntk"
        A tuple returns a tuple of arrays in the same order.
    backend : {"auto", "cpu", "gpu"}, default="auto"
        "auto" is the GPU for CuPy inputs (the result is then a CuPy array), else the CPU.
        "gpu" needs CuPy (``pip install ntkfast[gpu]``); see ``ntkfast.backends.gpu``.
    dtype : {None, float32, float64}, default=None
        None: float32 if every input is float32, else float64.
    out : ndarray, np.memmap or tuple of them, default=None
        Preallocated output(s) of shape (n, m) and ``dtype``; a memmap lets a Gram larger than
        memory be written to disk.  On the GPU, CuPy arrays are filled on the device.
    progress : bool, default=False
        Show a tqdm progress bar over tiles.
    tile : int, default=None
        Tile edge; by default chosen from the memory budget (``ntkfast.tiling``).
    n_jobs : int, default=None
        Threads working on tiles (None: all available cores; unused on the GPU; at most 4 per
        core).  Results do not depend on it.
    depths : tuple of int, default=None
        Gram matrices of the same network at each listed depth (``dataclasses.replace(arch,
        depth=d)``), all from one pass over the tiles at the cost of the deepest: the tile kernel
        writes its outputs after each listed layer (for ``residual=True``, after the readout step
        applied to the state after each listed block count).  CPU only.

    Returns
    -------
    ndarray of shape (n, m), or a tuple of them.  With ``depths``: a tuple with one entry per
    listed depth, each what ``kernel`` returns for that depth (and ``out=`` a matching tuple).

    Raises
    ------
    ArgumentError
        Bad values; ``out`` arrays overlapping each other or X/Y; ``tile`` or ``n_jobs`` above
        their maxima.
    InsufficientMemoryError
        The result (or the scratch of the tiles) does not fit the memory budget, or a memmap
        ``out`` does not fit on its disk.

    Examples
    --------
    >>> import numpy as np, ntkfast as nf
    >>> X = np.random.default_rng(0).standard_normal((5, 3))
    >>> K = nf.kernel(nf.MLP(depth=2), X)
    >>> K.shape, bool(np.array_equal(K, K.T))
    ((5, 5), True)
    >>> K1, K3 = nf.kernel(nf.MLP(), X, depths=(1, 3))
    >>> bool(np.array_equal(K3, nf.kernel(nf.MLP(depth=3), X)))
    True
    """
    names, single = check_get(get)
    arch = check_arch(arch)
    depths = _check_depths(depths, arch)
    on_gpu = check_backend(backend, X, Y) == "gpu"
    tile, n_jobs = check_threads(tile, n_jobs)
    if on_gpu:
        if depths is not None:
            raise ArgumentError("depths: not on the GPU yet; pass backend='cpu' (or call kernel once per depth)")
        from .backends import gpu

        return gpu.kernel(arch, X, Y, get, dtype=dtype, out=out, progress=progress, tile=tile)
    if Y is X:  # the same array twice: use the symmetric schedule
        Y = None
    given = [("X", X), ("Y", Y)]
    arch, X, Y, dtype = check_inputs(arch, X, Y, dtype)
    symmetric = Y is None
    deepest = arch if depths is None else engine.at_depth(arch, max(depths))
    if depths is not None:
        for d in depths:
            engine.at_depth(arch, d)  # refuses depths the widths cannot serve
    shape = (X.shape[0], X.shape[0] if symmetric else Y.shape[0])
    n_depths = 1 if depths is None else len(depths)

    # outputs, flat: depth-major, then the order of get
    if out is not None:
        if depths is None:
            outs = check_out(out, names, shape, dtype)
        elif not isinstance(out, (tuple, list)) or len(out) != n_depths:
            raise ArgumentError(f"out: expected a tuple of {n_depths} entries, one per depth in depths={depths}")
        else:
            outs = [o for entry in out for o in check_out(entry, names, shape, dtype)]
        check_no_overlap(outs, given + [("X", X), ("Y", Y)])
    rx, coef = engine.prepare_rows(deepest, X)
    ry = rx if symmetric else engine.prepare_rows(deepest, Y, coef)[0]
    schedule = None if depths is None else engine.depth_plan(arch, depths, rx.features.shape[1], dtype)
    if out is None:
        outs = engine.allocate_outputs(shape, dtype, len(names), schedule)
    engine.reserve_file_space(outs)
    n_jobs = tiling.default_n_jobs() if n_jobs is None else n_jobs
    plan = tiling.plan_tiles(shape[0], shape[1], dtype.itemsize, symmetric, tile, n_jobs)
    engine.fill_gram(coef, rx, ry, names, [np.asarray(o) for o in outs], plan, n_jobs, schedule, progress)
    for o in outs:
        if isinstance(o, np.memmap):
            o.flush()
    if depths is None:
        return outs[0] if single else tuple(outs)
    per_depth = [outs[k * len(names):(k + 1) * len(names)] for k in range(n_depths)]
    return tuple(p[0] if single else tuple(p) for p in per_depth)


def kernel_diag(arch: MLP, X, get: str | tuple[str, ...] = "ntk", *, dtype=None, backend: str = "auto", depths=None):
    """The diagonal K(x_i, x_i) without forming the matrix (exact closed forms, O(n d)).

    ``depths`` as in :func:`kernel`: a tuple with one entry per listed depth.

    Returns an ndarray of shape (n,), or a tuple of them when ``get`` is a tuple (CuPy arrays
    for CuPy input: the O(n d) work itself is done on the host).
    """
    names, single = check_get(get)
    arch = check_arch(arch)
    depths = _check_depths(depths, arch)
    if check_backend(backend, X) == "gpu":
        if depths is not None:
            raise ArgumentError("depths: not on the GPU yet; pass backend='cpu' (or call kernel_diag once per depth)")
        from .backends import gpu

        return gpu.kernel_diag(arch, X, get, dtype=dtype)
    arch, X, _, dtype = check_inputs(arch, X, None, dtype)

    def one(a):
        rows, _ = engine.prepare_rows(a, X)
        res = tuple(rows.diag(g) for g in names)
        return res[0] if single else res

    if depths is None:
        return one(arch)
    return tuple(one(engine.at_depth(arch, d)) for d in depths)


def __getattr__(name: str):
    """``GramOperator`` lives in :mod:`ntkfast.gram_operator` (its SciPy base class costs a first kernel call
    ~0.16 s of CPU to import); ``from ntkfast.gram import GramOperator`` keeps working."""
    if name == "GramOperator":
        from .gram_operator import GramOperator

        return GramOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
