"""Numba compilation settings and dtype-generic scalar helpers shared by every jitted kernel.

The fastmath flag set lives here and nowhere else.  It deliberately leaves out ``nnan``
and ``ninf``: with them LLVM may delete the clamps and NaN checks the recursions rely on.
``contract`` lets LLVM fuse multiply-adds (polynomials), ``nsz`` lets it ignore the sign of
zero; neither changes a result by more than an ulp.
"""

from __future__ import annotations

import functools
import hashlib
import math
import signal
import threading
from types import CodeType

import numba
import numpy as np
from numba.core import types
from numba.core.caching import FunctionCache
from numba.core.dispatcher import Dispatcher
from numba.core.runtime.nrt import rtsys
from numba.core.serialize import dumps
from numba.extending import intrinsic, overload

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


class _KernelCache(FunctionCache):
    """Numba's on-disk function cache for ntkfast's own kernels, loading an entry without Numba's
    ``refresh`` (issue 17 item 6).

    Numba's ``load_overload`` first refreshes the target context: it imports and installs every
    typing and lowering registry (``numba.np.arraymath``, ``numba.typed``, ..., and through them
    ``scipy.linalg``), ~90% of a trivial function's first cached call (0.37 s of CPU against 0.04 s
    here, ``ntkfast bench --startup``), needed to *compile* but not to rebuild a compiled library from
    its object code.  What rebuilding does need of it is the runtime (NRT:
    the kernels allocate scratch with ``np.empty``), initialised here.  A cache miss compiles
    through Numba's pipeline, which refreshes first as always; other packages' Numba functions keep
    Numba's own cache.  Should Numba's cache internals change, this falls back to Numba's method.
    ntkfast's kernels use no hashing, dictionaries, strings or parallel loops, whose symbols and
    hooks other registries would install (tests/test_startup.py loads every first-call kernel this
    way in a fresh process and checks the values).
    """

    def load_overload(self, sig, target_context):
        load = getattr(self, "_load_overload", None)
        guard = getattr(self, "_guard_against_spurious_io_errors", None)
        if load is None or guard is None:
            return super().load_overload(sig, target_context)
        rtsys.initialize(target_context)
        with guard():
            return load(sig, target_context)


class _StableClosureCache(_KernelCache):
    """:class:`_KernelCache` with :func:`_stable_token` in the closure part of the key."""

    def _index_key(self, sig, codegen):
        closure = self._py_func.__closure__
        if not closure or not any(isinstance(c.cell_contents, Dispatcher) for c in closure):
            return super()._index_key(sig, codegen)  # the same key as Numba's own
        cvarbytes = dumps(tuple(_stable_token(c.cell_contents) for c in closure))
        codebytes = self._py_func.__code__.co_code
        return (sig, codegen.magic_tuple(),
                (hashlib.sha256(codebytes).hexdigest(), hashlib.sha256(cvarbytes).hexdigest()))


def _compile(func, **options):
    # cache=False, then the cache ``cache=True`` would install (one FunctionCache per dispatcher, not
    # two: each looks up its cache folder on disk), with the loader and the stable key above
    dispatcher = numba.njit(**options, **dict(JIT_OPTIONS, cache=False))(func)
    if isinstance(dispatcher, Dispatcher):  # not the plain function of NUMBA_DISABLE_JIT=1
        dispatcher._cache = (_StableClosureCache if func.__closure__ else _KernelCache)(func)
        dispatcher._compile_for_args = signals_held(dispatcher._compile_for_args)
    return dispatcher


