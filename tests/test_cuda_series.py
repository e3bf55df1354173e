"""The Hermite-series activations (code SERIES: tanh, SiLU, ELU, ``Elementwise``, ...) on the GPU
backend, run by the host emulation of the CUDA kernels (``-m cudaemu``, tests/cuda_emu) and, where
a device is present, on real CuPy (``-m gpu``).

Truths, each independent of the kernel under test:

* the CPU series path (``backends/cpu_series``) with every pair at the full degree (the degree
  table flattened to its last column on both): then both evaluate the same polynomial in the
  same order, and agree to ~1e-15 in float64;
* a NumPy replica of the per-pair rule (each pair's degree from its own |rho| bin, Horner, the
  layer step), pair by pair, to 1e-13: the GPU's degree selection itself;
* the CPU series path with its own (per-chunk of 32 columns) degrees: both are within the
  truncation bound (1e-12 of sqrt(K(x,x) K(y,y)) per layer) of the exact kernel, so they agree
  to a few times that.
"""

import warnings

import numpy as np
import pytest
from cuda_emu import fake_cupy, loader

import ntkfast as nf
from ntkfast import config, engine, series
from ntkfast.backends import gpu

ACTS = {
    "tanh": nf.spec.Tanh(),
    "silu": nf.spec.SiLU(),
    "gelu_tanh": nf.spec.GeluTanh(),
    "elu": nf.spec.ELU(0.5),  # kinked: with ELU_EXACT off (full_degree), the series to the cap (warns)
    "elementwise": nf.Elementwise(np.sin, np.cos, name="my_sin"),
}


def _rows(rng, n, d=11):
    Z = rng.standard_normal((n, d))
    return Z / np.linalg.norm(Z, axis=1, keepdims=True) * rng.uniform(0.6, 1.4, (n, 1))


def _scale(K):
    return np.abs(K).max()


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", series.SeriesAccuracyWarning)
        return fn(*args, **kwargs)


@pytest.fixture
def full_degree(monkeypatch):
    """Every pair at its layer's full degree (the last column of the degree table), CPU and GPU."""
    original = series.degree_table
    # ELU_EXACT off: neither backend takes the closed form near rho = +-1, so both run the series
    monkeypatch.setattr(config, "ELU_EXACT", False)

    def full(*args, **kwargs):
        t = original(*args, **kwargs)
        return np.repeat(t[:, -1:], t.shape[1], axis=1)

    monkeypatch.setattr(series, "degree_table", full)


CASES = [("tanh", 1, "ntk"), ("silu", 3, "standard"), ("gelu_tanh", 2, "ntk"), ("elu", 2, "standard"),
         ("elementwise", 2, "ntk")]  # fmt: skip


@pytest.mark.parametrize("name, depth, param", CASES)
def test_series_gram_equals_cpu_at_the_same_degree(cp, rng, full_degree, name, depth, param):
    arch = nf.MLP(depth=depth, activation=ACTS[name], W_std=1.3, b_std=0.2, parameterization=param, width=64)
    X, Y = _rows(rng, 37), _rows(rng, 21)
    X[5] = X[3]  # an exact duplicate row: rho = 1, the full degree
    for y in (None, Y):
        ref = _quiet(nf.kernel, arch, X, y, get=("nngp", "ntk"), backend="cpu")
        for method in gpu.METHODS:  # tile=16: several tiles, ragged edges; CuPy input -> device output
            got = _quiet(gpu.kernel, arch, cp.asarray(X), None if y is None else cp.asarray(y), ("nngp", "ntk"),
                         tile=16, method=method)  # fmt: skip
            for g, r in zip(got, ref):
                assert isinstance(g, cp.ndarray)
                np.testing.assert_allclose(g.get(), r, rtol=0, atol=1e-13 * _scale(r))
            if y is None:
                assert all(np.array_equal(g.get(), g.get().T) for g in got)
                np.testing.assert_array_equal(np.diag(got[1].get()), ref[1].diagonal())


