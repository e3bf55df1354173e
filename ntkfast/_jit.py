"""Numba compilation settings and dtype-generic scalar helpers shared by every jitted kernel.

The fastmath flag set lives here and nowhere else.  It deliberately leaves out ``nnan``
and ``ninf``: with them LLVM may delete the clamps and NaN checks the recursions rely on.
``contract`` lets LLVM fuse multiply-adds (polynomials), ``nsz`` lets it ignore the sign of
zero; neither changes a result by more than an ulp.
"""

from __future__ import annotations

import hashlib
import math
from types import CodeType

import numba
import numpy as np
from numba.core import types
from numba.core.caching import FunctionCache
from numba.core.dispatcher import Dispatcher
from numba.core.serialize import dumps
from numba.extending import overload

FASTMATH = frozenset({"contract", "nsz"})

# error_model="numpy": division by zero gives inf/nan instead of raising, so no status
# checks sit inside the vectorised loops.
JIT_OPTIONS = dict(fastmath=set(FASTMATH), error_model="numpy", cache=True, nogil=True)


def _stable_token(value):
    """A stand-in for a closure cell that pickles to the same bytes in every process.

    A jitted function pickles with a random per-process UUID (and its globals, other jitted
    functions, with theirs), so Numba's cache key of a closure that calls another closure never
    matched a stored entry: the kernel was compiled again in every process (about 2 s) and one
    more entry appended to the index.  The token names the callee by what defines its code: its
    qualified name, bytecode, constants and, recursively, its own closure cells.  Edits to the
    callee's file invalidate the index anyway (Numba stamps it with the caller's source file,
    and the callees of ``recursion_kernels`` live in the same file).
    """
    if not isinstance(value, Dispatcher):
        return value
    func = value.py_func
    digest = hashlib.sha256()
    _digest_code(func.__code__, digest)
    cells = tuple(_stable_token(c.cell_contents) for c in func.__closure__ or ())
    return ("numba-dispatcher", func.__module__, func.__qualname__, digest.hexdigest(), cells)


def _digest_code(code: CodeType, digest) -> None:
    """Bytecode, global names and constants of ``code``, nested code objects included, in a form that
    does not depend on the process (``repr`` of a code object holds its address, a frozenset's order
    depends on string hashing)."""
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, CodeType):
            _digest_code(const, digest)
        elif isinstance(const, frozenset):
            digest.update(repr(sorted(map(repr, const))).encode())
        else:
            digest.update(repr(const).encode())


class _StableClosureCache(FunctionCache):
    """Numba's on-disk function cache, with :func:`_stable_token` in the closure part of the key."""

    def _index_key(self, sig, codegen):
        closure = self._py_func.__closure__
        if not closure or not any(isinstance(c.cell_contents, Dispatcher) for c in closure):
            return super()._index_key(sig, codegen)  # the same key as Numba's own
        cvarbytes = dumps(tuple(_stable_token(c.cell_contents) for c in closure))
        codebytes = self._py_func.__code__.co_code
        return (sig, codegen.magic_tuple(),
                (hashlib.sha256(codebytes).hexdigest(), hashlib.sha256(cvarbytes).hexdigest()))


def _compile(func, **options):
    dispatcher = numba.njit(**options, **JIT_OPTIONS)(func)
    if func.__closure__:
        dispatcher._cache = _StableClosureCache(func)  # what ``cache=True`` installs, with a stable key
    return dispatcher


def jit(func):
    """Compile serially: scalar formulas (LLVM inlines them into the kernels) and tile kernels.

    (Numba's ``inline="always"`` would force the inlining, but it makes every kernel compile 2.6x
    slower, 12 s instead of 4.6 s cold, and the kernels vectorise without it: see
    tests/test_numerics.py.)  Closures that call other closures get a cache key that is the same
    in every process (:class:`_StableClosureCache`).
    """
    return _compile(func)


def jit_inline(func):
    """:func:`jit` with Numba-level inlining, for the few small helpers that sit at LLVM's inlining
    threshold (``recursion._angle``): each use pays a little compile time, a call left in a tile
    loop would stop it vectorising (tests/test_numerics.py checks that it does not happen)."""
    return _compile(func, inline="always")


def like(x, c):
    """The constant ``c`` in the floating type of ``x``.

    In plain Python this returns ``c``.  Compiled, it casts ``c`` to ``x``'s type, so float32
    formulas stay in float32 (a Python float literal would promote them to float64).
    """
    return c


@overload(like, inline="always")
def _like_impl(x, c):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x, c: np.float32(c)
    return lambda x, c: np.float64(c)


def is_single(x):
    """True when ``x`` is a float32 (a compile-time constant once compiled)."""
    return isinstance(x, np.float32)


@overload(is_single, inline="always")
def _is_single_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: True
    return lambda x: False


# Minimax-like odd polynomial atan(q) = q * P(q^2) on |q| <= tan(pi/8), fitted in 50-digit
# arithmetic (weighted least squares on Chebyshev nodes).  Relative error <= 2.3e-16 (float64)
# and <= 1.9e-8 with the short float32 version.
_ATAN64 = (
    0.99999999999999999875,
    -0.33333333333333122892,
    0.19999999999941291315,
    -0.1428571427928635745,
    0.11111110746593865909,
    -0.090908968543765481812,
    0.076920460958864071215,
    -0.066629601114113943388,
    0.058469361378351640753,
    -0.050353528892446370165,
    0.037971386677667205441,
    -0.017811876599082089294,
)
_ATAN32 = (0.999999981391, -0.333327880717, 0.19974148569, -0.138491018407, 0.0797806334871)
_TAN_PI_8 = 0.41421356237309504880


@jit
def _atan_reduced(q):
    z = q * q
    if is_single(q):
        p = like(q, _ATAN32[4])
        p = p * z + like(q, _ATAN32[3])
        p = p * z + like(q, _ATAN32[2])
        p = p * z + like(q, _ATAN32[1])
        p = p * z + like(q, _ATAN32[0])
    else:
        p = like(q, _ATAN64[11])
        p = p * z + like(q, _ATAN64[10])
        p = p * z + like(q, _ATAN64[9])
        p = p * z + like(q, _ATAN64[8])
        p = p * z + like(q, _ATAN64[7])
        p = p * z + like(q, _ATAN64[6])
        p = p * z + like(q, _ATAN64[5])
        p = p * z + like(q, _ATAN64[4])
        p = p * z + like(q, _ATAN64[3])
        p = p * z + like(q, _ATAN64[2])
        p = p * z + like(q, _ATAN64[1])
        p = p * z + like(q, _ATAN64[0])
    return q * p


@jit
def atan2(y, x):
    """Branch-free, full-accuracy ``atan2`` (LLVM vectorises it; ``math.atan2`` is a libm call).

    One division: the ratio min/max is reduced to |q| <= tan(pi/8) with the identity
    atan(t) = pi/4 + atan((t - 1)/(t + 1)), folded into the same quotient.
    Max error about 2 ulp in float64 and float32.  ``atan2(0, 0) = 0``.
    """
    zero = like(x, 0.0)
    ay = abs(y)
    ax = abs(x)
    hi = max(ax, ay)
    lo = min(ax, ay)
    big = lo > like(x, _TAN_PI_8) * hi
    num = lo - hi if big else lo
    den = lo + hi if big else hi
    den = den if den > zero else like(x, 1.0)
    a = _atan_reduced(num / den)
    a = a + like(x, math.pi / 4) if big else a
    a = like(x, math.pi / 2) - a if ay > ax else a
    a = like(x, math.pi) - a if x < zero else a
    return -a if y < zero else a