def signals_held(compile_for_args):
    """``compile_for_args`` with SIGINT/SIGTERM's Python handlers held back while it runs in the
    main thread, and run once it returns.

    Numba compiles through LLVM, which calls back into Python (ctypes callbacks); a handler that
    raises there, ``KeyboardInterrupt`` by default, has its exception swallowed, and a Ctrl-C in a
    first call's compilation would be lost: the kernel would then run to the end.  While held, a
    signal is only recorded; the handler it was meant for runs after the compilation (or the cache
    load), where its exception propagates.  Handlers that are not Python functions (the default
    SIGTERM, SIG_IGN) are left alone."""

    @functools.wraps(compile_for_args)
    def held(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return compile_for_args(*args, **kwargs)  # Python runs handlers in the main thread only
        handlers, arrived = {}, []
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if callable(previous):
                handlers[signum] = previous
                signal.signal(signum, lambda s, frame: arrived.append(s))
        try:
            return compile_for_args(*args, **kwargs)
        finally:
            for signum, previous in handlers.items():
                signal.signal(signum, previous)
            if arrived:
                handlers[arrived[0]](arrived[0], None)

    return held


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


def int_like(x, v):
    """The integer ``v`` as a signed integer as wide as the float ``x`` (int32 for float32, else
    int64) once compiled; ``v`` itself in plain Python.  (Numba widens int32 arithmetic to int64.)"""
    return v


@overload(int_like, inline="always")
def _int_like_impl(x, v):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x, v: np.int32(v)
    return lambda x, v: np.int64(v)


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
    """atan(q) for |q| <= tan(pi/8): q P(q^2), P by Estrin's scheme (pairs of coefficients, then
    pairs of pairs in z^2, z^4, z^8), whose dependency chain is 4 fused multiply-adds deep instead of
    Horner's 11: the tile loops are bound by the latency of one entry's chain (sqrt, division, this
    polynomial) more than by the arithmetic, most with AVX2's 4 float64 lanes (issue 17)."""
    z = q * q
    z2 = z * z
    if is_single(q):
        p = (like(q, _ATAN32[0]) + like(q, _ATAN32[1]) * z) + (like(q, _ATAN32[2]) + like(q, _ATAN32[3]) * z) * z2
        p = p + like(q, _ATAN32[4]) * (z2 * z2)
    else:
        z4 = z2 * z2
        p01 = like(q, _ATAN64[0]) + like(q, _ATAN64[1]) * z
        p23 = like(q, _ATAN64[2]) + like(q, _ATAN64[3]) * z
        p45 = like(q, _ATAN64[4]) + like(q, _ATAN64[5]) * z
        p67 = like(q, _ATAN64[6]) + like(q, _ATAN64[7]) * z
        p89 = like(q, _ATAN64[8]) + like(q, _ATAN64[9]) * z
        pab = like(q, _ATAN64[10]) + like(q, _ATAN64[11]) * z
        low = (p01 + p23 * z2) + (p45 + p67 * z2) * z4
        p = low + (p89 + pab * z2) * (z4 * z4)
    return q * p


@jit
def _atan_folded(lo, hi):
    """atan(lo / hi) for 0 <= lo <= hi (0 for lo = hi = 0): one division, the ratio reduced to
    |q| <= tan(pi/8) with atan(t) = pi/4 + atan((t - 1)/(t + 1)) folded into the same quotient."""
    big = lo > like(lo, _TAN_PI_8) * hi
    num = lo - hi if big else lo
    den = lo + hi if big else hi
    # den = 0 only with num = 0; the smallest subnormal keeps every other den (one max, no select)
    den = max(den, like(lo, 1e-45) if is_single(lo) else like(lo, 5e-324))
    a = _atan_reduced(num / den)
    return a + like(lo, math.pi / 4) if big else a


@jit
def atan2(y, x):
    """Branch-free, full-accuracy ``atan2`` (LLVM vectorises it; ``math.atan2`` is a libm call).

    One division (:func:`_atan_folded` on min/max of |y|, |x|), then the octant folds.
    Max error about 2 ulp in float64 and float32.  ``atan2(0, 0) = 0``.
    """
    zero = like(x, 0.0)
    ay = abs(y)
    ax = abs(x)
    a = _atan_folded(min(ax, ay), max(ax, ay))
    a = like(x, math.pi / 2) - a if ay > ax else a
    a = like(x, math.pi) - a if x < zero else a
    return -a if y < zero else a


@jit
def atan2_upper(y, x):
    """``atan2(y, x)`` for y >= 0 (the upper half-plane, theta in [0, pi]), and pi/2 at y = x = 0.

    :func:`atan2` without the sign of y; the tie |x| = y folds to pi/2 - pi/4 (exactly pi/4, as
    atan2's), which gives (0, 0) the angle pi/2 of orthogonal vectors with no extra select: the
    convention of ``recursion._angle`` for a zero variance.  Four operations fewer per pair than
    atan2 plus that select (the ReLU family's angle, issue 17).
    """
    ax = abs(x)
    a = _atan_folded(min(ax, y), max(ax, y))
    a = like(x, math.pi / 2) - a if y >= ax else a
    return like(x, math.pi) - a if x < like(x, 0.0) else a


# ------------------------------------------------------------------ vectorisable exp, expm1 (issue 17)
# libm's exp/expm1 are scalar calls, so a loop using them does not vectorise.  These are the
# classic reduction x = k ln2 + r, |r| <= ln2/2 (k = round(x / ln2) by the 1.5 2^p magic number,
# which also leaves k in the low bits of the float: no float-to-int conversion, which AVX2 lacks
# for float64), a Taylor polynomial of exp(r) (truncation below 0.02 ulp), and 2^k as two
# factors built from exponent bits, so that results in the subnormal range round once and
# |k| up to ~1150 (the clamp) neither overflows an exponent field nor needs a branch.
@intrinsic
def _float_bits(typingctx, x):
    """The IEEE bits of a float as a signed integer of the same width (a bit cast)."""
    if not isinstance(x, types.Float):
        return None
    restype = types.int32 if x.bitwidth == 32 else types.int64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(restype))

    return restype(x), codegen


