"""Extreme but representable scales (issue 12 item 3): truths from homogeneity, scale invariance
and an extended-precision recursion, not from our own code at ordinary scales.

ABReLU (ReLU, abs, leaky ReLU) without biases is homogeneous: every Sigma and Theta of the NTK
parameterization scales as c^2 when the inputs do, and as W^(2 (depth + 1)) with W_std.  Sign is
scale-invariant in its inputs (its K depends on the angle only).  Before the scaled form of
``recursion._angle``, sxx * syy overflowed (or underflowed) at variances around 1e+-154 and every
pair was taken as parallel while the diagonal stayed right.
"""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ntkfast as nf
from ntkfast.errors import ArgumentError

EXAMPLES = settings().max_examples  # from the profile loaded in conftest.py

HOMOGENEOUS = ["relu", "abs", "leaky_relu"]
# variances stay normal numbers, with room for the constants of the recursion
SAFE_LOG10 = 295.0


def _base(seed: int, n: int, d: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X[-1] = X[0]  # an exact duplicate: parallel at every scale
    return X.astype(dtype)


def _layer_log10_variances(log_c: float, log_w: float, depth: int) -> list[float]:
    """log10 of (a bound on) the diagonal variances entering each step and leaving the last."""
    return [2 * log_c + 2 * (layer + 1) * log_w for layer in range(depth + 1)]


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    act=st.sampled_from(HOMOGENEOUS),
    depth=st.integers(1, 3),
    log_c=st.floats(-150, 150),
    seed=st.integers(0, 2**31 - 1),
)
def test_homogeneous_in_the_inputs_over_the_float_range(act, depth, log_c, seed):
    c = 10.0**log_c
    X = _base(seed, 5, 3, np.float64)
    arch = nf.MLP(depth=depth, activation=act, W_std=1.3, b_std=None)
    assume(max(abs(v) for v in _layer_log10_variances(log_c, math.log10(1.3), depth)) < SAFE_LOG10)
    ref = nf.kernel(arch, X, get=("nngp", "ntk"))
    got = nf.kernel(arch, X * c, get=("nngp", "ntk"))
    cross = nf.kernel(arch, X * c, X[::-1] * c, get="ntk")  # the general (non-symmetric) path
    for K, K1 in zip(got, ref):
        np.testing.assert_allclose(K / c**2, K1, rtol=1e-11, atol=0)
    np.testing.assert_allclose(cross / c**2, ref[1][:, ::-1], rtol=1e-11, atol=0)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    act=st.sampled_from(HOMOGENEOUS),
    depth=st.integers(1, 3),
    log_w=st.floats(-150, 150),
    log_c=st.floats(-150, 150),
    seed=st.integers(0, 2**31 - 1),
)
def test_homogeneous_in_W_std_over_the_float_range(act, depth, log_w, log_c, seed):
    """NTK parameterization, no biases: Sigma and Theta scale as W^(2 (depth + 1)) c^2; where a
    variance leaves the float range (by a margin) the call is refused, never silently wrong."""
    logs = _layer_log10_variances(log_c, log_w, depth)
    w = 10.0**log_w
    c = 10.0**log_c
    X = _base(seed, 4, 2, np.float64)
    arch = nf.MLP(depth=depth, activation=act, W_std=w, b_std=None)
    if max(logs) > 312:
        with pytest.raises(ValueError, match="overflow"):
            nf.kernel(arch, X * c)
        return
    if min(logs) < -330:
        with pytest.raises(ArgumentError, match="underflow"):
            nf.kernel(arch, X * c)
        return
    assume(max(abs(v) for v in logs) < SAFE_LOG10)
    ref = nf.kernel(nf.MLP(depth=depth, activation=act, W_std=1.0, b_std=None), X, get=("nngp", "ntk"))
    got = nf.kernel(arch, X * c, get=("nngp", "ntk"))
    # the scale as a power of ten: w**(2 (depth + 1)) itself may leave the float range
    for K, K1 in zip(got, ref):
        ratio = np.log10(np.abs(K[K1 != 0])) - np.log10(np.abs(K1[K1 != 0]))
        np.testing.assert_allclose(ratio, logs[-1], rtol=0, atol=1e-11 * max(1.0, abs(logs[-1])))
        np.testing.assert_array_equal(np.sign(K), np.sign(K1))


@settings(max_examples=EXAMPLES, deadline=None)
@given(depth=st.integers(1, 4), log_c=st.floats(-150, 150), seed=st.integers(0, 2**31 - 1))
def test_sign_is_scale_invariant_over_the_float_range(depth, log_c, seed):
    X = _base(seed, 5, 3, np.float64)
    arch = nf.MLP(depth=depth, activation="sign", W_std=1.0, b_std=None)
    ref = nf.kernel(arch, X, get=("nngp", "ntk"))
    got = nf.kernel(arch, X * 10.0**log_c, get=("nngp", "ntk"))
    for K, K1 in zip(got, ref):
        np.testing.assert_allclose(K, K1, rtol=1e-12, atol=1e-12)
    assert np.all(np.diag(got[0]) == 1.0)


