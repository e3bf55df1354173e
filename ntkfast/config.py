"""Every setting of ntkfast in one place: constants, and the environment variables that override them.

Environment variables are read when a setting is used (never at import), parsed and validated
here; a malformed value raises :class:`ntkfast.errors.ConfigError` naming the variable and
what it expects.  See ``docs/design.md`` (section "Settings") for what each one trades.

==========================  ==============================  ========================================
variable                    function                        meaning
==========================  ==============================  ========================================
``NTKFAST_MEMORY_BUDGET``   :func:`memory_budget`           bytes the library may allocate ("8G")
``NTKFAST_DENSE_MAX_N``     :func:`dense_max_n`             largest n of a dense eigendecomposition
``NTKFAST_DEBUG``           :func:`debug`                   CLI: show tracebacks of library errors
==========================  ==============================  ========================================
"""

from __future__ import annotations

import os
import re

from .errors import ConfigError, InsufficientMemoryError

# ------------------------------------------------------------------------------------ tiling
# Tile edge for the fused recursion: a 512 x 512 float64 tile is 2 MiB, near the per-core L2.
DEFAULT_TILE = 512
# Diagonal tiles of a symmetric plan are split down to this edge (less wasted lower triangle).
DIAGONAL_TILE = 128
# The automatic tile edge is not made smaller than this to spread work over threads.
MIN_TILE = 128
# Largest tile edge a caller may ask for: its scratch (tile^2 per thread) must stay small.
MAX_TILE = 16_384

# ------------------------------------------------------------------------------------ numerics
# float32 pairs with 1 - rho^2 below this at the first layer are recomputed in float64: with
# it the float32 error stays below ~2e-5 relative near theta = 0 (5e-4 without).
REFINE_TOL32 = 1e-3

# ------------------------------------------------------------------------ dense factorisations
# SciPy's bundled OpenBLAS: its threaded potrf segfaulted (crashing the interpreter) at
# n = 30 000, 40 000 and 46 000 on a 2-core machine (OpenBLAS issues #352, #2562 describe the
# same), while n = 20 000 ran, and so did a single-threaded potrf at 30 000.  So Cholesky runs
# single-threaded above VERIFIED_N up to the 32-bit index limit; eigendecompositions stop at
# dense_max_n() (VERIFIED_N unless NTKFAST_DENSE_MAX_N says otherwise, for another LAPACK).
VERIFIED_N = 20_000
CHOLESKY_MAX_N = 46_340  # n^2 < 2^31: LP64 LAPACK's index limit

# ------------------------------------------------------------------------------------ solvers
CG_MAX_N = 100_000  # "auto" prefers Nystrom above this n (CG's O(n^2) products per iteration)
BLOCK_BYTES = 64 * 2**20  # row blocks of K_nm streamed by the Nystrom products
CACHED_BLOCK_BYTES = 2**20  # row blocks when K_nm is cached (it is already in memory)
LEVERAGE_POOL = 10  # leverage-score centres are drawn from a uniform pool of this many times m

# ------------------------------------------------------------------------------------ networks
# Largest MLP depth.  Every kernel entry costs O(depth) (10**5 layers of a 1000 x 1000 kernel are
# 10**11 entry-layers, minutes of work), and the per-layer coefficients and widths are O(depth)
# arrays; far below this most activations' kernels have converged to their fixed point.
MAX_DEPTH = 100_000
# Largest width: the standard parameterization's NTK uses the width as a float64 coefficient,
# exact only up to 2**53 (finite networks are bounded by the memory budget long before).
MAX_WIDTH = 2**53
MAX_BLOCK = 4096  # rows per block of the empirical NTK when the budget allows more
SYMMETRIC_MIN_BLOCK, SYMMETRIC_MAX_BLOCK = 256, 512  # block rows for K(X, X) (mirrored): still efficient GEMMs
MAX_SAMPLES = 10**6  # monte_carlo_kernel: beyond this the O(1/width) finite-width bias dominates any width

