"""A symmetric eigendecomposition in the matrix's own memory that lets other threads run meanwhile.

``scipy.linalg.eigh`` holds the GIL for the whole LAPACK call, so two of them on two Python
threads run one after the other.  The model selection of ``_cv`` decomposes one Gram per depth,
and on a few cores LAPACK's ``dsyevd`` scales poorly with its own threads (its tridiagonal
reduction is bound by memory traffic, and a threaded OpenBLAS on a busy machine spins): several
decompositions at once, each on one BLAS thread, finish sooner.  :func:`eigh_inplace` calls the
same LAPACK driver SciPy's ``eigh(driver="evd")`` calls, the one SciPy exports for compiled code
(``scipy.linalg.cython_lapack``), through ``ctypes``, which releases the GIL during the call.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from ..errors import ArgumentError

__all__ = ["eigh_inplace"]

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