@settings(max_examples=max(EXAMPLES // 2, 1), deadline=None)
@given(act=st.sampled_from(HOMOGENEOUS + ["sign"]), log_c=st.floats(-15, 15), seed=st.integers(0, 2**31 - 1))
def test_float32_scales(act, log_c, seed):
    """float32: variances up to 1e30 (sxx * syy would overflow float32 above ~1e19)."""
    c = np.float32(10.0**log_c)
    X = _base(seed, 5, 3, np.float32)
    arch = nf.MLP(depth=2, activation=act, W_std=1.0, b_std=None)
    ref = nf.kernel(arch, X.astype(np.float64))
    got = nf.kernel(arch, X * c).astype(np.float64)
    deg = 0 if act == "sign" else 2
    scale = float(c) ** deg
    np.testing.assert_allclose(got / scale, ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max())


@pytest.mark.parametrize("act", ["erf", "gelu", "sign", "relu"])
def test_no_pair_is_taken_as_parallel_at_large_variance(act):
    """At inputs of size 1e100 (variances 1e200, sxx * syy = inf in float64) orthogonal inputs
    stay orthogonal: erf and sign give 0, GELU and ReLU their large-variance limit."""
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]) * 1e100
    K = nf.kernel(nf.MLP(depth=1, activation=act, b_std=None), X, get="nngp")
    if act in ("erf", "sign"):
        assert K[0, 1] == 0.0
        # 45 degrees: sign gives 1 - 2 theta/pi = 1/2 on the first layer's angle
        if act == "sign":
            assert K[0, 2] == pytest.approx(0.5, rel=1e-14)
    else:
        # ReLU / GELU at huge variance: the arc-cosine kernel, K(e1, e2) = W^2 sqrt(sxx syy)/(2 pi)
        s = 1e200 / 2  # W_std = 1, d = 2
        assert K[0, 1] == pytest.approx(s / (2 * math.pi), rel=1e-12)


def test_large_variance_erf_matches_its_limit():
    """erf(b x) tends to sign(x) as the variance grows: K -> a^2 (2/pi) arcsin(rho)."""
    rho = 0.3
    X = np.array([[1.0, 0.0], [rho, math.sqrt(1 - rho**2)]]) * 1e120
    K = nf.kernel(nf.MLP(depth=1, activation="erf", b_std=None), X, get="nngp")
    assert K[0, 1] == pytest.approx((2 / math.pi) * math.asin(rho), rel=1e-12)


def _relu_truth(x, y, depth, w):
    """ReLU, NTK parameterization, no biases, in extended precision (x87 long double): the
    arc-cosine recursion on the angle, theta = 0 exactly for x == y."""
    ld = np.longdouble
    pi = np.arccos(ld(-1))
    w2 = ld(w) ** 2
    x, y = x.astype(ld), y.astype(ld)
    same = np.array_equal(x, y)
    sxx, syy, sxy = w2 * np.dot(x, x) / len(x), w2 * np.dot(y, y) / len(x), w2 * np.dot(x, y) / len(x)
    t = sxy
    for _ in range(depth):
        th = ld(0) if same else np.arccos(np.clip(sxy / (np.sqrt(sxx) * np.sqrt(syy)), -1, 1))
        k = np.sqrt(sxx) * np.sqrt(syy) * (np.sin(th) + (pi - th) * np.cos(th)) / (2 * pi)
        t = w2 * k + w2 * (pi - th) / (2 * pi) * t
        sxy = w2 * k
        sxx, syy = w2 * sxx / 2, w2 * syy / 2
    return float(sxy), float(t)


@pytest.mark.skipif(np.finfo(np.longdouble).eps > 1e-18, reason="needs an extended-precision long double (x86)")
@pytest.mark.parametrize("depth", [300, 520, 700, 1000])
def test_deep_relu_against_extended_precision(depth):
    """Depth 520-1000 with W_std = 2: the variance grows as 2^depth, so sxx syy overflowed past
    depth ~510 and the kernel drifted by 1e-4 (NNGP) and 100 % (NTK) with no warning."""
    X = np.random.default_rng(1).standard_normal((3, 4))
    nngp, ntk = nf.kernel(nf.MLP(depth=depth, activation="relu", W_std=2.0, b_std=None), X, get=("nngp", "ntk"))
    for i in range(3):
        for j in range(3):
            s, t = _relu_truth(X[i], X[j], depth, 2.0)
            assert nngp[i, j] == pytest.approx(s, rel=1e-13)
            assert ntk[i, j] == pytest.approx(t, rel=1e-10)


def test_overflowing_results_are_refused():
    """Where the result really leaves the float range the call says so (no inf, no NaN)."""
    X = np.random.default_rng(0).standard_normal((3, 2))
    with pytest.raises(ValueError, match="overflow"):
        nf.kernel(nf.MLP(depth=1100, activation="relu", W_std=2.0, b_std=None), X)
    with pytest.raises(ValueError, match="overflow"):
        nf.kernel(nf.MLP(depth=2, activation="relu", W_std=1e100, b_std=None), X * 1e10)


