"""kernel(..., depths=...) and kernel_diag(..., depths=...): every listed depth from one pass.

The truth is the separate call ``kernel(replace(arch, depth=d))``: the one-pass kernel runs the
same arithmetic (the same GEMM tiles, the same layer steps, the same float64 recomputation of
nearly parallel float32 pairs) and only writes its outputs earlier, so the results are equal
bit for bit.
"""

import dataclasses

import numpy as np
import pytest

import ntkfast as nf
from ntkfast.errors import ArgumentError, ArgumentTypeError


def separate(arch, X, Y, get, d, **kw):
    return nf.kernel(dataclasses.replace(arch, depth=d), X, Y, get=get, **kw)


def assert_same(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("activation", ["relu", "erf", "gelu"])
@pytest.mark.parametrize("residual", [False, True])
def test_depths_equal_separate_calls_bit_for_bit(rng, parameterization, dtype, symmetric, activation, residual):
    arch = nf.MLP(depth=2, activation=activation, W_std=1.4, b_std=0.1, parameterization=parameterization, width=64,
                  residual=residual)  # fmt: skip
    X = rng.standard_normal((41, 5)).astype(dtype)
    X[7] = X[3] * (1 + 1e-5)  # a nearly parallel pair: float32 recomputes it in float64
    X[20] = X[3]
    Y = None if symmetric else np.concatenate([X[:9], rng.standard_normal((14, 5))]).astype(dtype)
    depths = (3, 0, 1, 5)
    for get in ("ntk", ("nngp", "ntk"), ("ntk", "nngp"), "nngp"):
        got = nf.kernel(arch, X, Y, get=get, depths=depths, tile=16)
        assert isinstance(got, tuple) and len(got) == len(depths)
        for d, g in zip(depths, got):
            assert_same(g, separate(arch, X, Y, get, d, tile=16))


@pytest.mark.parametrize("residual", [False, True])
def test_depths_float32_refinement_is_exercised(rng, residual):
    """A nearly parallel float32 pair (recomputed in float64) at every listed depth: equal to
    the separate call's and accurate against the float64 kernel (float32 alone is ~5e-4 off)."""
    arch = nf.MLP(depth=4, activation="relu", residual=residual, W_std=0.8)
    X = rng.standard_normal((6, 3)).astype(np.float32)
    X[1] = X[0] * np.float32(1 + 3e-4)
    got = nf.kernel(arch, X, get="nngp", depths=(2, 4))
    for d, g in zip((2, 4), got):
        assert_same(g, separate(arch, X, None, "nngp", d))
        ref = nf.kernel(dataclasses.replace(arch, depth=d), X.astype(np.float64), get="nngp")
        assert abs(g[0, 1] - ref[0, 1]) <= 2e-6 * ref[0, 1]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_depths_default_tile_and_threads(rng, n_jobs):
    arch = nf.MLP(depth=1, activation="erf", b_std=0.3)
    X = rng.standard_normal((300, 4))
    got = nf.kernel(arch, X, get=("nngp", "ntk"), depths=(1, 2, 3, 4, 5), n_jobs=n_jobs)
    for d, g in zip(range(1, 6), got):
        assert_same(g, separate(arch, X, None, ("nngp", "ntk"), d, n_jobs=n_jobs))


def test_depths_with_per_layer_widths(rng):
    arch = nf.MLP(depth=3, width=(7, 9, 11), parameterization="standard", b_std=0.2)
    X = rng.standard_normal((12, 3))
    K1, K2, K3 = nf.kernel(arch, X, depths=(1, 2, 3))
    assert_same(K1, nf.kernel(nf.MLP(depth=1, width=7, parameterization="standard", b_std=0.2), X))
    assert_same(K2, nf.kernel(nf.MLP(depth=2, width=(7, 9), parameterization="standard", b_std=0.2), X))
    assert_same(K3, nf.kernel(arch, X))
    with pytest.raises(ArgumentError, match="depths.*widths"):
        nf.kernel(arch, X, depths=(1, 4))


def test_depths_out_and_memmap(rng, tmp_path):
    arch = nf.MLP(depth=3, b_std=0.1)
    X = rng.standard_normal((20, 3))
    Y = rng.standard_normal((13, 3))
    outs = tuple((np.empty((20, 13)), np.empty((20, 13))) for _ in range(2))
    got = nf.kernel(arch, X, Y, get=("nngp", "ntk"), depths=(2, 1), out=outs, tile=8)
    assert got[0][0] is outs[0][0] and got[1][1] is outs[1][1]
    for d, g in zip((2, 1), got):
        assert_same(g, separate(arch, X, Y, ("nngp", "ntk"), d, tile=8))
    mm = [np.lib.format.open_memmap(tmp_path / f"K{d}.npy", mode="w+", dtype=np.float64, shape=(20, 20))
          for d in (1, 3)]  # fmt: skip
    nf.kernel(arch, X, depths=(1, 3), out=tuple(mm))
    for d in (1, 3):
        assert_same(np.load(tmp_path / f"K{d}.npy"), separate(arch, X, None, "ntk", d))
    with pytest.raises(ArgumentError, match="one per depth"):
        nf.kernel(arch, X, depths=(1, 3), out=mm[0])


def test_kernel_diag_depths(rng):
    arch = nf.MLP(depth=2, activation="gelu", b_std=0.1)
    X = rng.standard_normal((9, 4))
    got = nf.kernel_diag(arch, X, get=("nngp", "ntk"), depths=(0, 4, 2))
    for d, g in zip((0, 4, 2), got):
        assert_same(g, nf.kernel_diag(dataclasses.replace(arch, depth=d), X, get=("nngp", "ntk")))
    K = nf.kernel(arch, X, depths=(0, 4, 2))
    for g, k in zip(got, K):
        np.testing.assert_array_equal(np.diag(k), g[1])


def test_depths_refusals(rng):
    X = rng.standard_normal((5, 3))
    arch = nf.MLP(depth=2)
    with pytest.raises(ArgumentTypeError, match="depths"):
        nf.kernel(arch, X, depths=3)
    with pytest.raises(ArgumentError, match="depths"):
        nf.kernel(arch, X, depths=())
    with pytest.raises(ArgumentError, match="depths"):
        nf.kernel(arch, X, depths=(1, -1))
    with pytest.raises(ArgumentError, match="repeated"):
        nf.kernel(arch, X, depths=(1, 1))
    with pytest.raises(ArgumentTypeError, match="depths"):
        nf.kernel(arch, X, depths=(1, 2.0))
    with pytest.raises(ArgumentError, match="GPU"):
        nf.kernel(arch, X, depths=(1, 2), backend="gpu")


def test_depths_out_as_one_stack_is_written_directly(rng, monkeypatch):
    """out= the slices of one (n_depths, n, m) array per kernel (in step order): the tile kernel
    writes them directly (no scratch copy); any other layout goes through scratch.  Same values."""
    from ntkfast import engine

    arch = nf.MLP(depth=3, b_std=0.1)
    X = rng.standard_normal((30, 3))
    stack_nngp, stack_ntk = np.empty((3, 30, 30)), np.empty((3, 30, 30))
    placed = []
    monkeypatch.setattr(engine, "place_tile", lambda *a: placed.append(a))
    # depths listed out of order: the slices follow the step order (depth 1 first)
    out = tuple((stack_nngp[s], stack_ntk[s]) for s in (2, 0, 1))
    got = nf.kernel(arch, X, get=("nngp", "ntk"), depths=(4, 1, 2), out=out, tile=8)
    assert not placed
    for d, g in zip((4, 1, 2), got):
        assert_same(g, separate(arch, X, None, ("nngp", "ntk"), d, tile=8))
    nf.kernel(arch, X, get=("nngp", "ntk"), depths=(1, 2, 4), out=out, tile=8)
    assert placed  # a layout that is not one stack in step order: through scratch


@pytest.mark.parametrize("n", [37, 48])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ["relu", "erf", "tanh"])
def test_stored_in_the_tile_pass_with_streaming_stores(rng, monkeypatch, n, dtype, activation):
    """Tiles above the diagonal are mirrored in the tile pass (strips of rows stored while in
    L1), with non-temporal stores when the outputs are large (forced here): the values are
    those of the separate calls, the result exactly symmetric, whatever the rows' alignment
    (n = 48: rows of whole 64-byte lines, so the stores stream; n = 37: they cannot)."""
    from ntkfast import config, engine

    arch = nf.MLP(depth=3, activation=activation, W_std=1.4, b_std=0.1)
    X = rng.standard_normal((n, 4)).astype(dtype)
    X[30] = X[2] * (1 + 1e-5)  # a nearly parallel pair in a tile above the diagonal
    phases = []
    real = engine.stream_phase
    monkeypatch.setattr(engine, "stream_phase", lambda *a: phases.append(real(*a)) or phases[-1])
    for smallest in (2**62, 0):  # ordinary stores, then streaming stores
        monkeypatch.setattr(config, "STREAM_MIN_BYTES", smallest)
        for n_jobs in (1, 2):
            got = nf.kernel(arch, X, get=("nngp", "ntk"), depths=(3, 1, 2), tile=7, n_jobs=n_jobs)
            for d, g in zip((3, 1, 2), got):
                assert_same(g, separate(arch, X, None, ("nngp", "ntk"), d, tile=7, n_jobs=n_jobs))
                for k in g:
                    np.testing.assert_array_equal(k, k.T)
    streamed = [p for p in phases if p is not None]
    assert bool(streamed) == (n * np.dtype(dtype).itemsize % 64 == 0)