# ------------------------------------------------------------------------------------ estimators
# diag_reg="auto" picks the ridge by exact leave-one-out on at most this many training points
AUTO_DIAG_REG_N = 1000
# ... and uses this one where that is impossible (fewer than 3 points)
FALLBACK_DIAG_REG = 1e-2
NYSTROM_MIN_M = 100  # the smallest Nystrom model the planner considers when refusing

# ------------------------------------------------------------------------------------ dask
DEFAULT_CHUNK = 2048  # rows per block of the distributed kernel

# ------------------------------------------------------------------------------------ GPU
MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y
GPU_MIN_TILE = 256  # GPU tiles smaller than this leave the device idle


_BYTES = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str, name: str = "NTKFAST_MEMORY_BUDGET") -> int:
    """Bytes from a size such as ``"8G"``, ``"500M"``, ``"1.5GiB"`` or ``"123456"`` (binary units).

    >>> parse_bytes("1.5K")
    1536
    """
    m = _BYTES.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise ConfigError(f"{name}: cannot parse {text!r}; expected a size such as '8G', '500M' or '1.5GiB'")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not 1 <= value < 2**62:
        raise ConfigError(f"{name}: {text!r} is not a usable size; expected at least 1 byte, e.g. '8G'")
    return int(value)


def _positive_int_env(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}: expected a positive integer, got {text!r}") from None
    if value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {text!r}")
    return value


def memory_budget() -> int:
    """Bytes the library may allocate: ``$NTKFAST_MEMORY_BUDGET`` or 80 % of available memory."""
    env = os.environ.get("NTKFAST_MEMORY_BUDGET", "").strip()
    if env:
        return parse_bytes(env)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(0.8 * int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2**62


def dense_max_n() -> int:
    """Largest n of a dense eigendecomposition: ``$NTKFAST_DENSE_MAX_N`` or :data:`VERIFIED_N`."""
    return _positive_int_env("NTKFAST_DENSE_MAX_N", VERIFIED_N)


def debug() -> bool:
    """Whether the CLI shows tracebacks of library errors (``$NTKFAST_DEBUG`` set and not "0")."""
    return os.environ.get("NTKFAST_DEBUG", "").strip() not in ("", "0")


def check_fits(nbytes: int, what: str, alternatives: str) -> None:
    """Refuse, before anything is allocated, a request of ``nbytes`` above :func:`memory_budget`.

    The :class:`~ntkfast.errors.InsufficientMemoryError` names what needs the memory, both sizes,
    and ``alternatives`` (the fix).
    """
    budget = memory_budget()
    if nbytes > budget:
        raise InsufficientMemoryError(
            f"{what} needs {format_bytes(nbytes)} but the memory budget is {format_bytes(budget)}. {alternatives}"
        )


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"

# ----------------------------------------------------- Hermite-series activations (issue 14, act)
# Requested truncation bound of the series (relative to sqrt(K(x, x) K(y, y))), the degree cap,
# and the bound reached at the cap above which ntkfast.series warns (SeriesAccuracyWarning): the
# float64 accuracy the project promises; between SERIES_TOL and it the result is still that good.
SERIES_TOL = 1e-12
SERIES_MAX_DEGREE = 512
SERIES_WARN_BOUND = 1e-10

# ------------------------------------------------------- depths (issue 15 item 1): output stores
# Outputs of K(X, X) (all kernels and depths of one call together) at least this large are written
# with non-temporal stores: a line goes to memory without being read first (no read-for-
# ownership), which halves the memory traffic of writing them; smaller ones stay in the cache.
STREAM_MIN_BYTES = 16 * 2**20

# ------------------------------------------------ ELU/SELU exact (issue 14, elu): closed form near rho = +-1
# True: the CPU kernel gives ELU/SELU pairs beyond the Hermite series' reach (|rho| above ~0.97 at
# SERIES_TOL) the closed form of ntkfast.bivariate.elu_dual (float64 ~1e-11; about 1 us per pair
# and layer, so data whose pairs are nearly all that correlated take ~25x longer than the series).
# False: the series to its degree cap, with the SeriesAccuracyWarning of the bound reached (~1e-5).
ELU_EXACT = True
