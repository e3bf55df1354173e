"""Public entry points for kernel matrices: :func:`kernel`, :func:`kernel_diag`, :class:`GramOperator`.

Every call goes validate -> prepare rows (input map, diagonal recursion) -> tile plan ->
backend inner kernel.  The diagonal of K(X, X) is the exact diagonal recursion, and the lower
triangle is a copy of the upper one, so K(X, X) is exactly symmetric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import recursion, tiling
from ._validation import (
    check_arch,
    check_array,
    check_backend,
    check_get,
    check_out,
    check_positive_int,
    resolve_dtype,
)
from .backends import cpu
from .errors import ArgumentError
from .spec import MLP

__all__ = ["kernel", "kernel_diag", "GramOperator"]


@dataclass(frozen=True)
class _Rows:
    """One side of a Gram: features after the input map and the diagonal recursion."""

    features: np.ndarray  # (n, d_in), C-contiguous, working dtype
    sig: np.ndarray  # (n_steps, n): Sigma(x, x) entering each step
    nngp: np.ndarray  # (n,) exact diagonal
    ntk: np.ndarray  # (n,)
    # float32 only: the same rows in float64, to recompute nearly parallel pairs
    features64: np.ndarray | None = None
    sig64: np.ndarray | None = None


# float32 pairs with 1 - rho^2 below this at the first layer are recomputed in float64: with
# it the float32 error stays below ~2e-5 relative near theta = 0 (5e-4 without).
_REFINE_TOL32 = 1e-3


@dataclass(frozen=True)
class _Coefficients:
    code: int
    params: np.ndarray
    first: np.ndarray
    steps: np.ndarray
    float64: _Coefficients | None = None  # the same in float64, for float32 refinement


def _coefficients(arch: MLP, d_in: int, dtype: np.dtype) -> _Coefficients:
    first, steps = arch.layer_coefficients(d_in)
    coef = _Coefficients(
        arch.activation.code,
        np.asarray(arch.activation.params, dtype=dtype),
        first.astype(dtype),
        np.ascontiguousarray(steps, dtype=dtype),
    )
    if dtype == np.float32 and steps.shape[0] > 0:
        return _Coefficients(coef.code, coef.params, coef.first, coef.steps, _coefficients(arch, d_in, np.float64))
    return coef


def _diag(coef: _Coefficients, feats: np.ndarray):
    n = feats.shape[0]
    sqnorm = np.einsum("ij,ij->i", feats, feats)
    sig = np.empty((coef.steps.shape[0], n), feats.dtype)
    nngp = np.empty(n, feats.dtype)
    ntk = np.empty(n, feats.dtype)
    cpu.recursion_kernels(coef.code).diag(coef.params, coef.first, coef.steps, sqnorm, sig, nngp, ntk)
    return sig, nngp, ntk


def _prepare(arch: MLP, X: np.ndarray, coef: _Coefficients | None = None):
    """Apply the input map and run the diagonal recursion for the rows of X."""
    feats = X if arch.input_map is None else np.ascontiguousarray(arch.input_map.apply(X), X.dtype)
    if coef is None:
        coef = _coefficients(arch, feats.shape[1], X.dtype)
    sig, nngp, ntk = _diag(coef, feats)
    if not (np.isfinite(nngp).all() and np.isfinite(ntk).all() and np.isfinite(sig).all()):
        raise ValueError(
            f"the kernel of {arch.activation!r} diverges (or overflows {X.dtype}) for these inputs: "
            "its expectation is infinite at their variance; scale the inputs or W_std down"
        )
    underflow = recursion.variance_underflow(arch.activation, coef.first, coef.steps, feats, sig, nngp, ntk)
    if underflow:
        raise ArgumentError(underflow)
    if coef.float64 is None:
        return _Rows(feats, sig, nngp, ntk), coef
    feats64 = feats.astype(np.float64)
    return _Rows(feats, sig, nngp, ntk, feats64, _diag(coef.float64, feats64)[0]), coef


def _validate(arch, X, Y, dtype):
    arch = check_arch(arch)
    dtype = resolve_dtype(dtype, X, Y)
    X = check_array(X, "X", dtype)
    Y = None if Y is None else check_array(Y, "Y", dtype, n_features=X.shape[1])
    return arch, X, Y, dtype


def _compute_tile(coef, rx: _Rows, ry: _Rows, i0, i1, j0, j1, G, nngp, ntk, offset, sig_cols, diagonal=False):
    """Inner products into the scratch G, then the fused recursion writing the whole-array
    outputs ``nngp``/``ntk`` (None: not wanted; neither may alias G) at ``offset``.  In float32,
    pairs too close to parallel for float32 are then recomputed in float64."""
    cpu.gemm(rx.features[i0:i1], ry.features[j0:j1], G)
    kernels = cpu.recursion_kernels(coef.code)
    get = (nngp is not None, ntk is not None)
    nngp = G if nngp is None else nngp  # placeholders for outputs not asked for (never written)
    ntk = G if ntk is None else ntk
    refine = coef.float64 is not None
    tau = G.dtype.type(_REFINE_TOL32 if refine else -np.inf)
    rows_sig = np.ascontiguousarray(rx.sig[:, i0:i1])
    flagged = kernels.tile(coef.params, coef.first, coef.steps, G, rows_sig, sig_cols, nngp, ntk, *offset, *get, tau)
    if flagged:  # rare: near-duplicate rows, and the diagonal of diagonal tiles
        w, b = coef.first[0], coef.first[1]
        ii, jj = cpu.near_parallel(G, w, b, rows_sig[0], sig_cols[0], tau, diagonal)
        c64 = coef.float64
        kernels.pairs(
            c64.params, c64.first, c64.steps, rx.features64[i0:i1], ry.features64[j0:j1],
            np.ascontiguousarray(rx.sig64[:, i0:i1]), np.ascontiguousarray(ry.sig64[:, j0:j1]),
            ii, jj, nngp, ntk, *offset, *get,
        )  # fmt: skip


def _scratch_view(buf: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A C-contiguous (rows, cols) array inside a per-thread scratch buffer."""
    return buf.reshape(-1)[: rows * cols].reshape(rows, cols)


