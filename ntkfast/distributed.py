"""Dask backend: kernel matrices and matrix-free products computed on a Dask cluster.

Every block is computed by the local engine (:func:`ntkfast.kernel`, the same tile kernel,
single-threaded inside a task), so a distributed result has the same numbers as a local one:
bit for bit (float64) when the chunks line up with the local tiles, within an ulp otherwise
(see :func:`kernel`); sums over blocks in another order (~1e-15).  Dask does all the
scheduling, data movement and recovery: a task whose worker dies is rerun elsewhere, and
every task here is a pure function of its inputs, so reruns give the same numbers.

* :func:`kernel` returns a lazy :class:`dask.array.Array`; compute it with any Dask scheduler.
* :class:`GramOperator` is K(X, X) as a :class:`scipy.sparse.linalg.LinearOperator` whose
  products run on a cluster: one task per block pair on and above the diagonal, then one sum
  per row block.  K is never stored anywhere, only one block per running task.
* :class:`NystromOperator` (and the one-shot :func:`nystrom_normal_matvec`,
  :func:`nystrom_rhs`) give the products a Nyström / Falkon solver needs,
  ``K_nm^T (K_nm v)`` and ``K_nm^T y``, as sums of per-row-block contributions.

Pointing it at your own cluster: start a scheduler and workers (``dask scheduler`` and
``dask worker tcp://host:8786`` on each machine, with ntkfast installed in the same
environment everywhere), then

>>> from dask.distributed import Client                      # doctest: +SKIP
>>> client = Client("tcp://host:8786")                      # doctest: +SKIP
>>> K = ntkfast.distributed.kernel(arch, X).compute()       # doctest: +SKIP
>>> op = ntkfast.distributed.GramOperator(arch, X)          # doctest: +SKIP
>>> alpha = ntkfast.solvers.conjugate_gradient(op, y).alpha  # doctest: +SKIP

The operators use the default client when ``client=None`` (the last ``Client`` created) and
also accept a ``Client`` or a scheduler address string.  Workers should run one thread per
core (tasks are single-threaded), e.g. ``dask worker --nthreads $(nproc) --nworkers 1``.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import config
from . import gram as _gram
from ._validation import check_arch, check_array, check_get, check_positive_int, resolve_dtype
from .spec import MLP

__all__ = ["GramOperator", "NystromOperator", "kernel", "nystrom_normal_matvec", "nystrom_rhs"]



# --------------------------------------------------------------------------------------------
# Tasks.  Pure module-level functions: workers import them by name, and Dask may rerun them.
# --------------------------------------------------------------------------------------------


def _kernel_block(
    Xi: np.ndarray, Xj: np.ndarray | None, *, arch: MLP, names: tuple[str, ...], dtype, tile: int | None = None
) -> np.ndarray:
    """The block K(X_i, X_j) of every kernel in ``names``, stacked: shape (len(names), n_i, n_j).

    ``Xj=None`` is a diagonal block of K(X, X): computed with Y=None, the local engine's
    symmetric schedule with the exact diagonal recursion on the diagonal, so it equals the same
    block of the local ``ntkfast.kernel(arch, X)`` (passing X_i twice would take the diagonal
    from the off-diagonal formula, an ulp away)."""
    m = Xi.shape[0] if Xj is None else Xj.shape[0]
    out = np.empty((len(names), Xi.shape[0], m), dtype=dtype)
    # n_jobs=1: a task is one core's work; the worker's threads run tasks side by side
    _gram.kernel(arch, Xi, Xj, get=names, dtype=dtype, out=tuple(out), n_jobs=1, tile=tile)
    return out


def _transpose_block(block: np.ndarray) -> np.ndarray:
    return block.transpose(0, 2, 1)


def _cross_block(Xi: np.ndarray, Yj: np.ndarray, *, arch: MLP, names: tuple[str, ...], work_dtype, tile) -> np.ndarray:
    return _kernel_block(Xi, Yj, arch=arch, names=names, dtype=work_dtype, tile=tile)


def _gram_pair(arch: MLP, get: str, dtype, tile, Xi: np.ndarray, Xj: np.ndarray | None, Vi: np.ndarray, Vj: np.ndarray):
    """Contributions of the block pair (i, j), i <= j, to K @ V: (K_ij V_j, K_ij^T V_i).

    The block below the diagonal is the transpose of the one above, as in the local engine,
    so each pair is computed once.  ``Xj=None`` is the diagonal block (second part None)."""
    K = _kernel_block(Xi, Xj, arch=arch, names=(get,), dtype=dtype, tile=tile)[0]
    if Xj is None:
        return K @ Vi, None
    return K @ Vj, K.T @ Vi


def _sum_parts(parts: list, out_rows: int, cols: int, dtype) -> np.ndarray:
    """Sum of the pair contributions to one row block, in a fixed order (column blocks ascending)."""
    total = np.zeros((out_rows, cols), dtype=dtype)
    for part, which in parts:
        total += part[which]
    return total


def _nystrom_block(arch: MLP, get: str, dtype, tile, Xi: np.ndarray, C: np.ndarray, v: np.ndarray) -> np.ndarray:
    """K_iC^T (K_iC v) for one row block X_i."""
    K = _kernel_block(Xi, C, arch=arch, names=(get,), dtype=dtype, tile=tile)[0]
    return K.T @ (K @ v)


def _nystrom_rhs_block(arch: MLP, get: str, dtype, tile, Xi: np.ndarray, C: np.ndarray, yi: np.ndarray) -> np.ndarray:
    """K_iC^T y_i for one row block X_i."""
    K = _kernel_block(Xi, C, arch=arch, names=(get,), dtype=dtype, tile=tile)[0]
    return K.T @ yi


def _sum_arrays(parts: list) -> np.ndarray:
    return sum(parts[1:], parts[0].copy())


def _diag_block(Xi: np.ndarray, *, arch: MLP, get: str, work_dtype) -> np.ndarray:
    return _gram.kernel_diag(arch, Xi, get=get, dtype=work_dtype)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _require_dask():
    try:
        import dask.array  # noqa: F401
        import dask.distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "ntkfast.distributed needs Dask: pip install 'dask[distributed]' (or 'ntkfast[dask]')"
        ) from exc


def _is_dask_array(x) -> bool:
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask is an optional dependency
        return False
    return isinstance(x, da.Array)


def _row_chunks(n: int, chunks) -> tuple[int, ...]:
    """Row chunk sizes from ``chunks``: rows per block (int) or explicit sizes summing to n."""
    if chunks is None:
        chunks = config.DEFAULT_CHUNK
    if isinstance(chunks, numbers.Integral) and not isinstance(chunks, bool):
        if chunks < 1:
            raise ValueError(f"chunks: expected a positive number of rows per block, got {chunks!r}")
        c = int(chunks)
        return tuple(min(c, n - i) for i in range(0, n, c))
    if isinstance(chunks, Sequence) and all(
        isinstance(c, numbers.Integral) and not isinstance(c, bool) and c > 0 for c in chunks
    ):
        if sum(chunks) != n:
            raise ValueError(f"chunks: explicit row chunk sizes must sum to n={n}, got sum {sum(chunks)}")
        return tuple(int(c) for c in chunks)
    raise ValueError(f"chunks: expected a positive int (rows per block) or a sequence of them, got {chunks!r}")


def _as_dask_rows(X, name: str, dtype: np.dtype, chunks, n_features: int | None = None):
    """X as a dask array chunked along rows only (features in one chunk), working dtype.

    NumPy input is checked fully here; a dask array is checked for shape, dtype and chunking,
    and each block's values (NaN, inf) by the local engine when the task runs."""
    import dask.array as da

    if not _is_dask_array(X):
        arr = check_array(X, name, dtype, n_features=n_features)
        return da.from_array(arr, chunks=(_row_chunks(arr.shape[0], chunks), arr.shape[1]))
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D dask array of shape (n_samples, n_features), got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.bool_)) or np.issubdtype(
        X.dtype, np.complexfloating
    ):
        raise TypeError(f"{name}: expected a real numeric dask array, got dtype {X.dtype}")
    if any(np.isnan(c) for axis in X.chunks for c in axis):
        raise ValueError(f"{name}: unknown chunk sizes; call {name}.compute_chunk_sizes() first")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name}: empty array of shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name}: has {X.shape[1]} features, expected {n_features} (as in X)")
    if len(X.chunks[1]) != 1:
        raise ValueError(
            f"{name}: chunked along the feature axis (chunks {X.chunks[1]}); every task needs whole rows. "
            f"Chunk along rows only: {name}.rechunk({{1: -1}})"
        )
    if chunks is not None:
        X = X.rechunk({0: _row_chunks(X.shape[0], chunks)})
    return X.astype(dtype) if X.dtype != dtype else X


