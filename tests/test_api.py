"""The public entry points: shapes, options, exactness guarantees, bad input."""

import pickle

import numpy as np
import pytest
from scipy.sparse.linalg import LinearOperator

import ntkfast as nf

ARCH = nf.MLP(depth=3, activation="relu", W_std=1.5, b_std=0.05)


def linear_net_kernels(X, Y, depth, W_std, b_std):
    """NNGP/NTK of a linear network (Identity activation), by hand from DESIGN.md's recursion."""
    sigma = W_std**2 * X @ Y.T / X.shape[1] + b_std**2
    theta = sigma.copy()
    for _ in range(depth):
        sigma = W_std**2 * sigma + b_std**2
        theta = sigma + W_std**2 * theta
    return sigma, theta


def test_identity_activation_matches_linear_network(rng):
    X, Y = rng.standard_normal((7, 4)), rng.standard_normal((5, 4))
    arch = nf.MLP(depth=3, activation="identity", W_std=1.3, b_std=0.4)
    nngp, ntk = nf.kernel(arch, X, Y, get=("nngp", "ntk"))
    ref_nngp, ref_ntk = linear_net_kernels(X, Y, 3, 1.3, 0.4)
    np.testing.assert_allclose(nngp, ref_nngp, rtol=1e-13)
    np.testing.assert_allclose(ntk, ref_ntk, rtol=1e-13)


def test_depth_zero_is_linear_kernel(rng):
    X = rng.standard_normal((6, 3))
    K = nf.kernel(nf.MLP(depth=0, W_std=2.0, b_std=0.5), X)
    np.testing.assert_allclose(K, 4.0 * X @ X.T / 3 + 0.25, rtol=1e-14)


def test_standard_parameterization_first_layers(rng):
    """Standard parameterization, depth 0: Theta = <x, y> + 1 (weights and bias gradients)."""
    X = rng.standard_normal((5, 3))
    K = nf.kernel(nf.MLP(depth=0, W_std=2.0, b_std=0.5, parameterization="standard"), X)
    np.testing.assert_allclose(K, X @ X.T + 1.0, rtol=1e-14)
    K = nf.kernel(nf.MLP(depth=0, W_std=2.0, b_std=None, parameterization="standard"), X)
    np.testing.assert_allclose(K, X @ X.T, rtol=1e-14)


def test_relu_homogeneity(rng):
    """Without bias the ReLU NTK is positively homogeneous of degree 2 in the inputs."""
    X = rng.standard_normal((20, 5))
    arch = nf.MLP(depth=4, activation="relu", W_std=1.7, b_std=None)
    K = nf.kernel(arch, X)
    for c in (1e-6, 1e-3, 10.0, 1e6):
        np.testing.assert_allclose(nf.kernel(arch, c * X), c * c * K, rtol=1e-12)


def test_get_options_and_shapes(rng):
    X, Y = rng.standard_normal((9, 4)), rng.standard_normal((4, 4))
    K = nf.kernel(ARCH, X, Y)
    assert K.shape == (9, 4) and K.dtype == np.float64
    nngp, ntk = nf.kernel(ARCH, X, Y, get=("nngp", "ntk"))
    np.testing.assert_array_equal(ntk, K)
    np.testing.assert_array_equal(nf.kernel(ARCH, X, Y, get="nngp"), nngp)
    ntk2, nngp2 = nf.kernel(ARCH, X, Y, get=["ntk", "nngp"])
    np.testing.assert_array_equal(ntk2, ntk)
    np.testing.assert_array_equal(nngp2, nngp)


def test_symmetric_exact_and_consistent(rng):
    X = rng.standard_normal((300, 6))
    for act in ("relu", "erf", "gelu", "sign", "sin", "abs"):
        arch = nf.MLP(depth=3, activation=act, b_std=0.1)
        nngp, ntk = nf.kernel(arch, X, get=("nngp", "ntk"), tile=64)
        for K, g in ((nngp, "nngp"), (ntk, "ntk")):
            np.testing.assert_array_equal(K, K.T)
            np.testing.assert_array_equal(np.diag(K), nf.kernel_diag(arch, X, get=g))
            # K(X, Y) with Y = X computes the same numbers without the symmetric schedule
            np.testing.assert_allclose(nf.kernel(arch, X, X[:50], get=g), K[:, :50], rtol=1e-12, atol=1e-15)
            assert np.linalg.eigvalsh(K).min() > -1e-10 * np.abs(K).max()


