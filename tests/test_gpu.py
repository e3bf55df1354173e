"""GPU backend.  Two halves:

* host-side checks that run anywhere (no CuPy, no GPU): dispatch and error messages, the source
  that NVRTC compiles, kernel parameter lists against gram.cu, argument packing, launch geometry,
  and the tile schedule with the kernels' write contract emulated in NumPy;
* ``@pytest.mark.gpu`` tests that need CuPy and a CUDA device (skipped otherwise): GPU Gram vs the
  CPU Gram, matvec vs K @ V, empirical NTK vs the CPU one, every output element written, and
  bitwise repeatability.
"""

import re
import subprocess
import sys
import types

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import gram
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
def test_source_inlines_the_header_with_line_directives():
    src = gpu.load_source()
    assert '#include "recursion.cuh"' not in src
    main = (gpu.CUDA_DIR / "gram.cu").read_text().splitlines()
    header = (gpu.CUDA_DIR / "recursion.cuh").read_text().replace("#pragma once", "").splitlines()
    lines = src.splitlines()
    assert lines[0] == f'#line 1 "{gpu.CUDA_DIR / "gram.cu"}"'
    h = lines.index(f'#line 1 "{gpu.CUDA_DIR / "recursion.cuh"}"')
    assert lines[h + 1 : h + 1 + len(header)] == header
    # after the header, #line N points back at the line of gram.cu that follows
    back = next(i for i in range(h + 1 + len(header), len(lines)) if lines[i].startswith("#line"))
    n = int(lines[back].split()[1])
    assert lines[back + 1 :] == main[n - 1 :]
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
    assert set(parsed) == set(gpu._PARAMS) == {*gpu.KERNELS, "sum_slices"}
    for kernel, params in gpu._PARAMS.items():
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
    coef = gram._coefficients(arch, 7, np.dtype(np.float32))
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
    assert plan.tile == gpu.GPU_MIN_TILE and plan.symmetric
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


# ------------------------------------------------------------------- a CuPy emulated on the CPU
# The tests below run twice: on a real GPU with CuPy (marked ``gpu``; skipped without one), and
# against this emulation, so that the host code (tiles, views and leading dimensions, pinned
# copies, streams and events, slices of the fused matvec) runs everywhere.  The emulated kernels
# follow the contract written at the top of gram.cu, reading and writing through the same
# pointer + leading-dimension arguments the real ones get (bounds-checked); they are a model of
# the CUDA code, not the CUDA code itself, which only a GPU run checks.
from numpy.lib.stride_tricks import as_strided  # noqa: E402

from ntkfast import recursion  # noqa: E402


class _DeviceArray(np.ndarray):
    """A "device" array: NumPy memory with CuPy's ``get`` and ``data.ptr``."""

    def get(self):
        return np.array(self)

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _device(a):
    return a.view(_DeviceArray)


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _at(ptr, shape, ld):
    """The memory a kernel sees at pointer ``ptr`` (a view, or None) as a (rows, cols) matrix with
    leading dimension ``ld``, checked to stay inside the allocation the view belongs to."""
    if ptr is None or isinstance(ptr, np.uint64):
        assert ptr is None or ptr == 0
        return None
    rows, cols, ld = int(shape[0]), int(shape[1]), int(ld)
    item = ptr.dtype.itemsize
    if rows == 0 or cols == 0:
        return np.empty((rows, cols), ptr.dtype)
    root = _root(ptr)
    start, end = ptr.ctypes.data, ptr.ctypes.data + ((rows - 1) * ld + cols) * item
    assert root.ctypes.data <= start and end <= root.ctypes.data + root.nbytes, "kernel access out of bounds"
    return as_strided(ptr, shape=(rows, cols), strides=(ld * item, item))


