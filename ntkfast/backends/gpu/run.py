"""Orchestration of the GPU backend: device copies of the prepared rows, one launch per tile,
the Gram into device or host outputs, matrix-free products, and the empirical NTK.

Rows are prepared on the host by :mod:`ntkfast.engine` (input map, exact diagonal recursion,
coefficients); this module never imports :mod:`ntkfast.gram`.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np

from ... import config, engine, series, tiling
from ..._validation import check_arch, check_array, check_get, check_out, check_positive_int, resolve_dtype
from ...errors import ArgumentError, ArgumentTypeError, InsufficientMemoryError
from . import source
from .args import ld, pack_args, pack_coefficients
from .device import device_budget, is_device_array, require, to_host
from .geometry import (
    FUSED_THREADS,
    grid_fused,
    grid_recursion,
    matvec_slices,
    plan_tiles,
    schedule,
    select,
    tile_destinations,
)

METHODS = ("gemm", "fused")
# The Gram and matvec implementation used when none is named.  cuBLAS + elementwise is the
# expected winner for d >~ 64 (cuBLAS GEMMs run near peak, the hand-tiled stage does not);
# asv_bench/benchmarks/bench_gpu.py measures both.
DEFAULT_METHOD = "gemm"

# ---------------------------------------------------------------------------- device state


@dataclass
class DeviceRows:
    features: object
    sig: object
    nngp: object
    ntk: object
    features64: object = None
    sig64: object = None
    # series activations: coefficients (n_steps * n_coef, n) coefficient-major, 1/sqrt(Sigma) (n_steps, n)
    c: object = None
    d: object = None
    inv_sqrt: object = None


def series_arrays(rows):
    """(c, d, inv_sqrt) of the series rows of one side in the layout gram.cu reads, in the rows'
    working dtype: row ``layer * n_coef + k`` of c holds c_k at that layer for every row (the
    columns of a tile contiguous, so a warp's loads coalesce), inv_sqrt row ``layer``."""
    s = rows.series.cast(rows.features.dtype)
    n = s.c.shape[0]
    flat = [np.ascontiguousarray(a.transpose(1, 2, 0).reshape(-1, n)) for a in (s.c, s.d)]
    return flat[0], flat[1], np.ascontiguousarray(s.inv_sqrt)


def upload_rows(cupy, rows) -> DeviceRows:
    up = cupy.asarray
    series = None
    if rows.series is not None:
        series = series_arrays(rows)
        need, budget = sum(a.nbytes for a in series), device_budget(cupy)
        if need > budget:
            c = rows.series.rows.c
            raise InsufficientMemoryError(
                f"the Hermite-series coefficients of {c.shape[0]} rows ({c.shape[1]} layers to degree "
                f"{c.shape[2] - 1}) need {config.format_bytes(need)} of GPU memory, about "
                f"{config.format_bytes(budget)} is free; pass fewer rows per call, or use backend='cpu'"
            )
        series = tuple(up(a) for a in series)
    series = (None, None, None) if series is None else series
    return DeviceRows(
        up(rows.features), up(rows.sig), up(rows.nngp), up(rows.ntk),
        None if rows.features64 is None else up(rows.features64),
        None if rows.sig64 is None else up(rows.sig64),
        *series,
    )  # fmt: skip


@dataclass
class Problem:
    """What every launch of one Gram or operator shares."""

    cupy: object
    device: int
    code: int
    dtype: np.dtype
    coef: object  # device arrays
    coef64: object
    n_steps: int
    rx: DeviceRows
    ry: DeviceRows
    # series activations: the degree table (n_steps, n_bins) int32 on the device, coefficients per layer,
    # ELU/SELU's closed form beyond the series (series.exact_args: per-layer cut in dtype, 5 float64 params)
    table: object = None
    n_coef: int = 0
    cut: object = None
    exact: object = None

    @property
    def refine(self) -> bool:
        return self.coef64 is not None

    def fn(self, kernel):
        return source.function(self.device, self.code, self.dtype.name, kernel)

    def recursion_values(self, i0, j0, diagonal) -> dict:
        """The shared recursion parameters for a tile whose first row is i0 and first column j0."""
        rx, ry = self.rx, self.ry
        tau = config.REFINE_TOL32 if self.refine else 0.0
        return dict(
            coef=self.coef, n_steps=self.n_steps,
            sig_x=rx.sig[:, i0:] if self.n_steps else None, sig_y=ry.sig[:, j0:] if self.n_steps else None,
            ld_sx=rx.sig.shape[1], ld_sy=ry.sig.shape[1],
            diag_nngp=rx.nngp[i0:], diag_ntk=rx.ntk[i0:], diagonal=int(diagonal),
            refine=int(self.refine), tau=tau, coef64=self.coef64,
            sig_x64=rx.sig64[:, i0:] if self.refine else None, sig_y64=ry.sig64[:, j0:] if self.refine else None,
            x64=rx.features64[i0:] if self.refine else None, y64=ry.features64[j0:] if self.refine else None,
            d=rx.features.shape[1], **self.series_values(i0, j0),
        )  # fmt: skip

    def series_values(self, i0, j0) -> dict:
        """The series parameters (nulls for the closed forms); the coefficient arrays share the
        leading dimension of sig_x / sig_y (the number of rows of each side)."""
        rx, ry = self.rx, self.ry
        if self.table is None or self.n_steps == 0:
            return dict(table=None, n_bins=0, rho_steps=0, n_coef=0, cx=None, dx=None, inv_x=None, cy=None, dy=None,
                        inv_y=None, cut=None, exact=None)  # fmt: skip
        return dict(
            table=self.table, n_bins=self.table.shape[1], rho_steps=series.RHO_STEPS, n_coef=self.n_coef,
            cx=rx.c[:, i0:], dx=rx.d[:, i0:], inv_x=rx.inv_sqrt[:, i0:],
            cy=ry.c[:, j0:], dy=ry.d[:, j0:], inv_y=ry.inv_sqrt[:, j0:], cut=self.cut, exact=self.exact,
        )  # fmt: skip


def make_problem(cupy, coef, rx, ry, dtype, rows_on_device=None) -> Problem:
    device = cupy.cuda.Device().id
    dx = upload_rows(cupy, rx) if rows_on_device is None else rows_on_device[0]
    dy = dx if ry is rx else (upload_rows(cupy, ry) if rows_on_device is None else rows_on_device[1])
    refine = coef.float64 is not None
    table, n_coef, cut, exact = None, 0, None, None
    if coef.series is not None:
        # every side of the Gram is prepared (common degrees), so the table is final; ELU/SELU's
        # pairs beyond the cut take the closed form on the device, as on the CPU
        table = cupy.asarray(coef.series.table().astype(np.int32))
        cut, exact = (cupy.asarray(a) for a in coef.series.exact_args(dtype))
        n_coef = rx.series.rows.c.shape[2]
        if ry.series.rows.c.shape[2] != n_coef or dx.c.shape != (coef.steps.shape[0] * n_coef, rx.sig.shape[1]):
            raise RuntimeError("series rows of the two sides at different degrees; prepare both with one plan")
    return Problem(
        cupy, device, coef.code, np.dtype(dtype), cupy.asarray(pack_coefficients(coef, dtype)),
        cupy.asarray(pack_coefficients(coef.float64, np.float64)) if refine else None,
        coef.steps.shape[0], dx, dy, table, n_coef, cut, exact,
    )  # fmt: skip


def launch_tile(P: Problem, method, i0, i1, j0, j1, diagonal, outs, outs_t, G):
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
        raise ArgumentError(f"method: expected one of {METHODS}, got {method!r}")
    return method


# ------------------------------------------------------------------------------------ Gram
def _check_device_out(cupy, out, names, shape, dtype):
    outs = [out] if len(names) == 1 and not isinstance(out, (tuple, list)) else list(out)
    if len(outs) != len(names):
        raise ArgumentError(f"out: expected {len(names)} array(s), one per kernel in get={names}")
    for o in outs:
        if not isinstance(o, cupy.ndarray):
            raise ArgumentTypeError(f"out: expected CuPy arrays (or all NumPy arrays), got {type(o).__name__}")
        if o.shape != shape or o.dtype != dtype or not o.flags.c_contiguous:
            raise ArgumentError(f"out: expected C-contiguous arrays of shape {shape} and dtype {dtype}")
    return outs


def kernel(arch, X, Y=None, get="ntk", *, dtype=None, out=None, progress=False, tile=None, method=None):
    """:func:`ntkfast.kernel` on the GPU (called by it for ``backend="gpu"``, or for CuPy inputs).

    Returns CuPy arrays when the inputs are CuPy arrays (or ``out`` is), else NumPy arrays
    (``out`` may then be a NumPy array or memmap, filled tile by tile).
    """
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
    arch = check_arch(arch)
    Xh, Yh = to_host(X), to_host(Y)
    dtype = resolve_dtype(dtype, Xh, Yh)
    Xh = check_array(Xh, "X", dtype)
    Yh = None if Yh is None else check_array(Yh, "Y", dtype, n_features=Xh.shape[1])
    symmetric = Yh is None
    rx, coef = engine.prepare_rows(arch, Xh)
    ry = rx if symmetric else engine.prepare_rows(arch, Yh, coef)[0]
    shape = (Xh.shape[0], Xh.shape[0] if symmetric else Yh.shape[0])
    P = make_problem(cupy, coef, rx, ry, dtype)
    if device_out:
        if out is None:
            need = len(names) * shape[0] * shape[1] * dtype.itemsize
            budget = device_budget(cupy)
            if need > budget:
                raise InsufficientMemoryError(
                    f"{len(names)} kernel matrix(es) of shape {shape} ({dtype.name}) need "
                    f"{config.format_bytes(need)} of GPU memory, about {config.format_bytes(budget)} is free. "
                    "Pass NumPy inputs or out= a NumPy array / np.memmap (tiles are copied to the host), "
                    "or use ntkfast.GramOperator."
                )
            outs = [cupy.empty(shape, dtype) for _ in names]
        else:
            outs = _check_device_out(cupy, out, names, shape, dtype)
        plan = plan_tiles(*shape, dtype.itemsize, symmetric, 1, device_budget(cupy), tile)
        _gram_on_device(P, plan, names, outs, method, progress)
    else:
        outs = tiling.allocate(shape, dtype, len(names)) if out is None else check_out(out, names, shape, dtype)
        # per tile: G, then two slots of the output tiles (and their transposes when symmetric),
        # on the device and pinned on the host
        slots = 2 * len(names) * (2 if symmetric else 1)
        budget = min(device_budget(cupy) // (1 + slots), config.memory_budget() // (4 * slots)) * (1 + slots)
        plan = plan_tiles(*shape, dtype.itemsize, symmetric, 1 + slots, budget, tile)
        _gram_to_host(P, plan, names, outs, method, progress)
        for o in outs:
            if isinstance(o, np.memmap):
                o.flush()
    return outs[0] if single else tuple(outs)


def _gram_on_device(P, plan, names, outs, method, progress):
    cupy = P.cupy
    G = cupy.empty(plan.tile * plan.tile, P.dtype) if method == "gemm" else None
    tiles = list(schedule(plan))
    bar = tiling.progress_bar(len(tiles), progress, "kernel (gpu)")
    try:
        for i0, i1, j0, j1, diagonal in tiles:
            dest, dest_t = tile_destinations(outs, names, plan, i0, i1, j0, j1, diagonal)
            g = None if G is None else G[: (i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
            launch_tile(P, method, i0, i1, j0, j1, diagonal, dest, dest_t, g)
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
            dest = select(names, [dev[s][q, : bi * bj].reshape(bi, bj) for q in range(k)])
            if diagonal:
                dest_t = dest
            elif mirror:
                dest_t = select(names, [dev[s][k + q, : bi * bj].reshape(bj, bi) for q in range(k)])
            else:
                dest_t = (None, None)
            g = None if G is None else G[: bi * bj].reshape(bi, bj)
            launch_tile(P, method, i0, i1, j0, j1, diagonal, dest, dest_t, g)
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
    result is returned on the device (NumPy inputs give NumPy outputs)."""
    names, single = check_get(get)
    cupy = require() if is_device_array(X) else None
    arch = check_arch(arch)
    Xh = to_host(X)
    Xh = check_array(Xh, "X", resolve_dtype(dtype, Xh))
    rows, _ = engine.prepare_rows(arch, Xh)
    res = tuple(rows.nngp if g == "nngp" else rows.ntk for g in names)
    if cupy is not None:
        res = tuple(cupy.asarray(r) for r in res)
    return res[0] if single else res


# ---------------------------------------------------------------------------------- matvec
# device copies of each GramOperator's rows, made at its first product, dropped with it
_DEVICE_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def matmat(op, V: np.ndarray, method: str | None = None) -> np.ndarray:
    """``op @ V`` for a :class:`ntkfast.GramOperator` on the GPU; V and the result are NumPy.

    The device copies of the operator's rows are made at the first product and kept on it.
    """
    method = _check_method(method)
    cupy = require()
    device = cupy.cuda.Device().id
    cache = _DEVICE_ROWS.setdefault(op, {})
    rows = []
    for r in (op.rows_x, op.rows_y):
        key = (device, id(r))
        if key not in cache:
            cache[key] = (r, upload_rows(cupy, r))  # r kept alive with its id
        rows.append(cache[key][1])
    P = make_problem(cupy, op.coefficients, op.rows_x, op.rows_y, op.dtype, rows_on_device=rows)
    Vd = cupy.asarray(V)
    if method == "gemm":
        out = _matmat_gemm(P, op, Vd)
    else:
        out = _matmat_fused(P, op, Vd)
    return out.get()


def _matmat_gemm(P, op, V):
    cupy = P.cupy
    n, m = op.shape
    budget = device_budget(cupy)
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
        launch_tile(P, "gemm", i0, i1, j0, j1, diagonal, dest, dest if diagonal else (None, None), K)
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
    sl = matvec_slices(n, m, k, P.dtype.itemsize, n_sm, device_budget(cupy))
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
    X = net.check_input(to_host(X))
    symmetric = Y is None
    Y = X if symmetric else net.check_input(to_host(Y), "Y")
    n, m, k = X.shape[0], Y.shape[0], net.out_dim
    shape = (n, m) if trace_outputs else (n, m, k, k)
    # the same block loop and per-layer formula as the CPU, with the features moved to the device
    out = net.fill_ntk(
        X, Y, symmetric, trace_outputs, block_size, cupy.zeros(shape), lambda a: cupy.asarray(a, dtype=np.float64)
    )
    return out if on_device else out.get()
