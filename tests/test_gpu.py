"""GPU backend.  Two halves:

* host-side checks that run anywhere (no CuPy, no GPU): dispatch and error messages, the source
  that NVRTC compiles, kernel parameter lists against gram.cu, argument packing, launch geometry,
  and the tile schedule with the kernels' write contract emulated in NumPy;
* device tests, each run on two backends: ``cudaemu`` (the real kernels of gram.cu compiled for
  the host by tests/cuda_emu and driven by the backend's own host code through a fake ``cupy``;
  needs g++) and ``gpu`` (real CuPy on a CUDA device; skipped without one): GPU Gram vs the CPU
  Gram for every activation code and both dtypes, K(X, X) and K(X, Y), both methods; matvec vs
  K @ V; the empirical NTK vs the CPU one; every output element written; results independent of
  the order blocks run in, and bitwise repeatable.  ``-m cudaemu`` selects the emulated ones.
"""

import re
import subprocess
import sys
import types

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import engine
from ntkfast._validation import check_backend
from ntkfast.backends import gpu

ARCH = nf.MLP(depth=2, activation="relu", W_std=1.4, b_std=0.1)


# ---------------------------------------------------------------------------- without CuPy
def test_importing_ntkfast_needs_no_cupy():
    code = "import sys; sys.modules['cupy'] = None; import ntkfast, ntkfast.backends.gpu as g; print(g.available())"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_gpu_without_cupy_says_how_to_install(monkeypatch, rng):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ImportError
    X = rng.standard_normal((4, 3))
    for call in (
        lambda: nf.kernel(ARCH, X, backend="gpu"),
        lambda: nf.GramOperator(ARCH, X, backend="gpu"),
        lambda: gpu.empirical_ntk(nf.FiniteMLP(ARCH, in_dim=3), X),
    ):
        with pytest.raises(ImportError, match=re.escape("pip install ntkfast[gpu]")):
            call()
    assert not gpu.available()
    # the CPU is untouched
    assert np.array_equal(nf.kernel(ARCH, X, backend="auto"), nf.kernel(ARCH, X, backend="cpu"))


class _FakeDeviceArray:
    """Stands for a cupy.ndarray in a fake cupy module that sees no device."""

    shape = (3, 2)
    dtype = np.dtype(np.float64)


def test_auto_picks_the_gpu_for_cupy_arrays(monkeypatch, rng):
    X = rng.standard_normal((3, 2))
    assert check_backend("auto", X, None) == "cpu"
    assert check_backend("cpu", X) == "cpu" and check_backend("gpu", X) == "gpu"
    with pytest.raises(ValueError, match="backend"):
        check_backend("cuda", X)
    with pytest.raises(ValueError, match="backend"):
        check_backend(["gpu"], X)
    fake = types.ModuleType("cupy")
    fake.ndarray = _FakeDeviceArray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert check_backend("auto", _FakeDeviceArray()) == "gpu"
    assert check_backend("auto", X, _FakeDeviceArray()) == "gpu"
    assert check_backend("auto", X) == "cpu"
    assert check_backend("cpu", _FakeDeviceArray()) == "cpu"
    # dispatched to the GPU backend, which finds no device: a clear error, not a NumPy one
    with pytest.raises(RuntimeError, match="no usable CUDA device.*backend='cpu'"):
        nf.kernel(ARCH, _FakeDeviceArray())
    with pytest.raises(RuntimeError, match="CUDA device"):
        nf.kernel_diag(ARCH, _FakeDeviceArray())


# ------------------------------------------------------------------------------- sources
def test_source_inlines_the_headers_with_line_directives():
    src = gpu.load_source()
    main = (gpu.CUDA_DIR / "gram.cu").read_text().splitlines()
    lines = src.splitlines()
    assert lines[0] == f'#line 1 "{gpu.CUDA_DIR / "gram.cu"}"'
    for name in gpu.source.HEADERS:
        assert f'#include "{name}"' not in src
        header = (gpu.CUDA_DIR / name).read_text().replace("#pragma once", "").splitlines()
        h = lines.index(f'#line 1 "{gpu.CUDA_DIR / name}"')
        assert lines[h + 1 : h + 1 + len(header)] == header
        # after the header, #line N points back at the line of gram.cu that follows
        back = next(i for i in range(h + 1 + len(header), len(lines)) if lines[i].startswith("#line"))
        n = int(lines[back].split()[1])
        assert lines[back].endswith('gram.cu"') and main[n - 2] == f'#include "{name}"'
    assert gpu.load_source() is src  # read once


