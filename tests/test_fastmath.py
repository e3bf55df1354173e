"""The vectorisable elementary functions of ``ntkfast._jit`` (exp, expm1), against 80-bit libm.

The truth is NumPy's ``exp``/``expm1`` in ``np.longdouble`` (x87 extended precision, 64-bit
mantissa: independent of our code and 11 bits more accurate than the float64 result).
"""

import re

import numba
import numpy as np
import pytest

from ntkfast import _jit
from ntkfast._jit import JIT_OPTIONS

_compile = numba.njit(**dict(JIT_OPTIONS, cache=False))


@_compile
def _exp_array(x, out):
    for i in range(x.shape[0]):
        out[i] = _jit.exp(x[i])


@_compile
def _expm1_array(x, out):
    for i in range(x.shape[0]):
        out[i] = _jit.expm1(x[i])


@_compile
def _expm1_small_array(x, out):
    for i in range(x.shape[0]):
        out[i] = _jit.expm1_small(x[i])


_HAS_LONGDOUBLE = np.finfo(np.longdouble).nmant >= 63


def _ulps(got, x, ref_fn, dtype):
    """|got - f(x)| in units of the spacing of f(x) rounded to ``dtype`` (at least the smallest
    subnormal); entries whose rounded truth is not finite must match exactly (returned apart)."""
    with np.errstate(all="ignore"):
        ref = ref_fn(x.astype(np.longdouble))
        rounded = ref.astype(dtype)
        spacing = np.maximum(np.spacing(np.abs(rounded)), np.finfo(dtype).smallest_subnormal).astype(np.longdouble)
        finite = np.isfinite(rounded)
        err = np.where(finite, np.abs(got.astype(np.longdouble) - ref) / spacing, 0.0)
    return err, finite, rounded


def _sample(dtype, lo, hi, seed=0):
    rng = np.random.default_rng(seed)
    tiny = np.finfo(dtype).smallest_subnormal
    parts = [
        rng.uniform(lo, hi, 200_000),  # the whole range, both ends past overflow / underflow
        rng.uniform(-1.0, 1.0, 50_000),
        rng.standard_normal(50_000) * 10.0 ** rng.uniform(-40 if dtype == np.float32 else -300, 0, 50_000),
        np.linspace(-0.8, 0.8, 20_001),  # across expm1's switch at |x| = 0.5
    ]
    x = np.concatenate(parts).astype(dtype)
    return np.concatenate([x, np.array([0.0, -0.0, tiny, -tiny, 1.0, -1.0], dtype)])


@pytest.mark.skipif(not _HAS_LONGDOUBLE, reason="needs 80-bit long double as the reference")
@pytest.mark.parametrize(
    "dtype, lo, hi",
    [(np.float64, -760.0, 720.0), (np.float32, -110.0, 95.0)],
)
def test_exp_within_one_ulp_over_the_full_range(dtype, lo, hi):
    x = _sample(dtype, lo, hi)
    got = np.empty_like(x)
    _exp_array(x, got)
    err, finite, rounded = _ulps(got, x, np.exp, dtype)
    assert err.max() <= 1.0
    np.testing.assert_array_equal(got[~finite], rounded[~finite])  # inf past the overflow threshold
    assert got[x == 0].tolist() == [1.0] * int((x == 0).sum())  # exp(+-0) = 1 exactly
    # subnormal results (rounded once, like libm) and the underflow to 0 were in the sample
    tiny_out = (rounded > 0) & (rounded < np.finfo(dtype).tiny)
    assert tiny_out.sum() > 100 and (rounded == 0).sum() > 100


