"""The kernel matrix as a matrix-free SciPy ``LinearOperator``: :class:`GramOperator`.

Apart from :mod:`ntkfast.gram` so that a plain :func:`ntkfast.kernel` call does not import
``scipy.sparse.linalg`` (~0.16 s of CPU time in a first call: SciPy 1.17's array-API layer imports much of
NumPy, numpy.f2py and numpy.ma included).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import engine, tiling
from ._validation import check_backend, check_get
from .errors import ArgumentError
from .gram import check_inputs, check_threads
from .spec import MLP

__all__ = ["GramOperator"]


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
            raise ArgumentError("get: GramOperator represents one kernel; pass 'ntk' or 'nngp'")
        self.backend = check_backend(backend, X, Y)
        tile, n_jobs = check_threads(tile, n_jobs)
        if self.backend == "gpu":  # rows are prepared on the host; products run on the device
            from .backends import gpu

            gpu.require()  # fail now, with the install hint, if there is no CuPy or no device
            X, Y = gpu.to_host(X), gpu.to_host(Y)
        arch, X, Y, dtype = check_inputs(arch, X, Y, dtype)
        self.arch = arch
        self.get = names[0]
        self.symmetric = Y is None
        self._rows_x, self._coef = engine.prepare_rows(arch, X)
        self._rows_y = self._rows_x if self.symmetric else engine.prepare_rows(arch, Y, self._coef)[0]
        n, m = X.shape[0], (X if Y is None else Y).shape[0]
        self.progress = progress
        self.n_jobs = n_jobs
        self._plan = tiling.plan_tiles(n, m, dtype.itemsize, self.symmetric, tile, self.n_jobs)
        super().__init__(dtype=dtype, shape=(n, m))

    # read-only views of the prepared problem, for backends (they never touch private state)
    @property
    def rows_x(self) -> engine.Rows:
        """The prepared rows of X (``ntkfast.engine.Rows``)."""
        return self._rows_x

    @property
    def rows_y(self) -> engine.Rows:
        """The prepared rows of Y (the same object as ``rows_x`` when symmetric)."""
        return self._rows_y

    @property
    def coefficients(self) -> engine.Coefficients:
        """The recursion's coefficients (``ntkfast.engine.Coefficients``)."""
        return self._coef

    @property
    def plan(self) -> tiling.TilePlan:
        """The CPU tile plan of the products."""
        return self._plan

    def diagonal(self) -> np.ndarray:
        """Exact diagonal of K(X, X) (square operators only)."""
        if not self.symmetric:
            raise ArgumentError("diagonal: only defined for GramOperator(arch, X) with Y=None")
        return self._rows_x.diag(self.get).copy()

    def matvec(self, x):
        self._check_operand(x, vector=True)
        return super().matvec(x)

    def matmat(self, X):
        self._check_operand(X, vector=False)
        return super().matmat(X)

    def _check_operand(self, V, vector: bool) -> None:
        """A clear refusal (naming V and the shape expected) where SciPy would say "dimension mismatch"."""
        shape = getattr(V, "shape", None)
        m = self.shape[1]
        ok = shape is not None and (shape in ((m,), (m, 1)) if vector else (len(shape) == 2 and shape[0] == m))
        if not ok:
            want = f"({m},) or ({m}, 1)" if vector else f"({m}, k)"
            raise ArgumentError(f"V: expected shape {want} for this {self.shape[0]} x {m} operator, got {shape}")

    def _matvec(self, v):
        return self._matmat(np.asarray(v).reshape(-1, 1)).reshape(-1)

    def _matmat(self, V):
        V = np.asarray(V)
        if np.iscomplexobj(V):
            return self._matmat(V.real) + 1j * self._matmat(V.imag)
        V = np.ascontiguousarray(V, dtype=self.dtype)
        if not np.isfinite(V).all():
            raise ArgumentError("V: contains NaN or inf")
        if self.backend == "gpu":
            from .backends import gpu

            return gpu.matmat(self, V)
        return self._products(V)

    def _products(self, V: np.ndarray) -> np.ndarray:
        n_jobs = self.n_jobs or tiling.default_n_jobs()
        return engine.gram_products(self._coef, self._rows_x, self._rows_y, self.get, self._plan, V, n_jobs,
                                    self.progress)  # fmt: skip

    def _adjoint(self):
        if self.symmetric:
            return self
        op = object.__new__(GramOperator)
        op.__dict__.update(self.__dict__)
        op._rows_x, op._rows_y = self._rows_y, self._rows_x
        op._plan = tiling.TilePlan(self.shape[1], self.shape[0], self._plan.tile, False)
        LinearOperator.__init__(op, dtype=self.dtype, shape=(self.shape[1], self.shape[0]))
        return op