def _symmetrize_diagonal_block(blocks, diag_values):
    """Exact diagonal and exact symmetry inside a diagonal tile."""
    for blk, dvals in zip(blocks, diag_values):
        k = blk.shape[0]
        lower = np.tri(k, k, -1, dtype=bool)
        np.copyto(blk, blk.T, where=lower)
        np.fill_diagonal(blk, dvals)


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
        Threads working on tiles (None: all available cores; unused on the GPU).  Results do
        not depend on it.

    Returns
    -------
    ndarray of shape (n, m), or a tuple of them.

    Examples
    --------
    >>> import numpy as np, ntkfast as nf
    >>> X = np.random.default_rng(0).standard_normal((5, 3))
    >>> K = nf.kernel(nf.MLP(depth=2), X)
    >>> K.shape, bool(np.array_equal(K, K.T))
    ((5, 5), True)
    """
    names, single = check_get(get)
    on_gpu = check_backend(backend, X, Y) == "gpu"
    tile = check_positive_int(tile, "tile")
    n_jobs = check_positive_int(n_jobs, "n_jobs")
    if on_gpu:
        from .backends import gpu

        return gpu.kernel(arch, X, Y, get, dtype=dtype, out=out, progress=progress, tile=tile)
    if Y is X:  # the same array twice: use the symmetric schedule
        Y = None
    arch, X, Y, dtype = _validate(arch, X, Y, dtype)
    symmetric = Y is None
    rx, coef = _prepare(arch, X)
    ry = rx if symmetric else _prepare(arch, Y, coef)[0]
    shape = (X.shape[0], X.shape[0] if symmetric else Y.shape[0])
    outs = tiling.allocate(shape, dtype, len(names)) if out is None else check_out(out, names, shape, dtype)
    views = [np.asarray(o) for o in outs]  # plain ndarray views of memmaps for the kernels
    nngp_out = views[names.index("nngp")] if "nngp" in names else None
    ntk_out = views[names.index("ntk")] if "ntk" in names else None
    diag_values = [rx.nngp if g == "nngp" else rx.ntk for g in names]

    n_jobs = tiling.default_n_jobs() if n_jobs is None else n_jobs
    plan = tiling.plan_tiles(shape[0], shape[1], dtype.itemsize, symmetric, tile, n_jobs)
    scratch = [np.empty((plan.tile, plan.tile), dtype=dtype) for _ in range(n_jobs)]

    def work(i0, i1, j0, j1, worker):
        G = _scratch_view(scratch[worker], i1 - i0, j1 - j0)
        diagonal = symmetric and i0 == j0
        sig_cols = np.ascontiguousarray(ry.sig[:, j0:j1])
        _compute_tile(coef, rx, ry, i0, i1, j0, j1, G, nngp_out, ntk_out, (i0, j0), sig_cols, diagonal)
        if symmetric and i0 == j0:
            sub = (slice(i0, i1), slice(j0, j1))
            _symmetrize_diagonal_block([v[sub] for v in views], [d[i0:i1] for d in diag_values])
        elif symmetric:
            for v in views:
                cpu.mirror(v, i0, i1, j0, j1)

    tiling.run_tiles(plan, work, n_jobs, progress, "kernel")
    for o in outs:
        if isinstance(o, np.memmap):
            o.flush()
    return outs[0] if single else tuple(outs)


def kernel_diag(arch: MLP, X, get: str | tuple[str, ...] = "ntk", *, dtype=None, backend: str = "auto"):
    """The diagonal K(x_i, x_i) without forming the matrix (exact closed forms, O(n d)).

    Returns an ndarray of shape (n,), or a tuple of them when ``get`` is a tuple (CuPy arrays
    for CuPy input: the O(n d) work itself is done on the host).
    """
    names, single = check_get(get)
    if check_backend(backend, X) == "gpu":
        from .backends import gpu

        return gpu.kernel_diag(arch, X, get, dtype=dtype)
    arch, X, _, dtype = _validate(arch, X, None, dtype)
    rows, _ = _prepare(arch, X)
    res = tuple(rows.nngp if g == "nngp" else rows.ntk for g in names)
    return res[0] if single else res


class GramOperator(LinearOperator):
    """The kernel matrix K(X, Y) as a matrix-free :class:`scipy.sparse.linalg.LinearOperator`.

    ``op @ v`` and ``op @ V`` recompute tiles on the fly and never store K: memory is
    O((n + m) d + tile^2) whatever n.  For Y=None the operator is symmetric and each tile above
    the diagonal serves both of its mirror images.

    Parameters
    ----------
    arch : MLP
    X : array-like of shape (n, d)
    Y : array-like of shape (m, d), default=None
    get : {"ntk", "nngp"}, default="ntk"
    dtype, backend, tile, progress, n_jobs : as in :func:`kernel`.  With the GPU backend the
        operator still takes and returns NumPy arrays; tiles are computed and multiplied on the
        device (``tile`` and ``n_jobs`` apply to the CPU).

    Examples
    --------
    >>> import numpy as np, ntkfast as nf
    >>> X = np.random.default_rng(0).standard_normal((50, 4))
    >>> op = nf.GramOperator(nf.MLP(depth=2), X)
    >>> bool(np.allclose(op @ np.ones(50), nf.kernel(nf.MLP(depth=2), X).sum(1)))
    True
    """

    def __init__(
        self,
        arch: MLP,
        X,
        Y=None,
        get: str = "ntk",
        *,
        backend: str = "auto",
        dtype=None,
        tile: int | None = None,
        progress: bool = False,
        n_jobs: int | None = None,
    ):
        names, single = check_get(get)
        if not single:
            raise ValueError("get: GramOperator represents one kernel; pass 'ntk' or 'nngp'")
        self.backend = check_backend(backend, X, Y)
        tile = check_positive_int(tile, "tile")
        if self.backend == "gpu":  # rows are prepared on the host; products run on the device
            from .backends import gpu

            gpu.require()  # fail now, with the install hint, if there is no CuPy or no device
            X, Y = gpu.to_host(X), gpu.to_host(Y)
        arch, X, Y, dtype = _validate(arch, X, Y, dtype)
        self.arch = arch
        self.get = names[0]
        self.symmetric = Y is None
        self._rows_x, self._coef = _prepare(arch, X)
        self._rows_y = self._rows_x if self.symmetric else _prepare(arch, Y, self._coef)[0]
        n, m = X.shape[0], (X if Y is None else Y).shape[0]
        self.progress = progress
        self.n_jobs = check_positive_int(n_jobs, "n_jobs")
        self._plan = tiling.plan_tiles(n, m, dtype.itemsize, self.symmetric, tile, self.n_jobs)
        super().__init__(dtype=dtype, shape=(n, m))

    def diagonal(self) -> np.ndarray:
        """Exact diagonal of K(X, X) (square operators only)."""
        if not self.symmetric:
            raise ValueError("diagonal: only defined for GramOperator(arch, X) with Y=None")
        return (self._rows_x.nngp if self.get == "nngp" else self._rows_x.ntk).copy()

    def _matvec(self, v):
        return self._matmat(np.asarray(v).reshape(-1, 1)).reshape(-1)

    def _matmat(self, V):
        V = np.asarray(V)
        if np.iscomplexobj(V):
            return self._matmat(V.real) + 1j * self._matmat(V.imag)
        V = np.ascontiguousarray(V, dtype=self.dtype)
        if not np.isfinite(V).all():
            raise ValueError("V: contains NaN or inf")
        if self.backend == "gpu":
            from .backends import gpu

            return gpu.matmat(self, V)
        n_jobs = self.n_jobs or tiling.default_n_jobs()
        t = self._plan.tile
        # one accumulator per thread: a tile above the diagonal adds to two row blocks
        outs = [np.zeros((self.shape[0], V.shape[1]), dtype=self.dtype) for _ in range(n_jobs)]
        scratch = [np.empty((2, t, t), dtype=self.dtype) for _ in range(n_jobs)]
        coef, rx, ry, get = self._coef, self._rows_x, self._rows_y, self.get

        def work(i0, i1, j0, j1, worker):
            G = _scratch_view(scratch[worker][0], i1 - i0, j1 - j0)
            K = _scratch_view(scratch[worker][1], i1 - i0, j1 - j0)
            want = (K if get == "nngp" else None, K if get == "ntk" else None)
            sig_cols = np.ascontiguousarray(ry.sig[:, j0:j1])
            diagonal = self.symmetric and i0 == j0
            _compute_tile(coef, rx, ry, i0, i1, j0, j1, G, *want, (0, 0), sig_cols, diagonal)
            out = outs[worker]
            if self.symmetric and i0 == j0:
                _symmetrize_diagonal_block([K], [(rx.nngp if get == "nngp" else rx.ntk)[i0:i1]])
            out[i0:i1] += K @ V[j0:j1]
            if self.symmetric and i0 != j0:
                out[j0:j1] += K.T @ V[i0:i1]

        tiling.run_tiles(self._plan, work, n_jobs, self.progress, "matvec")
        return sum(outs[1:], outs[0])

    def _adjoint(self):
        if self.symmetric:
            return self
        op = object.__new__(GramOperator)
        op.__dict__.update(self.__dict__)
        op._rows_x, op._rows_y = self._rows_y, self._rows_x
        op._plan = tiling.TilePlan(self.shape[1], self.shape[0], self._plan.tile, False)
        LinearOperator.__init__(op, dtype=self.dtype, shape=(self.shape[1], self.shape[0]))
        return op