@intrinsic
def _bits_float(typingctx, bits):
    """The float whose IEEE bits are ``bits`` (int32 -> float32, int64 -> float64; a bit cast)."""
    if not isinstance(bits, types.Integer) or bits.bitwidth not in (32, 64):
        return None
    restype = types.float32 if bits.bitwidth == 32 else types.float64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(restype))

    return restype(bits), codegen


_LOG2E = 1.4426950408889634074
# ln 2 in two parts (fdlibm): k * _LN2_HI is exact for |k| < 2^11 (float64), 2^8 (float32)
_LN2_HI64, _LN2_LO64 = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_LN2_HI32, _LN2_LO32 = 6.9314575195e-01, 1.4286067653e-06
_MAGIC64 = 6755399441055744.0  # 1.5 * 2^52: x + magic rounds x to an integer held in the low bits
_MAGIC32 = 12582912.0  # 1.5 * 2^23
# beyond these exp overflows / underflows whatever k is; clamping keeps k small enough that each
# of the two factors 2^k1, 2^k2 is a normal number
_CLAMP64, _CLAMP32 = 800.0, 110.0


@jit
def _reduce(x):
    """(kf, ki, r): x = kf ln2 + r with kf = ki = round(x / ln2) (float and integer), |r| <~ ln2/2."""
    if is_single(x):
        lim = like(x, _CLAMP32)
        magic = like(x, _MAGIC32)
    else:
        lim = like(x, _CLAMP64)
        magic = like(x, _MAGIC64)
    xc = x if x > -lim else -lim  # NaN -> -lim here; the callers return x for NaN
    xc = xc if xc < lim else lim
    t = xc * like(x, _LOG2E) + magic
    kf = t - magic
    ki = int_like(x, _float_bits(t) - _float_bits(magic))
    if is_single(x):
        r = (xc - kf * like(x, _LN2_HI32)) - kf * like(x, _LN2_LO32)
    else:
        r = (xc - kf * like(x, _LN2_HI64)) - kf * like(x, _LN2_LO64)
    return kf, ki, r


@jit
def _expm1_reduced(r):
    """exp(r) - 1 for |r| <= ~0.35, by its Taylor series (Horner): r + r^2 (1/2 + r/6 + ...)."""
    if is_single(r):
        p = like(r, 1.0 / 40320.0)
        p = p * r + like(r, 1.0 / 5040.0)
        p = p * r + like(r, 1.0 / 720.0)
        p = p * r + like(r, 1.0 / 120.0)
        p = p * r + like(r, 1.0 / 24.0)
        p = p * r + like(r, 1.0 / 6.0)
        p = p * r + like(r, 0.5)
    else:
        p = like(r, 1.0 / 87178291200.0)  # 1/14!
        p = p * r + like(r, 1.0 / 6227020800.0)
        p = p * r + like(r, 1.0 / 479001600.0)
        p = p * r + like(r, 1.0 / 39916800.0)
        p = p * r + like(r, 1.0 / 3628800.0)
        p = p * r + like(r, 1.0 / 362880.0)
        p = p * r + like(r, 1.0 / 40320.0)
        p = p * r + like(r, 1.0 / 5040.0)
        p = p * r + like(r, 1.0 / 720.0)
        p = p * r + like(r, 1.0 / 120.0)
        p = p * r + like(r, 1.0 / 24.0)
        p = p * r + like(r, 1.0 / 6.0)
        p = p * r + like(r, 0.5)
    return r + (r * r) * p