def _per_pair_reference(arch, X, Y):
    """The GPU's rule in NumPy: per pair and layer, rho clipped, the degree of its own |rho| bin,
    Horner to that degree, the layer step (float64, off-diagonal pairs of K(X, Y))."""
    rx, coef = engine.prepare_rows(arch, X)
    ry = engine.prepare_rows(arch, Y, coef)[0]
    sx, sy, table = rx.series.rows, ry.series.rows, coef.series.table()
    f = coef.first
    G = X @ Y.T
    s, t = f[0] * G + f[1], f[2] * G + f[3]
    last = table.shape[1] - 1
    for layer, (res, w2, b2, alpha, beta) in enumerate(coef.steps):
        rho = np.clip(s * sx.inv_sqrt[layer][:, None] * sy.inv_sqrt[layer][None, :], -1.0, 1.0)
        gap = 1.0 - np.abs(rho)
        with np.errstate(divide="ignore"):
            b = np.where(gap > 0, np.minimum(np.ceil(-series.RHO_STEPS * np.log2(gap)), last), last).astype(int)
        degree = table[layer][b]
        k = np.zeros_like(G)
        kd = np.zeros_like(G)
        for m in range(int(degree.max()), -1, -1):
            on = m <= degree
            cxy = sx.c[:, layer, m][:, None] * sy.c[:, layer, m][None, :]
            dxy = sx.d[:, layer, m][:, None] * sy.d[:, layer, m][None, :]
            k = np.where(on, k * rho + cxy, k)
            kd = np.where(on, kd * rho + dxy, kd)
        s, t = res * s + w2 * k + b2, res * t + alpha * k + beta + w2 * kd * t
    return s, t


@pytest.mark.parametrize("name", ["tanh", "silu"])
def test_series_per_pair_degree_rule(cp, rng, name):
    """With the real degree table: the GPU equals the NumPy replica of its per-pair rule (1e-13),
    and the CPU (per-chunk degrees) within the truncation bound."""
    arch = nf.MLP(depth=3, activation=ACTS[name], W_std=1.5, b_std=0.1)
    X, Y = _rows(rng, 30, 7), _rows(rng, 19, 7)
    Y[2] = X[4]  # rho = 1 at the first layer
    Y[3] = X[6] * (1 + 1e-9)
    want = _per_pair_reference(arch, X, Y)
    cpu = nf.kernel(arch, X, Y, get=("nngp", "ntk"), backend="cpu")
    for method in gpu.METHODS:
        got = gpu.kernel(arch, cp.asarray(X), cp.asarray(Y), ("nngp", "ntk"), tile=16, method=method)
        for g, w, c in zip(got, want, cpu):
            np.testing.assert_allclose(g.get(), w, rtol=0, atol=1e-13 * _scale(w))
            np.testing.assert_allclose(g.get(), c, rtol=0, atol=1e-11 * _scale(c))


@pytest.mark.parametrize("name", ["tanh", "elementwise"])
def test_series_gram_float32(cp, rng, name):
    """float32 on the device: the CPU's float32 series path to float32 rounding, and the float64
    kernel within the 5e-5 the GPU tests ask of every activation."""
    arch = nf.MLP(depth=2, activation=ACTS[name], W_std=1.3, b_std=0.2)
    X, Y = _rows(rng, 37), _rows(rng, 21)
    X[1] = X[0] + 1e-4 * rng.standard_normal(11) / np.sqrt(11)  # nearly parallel
    for y in (None, Y):
        ref64 = nf.kernel(arch, X, y, get="ntk", backend="cpu")
        y32 = None if y is None else y.astype(np.float32)
        ref32 = nf.kernel(arch, X.astype(np.float32), y32, get="ntk", backend="cpu")
        for method in gpu.METHODS:
            got = gpu.kernel(arch, cp.asarray(X.astype(np.float32)), None if y is None else cp.asarray(y32),
                             tile=16, method=method).get()  # fmt: skip
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, ref32, rtol=0, atol=2e-6 * _scale(ref64))
            np.testing.assert_allclose(got, ref64, rtol=0, atol=5e-5 * _scale(ref64))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_series_matvec_equals_dense(cp, rng, dtype):
    """GramOperator on the GPU (both methods, K(X, X) and K(X, Y), NTK and NNGP) vs K @ V, K from
    the CPU series path."""
    arch = nf.MLP(depth=2, activation=ACTS["silu"], W_std=1.2, b_std=0.3)
    X, Y = _rows(rng, 70, 5).astype(dtype), _rows(rng, 66, 5).astype(dtype)
    tol = 1e-11 if dtype == "float64" else 5e-5
    for y, get in zip((None, Y), ("ntk", "nngp")):
        op = nf.GramOperator(arch, X, y, get=get, backend="gpu")
        K = nf.kernel(arch, X.astype(np.float64), None if y is None else y.astype(np.float64), get=get, backend="cpu")
        V = rng.standard_normal((K.shape[1], 3)).astype(dtype)
        for method in gpu.METHODS:
            got = gpu.matmat(op, V, method)
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_allclose(got, K @ V, rtol=0, atol=tol * np.abs(K).sum(1).max())


