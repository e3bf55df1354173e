"""A symmetric eigendecomposition in the matrix's own memory that lets other threads run meanwhile.

``scipy.linalg.eigh`` holds the GIL for the whole LAPACK call, so two of them on two Python
threads run one after the other.  The model selection of ``_cv`` decomposes one Gram per depth,
and on a few cores LAPACK's ``dsyevd`` scales poorly with its own threads (its tridiagonal
reduction is bound by memory traffic, and a threaded OpenBLAS on a busy machine spins): several
decompositions at once, each on one BLAS thread, finish sooner.  :func:`eigh_inplace` calls the
same LAPACK driver SciPy's ``eigh(driver="evd")`` calls, the one SciPy exports for compiled code
(``scipy.linalg.cython_lapack``), through ``ctypes``, which releases the GIL during the call.
:func:`eigh_inplace_many` decomposes several matrices on threads, with the back-transformation
of each (dsyevd's last phase) split in column blocks that any thread takes, so that no thread
idles at the end.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import queue
import threading

import numpy as np

from ..errors import ArgumentError

__all__ = ["eigh_inplace", "eigh_inplace_many"]

_INT_MAX = 2**31 - 1  # cython_lapack's integers are 32-bit


@functools.cache
def _dsyevd():
    """LAPACK's ``dsyevd`` as exported by SciPy, as a ctypes function (GIL released while it runs)."""
    from numba.extending import get_cython_function_address

    p_char, p_int, p_double = ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(None, p_char, p_char, p_int, p_double, p_int, p_double, p_double, p_int, p_double, p_int,
                             p_int)  # fmt: skip
    return proto(get_cython_function_address("scipy.linalg.cython_lapack", "dsyevd"))


def eigh_inplace(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric float64 matrix, the eigenvectors
    written over ``A`` (LAPACK ``dsyevd``, divide and conquer, as ``scipy.linalg.eigh(A,
    driver="evd")`` up to round-off).

    Parameters
    ----------
    A : ndarray of shape (n, n), float64, C- or Fortran-contiguous, writeable
        Symmetric; only its lower triangle in Fortran order (upper in C order) is read.  Destroyed.

    Returns
    -------
    w : ndarray of shape (n,)
    V : ndarray of shape (n, n)
        Fortran-ordered, in ``A``'s memory: column j is the eigenvector of ``w[j]``.

    Raises
    ------
    numpy.linalg.LinAlgError
        When LAPACK's iteration does not converge (a matrix with NaN or inf, which the caller
        should not pass).
    """
    n = A.shape[0]
    if A.dtype != np.float64 or A.ndim != 2 or A.shape[1] != n or not A.flags.writeable:
        raise ArgumentError("eigh_inplace: expected a square writeable float64 array")  # internal: callers pass Grams
    V = A.T if A.flags.c_contiguous and not A.flags.f_contiguous else A
    if not V.flags.f_contiguous:
        raise ArgumentError("eigh_inplace: expected a contiguous array")
    if n == 0:
        return np.empty(0), V
    w = np.empty(n)
    c_n, info = ctypes.c_int(n), ctypes.c_int(0)
    query_work, query_iwork = np.empty(1), ctypes.c_int(0)
    lwork, liwork = ctypes.c_int(-1), ctypes.c_int(-1)
    f = _dsyevd()
    args = (b"V", b"L", ctypes.byref(c_n), V.ctypes.data, ctypes.byref(c_n), w.ctypes.data)
    f(*args, query_work.ctypes.data, ctypes.byref(lwork), ctypes.addressof(query_iwork), ctypes.byref(liwork),
      ctypes.byref(info))  # fmt: skip
    # the documented minima for JOBZ = "V" (a query never asks for less): 1 + 6n + 2n^2 and 3 + 5n
    n_work = max(int(query_work[0]), 1 + 6 * n + 2 * n * n)
    n_iwork = max(int(query_iwork.value), 3 + 5 * n)
    if max(n_work, n_iwork, n * n) > _INT_MAX:
        raise ArgumentError(f"eigh_inplace: n = {n} is too large for 32-bit LAPACK")  # callers stay far below
    work = np.empty(n_work)
    iwork = np.empty(n_iwork, dtype=np.intc)
    lwork.value, liwork.value = n_work, n_iwork
    f(*args, work.ctypes.data, ctypes.byref(lwork), iwork.ctypes.data, ctypes.byref(liwork), ctypes.byref(info))
    if info.value != 0:
        raise np.linalg.LinAlgError(f"dsyevd: info = {info.value} (the eigendecomposition did not converge)")
    return w, V


# ---------------------------------------------------------------------------------------------
# The same decomposition in two phases, so that several threads can share the last matrices' work
#
# dsyevd is dsytrd (A = Q T Q^T, Q kept as reflectors in A), dstedc (T = W diag(w) W^T) and dormtr
# (V = Q W): the first two are sequential, but the back-transformation, ~40 % of the time, splits
# by columns of W.  With a few matrices on a few threads, whole decompositions leave threads idle
# at the end (5 on 2 threads take 3 rounds); back-transforming in column blocks fills them.


@functools.cache
def _lapack(name: str, n_args: int):
    """A LAPACK routine exported by SciPy (every argument a pointer), GIL released while it runs."""
    from numba.extending import get_cython_function_address

    return ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * n_args))(
        get_cython_function_address("scipy.linalg.cython_lapack", name)
    )


def _ints(*values):
    return [ctypes.c_int(int(v)) for v in values]


def _ref(x):
    """The address LAPACK gets: of a ctypes integer, or of an array's data."""
    return ctypes.addressof(x) if isinstance(x, ctypes.c_int) else x.ctypes.data