@jit
def _pow2_pair(x, ki):
    """(2^k1, 2^k2) in the type of ``x``, k1 + k2 = ki, k1 = floor((ki + 2 off) / 2) - off: both
    normal numbers for |ki| <= ~1150 (float64) / ~160 (float32).  A logical shift of a positive
    value only (AVX2 has no 64-bit arithmetic shift).  One code path for both widths (Numba types
    both arms of an ``is_single`` branch and would widen float32 results to float64)."""
    single = is_single(x)
    bias = 127 if single else 1023
    shift = 23 if single else 52
    off = 256 if single else 2048
    half = int_like(x, ((ki + 2 * off) >> 1) - off)
    rest = int_like(x, ki - half)
    return _bits_float(int_like(x, (half + bias) << shift)), _bits_float(int_like(x, (rest + bias) << shift))


@jit
def exp(x):
    """``math.exp`` without the libm call, so that loops using it vectorise.

    Within 1 ulp of the true value over the whole range (tests/test_fastmath.py checks against
    80-bit ``np.exp``): exp(0) = 1 exactly, inf beyond ~709.78 (88.72 in float32), subnormal
    results rounded once, 0 below ~-745.13 (-103.97), exp(-inf) = 0, exp(inf) = inf, NaN -> NaN.
    """
    kf, ki, r = _reduce(x)
    s1, s2 = _pow2_pair(x, ki)
    y = ((like(x, 1.0) + _expm1_reduced(r)) * s1) * s2
    return x if x != x else y


# 1/n! for n = 2..15: Taylor coefficients of expm1 on |r| <= 1/2 (truncation below 0.02 ulp)
_INV_FACT = tuple(1.0 / math.factorial(n) for n in range(2, 16))


@jit
def expm1_small(r):
    """exp(r) - 1 for |r| <= 1/2 only (within ~1 ulp there): r + r^2 (1/2 + r/6 + ...), Horner.

    The core of :func:`expm1`, public for callers that know their argument is small (the
    recursion's sin family): no range reduction."""
    if is_single(r):
        p = like(r, _INV_FACT[6])  # 1/8!
        p = p * r + like(r, _INV_FACT[5])
        p = p * r + like(r, _INV_FACT[4])
        p = p * r + like(r, _INV_FACT[3])
        p = p * r + like(r, _INV_FACT[2])
        p = p * r + like(r, _INV_FACT[1])
        p = p * r + like(r, _INV_FACT[0])
    else:
        p = like(r, _INV_FACT[13])  # 1/15!
        p = p * r + like(r, _INV_FACT[12])
        p = p * r + like(r, _INV_FACT[11])
        p = p * r + like(r, _INV_FACT[10])
        p = p * r + like(r, _INV_FACT[9])
        p = p * r + like(r, _INV_FACT[8])
        p = p * r + like(r, _INV_FACT[7])
        p = p * r + like(r, _INV_FACT[6])
        p = p * r + like(r, _INV_FACT[5])
        p = p * r + like(r, _INV_FACT[4])
        p = p * r + like(r, _INV_FACT[3])
        p = p * r + like(r, _INV_FACT[2])
        p = p * r + like(r, _INV_FACT[1])
        p = p * r + like(r, _INV_FACT[0])
    return r + (r * r) * p


@jit
def expm1(x):
    """``math.expm1`` without the libm call (vectorises): exp(x) - 1 within ~1 ulp, without
    cancellation for small |x| (expm1(x) = x for tiny x, -0.0 kept), -1 below ~-38, inf beyond ~709.78.

    |x| < 1/2 (where the reduction would cancel: 2 expm1(r) + 1 at x = 0.4 lost 1.8 ulp) is the
    polynomial itself; elsewhere 2^k (expm1(r) + 1) - 1 = 2^k expm1(r) + (2^k - 1), where 2^k - 1 is
    exact while k <= 53; for larger k the 1 no longer matters and the product is formed in two
    factors as in :func:`exp`.
    """
    one = like(x, 1.0)
    kf, ki, r = _reduce(x)
    near = abs(x) < like(x, 0.5)
    r = x if near else r
    kf = like(x, 0.0) if near else kf
    ki = ki - ki if near else ki
    pm = expm1_small(r)
    s1, s2 = _pow2_pair(x, ki)
    big = kf > like(x, 20.0) if is_single(x) else kf > like(x, 50.0)
    s = s1 * s2  # finite when not big
    small_k = s * pm + (s - one)
    large_k = ((pm + one) * s1) * s2 - one
    y = large_k if big else small_k
    y = x if abs(x) < like(x, 1e-30) else y  # keeps -0.0 (r + r^2 p gave +0.0)
    return x if x != x else y