def test_series_public_entry_points_on_the_gpu(cp, rng):
    """nf.kernel / kernel_diag / GramOperator with backend='gpu' take a series activation (NumPy
    inputs give host outputs through the pinned copies, CuPy inputs device outputs)."""
    arch = nf.MLP(depth=2, activation="tanh", W_std=1.4, b_std=0.1)
    X = _rows(rng, 40, 4)
    ref = nf.kernel(arch, X, get=("nngp", "ntk"), backend="cpu")
    host = nf.kernel(arch, X, get=("nngp", "ntk"), backend="gpu", tile=16)
    dev = nf.kernel(arch, cp.asarray(X), get=("nngp", "ntk"))
    for h, d, r in zip(host, dev, ref):
        assert isinstance(h, np.ndarray) and isinstance(d, cp.ndarray)
        np.testing.assert_allclose(h, r, rtol=0, atol=1e-11 * _scale(r))
        np.testing.assert_allclose(d.get(), r, rtol=0, atol=1e-11 * _scale(r))
    diag = nf.kernel_diag(arch, cp.asarray(X), get=("nngp", "ntk"))
    for d, r in zip(diag, ref):
        np.testing.assert_allclose(d.get(), r.diagonal(), rtol=1e-15)
    op = nf.GramOperator(arch, X, backend="gpu")
    v = rng.standard_normal(40)
    np.testing.assert_allclose(op @ v, ref[1] @ v, rtol=0, atol=1e-11 * np.abs(ref[1]).sum(1).max())


def test_series_empirical_ntk_on_the_gpu(cp, rng):
    arch = nf.MLP(depth=2, activation="tanh", W_std=1.3, b_std=0.2, width=64)
    net = nf.FiniteMLP(arch, out_dim=2, seed=1)
    X, Y = rng.standard_normal((12, 5)), rng.standard_normal((7, 5))
    for y in (None, Y):
        ref = net.empirical_ntk(X, y)
        got = gpu.empirical_ntk(net, X, y, block_size=5)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_series_results_repeat_and_do_not_depend_on_block_order(cp, rng):
    if cp.ndarray is not fake_cupy.ndarray:
        pytest.skip("the block order is the emulator's")
    arch = nf.MLP(depth=2, activation="silu", W_std=1.3, b_std=0.2)
    X = _rows(rng, 70, 6)
    results = []
    for order in loader.ORDERS:
        with loader.block_order(order):
            results.append([gpu.kernel(arch, cp.asarray(X), tile=32, method=m).get() for m in gpu.METHODS])
    for other in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0], other))


def test_series_coefficients_too_large_for_the_device_are_refused(cp, rng, monkeypatch):
    if cp.ndarray is not fake_cupy.ndarray:
        pytest.skip("needs the emulated device's adjustable free memory")
    monkeypatch.setattr(cp.cuda.runtime, "memGetInfo", lambda: (2**14, 2**31))
    with pytest.raises(nf.InsufficientMemoryError, match="Hermite-series coefficients.*GPU memory.*fewer rows"):
        gpu.kernel(nf.MLP(depth=2, activation="tanh"), cp.asarray(_rows(rng, 200, 3)))
