"""The elementary pieces: branch-free atan2, dtype-generic constants, float32 paths."""

import math
import re

import numba
import numpy as np
import pytest

from ntkfast import _jit
from ntkfast.recursion import _angle, abrelu, dual, dual_diag


def test_atan2_full_accuracy_float64():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(20000) * 10.0 ** rng.uniform(-30, 30, 20000)
    x = rng.standard_normal(20000) * 10.0 ** rng.uniform(-30, 30, 20000)
    special = [(0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0), (0.0, 0.0), (1.0, 1.0), (3.0, -3.0)]
    ours = np.array([_jit.atan2(a, b) for a, b in zip(y, x)] + [_jit.atan2(a, b) for a, b in special])
    ref = np.arctan2(np.r_[y, [a for a, _ in special]], np.r_[x, [b for _, b in special]])
    ulp = np.abs(ours - ref) / np.spacing(np.abs(ref) + 1e-300)
    assert ulp.max() <= 4


def test_atan2_float32():
    rng = np.random.default_rng(1)
    y = rng.standard_normal(5000).astype(np.float32)
    x = rng.standard_normal(5000).astype(np.float32)
    ours = np.array([_jit.atan2(a, b) for a, b in zip(y, x)])
    ref = np.arctan2(y.astype(np.float64), x.astype(np.float64))
    assert np.max(np.abs(ours - ref) / np.abs(ref)) < 4e-7


def test_atan2_upper_half_plane():
    """``atan2_upper`` (recursion._angle's, y >= 0): full accuracy against NumPy, the ties |x| = y,
    and pi/2 at (0, 0) (orthogonal, the zero-variance convention) where atan2 gives 0."""
    rng = np.random.default_rng(2)
    y = np.abs(rng.standard_normal(20000)) * 10.0 ** rng.uniform(-30, 30, 20000)
    x = rng.standard_normal(20000) * 10.0 ** rng.uniform(-30, 30, 20000)
    special = [(0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (1.0, 1.0), (3.0, -3.0), (1e-300, 1.0), (2.0, -1e-300)]
    ours = np.array([_jit.atan2_upper(a, b) for a, b in zip(y, x)] + [_jit.atan2_upper(a, b) for a, b in special])
    ref = np.arctan2(np.r_[y, [a for a, _ in special]], np.r_[x, [b for _, b in special]])
    ulp = np.abs(ours - ref) / np.spacing(np.abs(ref) + 1e-300)
    assert ulp.max() <= 4
    assert _jit.atan2_upper(0.0, 0.0) == math.pi / 2 and _jit.atan2_upper(2.0, 2.0) == math.pi / 4
    assert _jit.atan2_upper(np.float32(0), np.float32(0)) == np.float32(math.pi / 2)
    y32 = np.abs(rng.standard_normal(5000)).astype(np.float32)
    x32 = rng.standard_normal(5000).astype(np.float32)
    ours32 = np.array([_jit.atan2_upper(a, b) for a, b in zip(y32, x32)])
    ref32 = np.arctan2(y32.astype(np.float64), x32.astype(np.float64))
    assert np.max(np.abs(ours32 - ref32) / np.maximum(np.abs(ref32), 1e-30)) < 4e-7


def test_like_keeps_float32():
    @numba.njit
    def tenth(x):
        return _jit.like(x, 0.1)

    assert tenth(np.float32(1.0)) == float(np.float32(0.1)) != 0.1
    assert tenth(1.0) == 0.1
    assert _jit.like(np.float32(1.0), 0.1) == 0.1  # plain Python: the constant itself
    # the plain Python reference (py_func) gives the float64 formula
    k, kdot = abrelu.py_func(0.0, 1.0, 1.0, 2.0, 0.5)
    np.testing.assert_allclose((k, kdot), abrelu(0.0, 1.0, 1.0, 2.0, 0.5), rtol=1e-15)


def test_angle_conventions():
    r, theta = _angle(0.0, 0.0, 0.0)  # zero variance: uncorrelated by convention
    assert r == 0.0 and theta == math.pi / 2
    assert _angle(2.0, 2.0, 2.0) == (0.0, 0.0)
    assert _angle(2.0, 2.0, -2.0) == (0.0, math.pi)
    # within rounding noise of parallel: snapped
    assert _angle(1.0, 1.0, 1.0 - 1e-15)[1] == 0.0
    # a resolvable small angle is kept: 1 - rho = 5e-9 -> theta = 1e-4
    r, theta = _angle(1.0, 1.0, math.cos(1e-4))
    assert theta == pytest.approx(1e-4, rel=1e-6)


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4, 5, 6, 16, 17, 18, 19, 20, 21, 32, 33, 34, 35, 36, 40])
def test_diag_equals_general_formula_at_x_equals_y(code):
    p = (0.3, 0.7, 0.2) if code in (1, 3) else (-0.2, 1.1, 0.0) if code == 0 else (1.0, -0.5, 0.0)
    for s in (0.0, 1e-8, 0.37, 2.5, 40.0):
        got = dual_diag(code, *p, s)
        ref = dual(code, *p, s, s, s)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", ["relu", "erf", "gelu"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_recursion_loop_vectorises(name, dtype):
    """The tile kernel's recursion loop compiles to SIMD code (vector types in the optimised IR),
    with every recursion function inlined (a call inside the loop would stop vectorisation).

    The exp-based families (sin, cos, rbf, exp, gaussian) are checked in tests/test_fastmath.py.
    """
    from ntkfast import spec
    from ntkfast._jit import JIT_OPTIONS
    from ntkfast.backends import cpu

    act = spec.get_activation(name)
    tile = cpu.recursion_kernels(act.code).tile
    fresh = numba.njit(**dict(JIT_OPTIONS, cache=False))(tile.py_func)  # cached code cannot be inspected
    n = 16
    G = np.ones((n, n), dtype)
    sig = np.ones((1, n), dtype)
    params = np.asarray(act.params, dtype)
    first = np.ones(4, dtype)
    steps = np.ones((1, 5), dtype)
    out = G.copy()[None]  # one (n_depths=1, n, n) output per kernel
    write_at, with_readout = np.array([steps.shape[0]], np.int64), np.zeros(1, np.bool_)
    fresh(params, first, steps, G, sig, sig, out, out.copy(), 0, 0, True, True, dtype(-np.inf), write_at,
          np.zeros(5, dtype), with_readout)  # fmt: skip
    ir = "\n".join(fresh.inspect_llvm().values())
    # the only square root is in the recursion loop: a vector sqrt means that loop vectorised
    bits = 64 if dtype == np.float64 else 32
    assert re.search(rf"@llvm\.sqrt\.v\d+f{bits}\(", ir), "the recursion loop did not vectorise"
    assert not re.search(r"call i32 @_ZN7ntkfast9recursion", ir), "a recursion function was not inlined"