def test_name_expressions():
    assert gpu.name_expressions(nf.spec.ERF, np.float64) == [
        "ntkfast::recursion_tile<1, double>",
        "ntkfast::gram_fused<1, double>",
        "ntkfast::matvec_fused<1, double>",
        "ntkfast::sum_slices<double>",
    ]
    assert gpu.name_expressions(33, "float32")[0] == "ntkfast::recursion_tile<33, float>"
    with pytest.raises(TypeError, match="float32 or float64"):
        gpu.name_expressions(0, np.float16)


def _kernel_signatures() -> dict:
    """{kernel: [(name, ctype), ...]} parsed from gram.cu, its parameter macro expanded."""
    text = (gpu.CUDA_DIR / "gram.cu").read_text()
    macro = re.search(r"#define NTKFAST_RECURSION_PARAMS(.*?)\n#define", text, re.S).group(1)
    text = text.replace("NTKFAST_RECURSION_PARAMS", macro.replace("\\\n", " "))
    out = {}
    for m in re.finditer(r"__global__ void (?:__launch_bounds__\([^)]*\)\s*)?(\w+)\(([^)]*)\)", text, re.S):
        params = []
        for part in m.group(2).split(","):
            words = part.replace("*", " * ").split()
            name = words[-1]
            ctype = " ".join(w for w in words[:-1] if w != "__restrict__").replace(" *", "*")
            params.append((name, ctype))
        out[m.group(1)] = params
    return out


def test_kernel_parameters_match_gram_cu():
    parsed = _kernel_signatures()
    assert set(parsed) == set(gpu.PARAMS) == {*gpu.KERNELS, "sum_slices"}
    for kernel, params in gpu.PARAMS.items():
        assert parsed[kernel] == list(params), kernel


def test_geometry_constants_match_gram_cu():
    text = (gpu.CUDA_DIR / "gram.cu").read_text()
    assert f"enum : int {{ BT = {gpu.FUSED_TILE}, TPB = {gpu.FUSED_THREADS}," in text
    assert "enum : int { COEF_HEAD = 7 };" in text


def test_pack_args_casts_to_the_c_types():
    G = np.zeros((4, 5))
    values = dict(partial=G, n_slices=3, size=2**40, out=G)
    args = gpu.pack_args("sum_slices", np.float64, values)
    assert [type(a) for a in args] == [np.ndarray, np.int32, np.int64, np.ndarray]
    assert args[2] == 2**40
    with pytest.raises(OverflowError, match="n_slices"):
        gpu.pack_args("sum_slices", np.float64, {**values, "n_slices": 2**31})
    with pytest.raises(TypeError, match="float32"):
        gpu.pack_args("sum_slices", np.float32, values)
    with pytest.raises(KeyError, match="out"):
        gpu.pack_args("sum_slices", np.float64, {k: v for k, v in values.items() if k != "out"})
    args = gpu.pack_args("sum_slices", np.float64, {**values, "out": None})
    assert args[3].dtype == np.uint64 and args[3] == 0  # a null pointer by value


def test_pack_coefficients_layout():
    arch = nf.MLP(depth=3, activation=nf.Erf(1.3, 0.7, 0.2), W_std=1.2, b_std=0.3, residual=True)
    coef = engine.coefficients(arch, 7, np.dtype(np.float32))
    packed = gpu.pack_coefficients(coef, np.float32)
    assert packed.dtype == np.float32
    first, steps = arch.layer_coefficients(7)
    np.testing.assert_array_equal(packed[:3], np.float32(arch.activation.params))
    np.testing.assert_array_equal(packed[3:7], first.astype(np.float32))
    np.testing.assert_array_equal(packed[7:].reshape(-1, 5), steps.astype(np.float32))
    assert gpu.pack_coefficients(coef.float64, np.float64)[7:].size == 5 * arch.n_steps