@pytest.mark.parametrize(
    "arch, scale",
    [
        (nf.MLP(depth=2, activation="sign", W_std=1e-150, b_std=None), 1e-150),  # first layer: 1e-600
        (nf.MLP(depth=3, activation="relu", W_std=1e-100, b_std=None), 1.0),  # a later layer: 1e-400
        (nf.MLP(depth=1, activation="relu", b_std=None), 1e-155),  # subnormal first-layer variance
    ],
)
def test_underflowing_variances_are_refused(arch, scale):
    """Underflow is silent otherwise: sign would give K(x, x) = 0 instead of 1."""
    X = np.random.default_rng(0).standard_normal((3, 2)) * scale
    with pytest.raises(ArgumentError, match="underflow"):
        nf.kernel(arch, X)


def test_zero_rows_and_zero_weights_are_not_underflow():
    X = np.zeros((2, 3))
    assert np.all(nf.kernel(nf.MLP(depth=2, activation="relu", b_std=None), X) == 0)
    X = np.random.default_rng(0).standard_normal((2, 3))
    assert np.all(nf.kernel(nf.MLP(depth=2, activation="relu", W_std=0.0, b_std=None), X, get="nngp") == 0)


@pytest.mark.parametrize("act", ["sin", "cos", "rbf"])
@pytest.mark.parametrize("log_scale", [4, 8, 12])
def test_exp_families_keep_duplicates_exact_at_large_variance(act, log_scale):
    """sin/cos/rbf see E(u - v)^2 = sxx + syy - 2 sxy, which cancels for duplicates (BLAS and the
    row norms round differently): 1e-8 off at inputs of 1e4, K ~ 1e55 at 1e9.  A duplicate pair
    of K(X, Y) must equal the exact diagonal."""
    X = np.random.default_rng(3).standard_normal((4, 5)) * 10.0**log_scale
    arch = nf.MLP(depth=1, activation=act, b_std=None)
    K = nf.kernel(arch, X, X.copy(), get="nngp")
    np.testing.assert_allclose(np.diag(K), nf.kernel_diag(arch, X, get="nngp"), rtol=1e-14)
    assert np.all(np.abs(K) <= np.sqrt(np.outer(np.diag(K), np.diag(K))) * (1 + 1e-12))


@pytest.mark.parametrize("act", ["relu", "abs", "erf", "gelu", "sign", "sin", nf.RectifiedMonomial(2)])
@pytest.mark.parametrize("log_scale", [-3, 0, 3, 5])
def test_float32_near_duplicates_at_large_variance(act, log_scale):
    """float32 rows within a few ulps of each other (and exact duplicates), at variances up to
    1e10: the float64 refinement of nearly parallel pairs keeps K(X, Y) within 2e-5 of the float64
    kernel of the same float32 inputs (issue 12 item 11 was GELU losing 1.3e-4 here)."""
    if isinstance(act, nf.RectifiedMonomial) and log_scale != 0:
        pytest.skip("max(x, 0)^2 squares the variance at each layer: it leaves float32's range there")
    rng = np.random.default_rng(7)
    X = (10.0**log_scale * rng.standard_normal((6, 3))).astype(np.float32)
    Y = (X * (1 + np.float32(1.2e-7) * rng.integers(-3, 4, (6, 1)))).astype(np.float32)
    Y[4:] = X[4:]
    for b_std in (None, 0.1):
        arch = nf.MLP(depth=3, activation=act, W_std=1.3, b_std=b_std)
        got = nf.kernel(arch, X, Y, get=("nngp", "ntk"))
        ref = nf.kernel(arch, X.astype(np.float64), Y.astype(np.float64), get=("nngp", "ntk"))
        for K32, K64 in zip(got, ref):
            np.testing.assert_allclose(K32, K64, rtol=0, atol=2e-5 * np.abs(K64).max())


@pytest.mark.parametrize("name", ["erf_grad", "gelu_grad"])
@pytest.mark.parametrize("scale", [1e-100, 1.0, 1e100, 1e300])
def test_gradients_at_extreme_variances_match_finite_differences(name, scale):
    """The partials used by ntkfast.sklearn's hyper-parameter gradients: r^2 (erf) and D^2 (GELU)
    used to overflow at variances ~1e154 / ~1e77 (inf or 0 partials)."""
    from ntkfast import recursion

    grad = getattr(recursion, name)
    forward = recursion.erf if name == "erf_grad" else recursion.gelu
    extra = (1.1, 0.8, 0.2) if name == "erf_grad" else ()
    sxx, syy, sxy = 1.3 * scale, 0.7 * scale, 0.4 * scale
    g = grad(*extra, sxx, syy, sxy)
    assert np.isfinite(g).all()
    for axis in range(3):
        h = 1e-5 * scale
        e = np.eye(3)[axis] * h
        plus = forward(*extra, sxx + e[0], syy + e[1], sxy + e[2])
        minus = forward(*extra, sxx - e[0], syy - e[1], sxy - e[2])
        for q in range(2):
            fd = (plus[q] - minus[q]) / (2 * h)
            assert g[2 + 3 * q + axis] == pytest.approx(fd, rel=1e-6, abs=1e-9 * abs(g[q]) / scale)