def test_tile_size_and_threads_do_not_change_result(rng):
    X = rng.standard_normal((257, 5))
    arch = nf.MLP(depth=2, activation="erf", b_std=0.3)
    ref = nf.kernel(arch, X, tile=512, n_jobs=1)
    # across tile sizes BLAS may round a tile's inner products differently in the last bit
    for tile in (1, 7, 64, 100, 256):
        for n_jobs in (1, 2, 3):
            np.testing.assert_allclose(
                nf.kernel(arch, X, tile=tile, n_jobs=n_jobs), ref, rtol=1e-13, atol=1e-15 * np.abs(ref).max()
            )
    # the recursion is elementwise: for a given tile size the thread count changes nothing at all
    np.testing.assert_array_equal(
        nf.kernel(arch, X, tile=64, n_jobs=1), nf.kernel(arch, X, tile=64, n_jobs=2)
    )


def test_out_preallocated_and_memmap(rng, tmp_path):
    X = rng.standard_normal((130, 4))
    ref_nngp, ref_ntk = nf.kernel(ARCH, X, get=("nngp", "ntk"), tile=32)
    out = np.full((130, 130), np.nan)
    res = nf.kernel(ARCH, X, out=out, tile=32)
    assert res is out
    np.testing.assert_array_equal(out, ref_ntk)
    mm = np.lib.format.open_memmap(tmp_path / "K.npy", mode="w+", dtype=np.float64, shape=(130, 130))
    mm2 = np.memmap(tmp_path / "N.bin", mode="w+", dtype=np.float64, shape=(130, 130))
    nf.kernel(ARCH, X, get=("ntk", "nngp"), out=(mm, mm2), tile=32, progress=True)
    np.testing.assert_array_equal(np.load(tmp_path / "K.npy"), ref_ntk)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "N.bin").reshape(130, 130), ref_nngp)


def test_gram_operator_matches_kernel(rng):
    X, Y = rng.standard_normal((211, 5)), rng.standard_normal((97, 5))
    V = rng.standard_normal((211, 3))
    for get in ("ntk", "nngp"):
        K = nf.kernel(ARCH, X, get=get)
        op = nf.GramOperator(ARCH, X, get=get, tile=40)
        assert isinstance(op, LinearOperator) and op.shape == (211, 211)
        np.testing.assert_allclose(op @ V, K @ V, rtol=1e-12)
        np.testing.assert_allclose(op @ V[:, 0], K @ V[:, 0], rtol=1e-12)
        np.testing.assert_allclose(op.matvec(V[:, 1]), K @ V[:, 1], rtol=1e-12)
        np.testing.assert_array_equal(op.diagonal(), np.diag(K))
    K = nf.kernel(ARCH, X, Y)
    op = nf.GramOperator(ARCH, X, Y, tile=33)
    np.testing.assert_allclose(op @ V[:97], K @ V[:97], rtol=1e-12)
    np.testing.assert_allclose(op.H @ V, K.T @ V, rtol=1e-12)
    np.testing.assert_allclose(op.rmatvec(V[:, 0]), K.T @ V[:, 0], rtol=1e-12)


def test_gram_operator_with_eigsh(rng):
    from scipy.sparse.linalg import eigsh

    X = rng.standard_normal((150, 4))
    K = nf.kernel(ARCH, X)
    vals = eigsh(nf.GramOperator(ARCH, X), k=5, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(vals), np.linalg.eigvalsh(K)[-5:], rtol=1e-9)


def test_float32(rng):
    X = rng.standard_normal((100, 8))
    for act in ("relu", "erf", "gelu", "sin", "sign"):
        arch = nf.MLP(depth=3, activation=act, b_std=0.1)
        K64 = nf.kernel(arch, X)
        K32 = nf.kernel(arch, X.astype(np.float32))
        assert K32.dtype == np.float32
        np.testing.assert_allclose(K32, K64, rtol=2e-5, atol=2e-5 * np.abs(K64).max())
        assert nf.kernel(arch, X, dtype="float32").dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", ["relu", "sign", "abs", nf.RectifiedMonomial(0), nf.RectifiedMonomial(2)])