@pytest.mark.skipif(not _HAS_LONGDOUBLE, reason="needs 80-bit long double as the reference")
@pytest.mark.parametrize(
    "dtype, lo, hi, max_ulp",
    [(np.float64, -760.0, 720.0, 1.25), (np.float32, -110.0, 95.0, 1.5)],
)
def test_expm1_within_about_one_ulp_over_the_full_range(dtype, lo, hi, max_ulp):
    x = _sample(dtype, lo, hi, seed=1)
    got = np.empty_like(x)
    _expm1_array(x, got)
    err, finite, rounded = _ulps(got, x, np.expm1, dtype)
    assert err.max() <= max_ulp
    np.testing.assert_array_equal(got[~finite], rounded[~finite])
    small = np.abs(x) < np.finfo(dtype).eps ** 2  # expm1(x) = x there, sign of zero included
    np.testing.assert_array_equal(got[small], x[small])
    assert np.array_equal(np.signbit(got[small]), np.signbit(x[small]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_expm1_small_on_its_interval(dtype):
    x = np.linspace(-0.5, 0.5, 30_001).astype(dtype)
    got = np.empty_like(x)
    _expm1_small_array(x, got)
    ref = np.expm1(x.astype(np.float64))
    assert np.max(np.abs(got - ref) / np.maximum(np.abs(ref), np.finfo(dtype).tiny)) < 2 * np.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fn", [_exp_array, _expm1_array])
def test_special_values_as_libm(fn, dtype):
    x = np.array([np.inf, -np.inf, np.nan, -np.nan, 1e6, -1e6, 3e38, -3e38], dtype)
    got = np.empty_like(x)
    fn(x, got)
    with np.errstate(all="ignore"):
        want = (np.exp if fn is _exp_array else np.expm1)(x)
    np.testing.assert_array_equal(got, want)  # NaN == NaN here


def test_overflow_and_underflow_thresholds_float64():
    x = np.array([709.782712893383, 709.782712893385, -745.1332191019411, -745.1332191019412, -708.39641853226])
    got = np.empty_like(x)
    _exp_array(x, got)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, np.exp(x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fn", [_exp_array, _expm1_array])
def test_loops_over_them_vectorise(fn, dtype):
    """A loop calling them compiles to SIMD code with no libm call left (the point of having them)."""
    x = np.ones(64, dtype)
    fn(x, x.copy())
    sig = [s for s in fn.signatures if s[0].dtype == numba.from_dtype(dtype)][0]
    ir = fn.inspect_llvm(sig)
    bits = "double" if dtype == np.float64 else "float"
    assert re.search(rf"<\d+ x {bits}>", ir), "the loop did not vectorise"
    assert not re.search(r"call [^@]*@(exp|expm1|expf|expm1f)\b", ir)
    assert "x double>" not in ir or dtype == np.float64, "float32 was widened to float64"


@pytest.mark.parametrize("name", ["sin", "cos", "rbf", "exp", "gaussian"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_family_recursion_loop_vectorises(name, dtype):
    """The tile kernels of the exp families vectorise: vector types of the working precision in
    the optimised IR, no libm exp call and no recursion function left as a call."""
    from ntkfast import spec
    from ntkfast.backends import cpu

    act = spec.get_activation(name)
    tile = cpu.recursion_kernels(act.code).tile
    fresh = _compile(tile.py_func)  # cached code cannot be inspected
    n = 16
    G = np.full((n, n), 0.5, dtype)
    sig = np.ones((1, n), dtype)
    params = np.asarray(act.params, dtype)
    first = np.full(4, 0.5, dtype)
    steps = np.full((1, 5), 0.5, dtype)
    out = G.copy()[None]
    write_at, with_readout = np.array([1], np.int64), np.zeros(1, np.bool_)
    fresh(params, first, steps, G, sig, sig, out, out.copy(), 0, 0, True, True, dtype(-np.inf), write_at,
          np.zeros(5, dtype), with_readout)  # fmt: skip
    ir = "\n".join(fresh.inspect_llvm().values())
    bits = "double" if dtype == np.float64 else "float"
    assert re.search(rf"<(4|8|16) x {bits}>", ir), "the recursion loop did not vectorise"
    assert not re.search(r"call [^@]*@(exp|expm1|expf|expm1f)\b", ir), "a libm exp is left in the loop"
    assert not re.search(r"call \S+ @_ZN7ntkfast9recursion", ir), "a recursion function was not inlined"


def test_divider_free_sqrt_div_of_the_limits_bench_is_accurate():
    """``bench --limits`` times a divider-free sqrt(x)/d (float32 estimates + Newton): it must
    compute the same quotient as the hardware, or its rate would mean nothing."""
    from ntkfast import bench

    rng = np.random.default_rng(3)
    a = 10.0 ** rng.uniform(-30, 30, 4096)
    b = 10.0 ** rng.uniform(-30, 30, 4096)
    out = np.empty_like(a)
    bench._sqrt_div_newton_loop(a, b, out, 1)
    ref = np.sqrt(a) / b
    assert np.max(np.abs(out - ref) / np.spacing(ref)) <= 2


def test_limit_rates_are_positive_and_finite():
    import ntkfast as nf
    from ntkfast import bench

    for _, loop in bench.LIMIT_LOOPS[:1]:
        rate = bench.loop_rate(loop, np.float64, target_s=1e-3)
        assert np.isfinite(rate) and rate > 0
    rate = bench.hot_tile_rate(nf.MLP(depth=2, activation="relu"), np.float32, tile=(8, 32), target_s=1e-3)
    assert np.isfinite(rate) and rate > 0