def test_streaming_stores_into_unaligned_and_file_backed_outputs(rng, monkeypatch, tmp_path):
    """A stack of outputs that starts mid-line (a view one element in) and a memmap: the strips
    follow the outputs' alignment, and the values equal the separate calls'."""
    from ntkfast import config

    monkeypatch.setattr(config, "STREAM_MIN_BYTES", 0)
    arch = nf.MLP(depth=2, activation="relu", b_std=0.2)
    n = 40
    X = rng.standard_normal((n, 3))
    for shift in range(3):
        flat = np.zeros(2 * n * n + 8)
        stack = flat[shift:shift + 2 * n * n].reshape(2, n, n)
        out = (stack[0], stack[1])
        got = nf.kernel(arch, X, depths=(1, 2), out=out, tile=16)
        assert got[0] is out[0]
        for d, g in zip((1, 2), got):
            assert_same(g, separate(arch, X, None, "ntk", d, tile=16))
    mm = np.lib.format.open_memmap(tmp_path / "K.npy", mode="w+", dtype=np.float64, shape=(2, n, n))
    nf.kernel(arch, X, depths=(1, 2), out=(mm[0], mm[1]), tile=16)
    del mm
    saved = np.load(tmp_path / "K.npy")
    for d in (1, 2):
        assert_same(saved[d - 1], separate(arch, X, None, "ntk", d, tile=16))