def test_leading_dimension_of_views():
    A = np.zeros((10, 7))
    assert gpu.ld(A) == 7 and gpu.ld(A[2:5, 3:6]) == 7 and gpu.ld(A[:1, :1]) == 7
    with pytest.raises(ValueError, match="unit column stride"):
        gpu.ld(A.T)


@pytest.mark.parametrize("n, m", [(1, 1), (31, 33), (64, 65), (1000, 7)])
def test_launch_geometry_covers_the_tile(n, m):
    (gx, gy, _), (bx, by, _) = gpu.grid_recursion(n, m)
    assert (gx - 1) * bx < m <= gx * bx and (gy - 1) * by < n <= gy * by
    (gx, gy, _), (tx, ty, _) = gpu.grid_fused(n, m)
    t = gpu.FUSED_TILE
    assert (gx - 1) * t < m <= gx * t and (gy - 1) * t < n <= gy * t and tx * ty == 256
    with pytest.raises(ValueError, match="smaller tile"):
        gpu.grid_recursion(8 * 65536, 1)


@pytest.mark.parametrize("n, m, k, n_sm, budget", [(1, 1, 1, 132, 10**9), (1000, 3000, 4, 132, 10**9),
                                                   (50000, 50000, 1, 132, 10**10), (5000, 5000, 8, 132, 10**6),
                                                   (100, 10000, 2, 1, 10**9)])  # fmt: skip