class _EmulatedKernel:
    def __init__(self, expr):
        m = re.fullmatch(r"ntkfast::(\w+)<(?:(\d+), )?(float|double)>", expr)
        self.kernel, self.code = m.group(1), int(m.group(2) or -1)
        self.T = np.float32 if m.group(3) == "float" else np.float64

    def __call__(self, grid, block, args):
        params = gpu._PARAMS[self.kernel]
        assert len(args) == len(params)
        for (name, ctype), a in zip(params, args):  # what CuPy would pass: exact C types
            if not ctype.endswith("*"):
                want = {"int": np.int32, "long long": np.int64, "float": np.float32, "T": self.T}[ctype]
                assert type(a) is want, (self.kernel, name, type(a))
            elif not isinstance(a, np.uint64):
                assert isinstance(a, _DeviceArray), (self.kernel, name, type(a))
                assert a.dtype == (np.float64 if "double" in ctype else self.T), (self.kernel, name)
        getattr(self, "_" + self.kernel)(grid, block, **dict(zip([p for p, _ in params], args)))

    # the recursion of one entry, as ``entry`` in gram.cu
    def _entry(self, a, i, j, g):
        T = self.T
        if a["diagonal"] and i == j:
            return a["diag_nngp"][i], a["diag_ntk"][i]
        L = int(a["n_steps"])
        if a["refine"] and L > 0:
            S = a["sig_x"][0, i] * a["sig_y"][0, j]
            s1 = a["coef"][3] * g + a["coef"][4]
            if S - s1 * s1 <= T(a["tau"]) * S:
                g64 = float(np.dot(a["x64"][i], a["y64"][j]))
                s, t = self._layers(a["coef64"], L, g64, a["sig_x64"][:, i], a["sig_y64"][:, j])
                return T(s), T(t)
        if L == 0:  # no steps: the kernel never reads sig_x / sig_y (null then)
            return self._layers(a["coef"], 0, g, None, None)
        return self._layers(a["coef"], L, g, a["sig_x"][:, i], a["sig_y"][:, j])

    def _layers(self, coef, L, g, sx, sy):
        sigma, theta = coef[3] * g + coef[4], coef[5] * g + coef[6]
        for layer in range(L):
            k, kdot = recursion.dual(self.code, coef[0], coef[1], coef[2], sx[layer], sy[layer], sigma)
            c = coef[7 + 5 * layer : 12 + 5 * layer]
            sigma, theta = recursion.step(k, kdot, sigma, theta, *c)
        return sigma, theta

    def _views(self, a, n, m):
        L = int(a["n_steps"])
        a = dict(a)
        a["sig_x"], a["sig_y"] = _at(a["sig_x"], (L, n), a["ld_sx"]), _at(a["sig_y"], (L, m), a["ld_sy"])
        a["diag_nngp"], a["diag_ntk"] = _at(a["diag_nngp"], (1, n), n)[0], _at(a["diag_ntk"], (1, n), n)[0]
        if a["refine"]:
            a["sig_x64"], a["sig_y64"] = _at(a["sig_x64"], (L, n), a["ld_sx"]), _at(a["sig_y64"], (L, m), a["ld_sy"])
            a["x64"], a["y64"] = _at(a["x64"], (n, a["d"]), a["d"]), _at(a["y64"], (m, a["d"]), a["d"])
        return a

    def _write_tile(self, a, n, m, inner):
        out = [_at(a[k], (n, m), a["ld_out"]) for k in ("nngp", "ntk")]
        out_t = [_at(a[k], (m, n), a["ld_t"]) for k in ("nngp_t", "ntk_t")]
        for i in range(n):
            for j in range(m):
                if a["diagonal"] and i > j:
                    continue
                g = self.T(0) if a["diagonal"] and i == j else inner(i, j)
                values = self._entry(a, i, j, g)
                for o, ot, v in zip(out, out_t, values):
                    if o is not None:
                        o[i, j] = v
                    if ot is not None and not (a["diagonal"] and i == j):
                        ot[j, i] = v

    def _recursion_tile(self, grid, block, **a):
        n, m = int(a["n"]), int(a["m"])
        assert grid[0] * block[0] >= m and grid[1] * block[1] >= n
        a = self._views(a, n, m)
        gram = _at(a["gram"], (n, m), a["ld_gram"])
        self._write_tile(a, n, m, lambda i, j: gram[i, j])

    def _gram_fused(self, grid, block, **a):
        n, m, d = int(a["n"]), int(a["m"]), int(a["d"])
        assert grid[0] * gpu.FUSED_TILE >= m and grid[1] * gpu.FUSED_TILE >= n
        a = self._views(a, n, m)
        X, Y = _at(a["X"], (n, d), d), _at(a["Y"], (m, d), d)
        self._write_tile(a, n, m, lambda i, j: self.T(np.dot(X[i], Y[j])))

    def _matvec_fused(self, grid, block, **a):
        n, m, d, k = int(a["n"]), int(a["m"]), int(a["d"]), int(a["k"])
        a = self._views(a, n, m)
        X, Y, V = _at(a["X"], (n, d), d), _at(a["Y"], (m, d), d), _at(a["V"], (m, k), k)
        partial = _at(a["partial"], (grid[0] * n, k), k).reshape(grid[0], n, k)
        BT, per = gpu.FUSED_TILE, int(a["tiles_per_slice"])
        assert grid[1] * BT >= n
        for s in range(grid[0]):
            partial[s] = 0
            for t in range(s * per, min((s + 1) * per, -(-m // BT))):
                cols = range(t * BT, min((t + 1) * BT, m))
                Kt = np.array([[self._entry(a, i, j, self.T(np.dot(X[i], Y[j])))[int(a["want_ntk"])] for j in cols]
                               for i in range(n)], dtype=self.T)  # fmt: skip
                for jj, j in enumerate(cols):  # the kernel's order: column by column
                    partial[s] += Kt[:, jj : jj + 1] * V[j]

    def _sum_slices(self, grid, block, partial, n_slices, size, out):
        parts = _at(partial, (int(n_slices), int(size)), int(size))
        o = _at(out, (1, int(size)), int(size))[0]
        o[:] = 0
        for q in range(int(n_slices)):
            o += parts[q]


class _EmulatedModule:
    def __init__(self, code, options, name_expressions):
        assert '#include "' not in code and set(options) == set(gpu.NVRTC_OPTIONS)
        self.names = set(name_expressions)

    def get_function(self, expr):
        assert expr in self.names
        return _EmulatedKernel(expr)


class _Stream:
    ptr = 0

    def synchronize(self):
        pass

    def wait_event(self, event):
        assert event.recorded


class _Event:
    recorded = False

    def record(self, stream=None):
        self.recorded = True

    def synchronize(self):
        assert self.recorded


class _DeviceCtx:
    id = 0
    attributes = {"MultiProcessorCount": 2}

    def __init__(self, device=0):
        assert device == 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _memcpy(dst, src, size, kind, stream):
    import ctypes

    assert kind == 2
    ctypes.memmove(dst, src, size)


def _emulated_cupy():
    def asarray(a, dtype=None):
        if isinstance(a, _DeviceArray) and (dtype is None or a.dtype == dtype):
            return a
        return _device(np.array(a, dtype=dtype))

    def matmul(a, b, out=None):
        assert all(isinstance(x, _DeviceArray) for x in (a, b) + (() if out is None else (out,)))
        return _device(np.matmul(a, b, out=out))

    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, memGetInfo=lambda: (2**30, 2**31), memcpyAsync=_memcpy, memcpyDeviceToHost=2
    )
    cuda = types.SimpleNamespace(runtime=runtime, Device=_DeviceCtx, Stream=lambda non_blocking=False: _Stream(),
                                 Event=_Event, get_current_stream=_Stream)  # fmt: skip
    cp = types.ModuleType("cupy")
    cp.__dict__.update(
        ndarray=_DeviceArray, asarray=asarray, matmul=matmul, cuda=cuda, nan=np.nan, RawModule=_EmulatedModule,
        empty=lambda shape, dtype=float: _device(np.empty(shape, dtype)),
        zeros=lambda shape, dtype=float: _device(np.zeros(shape, dtype)),
        full=lambda shape, v, dtype=float: _device(np.full(shape, v, dtype)),
        get_default_memory_pool=lambda: types.SimpleNamespace(free_bytes=lambda: 0),
    )  # fmt: skip
    cpx = types.ModuleType("cupyx")
    cpx.empty_pinned = lambda shape, dtype=float: np.empty(shape, dtype)
    profiler = types.ModuleType("cupyx.profiler")

    def bench(f, n_repeat=1, n_warmup=0):
        for _ in range(n_warmup + n_repeat):
            f()
        return types.SimpleNamespace(gpu_times=np.ones(n_repeat))

    profiler.benchmark = bench
    cpx.profiler = profiler
    return {"cupy": cp, "cupyx": cpx, "cupyx.profiler": profiler}


@pytest.fixture(scope="module", params=["emulated", pytest.param("cupy", marks=pytest.mark.gpu)])
def cp(request):
    if request.param == "cupy":
        cupy = pytest.importorskip("cupy")
        if not gpu.available():
            pytest.skip("no CUDA device")
        yield cupy
        return
    modules = _emulated_cupy()
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in modules.items():
            mp.setitem(sys.modules, name, mod)
        gpu._module.cache_clear()
        gpu._function.cache_clear()
        yield modules["cupy"]
        gpu._module.cache_clear()  # the emulated modules must not outlive the emulation
        gpu._function.cache_clear()


# one per family of closed forms (the activation code is a template parameter of the kernels)
GPU_ACTIVATIONS = [nf.LeakyReLU(0.2), nf.Erf(), nf.Gelu(), nf.Sign(), nf.RectifiedMonomial(2)]


def _scale(K):
    return np.abs(K).max()


@pytest.mark.parametrize("method", gpu.METHODS)
@pytest.mark.parametrize("act", GPU_ACTIVATIONS, ids=lambda a: a.name)
def test_gpu_gram_equals_cpu_float64(cp, rng, act, method):
    arch = nf.MLP(depth=3, activation=act, W_std=1.3, b_std=0.2)
    X, Y = rng.standard_normal((77, 9)) / 3, rng.standard_normal((45, 9)) / 3
    X[5] = X[3]  # an exact duplicate row
    for y in (None, Y):
        ref = nf.kernel(arch, X, y, get=("nngp", "ntk"))
        # tile=32: several tiles with ragged edges; CuPy input -> device output
        got = gpu.kernel(arch, cp.asarray(X), None if y is None else cp.asarray(y), ("nngp", "ntk"), tile=32,
                         method=method)  # fmt: skip
        for g, r in zip(got, ref):
            assert isinstance(g, cp.ndarray)
            np.testing.assert_allclose(g.get(), r, rtol=0, atol=1e-12 * _scale(r))
        if y is None:
            assert all(np.array_equal(g.get(), g.get().T) for g in got)
            np.testing.assert_array_equal(np.diag(got[1].get()), nf.kernel_diag(arch, X))


@pytest.mark.parametrize("method", gpu.METHODS)
def test_gpu_gram_float32_bound(cp, rng, method):
    """float32: within 5e-5 of the float64 kernel's scale, near-duplicate rows included (they are
    recomputed in float64 inside the kernel, as on the CPU)."""
    for act in (nf.ReLU(), nf.Sign()):
        arch = nf.MLP(depth=3, activation=act, W_std=1.4, b_std=0.1)
        X = rng.standard_normal((70, 16))
        X[1] = X[0] + 1e-4 * rng.standard_normal(16)
        X = X.astype(np.float32)
        ref = nf.kernel(arch, X.astype(np.float64))
        got = gpu.kernel(arch, cp.asarray(X), tile=32, method=method).get()
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=5e-5 * _scale(ref))


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


@pytest.mark.parametrize("method", gpu.METHODS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_gpu_matvec_equals_dense(cp, rng, method, symmetric):
    X, Y = rng.standard_normal((150, 6)), None if symmetric else rng.standard_normal((130, 6))
    for get in ("ntk", "nngp"):
        op = nf.GramOperator(ARCH, X, Y, get=get, backend="gpu")
        K = nf.kernel(ARCH, X, Y, get=get)
        V = rng.standard_normal((K.shape[1], 3))
        got = gpu.matmat(op, V, method)
        np.testing.assert_allclose(got, K @ V, rtol=1e-12, atol=1e-12 * np.abs(K).sum(1).max())
        assert isinstance(op @ V[:, 0], np.ndarray)
        W = rng.standard_normal((K.shape[0], 2))
        np.testing.assert_allclose(op.T @ W, K.T @ W, rtol=1e-11, atol=1e-11 * np.abs(K).sum(0).max())


@pytest.mark.parametrize("method", gpu.METHODS)
def test_no_race_results_repeat_bitwise(cp, rng, method):
    n = 40 if cp.ndarray is _DeviceArray else 300  # (emulated: the host loop only; the race is a GPU matter)
    X = cp.asarray(rng.standard_normal((n, 20)))
    first = gpu.kernel(ARCH, X, get=("nngp", "ntk"), method=method, tile=64)
    for _ in range(3):
        again = gpu.kernel(ARCH, X, get=("nngp", "ntk"), method=method, tile=64)
        assert all(bool((a == b).all()) for a, b in zip(first, again))
    op = nf.GramOperator(ARCH, X.get(), backend="gpu")
    V = rng.standard_normal((n, 2))
    first = gpu.matmat(op, V, method)
    for _ in range(3):
        assert np.array_equal(gpu.matmat(op, V, method), first)


def test_gpu_empirical_ntk_equals_cpu(cp, rng):
    arch = nf.MLP(depth=2, activation="erf", W_std=1.3, b_std=0.2, width=64)
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
    res = gpu.benchmark(n=70, d=5, dtype="float64", depth=2, repeat=1)
    assert {"gemm_floor_s", "gram_gemm_s", "gram_fused_s", "matvec_gemm_s", "matvec_fused_s"} <= set(res)
    assert all(v > 0 for k, v in res.items() if k.endswith("_s"))
    assert "gram_fused_s" in capsys.readouterr().out


def test_device_output_too_large_is_refused_up_front(cp, rng, monkeypatch):
    if cp.ndarray is not _DeviceArray:
        pytest.skip("needs the emulated device's adjustable free memory")
    monkeypatch.setattr(cp.cuda.runtime, "memGetInfo", lambda: (2**20, 2**31))
    with pytest.raises(nf.InsufficientMemoryError, match="GPU memory.*memmap.*GramOperator"):
        gpu.kernel(ARCH, cp.asarray(rng.standard_normal((1000, 2))))
    # host outputs only need a few tiles on the device
    K = nf.kernel(ARCH, rng.standard_normal((300, 2)), backend="gpu")
    assert isinstance(K, np.ndarray) and np.isfinite(K).all()