def test_duplicate_rows_are_exact(act, dtype, rng):
    """Exact duplicates (off the diagonal, and across X and Y) reproduce the diagonal value.

    Without the rounding-noise snap in recursion._angle, sign at depth 4 was off by 1e-2 (f64).
    """
    base = rng.standard_normal((40, 30)).astype(dtype)
    X = np.concatenate([base, base[::-1]])
    arch = nf.MLP(depth=4, activation=act, b_std=0.1)
    K = nf.kernel(arch, X)
    diag = nf.kernel_diag(arch, base)
    dup = np.diag(K[:40, 40:][:, ::-1])
    scale = np.abs(diag).max()
    tol = 1e-13 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(dup, diag, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(np.diag(nf.kernel(arch, base, base)), diag, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("act", ["relu", "sign", "abs", "erf"])
def test_float32_near_duplicates_accuracy(act, rng):
    """float32 near theta = 0: rows at relative distances 1e-1 .. 1e-7.

    float32 inner products fix 1 - rho^2 only to about sqrt(d) 1e-7, so pairs with
    1 - rho^2 < 1e-3 are recomputed in float64 (config.REFINE_TOL32).  Measured: relu 9e-7,
    sign 6e-6, abs 2e-6 at depth 3 (relu was 5e-4 before the refinement).
    """
    x = rng.standard_normal((1, 50))
    eps = np.array([1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7])[:, None]
    X = np.concatenate([x, x + eps * rng.standard_normal((len(eps), 50))])
    arch = nf.MLP(depth=3, activation=act, b_std=0.1)
    K64 = nf.kernel(arch, X)
    for K32 in (nf.kernel(arch, X.astype(np.float32)), nf.GramOperator(arch, X.astype(np.float32)) @ np.eye(len(X))):
        assert np.max(np.abs(K32.astype(np.float64) - K64) / np.abs(K64)) < 2e-5


def test_zero_rows_are_finite():
    X = np.zeros((3, 4))
    X[1, 0] = 1.0
    for act in ("relu", "erf", "gelu", "sign", "abs", "sin", "exp", "gaussian", nf.RectifiedMonomial(3)):
        for b_std in (None, 0.0, 0.2):
            K = nf.kernel(nf.MLP(depth=3, activation=act, b_std=b_std), X, get=("nngp", "ntk"))
            assert np.isfinite(K).all()


def test_residual_and_fourier_and_spec():
    arch = nf.MLP(depth=2, residual=True, activation="erf")
    assert arch.n_steps == 3 and hash(arch) == hash(nf.MLP(depth=2, residual=True, activation="erf"))
    B = np.arange(6.0).reshape(3, 2) / 5
    a1 = nf.MLP(depth=1, input_map=nf.FourierFeatures(B))
    assert a1 == nf.MLP(depth=1, input_map=nf.FourierFeatures(B.copy()))
    assert hash(a1) == hash(nf.MLP(depth=1, input_map=nf.FourierFeatures(B.copy())))
    X = np.linspace(0, 1, 12).reshape(6, 2)
    feats = np.concatenate([np.sin(2 * np.pi * X @ B.T), np.cos(2 * np.pi * X @ B.T)], axis=1)
    np.testing.assert_allclose(nf.kernel(a1, X), nf.kernel(nf.MLP(depth=1), feats), rtol=1e-13)
    rff = nf.MLP(depth=1, input_map=nf.RandomFourierFeatures(64, scale=3.0, seed=1))
    np.testing.assert_array_equal(nf.kernel(rff, X), nf.kernel(rff, X))
    assert pickle.loads(pickle.dumps(rff)) == rff
    assert nf.MLP(activation="leaky_relu").activation == nf.LeakyReLU(0.01)


BAD_X = [
    (np.array([1.0, 2.0]), ValueError, "2-D"),
    (np.zeros((2, 2, 2)), ValueError, "2-D"),
    (np.zeros((0, 3)), ValueError, "empty"),
    (np.array([[1.0, np.nan]]), ValueError, "NaN"),
    (np.array([[1.0, np.inf]]), ValueError, "NaN or inf"),
    (np.array([["a", "b"]]), TypeError, "numeric"),
    (np.array([[1 + 1j, 2]]), TypeError, "complex"),
    (np.array([[object()]]), TypeError, "numeric"),
]


@pytest.mark.parametrize("X,exc,match", BAD_X)
def test_bad_inputs(X, exc, match):
    with pytest.raises(exc, match=match):
        nf.kernel(ARCH, X)
    with pytest.raises(exc, match=match):
        nf.kernel_diag(ARCH, X)
    with pytest.raises(exc, match=match):
        nf.GramOperator(ARCH, X)


def test_bad_arguments(rng):
    X = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="Y: has 2 features"):
        nf.kernel(ARCH, X, rng.standard_normal((4, 2)))
    with pytest.raises(TypeError, match="arch"):
        nf.kernel("relu", X)
    with pytest.raises(ValueError, match="get"):
        nf.kernel(ARCH, X, get="cov")
    with pytest.raises(TypeError, match="get"):
        nf.kernel(ARCH, X, get=3)
    with pytest.raises(TypeError, match="dtype"):
        nf.kernel(ARCH, X, dtype=np.int32)
    with pytest.raises(ValueError, match="backend"):
        nf.kernel(ARCH, X, backend="tpu")
    with pytest.raises(ValueError, match="out: expected shape"):
        nf.kernel(ARCH, X, out=np.empty((3, 4)))
    with pytest.raises(ValueError, match="out: expected dtype"):
        nf.kernel(ARCH, X, out=np.empty((4, 4), np.float32))
    with pytest.raises(ValueError, match="out: expected 2"):
        nf.kernel(ARCH, X, get=("nngp", "ntk"), out=np.empty((4, 4)))
    with pytest.raises(ValueError, match="C-contiguous"):
        nf.kernel(ARCH, X, out=np.empty((4, 8))[:, ::2])
    with pytest.raises(ValueError, match="tile"):
        nf.kernel(ARCH, X, tile=0)
    with pytest.raises(ValueError, match="n_jobs"):
        nf.kernel(ARCH, X, n_jobs=-1)
    with pytest.raises(TypeError, match="sparse"):
        from scipy import sparse

        nf.kernel(ARCH, sparse.csr_matrix(X))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(depth=-1), ValueError, "depth"),
        (dict(depth=1.5), TypeError, "depth"),
        (dict(depth=True), TypeError, "depth"),
        (dict(W_std=-1.0), ValueError, "W_std"),
        (dict(W_std=float("nan")), ValueError, "W_std"),
        (dict(b_std=-0.1), ValueError, "b_std"),
        (dict(activation="softsign"), ValueError, "unknown name 'softsign'"),  # (swish is an activation now)
        (dict(activation=3), TypeError, "activation"),
        (dict(parameterization="mup"), ValueError, "parameterization"),
        (dict(width=0), ValueError, "width"),
        (dict(width=(64, 32), depth=3), ValueError, "width"),
        (dict(width=(64, 32), depth=2, residual=True), ValueError, "common width"),
        (dict(input_map="fourier"), TypeError, "input_map"),
    ],
)
def test_bad_specs(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nf.MLP(**kwargs)


def test_bad_activation_parameters():
    with pytest.raises(ValueError, match="n must be in 0..5"):
        nf.RectifiedMonomial(6)
    with pytest.raises(TypeError, match="n must be an integer"):
        nf.Monomial(1.5)
    with pytest.raises(ValueError, match="gamma"):
        nf.Rbf(-1.0)
    with pytest.raises(TypeError, match="a must be a real number"):
        nf.Erf(a="x")
    with pytest.raises(ValueError, match="B must be"):
        nf.FourierFeatures(np.zeros(3))


def test_divergent_kernel_is_refused(rng):
    X = 10 * rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match="diverges"):
        nf.kernel(nf.MLP(depth=2, activation=nf.Gaussian(1.0, 0.5)), X)