def test_matvec_slices_cover_every_column_tile_once(n, m, k, n_sm, budget):
    sl = gpu.matvec_slices(n, m, k, 8, n_sm, budget)
    covered = [t for s in range(sl.n_slices) for t in sl.tiles(s)]
    assert covered == list(range(sl.col_tiles))
    assert all(len(sl.tiles(s)) > 0 for s in range(sl.n_slices))
    assert sl.row_tiles == -(-n // gpu.FUSED_TILE)
    assert sl.n_slices == 1 or sl.n_slices * n * k * 8 <= budget


def test_plan_tiles_fits_the_budget():
    plan = gpu.plan_tiles(100, 50, 8, True, 1, 10**12)
    assert plan.tile == nf.config.GPU_MIN_TILE and plan.symmetric
    plan = gpu.plan_tiles(10**5, 10**5, 8, False, 5, 2 * 2**30)
    assert plan.tile & (plan.tile - 1) == 0 and 5 * plan.tile**2 * 8 <= 2 * 2**30
    assert gpu.plan_tiles(10**5, 10**5, 4, False, 1, 10**12).tile == gpu.GPU_MAX_TILE
    assert gpu.plan_tiles(10, 10, 8, False, 1, 1, tile=3).tile == 3


def _emulate_tile_kernel(value, i0, i1, j0, j1, diagonal, dest, dest_t, write):
    """What recursion_tile / gram_fused do to one output, per the contract at the top of gram.cu."""
    for i in range(i1 - i0):
        for j in range(j1 - j0):
            if diagonal and i > j:
                continue
            if dest is not None:
                write(dest, (i, j), value(i0 + i, j0 + j))
            if dest_t is not None and not (diagonal and i == j):
                write(dest_t, (j, i), value(i0 + i, j0 + j))


def _assign(a, idx, v):
    a[idx] = v


def _count(a, idx, v):
    a[idx] += 1


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("names", [("ntk",), ("nngp", "ntk"), ("ntk", "nngp")])
def test_schedule_and_destinations_write_every_element_once(rng, symmetric, names):
    """The host loop of the Gram on the device, the kernel emulated: every element written exactly
    once, with the right value, for sizes that are not multiples of the tile."""
    X = rng.standard_normal((23, 4))
    Y = None if symmetric else rng.standard_normal((17, 4))
    ref = nf.kernel(ARCH, X, Y, get=names)
    diag = nf.kernel_diag(ARCH, X, get=names)
    shape = ref[0].shape
    plan = gpu.plan_tiles(*shape, 8, symmetric, 1, 10**9, tile=5)
    outs = [np.full(shape, np.nan) for _ in names]
    counts = [np.zeros(shape, int) for _ in names]
    for i0, i1, j0, j1, diagonal in gpu.schedule(plan):
        assert not diagonal or (i0 == j0 and i1 == j1)
        assert not symmetric or j0 >= i0  # upper triangle only
        dest, dest_t = gpu.tile_destinations(outs, names, plan, i0, i1, j0, j1, diagonal)
        cdest, cdest_t = gpu.tile_destinations(counts, names, plan, i0, i1, j0, j1, diagonal)
        for q, kind in enumerate(("nngp", "ntk")):
            if kind not in names:
                assert dest[q] is None and dest_t[q] is None
                continue
            r, dg = ref[names.index(kind)], diag[names.index(kind)]

            def value(i, j, r=r, dg=dg, diagonal=diagonal):
                return dg[i] if diagonal and i == j else r[i, j]

            _emulate_tile_kernel(value, i0, i1, j0, j1, diagonal, dest[q], dest_t[q], _assign)
            _emulate_tile_kernel(value, i0, i1, j0, j1, diagonal, cdest[q], cdest_t[q], _count)
    for o, c, r in zip(outs, counts, ref):
        assert (c == 1).all()
        np.testing.assert_array_equal(o, r)


# ---------------------------------------------------------------- device tests (emulated / real)
# "cudaemu": tests/cuda_emu compiles the exact source the backend hands NVRTC with g++ against a
# host emulation of CUDA (one host thread per CUDA thread, checked barriers, NaN-poisoned shared
# and device memory, blocks in forward/reverse/shuffled order) and serves it through a fake
# cupy module; everything above the kernels is the backend's real code.  "cupy": a real GPU.
# (The `cp` fixture that chooses between them is in tests/conftest.py.)
from cuda_emu import fake_cupy, loader  # noqa: E402

from ntkfast import recursion  # noqa: E402


def _emulated(cp):
    return cp.ndarray is fake_cupy.ndarray


# one activation per code: every closed form the kernels can be instantiated for
ONE_PER_CODE = [
    nf.ABReLU(-0.3, 1.7), nf.Erf(1.3, 0.7, 0.2), nf.Gelu(), nf.Sin(0.8, 1.5, 0.3), nf.Sign(), nf.Exp(1.0, 0.5),
    nf.Gaussian(1.0, -1.0), *[nf.RectifiedMonomial(n) for n in range(6)], *[nf.Monomial(n) for n in range(9)],
]  # fmt: skip


def test_every_activation_code_is_covered():
    codes = [a.code for a in ONE_PER_CODE]
    assert codes == loader.all_codes()
    # (the Hermite-series activations share code SERIES, covered on the GPU by tests/test_cuda_series.py)
    assert {nf.spec.get_activation(name).code for name in nf.spec.ACTIVATIONS} - {nf.spec.SERIES} <= set(codes)


def _scale(K):
    return np.abs(K).max()


def _arch(act):
    return nf.MLP(depth=2, activation=act, W_std=1.0, b_std=0.2)


def _reference(arch, X, Y=None, get=("nngp", "ntk")):
    """The kernels from the Python twin of the recursion (ntkfast.recursion, checked against
    quadrature elsewhere), pair by pair: a truth independent of the CPU engine's tiles (and of
    its per-activation compilation, which would dominate these tests' time)."""
    code, (p0, p1, p2) = arch.activation.code, (float(v) for v in arch.activation.params)
    first, steps = arch.layer_coefficients(X.shape[1])
    symmetric = Y is None
    Y = X if symmetric else Y
    G = X.astype(np.float64) @ Y.astype(np.float64).T

    def diagonal(sq):
        s, t, sig = first[0] * sq + first[1], first[2] * sq + first[3], []
        for c in steps:
            sig.append(s)
            k, kdot = recursion.dual_diag(code, p0, p1, p2, s)
            s, t = recursion.step(k, kdot, s, t, *c)
        return sig, s, t

    dx = [diagonal(float(G[i, i] if symmetric else X[i].astype(np.float64) @ X[i])) for i in range(X.shape[0])]
    dy = dx if symmetric else [diagonal(float(y.astype(np.float64) @ y)) for y in Y]
    out = {g: np.empty(G.shape) for g in ("nngp", "ntk")}
    for i in range(G.shape[0]):
        for j in range(G.shape[1]):
            if symmetric and i == j:
                s, t = dx[i][1], dx[i][2]
            elif symmetric and j < i:
                s, t = out["nngp"][j, i], out["ntk"][j, i]
            else:
                g = float(G[i, j])
                s, t = first[0] * g + first[1], first[2] * g + first[3]
                for layer, c in enumerate(steps):
                    k, kdot = recursion.dual(code, p0, p1, p2, dx[i][0][layer], dy[j][0][layer], s)
                    s, t = recursion.step(k, kdot, s, t, *c)
            out["nngp"][i, j], out["ntk"][i, j] = s, t
    return out[get] if isinstance(get, str) else tuple(out[g] for g in get)


def test_reference_agrees_with_the_cpu_engine(rng):
    arch = _arch(nf.Erf(1.3, 0.7, 0.2))
    X, Y = _rows(rng, 9), _rows(rng, 4)
    for y in (None, Y):
        for r, c in zip(_reference(arch, X, y), nf.kernel(arch, X, y, get=("nngp", "ntk"))):
            np.testing.assert_allclose(r, c, rtol=1e-13, atol=1e-14)


def _rows(rng, n, d=5):
    """Rows of norm 0.6 ... 1 (the kernels of high-degree monomials stay within float32)."""
    Z = rng.standard_normal((n, d))
    return Z / np.linalg.norm(Z, axis=1, keepdims=True) * rng.uniform(0.6, 1.0, (n, 1))


@pytest.mark.parametrize("method", gpu.METHODS)
@pytest.mark.parametrize("act", ONE_PER_CODE, ids=lambda a: f"{a.name}{a.code}")
def test_gpu_gram_equals_cpu_float64(cp, rng, act, method):
    arch = _arch(act)
    X, Y = _rows(rng, 37, 11), _rows(rng, 21, 11)  # d = 11: two shared-memory stages, one ragged
    X[5] = X[3]  # an exact duplicate row
    for y in (None, Y):
        ref = _reference(arch, X, y)
        # tile=16: several tiles with ragged edges; CuPy input -> device output
        got = gpu.kernel(arch, cp.asarray(X), None if y is None else cp.asarray(y), ("nngp", "ntk"), tile=16,
                         method=method)  # fmt: skip
        for g, r in zip(got, ref):
            assert isinstance(g, cp.ndarray)
            np.testing.assert_allclose(g.get(), r, rtol=0, atol=1e-12 * _scale(r))
        if y is None:
            assert all(np.array_equal(g.get(), g.get().T) for g in got)
            np.testing.assert_array_equal(np.diag(got[1].get()), gpu.kernel_diag(arch, X))


@pytest.mark.parametrize("method", gpu.METHODS)
@pytest.mark.parametrize("act", ONE_PER_CODE, ids=lambda a: f"{a.name}{a.code}")
def test_gpu_gram_float32(cp, rng, act, method):
    """float32: within 5e-5 of the float64 kernel's scale, near-duplicate rows included (they are
    recomputed in float64 inside the kernel, as on the CPU)."""
    arch = _arch(act)
    X, Y = _rows(rng, 37, 11), _rows(rng, 21, 11)
    X[1] = X[0] + 1e-4 * rng.standard_normal(11) / np.sqrt(11)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    for y in (None, Y):
        ref = _reference(arch, X, y, get="ntk")
        got = gpu.kernel(arch, cp.asarray(X), None if y is None else cp.asarray(y), tile=16, method=method).get()
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=5e-5 * _scale(ref))


