"""What each kernel ridge solver needs in memory, and the budget it is compared with.

One place for the byte estimates, so that :func:`ntkfast.solvers.plan_solver` (which chooses)
and the solvers themselves (which refuse before allocating) agree.  Estimates, in bytes, with
X of shape (n, d), k right-hand sides and ``n_test`` test points:

* every method: X, y and predictions, ``8 (n (d + 2k) + n_test (d + k))``, and the tile scratch
  of the kernel products, ``n_jobs * 2 * min(n, DEFAULT_TILE)^2 * 8``;
* exact Cholesky: the n x n float64 Gram, ``8 n^2`` (factorised in place; test rows streamed);
* CG: ``8 n k (CG_VECTORS + n_jobs)`` (CG vectors and per-thread accumulators);
* Nyström with m centres: ``8 (3 m^2 + 6 m k)`` (K_mm or its working copy and the two
  triangular factors; the CG vectors) and either a streamed block of K_nm
  (``config.BLOCK_BYTES``) or the cached ``n m itemsize``.
"""

from __future__ import annotations

import math
import numbers

from .. import config
from .._validation import check_real
from ..errors import ArgumentError, ArgumentTypeError, ConfigError
from .cg import CG_VECTORS

__all__ = ["data_bytes", "default_centers", "nystrom_bytes", "resolve_budget", "solver_needs"]



def resolve_budget(budget) -> int:
    """Bytes from a ``budget`` argument: None (``config.memory_budget()``), a number, or a size such as "8G".

    Examples
    --------
    >>> resolve_budget("1K")
    1024
    """
    if budget is None:
        return config.memory_budget()
    if isinstance(budget, str):
        try:
            return config.parse_bytes(budget, "budget")
        except ConfigError as exc:
            raise ArgumentError(str(exc)) from None
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise ArgumentTypeError(f"budget: expected a number of bytes or a string such as '8G', got {budget!r}")
    value = check_real(budget, "budget")
    if not (math.isfinite(value) and value >= 1):
        raise ArgumentError(f"budget: expected a number of bytes >= 1 or a string such as '8G', got {budget!r}")
    return int(value)


def default_centers(n: int) -> int:
    """Default number of Nyström centres: ``2 sqrt(n)``, at least 100 and at most n.

    >>> default_centers(10**6)
    2000
    """
    return int(min(n, max(config.NYSTROM_MIN_M, round(2 * math.sqrt(n)))))


def data_bytes(n: int, n_test: int, k: int, d: int, n_jobs: int) -> int:
    """Bytes every method needs: X, y and predictions, and the tile scratch of the kernel products."""
    return 8 * (n * (d + 2 * k) + n_test * (d + k)) + n_jobs * 2 * min(n, config.DEFAULT_TILE) ** 2 * 8


def nystrom_bytes(n: int, m: int, k: int, itemsize: int, cached: bool, base: int = 0) -> int:
    """Bytes of a Nyström fit with m centres beyond ``base`` (the data): m x m factors, CG vectors, K_nm."""
    stream = n * m * itemsize if cached else min(config.BLOCK_BYTES, n * m * itemsize)
    return base + 8 * (3 * m * m + 6 * m * k) + stream


def solver_needs(n: int, n_test: int, k: int, d: int, m: int, itemsize: int, n_jobs: int) -> dict:
    """Bytes per method: keys "cholesky", "cg", "nystrom" (K_nm streamed) and "nystrom_cached"."""
    base = data_bytes(n, n_test, k, d, n_jobs)
    return {
        "cholesky": base + 8 * n * n + min(config.BLOCK_BYTES, 8 * n * n_test),
        "cg": base + 8 * n * k * (CG_VECTORS + n_jobs),
        "nystrom": nystrom_bytes(n, m, k, itemsize, False, base),
        "nystrom_cached": nystrom_bytes(n, m, k, itemsize, True, base),
    }