def _tokenize(*args) -> str:
    from dask.base import tokenize

    return tokenize(*args)


# --------------------------------------------------------------------------------------------
# Lazy kernel
# --------------------------------------------------------------------------------------------


def kernel(
    arch: MLP, X, Y=None, get: str | tuple[str, ...] = "ntk", *, chunks=None, dtype=None, tile: int | None = None
):
    """Lazy infinite-width NNGP and/or NTK of ``arch`` as a :class:`dask.array.Array`.

    Each output block (i, j) is ``ntkfast.kernel(arch, X_i, Y_j)`` computed in one task by the
    local engine.  For Y=None only blocks on and above the diagonal are computed; those below
    are their transposes, and diagonal blocks use the exact diagonal recursion, as locally.
    With the same tiles the numbers are the same: when every chunk but the last is a multiple
    of ``tile``, ``kernel(arch, X, chunks=c, tile=t).compute()`` equals
    ``ntkfast.kernel(arch, X, tile=t)`` bit for bit in float64.  Other tilings differ in the
    last ulp only (~1e-16 relative): BLAS rounds the inner products of a tile's edge rows
    differently, and the local engine's own result varies the same way with its tile size.
    (In float32 the results were seen to differ by a few float32 ulps even with the same
    tiles: OpenBLAS's float32 ``A @ A.T`` of diagonal tiles rounded differently inside Dask's
    worker threads.)

    Parameters
    ----------
    arch : MLP
    X : array-like or dask.array.Array of shape (n, d)
        A dask array must be chunked along rows only (one chunk along features).
    Y : array-like or dask.array.Array of shape (m, d), default=None
        None (or ``Y is X``) computes the symmetric K(X, X).
    get : {"ntk", "nngp"} or tuple of them, default="ntk"
        A tuple returns a tuple of dask arrays in the same order, computed by the same tasks
        (compute them together, ``dask.compute(*K)``, to run each block once).
    chunks : int or sequence of int, default=None
        Rows per block (int) or explicit row chunk sizes, applied to X and Y.  None: the dask
        arrays' own row chunks, or ``config.DEFAULT_CHUNK`` rows for NumPy input.
    dtype : {None, float32, float64}, default=None
        None: float32 if every input is float32, else float64.
    tile : int, default=None
        Tile edge inside each block's task, as in :func:`ntkfast.kernel` (None: its default).

    Returns
    -------
    dask.array.Array of shape (n, m), or a tuple of them.

    Examples
    --------
    >>> import numpy as np, ntkfast as nf
    >>> from ntkfast import distributed
    >>> X = np.random.default_rng(0).standard_normal((300, 4))
    >>> K = distributed.kernel(nf.MLP(depth=2), X, chunks=100)
    >>> K.chunks
    ((100, 100, 100), (100, 100, 100))
    >>> bool(np.allclose(K.compute(scheduler="threads"), nf.kernel(nf.MLP(depth=2), X), rtol=1e-13, atol=0))
    True
    """
    _require_dask()
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    names, single = check_get(get)
    arch = check_arch(arch)
    tile = check_positive_int(tile, "tile")
    if Y is X:
        Y = None
    dtype = resolve_dtype(dtype, X, Y)
    Xd = _as_dask_rows(X, "X", dtype, chunks)
    g = len(names)
    meta = np.empty((0, 0, 0), dtype=dtype)
    if Y is not None:
        Yd = _as_dask_rows(Y, "Y", dtype, chunks, n_features=Xd.shape[1])
        with warnings.catch_warnings():
            # "Increasing number of chunks": an (n, m) Gram has n_blocks * m_blocks blocks by nature
            warnings.simplefilter("ignore", da.PerformanceWarning)
            stacked = da.blockwise(
                _cross_block, "gij", Xd, "ik", Yd, "jk",
                new_axes={"g": g}, concatenate=True, dtype=dtype, meta=meta,
                name="ntkfast-kernel-block-" + _tokenize(arch, names, dtype, tile, Xd.name, Yd.name),
                arch=arch, names=names, work_dtype=dtype, tile=tile,
            )  # fmt: skip
    else:
        # One task per block on or above the diagonal; a block below it is the transpose of its
        # mirror image: half the work, and the mirror copy the local engine makes.  One graph
        # layer (da.block over n_blocks^2 pieces takes seconds to build at 100 x 100 blocks).
        sizes = Xd.chunks[0]
        xkeys = [key[0] for key in Xd.__dask_keys__()]  # (Xd.name, i, 0)
        name = "ntkfast-kernel-block-" + _tokenize(arch, names, dtype, tile, Xd.name)
        block = functools.partial(_kernel_block, arch=arch, names=names, dtype=dtype, tile=tile)
        dsk = {}
        for i in range(len(sizes)):
            dsk[(name, 0, i, i)] = (block, xkeys[i], None)
            for j in range(i + 1, len(sizes)):
                dsk[(name, 0, i, j)] = (block, xkeys[i], xkeys[j])
                dsk[(name, 0, j, i)] = (_transpose_block, (name, 0, i, j))
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[Xd])
        stacked = da.Array(graph, name, chunks=((g,), sizes, sizes), meta=meta)
    result = tuple(stacked[k] for k in range(g))
    return result[0] if single else result