def test_write_floor_writes_what_the_kernel_writes(rng):
    """``bench.depths_write_floor`` (the floor under the extra cost of depths=) stores every entry
    of the extra outputs, both triangles, with the kernel's plan: a constant everywhere."""
    from ntkfast import bench

    stacks = [np.zeros((3, 300, 300)), np.zeros((3, 300, 300))]
    bench.depths_write_floor(stacks, n_jobs=2)
    for s in stacks:
        assert (s[:-1] == 1).all() and (s[-1] == 0).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_streaming_stores_for_k_x_y(rng, monkeypatch, dtype):
    """K(X, Y) (no mirror) with streaming stores forced: the separate calls' values."""
    from ntkfast import config

    monkeypatch.setattr(config, "STREAM_MIN_BYTES", 0)
    arch = nf.MLP(depth=2, activation="erf", b_std=0.1)
    X = rng.standard_normal((29, 4)).astype(dtype)
    Y = np.concatenate([X[:5] * (1 + 1e-5), rng.standard_normal((12, 4))]).astype(dtype)
    got = nf.kernel(arch, X, Y, get=("nngp", "ntk"), depths=(2, 1, 3), tile=8)
    for d, g in zip((2, 1, 3), got):
        assert_same(g, separate(arch, X, Y, ("nngp", "ntk"), d, tile=8))


@pytest.mark.parametrize("symmetric", [True, False])
def test_streaming_stores_into_separate_outputs(rng, monkeypatch, symmetric):
    """out= separate arrays (not one stack): the tile goes through scratch and is placed with
    streaming stores (forced here), in strips; the values are the separate calls'."""
    from ntkfast import config

    monkeypatch.setattr(config, "STREAM_MIN_BYTES", 0)
    arch = nf.MLP(depth=3, activation="relu", b_std=0.1)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    X[33] = X[1] * np.float32(1 + 1e-5)
    Y = None if symmetric else rng.standard_normal((24, 3)).astype(np.float32)
    shape = (40, 40 if symmetric else 24)
    outs = tuple((np.empty(shape, np.float32), np.empty(shape, np.float32)) for _ in range(2))
    got = nf.kernel(arch, X, Y, get=("nngp", "ntk"), depths=(2, 1), out=outs, tile=16)
    for d, g in zip((2, 1), got):
        assert_same(g, separate(arch, X, Y, ("nngp", "ntk"), d, tile=16))