def test_memory_refused_up_front(monkeypatch, rng):
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "1M")
    X = rng.standard_normal((1000, 3))
    with pytest.raises(nf.InsufficientMemoryError, match=r"needs 7\.6 MiB.*memmap.*GramOperator"):
        nf.kernel(ARCH, X)
    with pytest.raises(MemoryError):
        nf.kernel(ARCH, X)
    # the matrix-free operator still works within the budget
    op = nf.GramOperator(ARCH, X)
    assert np.isfinite(op @ np.ones(1000)).all()


def test_gpu_backend_not_available_is_clear(rng, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed
    with pytest.raises(ImportError, match=r"pip install ntkfast\[gpu\]"):
        nf.kernel(ARCH, rng.standard_normal((3, 2)), backend="gpu")


def test_depth_one_kernels_match_cho_saul_and_williams(rng):
    """Whole-kernel identities at depth 1 (no bias, W_std = 1), written independently here."""
    X, Y = rng.standard_normal((6, 5)), rng.standard_normal((4, 5))
    d = X.shape[1]
    nx, ny = np.linalg.norm(X, axis=1)[:, None], np.linalg.norm(Y, axis=1)[None, :]
    cos = np.clip(X @ Y.T / (nx * ny), -1, 1)
    theta = np.arccos(cos)
    # Cho & Saul (2009): k_1(x, y) = |x||y| (sin t + (pi - t) cos t) / pi; NNGP = k_1 / (2 d)
    cho_saul = nx * ny * (np.sin(theta) + (np.pi - theta) * cos) / np.pi
    relu = nf.MLP(depth=1, activation="relu", W_std=1.0, b_std=None)
    np.testing.assert_allclose(nf.kernel(relu, X, Y, get="nngp"), cho_saul / (2 * d), rtol=1e-12)
    # NTK = NNGP + (pi - t)/(2 pi) <x, y>/d
    ntk = cho_saul / (2 * d) + (np.pi - theta) / (2 * np.pi) * (X @ Y.T) / d
    np.testing.assert_allclose(nf.kernel(relu, X, Y), ntk, rtol=1e-12)
    # Williams (1997): E[erf(u) erf(v)] = (2/pi) arcsin(2 s_xy / sqrt((1 + 2 s_xx)(1 + 2 s_yy)))
    sxy, sxx, syy = X @ Y.T / d, nx**2 / d, ny**2 / d
    williams = 2 / np.pi * np.arcsin(2 * sxy / np.sqrt((1 + 2 * sxx) * (1 + 2 * syy)))
    erf = nf.MLP(depth=1, activation="erf", W_std=1.0, b_std=None)
    np.testing.assert_allclose(nf.kernel(erf, X, Y, get="nngp"), williams, rtol=1e-12)