# --------------------------------------------------------------------------------------------
# Client and data on the cluster
# --------------------------------------------------------------------------------------------


def _resolve_client(client, timeout=None):
    """The client to use: a ``Client``, an address string, or None for the default client."""
    _require_dask()
    from dask.distributed import Client, get_client

    if client is None:
        try:
            client = get_client()
        except ValueError as exc:
            raise ValueError(
                "client: no Dask client is running; create one first (Client() for a local cluster, "
                "Client('tcp://host:8786') for your own) or pass client="
            ) from exc
    elif isinstance(client, str):
        # not the default client: connecting here must not redirect the user's other dask work
        client = Client(client, set_as_default=False, timeout=timeout if timeout is not None else "30s")
    elif not isinstance(client, Client):
        raise TypeError(f"client: expected a dask.distributed.Client, an address string or None, got {client!r}")
    _check_running(client)
    return client


def _check_running(client) -> None:
    status = getattr(client, "status", None)
    if status != "running":
        raise ValueError(
            f"client: the Dask client is not running (status {status!r}); it was closed or lost its "
            "scheduler. Create a new Client and a new operator."
        )


class _RowBlocks:
    """Row blocks of an input kept on the cluster as futures, recreated if the cluster lost them.

    NumPy data is scattered to every worker (each task needs some of it; a copy everywhere
    also survives the loss of any one worker); a dask array is persisted, so Dask can
    recompute a lost block from its graph.  After ``client.restart()`` every future is
    cancelled: the next product scatters (or persists) again."""

    def __init__(self, client, data, sizes: tuple[int, ...]):
        self.client = client
        self.data = data  # list of NumPy blocks, or a row-chunked dask array
        self.sizes = sizes
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._futures = None

    def futures(self) -> list:
        if self._futures is None or any(f.status in ("cancelled", "lost") for f in self._futures):
            if isinstance(self.data, list):
                # hash=False: fresh keys; reusing content-hashed keys races with the release of
                # earlier futures holding the same keys ("lost dependencies")
                self._futures = self.client.scatter(self.data, broadcast=True, hash=False)
            else:
                persisted = self.client.persist(self.data)
                self._futures = self.client.compute(list(persisted.to_delayed()[:, 0]))
        return self._futures


