"""Rough time estimates for the plan the CLI states before long work.

Each is measured on this machine, now: a warm-up call (Numba compiles or loads its cache), then
the best of two timed calls on a sample, extrapolated by the operation count.  Rough by nature
(a loaded machine, caches, threads): the CLI prints them as "about".
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["kernel_seconds", "cholesky_seconds", "PROBE_ROWS"]

PROBE_ROWS = 1024


def _best_of_two(fn) -> float:
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def kernel_seconds(arch, X, Y=None, get="ntk", dtype=None, n_jobs=None) -> float:
    """Seconds for K(X, X) (upper triangle) or K(X, Y), from a timed Gram of a sample of X."""
    from ..gram import kernel

    rows = np.asarray(X[:PROBE_ROWS])
    kernel(arch, rows[:8], get=get, dtype=dtype, n_jobs=n_jobs)  # compile / load the cache
    seconds = _best_of_two(lambda: kernel(arch, rows, get=get, dtype=dtype, n_jobs=n_jobs))
    per_entry = seconds / (len(rows) * (len(rows) + 1) / 2)
    n = len(X)
    return per_entry * (n * (n + 1) / 2 if Y is None else n * len(Y))


def cholesky_seconds(n: int) -> float:
    """Seconds for the Cholesky factorisation of an n x n matrix, from a timed 1024 x 1024 one."""
    import scipy.linalg

    m = min(n, 1024)
    A = np.eye(m) * m + 1.0
    seconds = _best_of_two(lambda: scipy.linalg.cholesky(A, check_finite=False))
    return seconds * (n / m) ** 3
