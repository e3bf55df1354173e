"""GPU backend (CuPy): host side of the CUDA kernels in ``backends/cuda/gram.cu``.

CuPy is an optional extra (``pip install ntkfast[gpu]``) and is imported only when the GPU is
asked for; importing ntkfast never needs CUDA.  The work is split as on the CPU: the public
functions of :mod:`ntkfast.gram` validate and prepare the rows (input map, exact diagonal
recursion) on the host, and this module runs the O(n m) part on the device, following the tile
grid of :class:`ntkfast.tiling.TilePlan` (upper triangle only for K(X, X)):

* Gram, ``method="gemm"`` (default): per tile, cuBLAS computes the inner products
  (``cupy.matmul``) and ``recursion_tile`` runs the fused recursion for all layers, one thread per
  entry.  ``method="fused"``: ``gram_fused`` computes the inner products itself (shared-memory
  tiles) and the recursion in one kernel.  :func:`benchmark` compares the two.
* Matrix-free products (``GramOperator``): ``method="gemm"`` computes a tile, multiplies it by V
  with cuBLAS and drops it (symmetric operators use each tile above the diagonal twice);
  ``method="fused"`` never writes a kernel value to global memory (``matvec_fused`` then
  ``sum_slices``).  Both are deterministic: no atomics, fixed summation orders, one stream.
* Outputs: CuPy inputs give CuPy outputs on the device; NumPy inputs (or a NumPy/memmap ``out=``)
  give host outputs, each tile copied back through pinned buffers on a second stream while the
  device computes the next tile.
* float32 aims at the CPU backend's accuracy: pairs too close to parallel for float32 are
  recomputed in float64 inside the kernels (as on the CPU: ~2e-5 of the kernel's scale; the
  GPU tests ask for 5e-5).  CuPy's ``CUPY_TF32=1`` would let cuBLAS round float32 inner products
  to TF32 and void this bound: leave it unset.

Status: the kernels compile (nvcc for sm_90, and NVRTC through CuPy, in tests/test_cuda_sources.py)
and the host code runs in tests/test_gpu.py against an emulated device; the ``gpu``-marked
tests and :func:`benchmark` have not yet been run on a GPU.  The first use of an (activation,
dtype) pair compiles its module with NVRTC (some seconds; cached on disk by CuPy afterwards).

Diagonal tiles are not split as the CPU plan splits them: a whole diagonal tile is one launch
whose threads below the diagonal exit at once (small sub-tiles would be launch-bound on a GPU).
Compiled modules are cached per (device, activation code, dtype); CuPy also caches the binaries
on disk, keyed by the source text, into which ``recursion.cuh`` is inlined.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import tiling

__all__ = ["available", "benchmark", "require", "empirical_ntk", "kernel", "kernel_diag", "matmat"]

CUDA_DIR = Path(__file__).resolve().parent / "cuda"
INSTALL = "pip install ntkfast[gpu]"
METHODS = ("gemm", "fused")
# The Gram and matvec implementation used when none is named.  cuBLAS + elementwise is the
# expected winner for d >~ 64 (cuBLAS GEMMs run near peak, the hand-tiled stage does not);
# ``benchmark`` measures both.
DEFAULT_METHOD = "gemm"
NVRTC_OPTIONS = ("-std=c++17",)

# Geometry fixed by gram.cu.
BLOCK_RECURSION = (32, 8)  # recursion_tile: threads per block (x: columns, y: rows)
FUSED_TILE = 64  # gram_fused / matvec_fused: BT, entries per block edge
FUSED_THREADS = 16  # TPB: threads per block edge
MAX_GRID_Y = 65535
GPU_MAX_TILE = 8192  # tile edge cap: a float64 scratch tile is 512 MiB
GPU_MIN_TILE = 256


# ------------------------------------------------------------------------------------ CuPy
def _import_cupy():
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(
            f"the GPU backend needs CuPy, which is not installed: install it with `{INSTALL}` "
            "(CUDA 12), or use backend='cpu'"
        ) from exc
    return cupy


def require():
    """The cupy module, checked to see a CUDA device; a clear error otherwise."""
    cupy = _import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, no device
        raise RuntimeError(f"the GPU backend found no usable CUDA device ({exc}); use backend='cpu'") from exc
    if count < 1:
        raise RuntimeError("the GPU backend found no CUDA device; use backend='cpu'")
    return cupy


def available() -> bool:
    """Whether CuPy is installed and sees a CUDA device."""
    try:
        require()
    except (ImportError, RuntimeError):
        return False
    return True


def is_device_array(a) -> bool:
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(a, cupy.ndarray)


def to_host(a):
    """A NumPy view of ``a`` (a CuPy array is copied to the host; anything else is returned as is)."""
    return a.get() if is_device_array(a) else a


# ---------------------------------------------------------------------------------- sources
_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_INCLUDE = re.compile(r'^#include "recursion\.cuh"\s*$', re.MULTILINE)
_PRAGMA_ONCE = re.compile(r"^#pragma once[ \t]*$", re.MULTILINE)


def _ctype(dtype) -> str:
    try:
        return _CTYPES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"dtype: the GPU kernels take float32 or float64, got {np.dtype(dtype)}") from None


@functools.cache
def load_source() -> str:
    """gram.cu with recursion.cuh inlined, ``#line`` directives pointing at both files.

    Inlining (rather than ``-I``) makes the header part of the source text that CuPy's on-disk
    cache is keyed by, so editing the math recompiles the kernels.
    """
    main = CUDA_DIR / "gram.cu"
    header = CUDA_DIR / "recursion.cuh"
    text = main.read_text()
    m = _INCLUDE.search(text)
    if m is None:
        raise RuntimeError(f'{main} must #include "recursion.cuh"')
    line_after = text.count("\n", 0, m.end()) + 2
    # `#pragma once` is meaningless once inlined (and a warning in a main file); its line stays
    body = _PRAGMA_ONCE.sub("", header.read_text())
    inlined = f'#line 1 "{header}"\n{body}\n#line {line_after} "{main}"'
    return f'#line 1 "{main}"\n' + text[: m.start()] + inlined + text[m.end() :]


KERNELS = ("recursion_tile", "gram_fused", "matvec_fused")


def name_expressions(code: int, dtype) -> list[str]:
    """The template instances one module holds: every kernel for one activation code and dtype."""
    ct = _ctype(dtype)
    return [f"ntkfast::{k}<{int(code)}, {ct}>" for k in KERNELS] + [f"ntkfast::sum_slices<{ct}>"]


@functools.cache
def _module(device_id: int, code: int, dtype_name: str):
    """The compiled module of ``code``/``dtype`` on one device (compiled at first use, cached)."""
    cupy = require()
    with cupy.cuda.Device(device_id):
        return cupy.RawModule(
            code=load_source(), options=NVRTC_OPTIONS, name_expressions=name_expressions(code, dtype_name)
        )


@functools.cache
def _function(device_id: int, code: int, dtype_name: str, kernel: str):
    ct = _ctype(dtype_name)
    expr = f"ntkfast::{kernel}<{ct}>" if kernel == "sum_slices" else f"ntkfast::{kernel}<{int(code)}, {ct}>"
    return _module(device_id, code, dtype_name).get_function(expr)


# ------------------------------------------------------------------------ kernel parameters
# C parameter lists of the kernels of gram.cu, in order ("T" is the template's float type).
# tests/test_gpu.py parses gram.cu and checks that these agree with it.
_RECURSION = (
    ("coef", "const T*"), ("n_steps", "int"), ("sig_x", "const T*"), ("sig_y", "const T*"), ("ld_sx", "int"),
    ("ld_sy", "int"), ("diag_nngp", "const T*"), ("diag_ntk", "const T*"), ("diagonal", "int"), ("refine", "int"),
    ("tau", "float"), ("coef64", "const double*"), ("sig_x64", "const double*"), ("sig_y64", "const double*"),
    ("x64", "const double*"), ("y64", "const double*"), ("d", "int"),
)  # fmt: skip
_OUTPUTS = (
    ("nngp", "T*"), ("ntk", "T*"), ("ld_out", "long long"), ("nngp_t", "T*"), ("ntk_t", "T*"), ("ld_t", "long long"),
)  # fmt: skip
_PARAMS = {
    "recursion_tile": (("gram", "const T*"), ("ld_gram", "long long"), ("n", "int"), ("m", "int"))
    + _RECURSION
    + _OUTPUTS,
    "gram_fused": (("X", "const T*"), ("Y", "const T*"), ("n", "int"), ("m", "int")) + _RECURSION + _OUTPUTS,
    "matvec_fused": (("X", "const T*"), ("Y", "const T*"), ("n", "int"), ("m", "int"))
    + _RECURSION
    + (("want_ntk", "int"), ("V", "const T*"), ("k", "int"), ("tiles_per_slice", "int"), ("partial", "T*")),
    "sum_slices": (("partial", "const T*"), ("n_slices", "int"), ("size", "long long"), ("out", "T*")),
}
_NULL = np.uint64(0)  # a null device pointer, passed by value
_SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32, "double": np.float64}


def pack_args(kernel: str, dtype, values: dict) -> tuple:
    """The argument tuple of ``kernel`` from ``values`` (by parameter name), each scalar cast to
    its exact C type: CuPy would pass a Python int as 64 bits, which misaligns an ``int``.
    Pointers are device arrays (or views; the pointer is the view's first element) or None."""
    dtype = np.dtype(dtype)
    params = _PARAMS[kernel]
    missing = {p for p, _ in params} ^ set(values)
    if missing:
        raise KeyError(f"{kernel}: arguments {sorted(missing)} missing or unknown")
    args = []
    for name, ctype in params:
        v = values[name]
        if ctype.endswith("*"):
            want = np.dtype(np.float64) if "double" in ctype else dtype
            if v is None:
                args.append(_NULL)
                continue
            if np.dtype(v.dtype) != want:
                raise TypeError(f"{kernel}.{name}: expected a {want} array, got {v.dtype}")
            args.append(v)
        else:
            scalar = dtype.type if ctype == "T" else _SCALARS[ctype]
            if ctype in ("int", "long long"):
                info = np.iinfo(scalar)
                if not info.min <= int(v) <= info.max:
                    raise OverflowError(f"{kernel}.{name}={v} does not fit a C {ctype}")
            args.append(scalar(v))
    return tuple(args)


def ld(view) -> int:
    """Leading dimension (elements) of a 2-D view with unit column stride."""
    item = view.dtype.itemsize
    if view.ndim != 2 or (view.shape[1] > 1 and view.strides[1] != item) or view.strides[0] % item:
        raise ValueError(f"expected a row-major 2-D view with unit column stride, got strides {view.strides}")
    return max(view.strides[0] // item, 1)


# ------------------------------------------------------------------------------- geometry
def grid_recursion(n: int, m: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) of ``recursion_tile`` for an n x m tile."""
    bx, by = BLOCK_RECURSION
    grid = (math.ceil(m / bx), math.ceil(n / by), 1)
    _check_grid(grid)
    return grid, (bx, by, 1)


def grid_fused(n: int, m: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) of ``gram_fused`` for an n x m tile."""
    grid = (math.ceil(m / FUSED_TILE), math.ceil(n / FUSED_TILE), 1)
    _check_grid(grid)
    return grid, (FUSED_THREADS, FUSED_THREADS, 1)


def _check_grid(grid):
    if grid[1] > MAX_GRID_Y:
        raise ValueError(f"tile too tall for one launch ({grid[1]} > {MAX_GRID_Y} blocks); use a smaller tile")


@dataclass(frozen=True)
class MatvecSlices:
    """How ``matvec_fused`` splits the column tiles: block (s, b) owns column tiles
    ``s * tiles_per_slice ... (s + 1) * tiles_per_slice - 1`` of row tile b."""

    n_slices: int
    tiles_per_slice: int
    col_tiles: int
    row_tiles: int

    def tiles(self, s: int) -> range:
        t0 = s * self.tiles_per_slice
        return range(t0, min(t0 + self.tiles_per_slice, self.col_tiles))


def matvec_slices(n: int, m: int, k: int, itemsize: int, n_sm: int, budget: int) -> MatvecSlices:
    """Enough blocks to fill the device (~8 per SM) with the fewest slices, the scratch
    (n_slices, n, k) within ``budget`` bytes."""
    row_tiles, col_tiles = math.ceil(n / FUSED_TILE), math.ceil(m / FUSED_TILE)
    want = max(1, min(col_tiles, math.ceil(8 * n_sm / row_tiles)))
    fit = max(1, budget // max(1, n * k * itemsize))
    n_slices = min(want, fit)
    per = math.ceil(col_tiles / n_slices)
    n_slices = math.ceil(col_tiles / per)  # no empty slice
    if row_tiles > MAX_GRID_Y:
        raise ValueError(f"too many rows for one launch ({n}); at most {MAX_GRID_Y * FUSED_TILE}")
    return MatvecSlices(n_slices, per, col_tiles, row_tiles)


def plan_tiles(n: int, m: int, itemsize: int, symmetric: bool, buffers: int, budget: int, tile: int | None = None):
    """The tile plan of the GPU: the largest power-of-two edge (<= GPU_MAX_TILE, not much more
    than the matrix) whose ``buffers`` scratch tiles fit in ``budget`` bytes."""
    if tile is None:
        tile = GPU_MAX_TILE
        while tile > GPU_MIN_TILE and tile // 2 >= max(n, m):
            tile //= 2
        while tile > GPU_MIN_TILE and buffers * tile * tile * itemsize > budget:
            tile //= 2
    return tiling.TilePlan(n, m, int(tile), symmetric)


def schedule(plan: tiling.TilePlan):
    """(i0, i1, j0, j1, diagonal) for each launch: the plan's grid, upper triangle when symmetric,
    diagonal tiles whole."""
    t = plan.tile
    for i0 in range(0, plan.n, t):
        i1 = min(i0 + t, plan.n)
        for j0 in range(i0 if plan.symmetric else 0, plan.m, t):
            yield i0, i1, j0, min(j0 + t, plan.m), plan.symmetric and i0 == j0


def _device_budget(cupy) -> int:
    free, _ = cupy.cuda.runtime.memGetInfo()
    return (free + cupy.get_default_memory_pool().free_bytes()) // 2


# ---------------------------------------------------------------------------- device state
def pack_coefficients(coef, dtype) -> np.ndarray:
    """[p0, p1, p2, w, b, alpha, beta, steps...] as gram.cu reads them (``coef``: gram._Coefficients)."""
    return np.concatenate([coef.params, coef.first, coef.steps.reshape(-1)]).astype(dtype)


@dataclass
class _DeviceRows:
    features: object
    sig: object
    nngp: object
    ntk: object
    features64: object = None
    sig64: object = None


def _upload_rows(cupy, rows) -> _DeviceRows:
    up = cupy.asarray
    return _DeviceRows(
        up(rows.features), up(rows.sig), up(rows.nngp), up(rows.ntk),
        None if rows.features64 is None else up(rows.features64),
        None if rows.sig64 is None else up(rows.sig64),
    )  # fmt: skip


@dataclass
class _Problem:
    """What every launch of one Gram or operator shares."""

    cupy: object
    device: int
    code: int
    dtype: np.dtype
    coef: object  # device arrays
    coef64: object
    n_steps: int
    rx: _DeviceRows
    ry: _DeviceRows

    @property
    def refine(self) -> bool:
        return self.coef64 is not None

    def fn(self, kernel):
        return _function(self.device, self.code, self.dtype.name, kernel)

    def recursion_values(self, i0, j0, diagonal) -> dict:
        """The shared recursion parameters for a tile whose first row is i0 and first column j0."""
        rx, ry = self.rx, self.ry
        tau = 0.0
        if self.refine:
            from ..gram import _REFINE_TOL32

            tau = _REFINE_TOL32
        return dict(
            coef=self.coef, n_steps=self.n_steps,
            sig_x=rx.sig[:, i0:] if self.n_steps else None, sig_y=ry.sig[:, j0:] if self.n_steps else None,
            ld_sx=rx.sig.shape[1], ld_sy=ry.sig.shape[1],
            diag_nngp=rx.nngp[i0:], diag_ntk=rx.ntk[i0:], diagonal=int(diagonal),
            refine=int(self.refine), tau=tau, coef64=self.coef64,
            sig_x64=rx.sig64[:, i0:] if self.refine else None, sig_y64=ry.sig64[:, j0:] if self.refine else None,
            x64=rx.features64[i0:] if self.refine else None, y64=ry.features64[j0:] if self.refine else None,
            d=rx.features.shape[1],
        )  # fmt: skip


def _problem(cupy, coef, rx, ry, dtype, rows_on_device=None) -> _Problem:
    device = cupy.cuda.Device().id
    dx = _upload_rows(cupy, rx) if rows_on_device is None else rows_on_device[0]
    dy = dx if ry is rx else (_upload_rows(cupy, ry) if rows_on_device is None else rows_on_device[1])
    refine = coef.float64 is not None
    return _Problem(
        cupy, device, coef.code, np.dtype(dtype), cupy.asarray(pack_coefficients(coef, dtype)),
        cupy.asarray(pack_coefficients(coef.float64, np.float64)) if refine else None,
        coef.steps.shape[0], dx, dy,
    )  # fmt: skip


def _launch_tile(P: _Problem, method, i0, i1, j0, j1, diagonal, outs, outs_t, G):
    """Kernel values of tile (i0:i1, j0:j1) into ``outs`` = (nngp view or None, ntk view or None),
    and their transposes into ``outs_t`` (views of shape (j1-j0, i1-i0), or Nones)."""
    cupy = P.cupy
    bi, bj = i1 - i0, j1 - j0
    views = [v for v in (*outs, *outs_t) if v is not None]
    values = P.recursion_values(i0, j0, diagonal)
    ref = next(v for v in outs if v is not None)
    ref_t = next((v for v in outs_t if v is not None), None)
    values.update(
        nngp=outs[0], ntk=outs[1], ld_out=ld(ref), nngp_t=outs_t[0], ntk_t=outs_t[1],
        ld_t=1 if ref_t is None else ld(ref_t), n=bi, m=bj,
    )  # fmt: skip
    assert all(v.dtype == P.dtype for v in views)
    if method == "gemm":
        cupy.matmul(P.rx.features[i0:i1], P.ry.features[j0:j1].T, out=G)
        values.update(gram=G, ld_gram=ld(G))
        grid, block = grid_recursion(bi, bj)
        P.fn("recursion_tile")(grid, block, pack_args("recursion_tile", P.dtype, values))
    else:
        values.update(X=P.rx.features[i0:i1], Y=P.ry.features[j0:j1])
        grid, block = grid_fused(bi, bj)
        P.fn("gram_fused")(grid, block, pack_args("gram_fused", P.dtype, values))


def _check_method(method):
    method = DEFAULT_METHOD if method is None else method
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return method


# ------------------------------------------------------------------------------------ Gram
def _check_device_out(cupy, out, names, shape, dtype):
    outs = [out] if len(names) == 1 and not isinstance(out, (tuple, list)) else list(out)
    if len(outs) != len(names):
        raise ValueError(f"out: expected {len(names)} array(s), one per kernel in get={names}")
    for o in outs:
        if not isinstance(o, cupy.ndarray):
            raise TypeError(f"out: expected CuPy arrays (or all NumPy arrays), got {type(o).__name__}")
        if o.shape != shape or o.dtype != dtype or not o.flags.c_contiguous:
            raise ValueError(f"out: expected C-contiguous arrays of shape {shape} and dtype {dtype}")
    return outs


def kernel(arch, X, Y=None, get="ntk", *, dtype=None, out=None, progress=False, tile=None, method=None):
    """:func:`ntkfast.kernel` on the GPU (called by it for ``backend="gpu"``, or for CuPy inputs).

    Returns CuPy arrays when the inputs are CuPy arrays (or ``out`` is), else NumPy arrays
    (``out`` may then be a NumPy array or memmap, filled tile by tile).
    """
    from .. import gram
    from .._validation import check_get, check_out, check_positive_int

    names, single = check_get(get)
    tile = check_positive_int(tile, "tile")
    method = _check_method(method)
    cupy = require()
    if Y is X:
        Y = None
    device_out = (
        any(is_device_array(o) for o in (out if isinstance(out, (tuple, list)) else [out]))
        if out is not None
        else is_device_array(X) or is_device_array(Y)
    )
    arch, Xh, Yh, dtype = gram._validate(arch, to_host(X), to_host(Y), dtype)
    symmetric = Yh is None
    rx, coef = gram._prepare(arch, Xh)
    ry = rx if symmetric else gram._prepare(arch, Yh, coef)[0]
    shape = (Xh.shape[0], Xh.shape[0] if symmetric else Yh.shape[0])
    P = _problem(cupy, coef, rx, ry, dtype)
    if device_out:
        if out is None:
            need = len(names) * shape[0] * shape[1] * dtype.itemsize
            budget = _device_budget(cupy)
            if need > budget:
                raise tiling.InsufficientMemoryError(
                    f"{len(names)} kernel matrix(es) of shape {shape} ({dtype.name}) need "
                    f"{tiling.format_bytes(need)} of GPU memory, about {tiling.format_bytes(budget)} is free. "
                    "Pass NumPy inputs or out= a NumPy array / np.memmap (tiles are copied to the host), "
                    "or use ntkfast.GramOperator."
                )
            outs = [cupy.empty(shape, dtype) for _ in names]
        else:
            outs = _check_device_out(cupy, out, names, shape, dtype)
        plan = plan_tiles(*shape, dtype.itemsize, symmetric, 1, _device_budget(cupy), tile)
        _gram_on_device(P, plan, names, outs, method, progress)
    else:
        outs = tiling.allocate(shape, dtype, len(names)) if out is None else check_out(out, names, shape, dtype)
        # per tile: G, then two slots of the output tiles (and their transposes when symmetric),
        # on the device and pinned on the host
        slots = 2 * len(names) * (2 if symmetric else 1)
        budget = min(_device_budget(cupy) // (1 + slots), tiling.memory_budget() // (4 * slots)) * (1 + slots)
        plan = plan_tiles(*shape, dtype.itemsize, symmetric, 1 + slots, budget, tile)
        _gram_to_host(P, plan, names, outs, method, progress)
        for o in outs:
            if isinstance(o, np.memmap):
                o.flush()
    return outs[0] if single else tuple(outs)


def _select(names, arrays):
    """(nngp, ntk) from arrays ordered like ``names``; None for a kernel not asked for."""
    return tuple(arrays[names.index(g)] if g in names else None for g in ("nngp", "ntk"))


def tile_destinations(outs, names, plan, i0, i1, j0, j1, diagonal):
    """(dest, dest_t) of a tile writing straight into whole outputs ``outs`` (ordered like
    ``names``): views of the tile and, for a symmetric plan, of its mirror image.  A diagonal
    tile is its own mirror image (the kernel writes both halves)."""
    dest = _select(names, [o[i0:i1, j0:j1] for o in outs])
    if diagonal:
        return dest, dest
    if plan.symmetric:
        return dest, _select(names, [o[j0:j1, i0:i1] for o in outs])
    return dest, (None, None)


def _gram_on_device(P, plan, names, outs, method, progress):
    cupy = P.cupy
    G = cupy.empty(plan.tile * plan.tile, P.dtype) if method == "gemm" else None
    tiles = list(schedule(plan))
    bar = tiling.progress_bar(len(tiles), progress, "kernel (gpu)")
    try:
        for i0, i1, j0, j1, diagonal in tiles:
            dest, dest_t = tile_destinations(outs, names, plan, i0, i1, j0, j1, diagonal)
            g = None if G is None else G[: (i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
            _launch_tile(P, method, i0, i1, j0, j1, diagonal, dest, dest_t, g)
            bar.update()
        cupy.cuda.get_current_stream().synchronize()
    finally:
        bar.close()


def _gram_to_host(P, plan, names, outs, method, progress):
    """Tiles computed on the current stream into two alternating device slots, copied to pinned
    host buffers on a second stream, and from there into ``outs`` by this thread while the
    device works on the next tile."""
    cupy = P.cupy
    import cupyx

    t2 = plan.tile * plan.tile
    compute = cupy.cuda.get_current_stream()
    copy = cupy.cuda.Stream(non_blocking=True)
    G = cupy.empty(t2, P.dtype) if method == "gemm" else None
    k = len(names)
    # slot s: k tiles then (symmetric) k transposed tiles, on the device and pinned on the host
    per_slot = 2 * k if plan.symmetric else k
    dev = [cupy.empty((per_slot, t2), P.dtype) for _ in range(2)]
    host = [cupyx.empty_pinned((per_slot, t2), P.dtype) for _ in range(2)]
    computed = [cupy.cuda.Event(), cupy.cuda.Event()]
    copied = [None, None]
    pending = [None, None]  # per slot: (i0, i1, j0, j1, mirrored) being copied
    tiles = list(schedule(plan))
    bar = tiling.progress_bar(len(tiles), progress, "kernel (gpu)")
    nbytes_item = P.dtype.itemsize

    def drain(s):
        if pending[s] is None:
            return
        i0, i1, j0, j1, mirrored = pending[s]
        copied[s].synchronize()
        bi, bj = i1 - i0, j1 - j0
        for q, o in enumerate(outs):
            o[i0:i1, j0:j1] = host[s][q, : bi * bj].reshape(bi, bj)
            if mirrored:
                o[j0:j1, i0:i1] = host[s][k + q, : bi * bj].reshape(bj, bi)
        pending[s] = None
        bar.update()

    try:
        for t, (i0, i1, j0, j1, diagonal) in enumerate(tiles):
            s = t % 2
            drain(s)  # the host has consumed slot s (tile t - 2), so its buffers may be reused
            if copied[s] is not None:
                compute.wait_event(copied[s])
            bi, bj = i1 - i0, j1 - j0
            mirror = plan.symmetric and not diagonal
            dest = _select(names, [dev[s][q, : bi * bj].reshape(bi, bj) for q in range(k)])
            if diagonal:
                dest_t = dest
            elif mirror:
                dest_t = _select(names, [dev[s][k + q, : bi * bj].reshape(bj, bi) for q in range(k)])
            else:
                dest_t = (None, None)
            g = None if G is None else G[: bi * bj].reshape(bi, bj)
            _launch_tile(P, method, i0, i1, j0, j1, diagonal, dest, dest_t, g)
            computed[s].record(compute)
            copy.wait_event(computed[s])
            rows = 2 * k if mirror else k
            for q in range(rows):
                cupy.cuda.runtime.memcpyAsync(
                    host[s][q].ctypes.data, dev[s][q].data.ptr, bi * bj * nbytes_item,
                    cupy.cuda.runtime.memcpyDeviceToHost, copy.ptr,
                )  # fmt: skip
            copied[s] = cupy.cuda.Event()
            copied[s].record(copy)
            pending[s] = (i0, i1, j0, j1, mirror)
            drain(1 - s)  # the previous tile, while the device computes this one
        drain(0)
        drain(1)
    finally:
        copy.synchronize()
        bar.close()


def kernel_diag(arch, X, get="ntk", *, dtype=None):
    """:func:`ntkfast.kernel_diag` for CuPy inputs: the O(n d) recursion runs on the host, the
    result is returned on the device."""
    from .. import gram

    cupy = require() if is_device_array(X) else None
    res = gram.kernel_diag(arch, to_host(X), get, dtype=dtype, backend="cpu")
    if cupy is None:
        return res
    return tuple(cupy.asarray(r) for r in res) if isinstance(res, tuple) else cupy.asarray(res)


# ---------------------------------------------------------------------------------- matvec
def matmat(op, V: np.ndarray, method: str | None = None) -> np.ndarray:
    """``op @ V`` for a :class:`ntkfast.GramOperator` on the GPU; V and the result are NumPy.

    The device copies of the operator's rows are made at the first product and kept on it.
    """
    method = _check_method(method)
    cupy = require()
    device = cupy.cuda.Device().id
    cache = op.__dict__.setdefault("_gpu_rows", {})
    rows = []
    for r in (op._rows_x, op._rows_y):
        key = (device, id(r))
        if key not in cache:
            cache[key] = (r, _upload_rows(cupy, r))  # r kept alive with its id
        rows.append(cache[key][1])
    P = _problem(cupy, op._coef, op._rows_x, op._rows_y, op.dtype, rows_on_device=rows)
    Vd = cupy.asarray(V)
    if method == "gemm":
        out = _matmat_gemm(P, op, Vd)
    else:
        out = _matmat_fused(P, op, Vd)
    return out.get()


def _matmat_gemm(P, op, V):
    cupy = P.cupy
    n, m = op.shape
    budget = _device_budget(cupy)
    plan = plan_tiles(n, m, P.dtype.itemsize, op.symmetric, 1, budget, None)
    out = cupy.zeros((n, V.shape[1]), P.dtype)
    tmp = cupy.empty((plan.tile, V.shape[1]), P.dtype)
    G = cupy.empty(plan.tile * plan.tile, P.dtype)
    want = (op.get == "nngp", op.get == "ntk")
    for i0, i1, j0, j1, diagonal in schedule(plan):
        bi, bj = i1 - i0, j1 - j0
        K = G[: bi * bj].reshape(bi, bj)
        # the recursion overwrites the inner products in place (see recursion_tile)
        dest = tuple(K if w else None for w in want)
        _launch_tile(P, "gemm", i0, i1, j0, j1, diagonal, dest, dest if diagonal else (None, None), K)
        cupy.matmul(K, V[j0:j1], out=tmp[:bi])
        out[i0:i1] += tmp[:bi]
        if op.symmetric and not diagonal:
            cupy.matmul(K.T, V[i0:i1], out=tmp[:bj])
            out[j0:j1] += tmp[:bj]
    return out


def _matmat_fused(P, op, V):
    cupy = P.cupy
    n, m = op.shape
    k = V.shape[1]
    n_sm = cupy.cuda.Device().attributes["MultiProcessorCount"]
    sl = matvec_slices(n, m, k, P.dtype.itemsize, n_sm, _device_budget(cupy))
    partial = cupy.empty((sl.n_slices, n, k), P.dtype)
    values = P.recursion_values(0, 0, op.symmetric)
    values.update(
        X=P.rx.features, Y=P.ry.features, n=n, m=m, want_ntk=int(op.get == "ntk"), V=V, k=k,
        tiles_per_slice=sl.tiles_per_slice, partial=partial,
    )  # fmt: skip
    block = (FUSED_THREADS, FUSED_THREADS, 1)
    P.fn("matvec_fused")((sl.n_slices, sl.row_tiles, 1), block, pack_args("matvec_fused", P.dtype, values))
    out = cupy.empty((n, k), P.dtype)
    size = n * k
    args = pack_args("sum_slices", P.dtype, dict(partial=partial, n_slices=sl.n_slices, size=size, out=out))
    P.fn("sum_slices")((min(math.ceil(size / 256), 65535), 1, 1), (256, 1, 1), args)
    return out


# --------------------------------------------------------------------------- empirical NTK
def empirical_ntk(net, X, Y=None, trace_outputs: bool = True, block_size: int | None = None):
    """:meth:`ntkfast.FiniteMLP.empirical_ntk` with the per-layer Gram products on the GPU.

    The forward and backward passes (O(n * n_params)) run on the host as in ``FiniteMLP``; the
    O(n m width) products run on the device.  Returns a CuPy array if X is one, else NumPy.
    """
    cupy = require()
    on_device = is_device_array(X) or is_device_array(Y)
    X = net._check_X(to_host(X))
    symmetric = Y is None
    Y = X if symmetric else net._check_X(to_host(Y), "Y")
    n, m, k = X.shape[0], Y.shape[0], net.out_dim
    shape = (n, m) if trace_outputs else (n, m, k, k)
    # the same block loop and per-layer formula as the CPU, with the features moved to the device
    out = net._fill_ntk(
        X, Y, symmetric, trace_outputs, block_size, cupy.zeros(shape), lambda a: cupy.asarray(a, dtype=np.float64)
    )
    return out if on_device else out.get()


# ------------------------------------------------------------------------------- benchmark
def benchmark(
    n: int = 50000, d: int = 784, dtype: str = "float32", *, depth: int = 3, activation: str = "relu", k: int = 1,
    repeat: int = 3, seed: int = 0, verbose: bool = True,
) -> dict:  # fmt: skip
    """Time the GPU Gram and matvec against cuBLAS floors; compare ``method="gemm"`` with ``"fused"``.

    Reports seconds (best of ``repeat``, device time) for: the cuBLAS GEMM ``X @ X.T`` (the floor
    of any Gram), the whole K(X, X) on the device with each method, and ``op @ V`` (k columns) with
    each method next to the same GEMM floor.  Needs a GPU with room for the n x n output.
    """
    from cupyx.profiler import benchmark as cupy_bench

    from .. import gram
    from ..spec import MLP

    cupy = require()
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    Xh = rng.standard_normal((n, d)).astype(dtype)
    X = cupy.asarray(Xh)
    arch = MLP(depth=depth, activation=activation, W_std=1.4, b_std=0.1)
    out = cupy.empty((n, n), dtype)

    def best(f):
        return float(np.min(cupy_bench(f, n_repeat=repeat, n_warmup=1).gpu_times))

    res = {"n": n, "d": d, "dtype": dtype.name, "depth": depth, "activation": activation, "k": k}
    res["gemm_floor_s"] = best(lambda: cupy.matmul(X, X.T, out=out))
    for method in METHODS:
        res[f"gram_{method}_s"] = best(lambda m=method: kernel(arch, X, out=out, method=m))
    out = None  # free the n x n buffer before the matrix-free products
    op = gram.GramOperator(arch, Xh, backend="gpu")
    V = rng.standard_normal((n, k)).astype(dtype)
    for method in METHODS:
        t0 = time.perf_counter()
        for _ in range(repeat):
            matmat(op, V, method)
        res[f"matvec_{method}_s"] = (time.perf_counter() - t0) / repeat  # includes the host copies of V
    if verbose:
        for key, v in res.items():
            print(f"{key:>16}: {v:.4g}" if isinstance(v, float) else f"{key:>16}: {v}")
    return res