def _rows_on_cluster(client, X, name: str, dtype, chunks) -> tuple[_RowBlocks, int]:
    """Split X (NumPy or dask) into row blocks held on the cluster; returns them and d."""
    if _is_dask_array(X):
        Xd = _as_dask_rows(X, name, dtype, chunks)
        return _RowBlocks(client, Xd, tuple(Xd.chunks[0])), Xd.shape[1]
    arr = check_array(X, name, dtype)
    if chunks is None:
        # at least two row blocks per worker thread (if blocks stay >= 256 rows), so every
        # thread has work; at most config.DEFAULT_CHUNK rows
        threads = max(1, sum(client.nthreads().values()))
        chunks = min(config.DEFAULT_CHUNK, max(256, -(-arr.shape[0] // (2 * threads))))
    sizes = _row_chunks(arr.shape[0], chunks)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return _RowBlocks(client, [arr[a:b] for a, b in zip(bounds[:-1], bounds[1:])], sizes), arr.shape[1]


def _gather(client, futures, timeout):
    """Results of ``futures``; a TimeoutError (not a hang) when ``timeout`` seconds pass."""
    from dask.distributed import wait

    if timeout is not None:
        wait(futures, timeout=timeout)  # raises TimeoutError
    return client.gather(futures)


def _check_single_get(get) -> str:
    names, single = check_get(get)
    if not single:
        raise ValueError("get: an operator represents one kernel; pass 'ntk' or 'nngp'")
    return names[0]


def _check_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout > 0:
        raise ValueError(f"timeout: expected a number of seconds > 0 or None, got {timeout!r}")
    return float(timeout)


def _check_rhs(V, n: int, dtype, name: str) -> np.ndarray:
    V = np.ascontiguousarray(V, dtype=dtype)
    if V.ndim != 2 or V.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) or ({n}, k), got {V.shape}")
    if not np.isfinite(V).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return V


# --------------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------------


class _ClusterOperator(LinearOperator):
    """A symmetric operator whose products run on a Dask cluster: the checks every product
    makes, then ``_product(V)`` on a real (n, k) array of the operator's dtype."""

    def _matvec(self, v):
        return self._matmat(np.asarray(v).reshape(-1, 1)).reshape(-1)

    def _matmat(self, V):
        V = np.asarray(V)
        if np.iscomplexobj(V):
            return self._matmat(V.real) + 1j * self._matmat(V.imag)
        V = _check_rhs(V, self.shape[0], self.dtype, "V")
        _check_running(self.client)
        try:
            return self._product(V)
        except Exception as exc:
            # a worker killed mid-product can take a task's inputs with it before the scheduler
            # recomputes them ("cancelled for reason: lost dependencies"): once more, on fresh futures
            if type(exc).__name__ != "FutureCancelledError":
                raise
            _check_running(self.client)
            return self._product(V)

    def _adjoint(self):
        return self


class GramOperator(_ClusterOperator):
    """K(X, X) as a :class:`scipy.sparse.linalg.LinearOperator` whose products run on Dask.

    ``op @ V`` runs one task per block pair (i, j), i <= j, computing the block K_ij with the
    local engine and returning ``K_ij V_j`` and ``K_ij^T V_i``; one task per row block then sums
    its contributions, and the client concatenates the row blocks.  No process holds more than
    one block of K per running task.  The numbers are those of the local
    :class:`ntkfast.GramOperator` up to the order of the sums (~1e-15 relative).

    Parameters
    ----------
    arch : MLP
    X : array-like or dask.array.Array of shape (n, d)
        NumPy data is scattered to every worker once; a dask array (rows-only chunks) is
        persisted on the cluster.
    get : {"ntk", "nngp"}, default="ntk"
    client : dask.distributed.Client, str or None, default=None
        None: the default client (``dask.distributed.get_client()``); a string is a scheduler
        address to connect to (``"tcp://host:8786"``).
    chunks : int or sequence of int, default=None
        Rows per block, as in :func:`kernel`.  None: a dask array's own row chunks; for NumPy
        input at least two blocks per worker thread, between 256 and ``config.DEFAULT_CHUNK`` rows.
    dtype : {None, float32, float64}, default=None
    tile : int, default=None
        Tile edge inside each block's task, as in :func:`ntkfast.kernel`.
    timeout : float, default=None
        Seconds to wait for one product before raising TimeoutError (None: no limit).

    Examples
    --------
    >>> import numpy as np, ntkfast as nf                       # doctest: +SKIP
    >>> from dask.distributed import Client                     # doctest: +SKIP
    >>> from ntkfast import distributed                          # doctest: +SKIP
    >>> client = Client(n_workers=2, threads_per_worker=1)      # doctest: +SKIP
    >>> X = np.random.default_rng(0).standard_normal((5000, 10))  # doctest: +SKIP
    >>> op = distributed.GramOperator(nf.MLP(depth=3), X, chunks=1000)  # doctest: +SKIP
    >>> u = op @ np.ones(5000)                                  # doctest: +SKIP
    """

    def __init__(
        self, arch: MLP, X, get: str = "ntk", *, client=None, chunks=None, dtype=None, tile=None, timeout=None
    ):
        self.arch = check_arch(arch)
        self.get = _check_single_get(get)
        self.tile = check_positive_int(tile, "tile")
        self.timeout = _check_timeout(timeout)
        dtype = resolve_dtype(dtype, X)
        self.client = _resolve_client(client, self.timeout)
        self._blocks, self.n_features = _rows_on_cluster(self.client, X, "X", dtype, chunks)
        self._diagonal = None
        n = int(self._blocks.offsets[-1])
        super().__init__(dtype=dtype, shape=(n, n))

    @property
    def row_chunks(self) -> tuple[int, ...]:
        """Rows in each block."""
        return self._blocks.sizes

    def diagonal(self) -> np.ndarray:
        """Exact diagonal of K(X, X) (the diagonal recursion, O(n d)), computed on the cluster."""
        if self._diagonal is None:
            _check_running(self.client)
            futs = self.client.map(
                _diag_block,
                self._blocks.futures(),
                arch=self.arch,
                get=self.get,
                work_dtype=self.dtype,
                key=[f"ntkfast-diag-{self._token()}-{i}" for i in range(len(self.row_chunks))],
            )
            self._diagonal = np.concatenate(_gather(self.client, futs, self.timeout))
        return self._diagonal.copy()

    def _token(self, *extra) -> str:
        return _tokenize(self.arch, self.get, self.dtype, [f.key for f in self._blocks.futures()], *extra)

    def _product(self, V: np.ndarray) -> np.ndarray:
        client, xs, off = self.client, self._blocks.futures(), self._blocks.offsets
        nb, k = len(xs), V.shape[1]
        vs = client.scatter([V[off[i] : off[i + 1]] for i in range(nb)], broadcast=True, hash=False)
        token = self._token([f.key for f in vs])
        pairs = {}
        for i in range(nb):
            for j in range(i, nb):
                pairs[i, j] = client.submit(
                    _gram_pair,
                    self.arch,
                    self.get,
                    self.dtype,
                    self.tile,
                    xs[i],
                    None if i == j else xs[j],
                    vs[i],
                    vs[j],
                    key=f"ntkfast-gram-pair-{token}-{i}-{j}",
                    pure=True,
                )
        # row block r collects K_rj V_j from pairs (r, j >= r) and K_ir^T V_i from pairs (i < r, r)
        rows = [
            client.submit(
                _sum_parts,
                [(pairs[i, r], 1) for i in range(r)] + [(pairs[r, j], 0) for j in range(r, nb)],
                int(off[r + 1] - off[r]),
                k,
                self.dtype,
                key=f"ntkfast-gram-row-{token}-{r}",
                pure=True,
            )
            for r in range(nb)
        ]
        return np.concatenate(_gather(client, rows, self.timeout), axis=0)


class NystromOperator(_ClusterOperator):
    """The Nyström normal operator ``v -> K_nm^T (K_nm v)`` on Dask, with ``K_nm = K(X, centers)``.

    A LinearOperator of shape (m, m).  Each product runs one task per row block X_i computing
    ``K_im^T (K_im v)`` (the block K_im exists only inside its task), and one task summing them.
    :meth:`rhs` gives ``K_nm^T y`` the same way.  These are the two products of a Nyström /
    Falkon kernel ridge solver: ``(K_nm^T K_nm + lam n K_mm) alpha = K_nm^T y``, where K_mm is
    small and local.

    Parameters
    ----------
    arch : MLP
    X : array-like or dask.array.Array of shape (n, d)
        Training inputs; scattered to the workers once (NumPy) or persisted (dask array).
    centers : array-like of shape (m, d)
        Nyström centres; scattered to every worker.
    get, client, chunks, dtype, tile, timeout : as in :class:`GramOperator`.
    """

    def __init__(
        self, arch: MLP, X, centers, get: str = "ntk", *, client=None, chunks=None, dtype=None, tile=None, timeout=None
    ):
        self.arch = check_arch(arch)
        self.get = _check_single_get(get)
        self.tile = check_positive_int(tile, "tile")
        self.timeout = _check_timeout(timeout)
        dtype = resolve_dtype(dtype, X, centers)
        self.client = _resolve_client(client, self.timeout)
        self._blocks, d = _rows_on_cluster(self.client, X, "X", dtype, chunks)
        C = check_array(centers, "centers", dtype, n_features=d)
        self._centers = _RowBlocks(self.client, [C], (C.shape[0],))
        self.n_samples = int(self._blocks.offsets[-1])
        super().__init__(dtype=dtype, shape=(C.shape[0], C.shape[0]))

    @property
    def row_chunks(self) -> tuple[int, ...]:
        """Rows of X in each block (a dask ``y`` given to :meth:`rhs` must be chunked the same)."""
        return self._blocks.sizes

    def _token(self, *extra) -> str:
        keys = [f.key for f in self._blocks.futures()] + [self._centers.futures()[0].key]
        return _tokenize(self.arch, self.get, self.dtype, keys, *extra)

    def _run(self, func, rhs: list, kind: str) -> np.ndarray:
        """Sum over row blocks i of ``func(..., X_i, C, rhs[i])`` on the cluster."""
        client, xs, (c,) = self.client, self._blocks.futures(), self._centers.futures()
        token = self._token([getattr(r, "key", None) for r in rhs])
        parts = [
            client.submit(
                func,
                self.arch,
                self.get,
                self.dtype,
                self.tile,
                xs[i],
                c,
                rhs[i],
                key=f"ntkfast-nystrom-{kind}-{token}-{i}",
                pure=True,
            )
            for i in range(len(xs))
        ]
        total = client.submit(_sum_arrays, parts, key=f"ntkfast-nystrom-{kind}-sum-{token}", pure=True)
        return _gather(client, [total], self.timeout)[0]

    def _product(self, V: np.ndarray) -> np.ndarray:
        (vf,) = self.client.scatter([V], broadcast=True, hash=False)
        return self._run(_nystrom_block, [vf] * len(self.row_chunks), "normal")

    def rhs(self, y) -> np.ndarray:
        """``K_nm^T y`` for y of shape (n,) or (n, k): NumPy, or a dask array chunked like X.

        Returns an ndarray of shape (m,) or (m, k)."""
        _check_running(self.client)
        sizes, n = self.row_chunks, self.n_samples
        if _is_dask_array(y):
            if y.ndim not in (1, 2) or y.shape[0] != n:
                raise ValueError(f"y: expected shape ({n},) or ({n}, k), got {y.shape}")
            if tuple(y.chunks[0]) != tuple(sizes):
                raise ValueError(
                    f"y: row chunks {tuple(y.chunks[0])} differ from those of X {tuple(sizes)}; each block of y "
                    f"must match its block of X. Use y.rechunk({{0: op.row_chunks}})"
                )
            if y.ndim == 2 and len(y.chunks[1]) != 1:
                raise ValueError(f"y: chunked along its columns {y.chunks[1]}; use y.rechunk({{1: -1}})")
            squeeze = y.ndim == 1
            y2 = y.reshape(n, -1) if squeeze else y
            yd = self.client.persist(y2.astype(self.dtype))  # NaN/inf checked below, on the client
            parts = self.client.compute(list(yd.to_delayed()[:, 0]))
            out = self._run(_nystrom_rhs_block, parts, "rhs")
        else:
            Y = np.asarray(y)
            squeeze = Y.ndim == 1
            Y = _check_rhs(Y.reshape(Y.shape[0], -1) if Y.ndim == 1 else Y, n, self.dtype, "y")
            off = self._blocks.offsets
            parts = self.client.scatter([Y[off[i] : off[i + 1]] for i in range(len(sizes))], hash=False)
            out = self._run(_nystrom_rhs_block, parts, "rhs")
        if not np.isfinite(out).all():
            raise ValueError("y: contains NaN or inf (K_nm^T y is not finite)")
        return out[:, 0] if squeeze else out


def nystrom_normal_matvec(
    arch: MLP, X, centers, v, get: str = "ntk", *, client=None, chunks=None, dtype=None
) -> np.ndarray:
    """One-shot ``K_nm^T (K_nm v)`` on Dask (``K_nm = K(X, centers)``); see :class:`NystromOperator`.

    For an iterative solver build the operator once instead: it keeps X on the cluster."""
    return NystromOperator(arch, X, centers, get, client=client, chunks=chunks, dtype=dtype) @ np.asarray(v)


def nystrom_rhs(arch: MLP, X, centers, y, get: str = "ntk", *, client=None, chunks=None, dtype=None) -> np.ndarray:
    """One-shot ``K_nm^T y`` on Dask (``K_nm = K(X, centers)``); see :class:`NystromOperator`."""
    return NystromOperator(arch, X, centers, get, client=client, chunks=chunks, dtype=dtype).rhs(y)