@pytest.mark.parametrize("method", gpu.METHODS)
def test_float32_refinement_is_needed(cp, rng, method):
    """The in-kernel float64 refinement matters: without it (tau < 0: no pair qualifies) a
    near-duplicate pair is off by more than the 5e-5 bound the refined kernel meets (~5x)."""
    arch = nf.MLP(depth=2, activation=nf.ReLU(), W_std=1.4, b_std=0.1)
    X = rng.standard_normal((20, 16))
    X[1] = X[0] + 1e-3 * rng.standard_normal(16)
    X = X.astype(np.float32)
    ref = nf.kernel(arch, X.astype(np.float64))
    got = gpu.kernel(arch, cp.asarray(X), method=method).get()
    assert np.abs(got - ref).max() <= 5e-5 * _scale(ref)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nf.config, "REFINE_TOL32", -1.0)
        crude = gpu.kernel(arch, cp.asarray(X), method=method).get()
    assert np.abs(crude - ref).max() > 5e-5 * _scale(ref)


@pytest.mark.parametrize("method", gpu.METHODS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_output_element_is_written(cp, rng, method, symmetric):
    X, Y = rng.standard_normal((70, 5)), None if symmetric else rng.standard_normal((33, 5))
    shape = (70, 70 if symmetric else 33)
    ref = nf.kernel(ARCH, X, Y, get=("nngp", "ntk"))
    dev = (cp.full(shape, cp.nan), cp.full(shape, cp.nan))
    gpu.kernel(ARCH, cp.asarray(X), None if Y is None else cp.asarray(Y), ("nngp", "ntk"), out=dev, tile=32,
               method=method)  # fmt: skip
    host = (np.full(shape, np.nan), np.full(shape, np.nan))  # NumPy inputs: tiles copied back to host
    nf.kernel(ARCH, X, Y, get=("nngp", "ntk"), out=host, backend="gpu", tile=32)
    for d, h, r in zip(dev, host, ref):
        np.testing.assert_allclose(d.get(), r, rtol=0, atol=1e-12 * _scale(r))
        np.testing.assert_allclose(h, r, rtol=0, atol=1e-12 * _scale(r))


def test_memmap_output(cp, rng, tmp_path):
    X = rng.standard_normal((50, 4))
    mm = np.lib.format.open_memmap(tmp_path / "K.npy", mode="w+", dtype=np.float64, shape=(50, 50))
    nf.kernel(ARCH, X, out=mm, backend="gpu", tile=16)
    np.testing.assert_allclose(np.load(tmp_path / "K.npy"), nf.kernel(ARCH, X), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", ONE_PER_CODE, ids=lambda a: f"{a.name}{a.code}")
def test_gpu_matvec_equals_dense(cp, rng, act, dtype):
    """Both methods, K(X, X) and K(X, Y) (one NTK, the other NNGP, swapped between dtypes): 2 x 2
    row and column tiles of the fused kernel (ragged), several slices, k = 3 columns."""
    arch = _arch(act)
    X, Y = _rows(rng, 70).astype(dtype), _rows(rng, 66).astype(dtype)
    tol = 1e-12 if dtype == "float64" else 5e-5
    gets = ("ntk", "nngp") if dtype == "float64" else ("nngp", "ntk")
    for y, get in zip((None, Y), gets):
        op = nf.GramOperator(arch, X, y, get=get, backend="gpu")
        K = _reference(arch, X, y, get=get)
        V = rng.standard_normal((K.shape[1], 3)).astype(dtype)
        for method in gpu.METHODS:
            got = gpu.matmat(op, V, method)
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_allclose(got, K @ V, rtol=0, atol=tol * np.abs(K).sum(1).max())
    assert isinstance(op @ V[:, 0], np.ndarray)
    W = rng.standard_normal((70, 2)).astype(dtype)
    np.testing.assert_allclose(op.T @ W, K.T @ W, rtol=0, atol=tol * np.abs(K).sum(0).max())


@pytest.mark.parametrize("method", gpu.METHODS)
def test_no_race_results_repeat_bitwise(cp, rng, method):
    n = 100 if _emulated(cp) else 300
    X = cp.asarray(rng.standard_normal((n, 20)))
    first = gpu.kernel(ARCH, X, get=("nngp", "ntk"), method=method, tile=64)
    for _ in range(3):  # (emulated: each launch runs its blocks in another order)
        again = gpu.kernel(ARCH, X, get=("nngp", "ntk"), method=method, tile=64)
        assert all(bool((a == b).all()) for a, b in zip(first, again))
    op = nf.GramOperator(ARCH, X.get(), backend="gpu")
    V = rng.standard_normal((n, 2))
    first = gpu.matmat(op, V, method)
    for _ in range(3):
        assert np.array_equal(gpu.matmat(op, V, method), first)


@pytest.mark.parametrize("act", ONE_PER_CODE, ids=lambda a: f"{a.name}{a.code}")
def test_gpu_empirical_ntk_equals_cpu(cp, rng, act):
    arch = nf.MLP(depth=2, activation=act, W_std=1.3, b_std=0.2, width=64)
    net = nf.FiniteMLP(arch, out_dim=3, seed=1)
    X, Y = rng.standard_normal((20, 5)), rng.standard_normal((9, 5))
    for y in (None, Y):
        for trace in (True, False):
            ref = net.empirical_ntk(X, y, trace_outputs=trace)
            got = gpu.empirical_ntk(net, X, y, trace_outputs=trace, block_size=7)
            assert isinstance(got, np.ndarray)
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    got = gpu.empirical_ntk(net, cp.asarray(X))
    assert isinstance(got, cp.ndarray)


def test_auto_backend_for_cupy_inputs(cp, rng):
    X = rng.standard_normal((40, 3))
    K = nf.kernel(ARCH, cp.asarray(X))
    assert isinstance(K, cp.ndarray)
    np.testing.assert_allclose(K.get(), nf.kernel(ARCH, X), rtol=0, atol=1e-12 * _scale(K.get()))
    d = nf.kernel_diag(ARCH, cp.asarray(X), get=("nngp", "ntk"))
    assert all(isinstance(v, cp.ndarray) for v in d)
    np.testing.assert_array_equal(d[1].get(), nf.kernel_diag(ARCH, X))


def test_benchmark_runs(cp, capsys):
    bench = _bench_gpu()
    res = bench.benchmark(n=70, d=5, dtype="float64", depth=2, repeat=1)
    assert {"gemm_floor_s", "gram_gemm_s", "gram_fused_s", "matvec_gemm_s", "matvec_fused_s"} <= set(res)
    assert all(v > 0 for k, v in res.items() if k.endswith("_s"))
    assert "gram_fused_over_gram_gemm" in capsys.readouterr().out


def _bench_gpu():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "asv_bench" / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_device_output_too_large_is_refused_up_front(cp, rng, monkeypatch):
    if not _emulated(cp):
        pytest.skip("needs the emulated device's adjustable free memory")
    monkeypatch.setattr(cp.cuda.runtime, "memGetInfo", lambda: (2**20, 2**31))
    with pytest.raises(nf.InsufficientMemoryError, match="GPU memory.*memmap.*GramOperator"):
        gpu.kernel(ARCH, cp.asarray(rng.standard_normal((1000, 2))))
    # host outputs only need a few tiles on the device
    K = nf.kernel(ARCH, rng.standard_normal((300, 2)), backend="gpu")
    assert isinstance(K, np.ndarray) and np.isfinite(K).all()


# ------------------------------------------------------------------- the emulation itself
@pytest.mark.parametrize("method", gpu.METHODS)
def test_results_do_not_depend_on_block_order(cp, rng, method):
    if not _emulated(cp):
        pytest.skip("the block order is the emulator's")
    arch = _arch(nf.Gelu())
    X, Y = _rows(rng, 150, 9), _rows(rng, 70, 9)
    op = nf.GramOperator(arch, X, backend="gpu")
    V = rng.standard_normal((150, 2))
    results = []
    for order in loader.ORDERS:
        with loader.block_order(order):
            results.append(
                (*gpu.kernel(arch, cp.asarray(X), get=("nngp", "ntk"), method=method),
                 gpu.kernel(arch, cp.asarray(X), cp.asarray(Y), method=method), gpu.matmat(op, V, method))
            )  # fmt: skip
    for other in results[1:]:
        assert all(np.array_equal(np.asarray(to_np(a)), np.asarray(to_np(b))) for a, b in zip(results[0], other))


def to_np(a):
    return a.get() if hasattr(a, "get") else a


SELFTEST = r"""
template <typename T> __global__ void unwritten_shared(T* out) {
  __shared__ T s[64];
  if (threadIdx.x % 2 == 0) s[threadIdx.x] = T(threadIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x];
}
__global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}
__global__ void early_exit(float* out, int n) {
  if (threadIdx.x >= n) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}
__global__ void widths(int a, long long b, float c, double* out) {
  if (threadIdx.x == 0) { out[0] = a; out[1] = double(b); out[2] = c; }
}
__global__ void block_ids(int* out) {
  if (threadIdx.x == 0) out[blockIdx.y * gridDim.x + blockIdx.x] = blockIdx.x + 1000 * blockIdx.y;
}
__global__ void overrun(double* out, int n) { out[n + threadIdx.x] = 1.0; }
"""
SELFTEST_KERNELS = ["unwritten_shared<double>", "unwritten_shared<float>", "divergent_barrier", "early_exit",
                    "widths", "block_ids", "overrun"]  # fmt: skip


@pytest.fixture(scope="module")
def selftest(cp):
    if not _emulated(cp):
        pytest.skip("tests of the emulator")
    return cp.RawModule(code=SELFTEST, name_expressions=SELFTEST_KERNELS)


def test_emulator_poisons_shared_memory(cp, selftest):
    for T in (np.float64, np.float32):
        out = cp.zeros(128, T)
        selftest.get_function(f"unwritten_shared<{'double' if T is np.float64 else 'float'}>")((2,), (64,), (out,))
        o = out.get()
        assert np.array_equal(o[0::2], np.tile(np.arange(0, 64, 2), 2)) and np.isnan(o[1::2]).all()


def test_emulator_stops_at_barrier_mismatches(cp, selftest):
    out = cp.zeros(64, np.float32)
    with pytest.raises(loader.EmulatedLaunchError, match=r"different __syncthreads\(\): .*:\d+ and .*:\d+"):
        selftest.get_function("divergent_barrier")((1,), (32,), (out,))
    with pytest.raises(loader.EmulatedLaunchError, match="exited"):
        selftest.get_function("early_exit")((1,), (32,), (out, np.int32(20)))
    selftest.get_function("early_exit")((1,), (32,), (out, np.int32(32)))  # uniform: fine
    assert (out.get()[:32] == 1).all()


def test_emulator_checks_scalar_widths(cp, selftest):
    out = cp.zeros(3)
    f = selftest.get_function("widths")
    f((1,), (1,), (np.int32(-7), np.int64(2**40), np.float32(0.5), out))
    np.testing.assert_array_equal(out.get(), [-7, 2**40, 0.5])
    for bad in [(np.int64(1), np.int64(2), np.float32(0.5), out), (np.int32(1), np.int32(2), np.float32(0.5), out),
                (np.int32(1), np.int64(2), np.float64(0.5), out), (np.int32(1), np.int64(2), np.int32(0), out),
                (np.int32(1), np.int64(2), np.float32(0.5), cp.zeros(3, np.float32)), (1, 2, 0.5, out)]:  # fmt: skip
        with pytest.raises(loader.EmulatedLaunchError, match="compiled parameter"):
            f((1,), (1,), bad)


def test_emulator_runs_every_block_in_each_order(cp, selftest):
    for order in loader.ORDERS:
        out = cp.zeros(12, np.int32)
        with loader.block_order(order):
            selftest.get_function("block_ids")((4, 3), (32,), (out,))
        assert sorted(out.get().tolist()) == sorted(x + 1000 * y for x in range(4) for y in range(3))


def test_emulator_catches_out_of_bounds_writes(cp, selftest):
    out = cp.zeros(10)
    with pytest.raises(loader.EmulatedLaunchError, match="out-of-bounds write"):
        selftest.get_function("overrun")((1,), (4,), (out, np.int32(10)))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["address", "thread"])
def test_emulated_kernels_under_sanitizers(kind):
    """scripts/cuda_emu_sanitize.sh: a subset of the emulated tests with the kernels built with
    -fsanitize=address (out-of-bounds, use-after-free) or -fsanitize=thread (races between the
    threads of a block, run concurrently); ~1 minute each once built."""
    from pathlib import Path

    if not loader.available():
        pytest.skip("the CUDA emulation needs g++")
    script = Path(__file__).resolve().parents[1] / "scripts" / "cuda_emu_sanitize.sh"
    res = subprocess.run(["bash", str(script), kind], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    assert " passed" in res.stdout and "failed" not in res.stdout