def _check_info(name: str, info: ctypes.c_int) -> None:
    if info.value != 0:
        raise np.linalg.LinAlgError(f"{name}: info = {info.value} (the eigendecomposition did not converge)")


_CHARS = {c: ctypes.create_string_buffer(c) for c in (b"L", b"I", b"N")}


class _Phased:
    """One matrix's decomposition in phases: :meth:`tridiagonalize` (dsytrd + dstedc), then
    :meth:`back_transform` of column blocks (dormtr, any order, concurrently), then :meth:`finish`.
    The scaling of dsyevd for matrices near overflow or underflow is reproduced."""

    def __init__(self, A: np.ndarray):
        n = A.shape[0]
        if A.dtype != np.float64 or A.ndim != 2 or A.shape[1] != n or not A.flags.writeable:
            raise ArgumentError("eigh_inplace: expected a square writeable float64 array")
        self.A = A.T if A.flags.c_contiguous and not A.flags.f_contiguous else A  # Fortran order, lower
        if not self.A.flags.f_contiguous:
            raise ArgumentError("eigh_inplace: expected a contiguous array")
        if 2 * n * n + 6 * n + 1 > _INT_MAX:
            raise ArgumentError(f"eigh_inplace: n = {n} is too large for 32-bit LAPACK")
        self.n = n

    def tridiagonalize(self) -> None:
        n, A = self.n, self.A
        self.sigma = 1.0
        if n == 0:
            self.d, self.W = np.empty(0), np.empty((0, 0), order="F")
            return
        L, I = _CHARS[b"L"], _CHARS[b"I"]
        # dsyevd scales a matrix whose largest entry is below sqrt(smlnum) or above sqrt(1 / smlnum)
        small = np.finfo(np.float64).tiny / np.finfo(np.float64).eps
        anrm = max(float(A.max()), -float(A.min()))  # no n^2 temporary
        if 0 < anrm < np.sqrt(small):
            self.sigma = np.sqrt(small) / anrm
        elif anrm > np.sqrt(1 / small):
            self.sigma = np.sqrt(1 / small) / anrm
        if self.sigma != 1.0:
            A *= self.sigma
        self.d, self.e, self.tau = np.empty(n), np.empty(max(n - 1, 1)), np.empty(max(n - 1, 1))
        c_n, info, lwork = *_ints(n, 0), ctypes.c_int(-1)
        query = np.empty(1)
        sytrd = _lapack("dsytrd", 10)
        args = (L, _ref(c_n), A.ctypes.data, _ref(c_n), self.d.ctypes.data, self.e.ctypes.data, self.tau.ctypes.data)
        sytrd(*args, query.ctypes.data, _ref(lwork), _ref(info))
        work = np.empty(max(1, int(query[0])))
        lwork.value = len(work)
        sytrd(*args, work.ctypes.data, _ref(lwork), _ref(info))
        _check_info("dsytrd", info)
        del work
        self.W = np.empty((n, n), order="F")
        stedc = _lapack("dstedc", 11)
        n_work, n_iwork = 1 + 4 * n + n * n, 3 + 5 * n  # the documented minima for COMPZ = "I"
        work, iwork = np.empty(n_work), np.empty(n_iwork, dtype=np.intc)
        lwork, liwork = _ints(n_work, n_iwork)
        stedc(I, _ref(c_n), self.d.ctypes.data, self.e.ctypes.data, self.W.ctypes.data, _ref(c_n), work.ctypes.data,
              _ref(lwork), iwork.ctypes.data, _ref(liwork), _ref(info))  # fmt: skip
        _check_info("dstedc", info)
        # dormtr's unblocked steps (dorm2r) set a reflector's leading entry, A[i + 1, i] (where
        # dsytrd left e_i, now used), to 1 and restore it afterwards: with it 1 already, threads
        # back-transforming blocks at once only ever write the value that is there
        A[np.arange(1, n), np.arange(n - 1)] = 1.0

    def back_transform(self, j0: int, j1: int) -> None:
        """Columns j0 <= j < j1 of the eigenvectors: Q applied to those of W, in place."""
        n, m = self.n, j1 - j0
        if m <= 0 or n <= 1:
            return
        L, N = _CHARS[b"L"], _CHARS[b"N"]
        ormtr = _lapack("dormtr", 13)
        c_n, c_m, info, lwork = *_ints(n, m, 0), ctypes.c_int(-1)
        block = self.W[:, j0:j1]
        args = (L, L, N, _ref(c_n), _ref(c_m), self.A.ctypes.data, _ref(c_n), self.tau.ctypes.data,
                block.ctypes.data, _ref(c_n))  # fmt: skip
        query = np.empty(1)
        ormtr(*args, query.ctypes.data, _ref(lwork), _ref(info))
        work = np.empty(max(1, int(query[0])))
        lwork.value = len(work)
        ormtr(*args, work.ctypes.data, _ref(lwork), _ref(info))
        _check_info("dormtr", info)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(eigenvalues, eigenvectors in A's memory); the matrix's scratch is released."""
        self.A[...] = self.W
        w = self.d / self.sigma if self.sigma != 1.0 else self.d
        V, self.A, self.W = self.A, None, None
        return w, V


@functools.cache
def blocks_are_safe() -> bool:
    """Whether SciPy's LAPACK is reference LAPACK's code (OpenBLAS bundles it), whose dormtr only
    ever writes the entries of A that :meth:`_Phased.tridiagonalize` sets to what it writes, so
    that several threads may back-transform column blocks of one matrix at once."""
    try:
        import scipy.__config__

        name = str(scipy.__config__.CONFIG["Build Dependencies"]["lapack"]["name"]).lower()
    except (ImportError, KeyError, TypeError, AttributeError):
        return False
    return "openblas" in name or name in ("lapack", "netlib", "reference")


def eigh_inplace_many(mats: list, workers: int, split: bool | None = None):
    """:func:`eigh_inplace` of every matrix of ``mats`` on ``workers`` threads, as a generator of
    ``(index, w, V)`` in the order they finish (``mats`` is emptied: each matrix becomes its V).

    ``split`` (default: :func:`blocks_are_safe`): each matrix is tridiagonalised on one thread,
    tridiagonalisations first, then back-transformed in ``workers`` column blocks that any thread
    takes, so that no thread idles at the end (5 matrices on 2 threads: about 2.5 rounds instead of
    3).  Memory: each matrix between the two phases holds an n x n scratch W (all of them, at worst),
    and each running tridiagonalisation dstedc's n^2 workspace.  Otherwise whole ``dsyevd`` calls
    (2 n^2 workspace each).  BLAS threads are the caller's to limit.  An error stops the others at
    their next step and is raised here; so is a Ctrl-C (the threads finish the LAPACK call they are
    in).  ``workers == 1``: one after the other in this thread.
    """
    items = list(mats)
    mats.clear()
    split = blocks_are_safe() if split is None else split
    if workers <= 1:
        for i in range(len(items)):
            job, items[i] = _Phased(items[i]), None
            job.tridiagonalize()
            job.back_transform(0, job.n)
            yield (i, *job.finish())
            del job
        return
    tasks: queue.PriorityQueue = queue.PriorityQueue()
    done: queue.Queue = queue.Queue()
    order = itertools.count()
    stop = threading.Event()
    lock = threading.Lock()
    pending = {}

    def tridiagonalize(i):
        if not split:
            A, items[i] = items[i], None
            done.put((i, *eigh_inplace(A), None))
            return
        job, items[i] = _Phased(items[i]), None
        job.tridiagonalize()
        cuts = np.linspace(0, job.n, workers + 1).astype(int)
        blocks = [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a] or [(0, 0)]
        with lock:
            pending[i] = [job, len(blocks)]
        for a, b in blocks:
            tasks.put((1, next(order), back_transform, (i, a, b)))

    def back_transform(i, a, b):
        job = pending[i][0]
        job.back_transform(a, b)
        with lock:
            pending[i][1] -= 1
            last = pending[i][1] == 0
            if last:
                del pending[i]
        if last:
            done.put((i, *job.finish(), None))

    def worker():
        while True:
            _, _, fn, args = tasks.get()
            if fn is None:
                return
            if stop.is_set():
                continue
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                stop.set()
                done.put((args[0], None, None, exc))

    for i in range(len(items)):
        tasks.put((0, next(order), tridiagonalize, (i,)))
    threads = [threading.Thread(target=worker, name=f"ntkfast-eigh-{t}", daemon=True) for t in range(workers)]
    for t in threads:
        t.start()
    try:
        for _ in range(len(items)):
            i, w, V, exc = done.get()
            if exc is not None:
                raise exc
            yield i, w, V
            del w, V
    finally:
        stop.set()
        for _ in threads:
            tasks.put((2, next(order), None, ()))  # after every queued task: the threads skip those
        for t in threads:
            t.join()
        pending.clear()
