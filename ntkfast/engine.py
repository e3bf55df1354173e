"""The engine every backend runs on: prepared rows, one tile, and the symmetric assembly.

A kernel matrix is computed in four steps, each a function here or in :mod:`ntkfast.tiling`:

1. :func:`prepare_rows` -- the input map, then the diagonal recursion for each row (the
   Sigma(x, x) entering every step, and the exact diagonal NNGP/NTK), plus the layer
   :func:`coefficients` of the recursion;
2. ``tiling.plan_tiles`` -- the tiles of the output (upper triangle only for K(X, X));
3. :func:`compute_tile` -- inner products (BLAS), the fused recursion (``backends.cpu``) and,
   in float32, the float64 recomputation of nearly parallel pairs;
4. :func:`finish_tile` -- for K(X, X): the exact diagonal in diagonal tiles and the mirror
   copy of every tile above the diagonal, so the result is exactly symmetric.

:func:`fill_gram` runs 3 and 4 over a plan on threads (every depth of ``depths`` in the same
pass), :func:`gram_products` multiplies by K without storing it.

``ntkfast.gram`` (the public API), ``ntkfast.kernel_grad`` and the GPU backend all use these
pieces; the GPU backend takes :class:`Rows` and :class:`Coefficients` and runs steps 3 and 4
on the device.  Nothing here checks its arguments: the public entry points do.
"""

from __future__ import annotations

import dataclasses
import errno
import mmap
import os
import shutil
from dataclasses import dataclass

import numpy as np

from . import config, recursion, series, tiling
from .backends import cpu, cpu_series
from .errors import ArgumentError, InsufficientMemoryError
from .spec import MLP, SERIES

__all__ = [
    "Coefficients",
    "Rows",
    "allocate_outputs",
    "DepthPlan",
    "at_depth",
    "coefficients",
    "compute_tile",
    "depth_plan",
    "diagonal_recursion",
    "fill_gram",
    "gram_products",
    "finish_tile",
    "input_features",
    "place_tile",
    "prepare_rows",
    "reserve_file_space",
    "scratch_view",
    "squared_norms",
    "symmetrize_diagonal_block",
]


@dataclass(frozen=True)
class Rows:
    """One side of a Gram: features after the input map and the diagonal recursion."""

    features: np.ndarray  # (n, d_in), C-contiguous, working dtype
    sig: np.ndarray  # (n_steps, n): Sigma(x, x) entering each step
    nngp: np.ndarray  # (n,) exact diagonal
    ntk: np.ndarray  # (n,)
    # float32 only: the same rows in float64, to recompute nearly parallel pairs
    features64: np.ndarray | None = None
    sig64: np.ndarray | None = None
    # series activations (code SERIES): the per-row Hermite coefficients (``series.SeriesSide``)
    series: series.SeriesSide | None = None

    def diag(self, get: str) -> np.ndarray:
        """The exact diagonal of kernel ``get`` ("nngp" or "ntk")."""
        return self.nngp if get == "nngp" else self.ntk


@dataclass(frozen=True)
class Coefficients:
    """The recursion's coefficients in the working dtype (see ``MLP.layer_coefficients``)."""

    code: int  # activation code (``recursion``)
    params: np.ndarray  # activation parameters
    first: np.ndarray  # [w, b, alpha, beta] of the first layer
    steps: np.ndarray  # (n_steps, 5)
    float64: Coefficients | None = None  # the same in float64, for float32 refinement
    # series activations: the state the sides of one Gram share (common degrees, degree table)
    series: series.SeriesPlan | None = None


def coefficients(arch: MLP, d_in: int, dtype, closed_form: bool = True) -> Coefficients:
    """The :class:`Coefficients` of ``arch`` for ``d_in`` input features (after the input map).

    For a series activation (code ``SERIES``) they carry a fresh :class:`series.SeriesPlan`: the
    rows prepared with them are brought to common degrees (prepare every side of one Gram with
    the same coefficients, as ``prepare_rows(arch, Y, coef)`` does).  Series kernels need no
    float64 refinement (no angle: the polynomial in rho is smooth at rho = 1).  ``closed_form``
    False (a backend without ELU's closed form: the GPU) keeps ELU/SELU's series to the cap's degree.
    """
    dtype = np.dtype(dtype)
    first, steps = arch.layer_coefficients(d_in)
    coef = Coefficients(
        arch.activation.code,
        np.asarray(arch.activation.params, dtype=dtype),
        first.astype(dtype),
        np.ascontiguousarray(steps, dtype=dtype),
    )
    if arch.activation.code == SERIES:
        plan = series.SeriesPlan(arch.activation, first, steps)
        plan.closed_form = closed_form
        return dataclasses.replace(coef, series=plan)
    if dtype == np.float32 and steps.shape[0] > 0:
        return dataclasses.replace(coef, float64=coefficients(arch, d_in, np.float64))
    return coef


def input_features(arch: MLP, X: np.ndarray) -> np.ndarray:
    """X after ``arch.input_map`` (X itself without one), C-contiguous in X's dtype."""
    return X if arch.input_map is None else np.ascontiguousarray(arch.input_map.apply(X), X.dtype)


def diagonal_recursion(coef: Coefficients, feats: np.ndarray, sqnorm: np.ndarray | None = None):
    """(sig, nngp, ntk) of the rows ``feats``: Sigma(x, x) entering each step, and the diagonal.

    ``sqnorm``: the rows' squared norms as :func:`squared_norms` gives them, when the caller
    runs several recursions on the same rows (the depths of ``kernel(..., depths=)``)."""
    n = feats.shape[0]
    if coef.code == SERIES:  # the energies E[phi^2], E[phi'^2] by quadrature, in float64
        sqnorm = np.einsum("ij,ij->i", feats, feats, dtype=np.float64)
        plan = coef.series
        sig, nngp, ntk, _ = series.diag_recursion(plan.activation, plan.first, plan.steps, sqnorm, plan.tol, warn=False)
        return sig.astype(feats.dtype), nngp.astype(feats.dtype), ntk.astype(feats.dtype)
    if sqnorm is None:
        sqnorm = squared_norms(feats)
    sig = np.empty((coef.steps.shape[0], n), feats.dtype)
    nngp = np.empty(n, feats.dtype)
    ntk = np.empty(n, feats.dtype)
    cpu.recursion_kernels(coef.code).diag(coef.params, coef.first, coef.steps, sqnorm, sig, nngp, ntk)
    return sig, nngp, ntk


def squared_norms(feats: np.ndarray) -> np.ndarray:
    """The squared norm of each row of ``feats``, in its dtype (what :func:`diagonal_recursion` starts from)."""
    return np.einsum("ij,ij->i", feats, feats)


def prepare_rows(
    arch: MLP, X: np.ndarray, coef: Coefficients | None = None, closed_form: bool = True
) -> tuple[Rows, Coefficients]:
    """Apply the input map and run the diagonal recursion for the rows of X.

    ``X`` is a validated C-contiguous float32/float64 array; ``coef`` (from the other side of
    the Gram) is computed when not given, with ``closed_form`` (see :func:`coefficients`).
    Raises ValueError when the kernel diverges.
    """
    feats = input_features(arch, X)
    if coef is None:
        coef = coefficients(arch, feats.shape[1], X.dtype, closed_form)
    side = None
    if coef.code == SERIES:
        side = coef.series.add_side(np.einsum("ij,ij->i", feats, feats, dtype=np.float64))
        sig, nngp, ntk = (a.astype(X.dtype) for a in (side.rows.sig, side.rows.nngp, side.rows.ntk))
    else:
        sig, nngp, ntk = diagonal_recursion(coef, feats)
    if not (np.isfinite(nngp).all() and np.isfinite(ntk).all() and np.isfinite(sig).all()):
        raise ArgumentError(
            f"the kernel of {arch.activation!r} diverges (or overflows {X.dtype}) for these inputs: "
            "its expectation is infinite at their variance; scale the inputs or W_std down"
        )
    underflow = recursion.variance_underflow(arch.activation, coef.first, coef.steps, feats, sig, nngp, ntk)
    if underflow:
        raise ArgumentError(underflow)
    if coef.float64 is None:
        return Rows(feats, sig, nngp, ntk, series=side), coef
    feats64 = feats.astype(np.float64)
    return Rows(feats, sig, nngp, ntk, feats64, diagonal_recursion(coef.float64, feats64)[0]), coef


def at_depth(arch: MLP, depth: int) -> MLP:
    """``arch`` with ``depth`` hidden layers (per-layer widths cut to the first ``depth``)."""
    width = arch.width
    if not isinstance(width, int):
        if depth > len(width):
            raise ArgumentError(
                f"depths: {depth} is deeper than the {len(width)} hidden widths of arch.width; "
                "give one width per layer of the deepest network (or one int)"
            )
        width = width[: max(depth, 1)]
        width = width[0] if len(width) == 1 else width
    return dataclasses.replace(arch, depth=depth, width=width)


@dataclass(frozen=True)
class DepthPlan:
    """Where the tile kernel writes the outputs of ``kernel(..., depths=...)``, in step order.

    Slot ``s`` is written after ``write_at[s]`` steps of the deepest network, through the
    ``readout`` step first where ``with_readout[s]`` (a residual network cut at a shallower
    depth ends with its readout, applied to the state after its blocks).  ``slots[k]`` is the
    slot of ``depths[k]``; ``coefs[k]`` the coefficients of the depth-``depths[k]`` network (its
    exact diagonal).
    """

    depths: tuple[int, ...]
    slots: tuple[int, ...]
    write_at: np.ndarray  # int64, ascending
    with_readout: np.ndarray  # bool
    readout: np.ndarray  # (5,) in the working dtype
    readout64: np.ndarray  # (5,) float64 (the float32 refinement)
    coefs: tuple[Coefficients, ...]


def depth_plan(arch: MLP, depths, d_in: int, dtype) -> DepthPlan:
    """The :class:`DepthPlan` of ``depths`` (None: the single output of ``arch`` itself)."""
    depths = (arch.depth,) if depths is None else tuple(depths)
    deepest = max(depths)
    order = sorted(range(len(depths)), key=lambda k: depths[k])
    slots = [0] * len(depths)
    for s, k in enumerate(order):
        slots[k] = s
    if arch.residual:  # depth d < deepest: d blocks then the readout; deepest: all its steps
        write_at = [depths[k] if depths[k] < deepest else deepest + 1 for k in order]
        with_readout = [depths[k] < deepest for k in order]
    else:
        write_at = [depths[k] for k in order]
        with_readout = [False] * len(depths)
    last = np.asarray(at_depth(arch, deepest).layer_coefficients(d_in)[1][-1:]).reshape(-1)
    readout = np.zeros(5) if last.size == 0 else last
    return DepthPlan(
        depths, tuple(slots), np.array(write_at, np.int64), np.array(with_readout, np.bool_),
        readout.astype(dtype), readout.astype(np.float64),
        tuple(coefficients(at_depth(arch, d), d_in, dtype) for d in depths),
    )  # fmt: skip


def scratch_view(buf: np.ndarray, *shape: int) -> np.ndarray:
    """A C-contiguous array of ``shape`` at the start of a per-thread scratch buffer."""
    return buf.reshape(-1)[: int(np.prod(shape))].reshape(shape)


_NO_READOUT = np.zeros(1, np.bool_)
_ZEROS5 = np.zeros(5)


def compute_tile(coef: Coefficients, rx: Rows, ry: Rows, i0, i1, j0, j1, G, nngp, ntk, offset, diagonal=False,
                 schedule: DepthPlan | None = None, mirror: bool = False, stream: bool = False,
                 phase: int = 0) -> None:
    """One tile: inner products into the scratch ``G``, then the fused recursion.

    ``nngp``/``ntk`` are 3-D outputs (one slice per slot of ``schedule``, a :class:`DepthPlan`;
    default: one slice, after every step), written at ``offset``; None when not wanted
    (neither may alias ``G`` unless with zero offset).  In float32, pairs too close to parallel
    for float32 are then recomputed in float64.  ``diagonal``: the tile straddles the
    diagonal of K(X, X) (its diagonal gets exact values later, so it is not refined).

    ``mirror`` (a tile above the diagonal of K(X, X)): also write every output's mirror image
    below the diagonal, in the same pass (strips of rows stored while in L1: see
    ``cpu.assembled_kernels``).  ``stream``: non-temporal stores (outputs far larger than the
    cache), with ``phase`` from :func:`stream_phase`.  Neither changes a value.
    """  # fmt: skip
    cpu.gemm(rx.features[i0:i1], ry.features[j0:j1], G)
    if schedule is None:
        write_at, with_readout = np.array([coef.steps.shape[0]], np.int64), _NO_READOUT
        readout = readout64 = _ZEROS5
    else:
        write_at, with_readout = schedule.write_at, schedule.with_readout
        readout, readout64 = schedule.readout, schedule.readout64
    get = (nngp is not None, ntk is not None)
    placeholder = G[None]  # for outputs not asked for (never written)
    nngp = placeholder if nngp is None else nngp
    ntk = placeholder if ntk is None else ntk
    if coef.code == SERIES:
        sx, sy = rx.series.cast(G.dtype), ry.series.cast(G.dtype)
        cpu_series.tile(coef.first, coef.steps, coef.series.table(), G, sx.c, sx.d, sx.inv_sqrt, i0, sy.c, sy.d,
                        sy.inv_sqrt, j0, nngp, ntk, *offset, *get, write_at, readout.astype(G.dtype, copy=False),
                        with_readout, *coef.series.exact_args(G.dtype))  # fmt: skip
        if mirror:
            _mirror_stacks(nngp, ntk, get, offset, i1 - i0, j1 - j0)
        return
    kernels = cpu.recursion_kernels(coef.code)
    refine = coef.float64 is not None
    tau = G.dtype.type(config.REFINE_TOL32 if refine else -np.inf)
    rows_sig = np.ascontiguousarray(rx.sig[:, i0:i1])
    sig_cols = np.ascontiguousarray(ry.sig[:, j0:j1])
    args = (coef.params, coef.first, coef.steps, G, rows_sig, sig_cols, nngp, ntk, *offset, *get, tau, write_at,
            readout.astype(G.dtype, copy=False), with_readout)  # fmt: skip
    if mirror or stream:
        flagged = cpu.assembled_kernels(coef.code).tile(*args, mirror, stream, phase)
    else:
        flagged = kernels.tile(*args)
    if flagged:  # rare: near-duplicate rows, and the diagonal of diagonal tiles
        w, b = coef.first[0], coef.first[1]
        ii, jj = cpu.near_parallel(G, w, b, rows_sig[0], sig_cols[0], tau, diagonal)
        c64 = coef.float64
        kernels.pairs(
            c64.params, c64.first, c64.steps, rx.features64[i0:i1], ry.features64[j0:j1],
            np.ascontiguousarray(rx.sig64[:, i0:i1]), np.ascontiguousarray(ry.sig64[:, j0:j1]),
            ii, jj, nngp, ntk, *offset, *get, write_at, readout64, with_readout,
        )  # fmt: skip
        if mirror:  # the recomputed pairs' mirror images
            a, b = ii + offset[0], jj + offset[1]
            for o, wanted in zip((nngp, ntk), get):
                if wanted:
                    o[:, b, a] = o[:, a, b]


def _mirror_stacks(nngp, ntk, get, offset, bi, bj) -> None:
    """The mirror image of a tile (bi, bj) at ``offset`` in every slice of the 3-D outputs."""
    i0, j0 = offset
    for o, wanted in zip((nngp, ntk), get):
        if wanted:
            for v in o:
                cpu.mirror(v, i0, i0 + bi, j0, j0 + bj)


def stream_phase(stacks, symmetric: bool = True) -> int | None:
    """Whether the outputs ``stacks`` (3-D, C-contiguous) are written with non-temporal stores,
    and the strip phase for it: None for ordinary stores.

    Streaming pays when the outputs are far larger than the cache (``config.STREAM_MIN_BYTES``).
    For K(X, X) (``symmetric``, mirrored) it needs every mirrored row segment to start on the same
    64-byte boundary (row length a multiple of 64 bytes, the same alignment in every stack), else
    partial lines would be written.
    """
    if sum(s.nbytes for s in stacks) < config.STREAM_MIN_BYTES:
        return None
    if not symmetric:
        return 0
    itemsize = stacks[0].itemsize
    phases = {s.__array_interface__["data"][0] % 64 for s in stacks}
    if len(phases) != 1 or any((s.shape[-1] * itemsize) % 64 or s.strides[-2] % 64 for s in stacks):
        return None
    misalign = phases.pop()
    return None if misalign % itemsize else misalign // itemsize


def symmetrize_diagonal_block(block: np.ndarray, diag_values: np.ndarray) -> None:
    """Exact diagonal and exact symmetry inside a square tile on the diagonal (upper part kept)."""
    cpu.symmetrize_block(block, diag_values)


def finish_tile(views, diag_values, i0, i1, j0, j1) -> None:
    """The assembly step of K(X, X) for one computed tile (upper triangle) of every output.

    A tile on the diagonal gets the exact diagonal and its lower part from its upper part; a
    tile above it is copied to its mirror image below.  ``views`` are 2-D (n, n) outputs,
    ``diag_values`` their exact diagonals (n,).
    """
    if i0 == j0:
        for v, d in zip(views, diag_values):
            symmetrize_diagonal_block(v[i0:i1, j0:j1], d[i0:i1])
    else:
        for v in views:
            cpu.mirror(v, i0, i1, j0, j1)


def place_tile(view, part, diag_values, i0, j0, symmetric, phase: int | None = None) -> None:
    """Put a tile computed into scratch (``part``, C-contiguous) at (i0, j0) of the output
    ``view``, with the assembly of K(X, X) when ``symmetric``: the mirror image written from the
    scratch (still in cache) for a tile above the diagonal, the exact diagonal for one on it.
    ``phase`` (from :func:`stream_phase`): non-temporal stores in strips of whole lines."""
    diagonal = symmetric and i0 == j0
    if phase is None:
        cpu.place(view, part, i0, j0, symmetric and not diagonal)
    else:
        cpu.store_tile(view[None], part[None], i0, j0, symmetric and not diagonal, True, phase)
    if diagonal:
        k = part.shape[0]
        symmetrize_diagonal_block(view[i0:i0 + k, j0:j0 + k], diag_values[i0:i0 + k])


# ------------------------------------------------------------------------------- whole Grams
def allocate_outputs(shape, dtype, count: int, schedule: DepthPlan | None = None) -> list[np.ndarray]:
    """Outputs for ``count`` kernels (at each depth of ``schedule``), flat depth-major, within the
    memory budget.  With a schedule they are the slices of one (n_depths, n, m) array per kernel
    in step order, which :func:`fill_gram` lets the tile kernel write directly.  Each starts on a
    64-byte boundary, so that the streaming stores of :func:`stream_phase` can serve them all."""
    if schedule is None:
        return tiling.allocate(shape, dtype, count, align=64)
    n_depths = len(schedule.depths)
    stacks = [a.reshape(n_depths, *shape)
              for a in tiling.allocate((n_depths * shape[0], shape[1]), dtype, count, align=64)]  # fmt: skip
    return [stacks[q][schedule.slots[k]] for k in range(n_depths) for q in range(count)]


def _as_stacks(views, names, slots):
    """The (n_depths, n, m) arrays the outputs are consecutive slices of (``views`` depth-major,
    ``slots[k]`` the position of depth k in step order), or None when they are not."""
    stacks = []
    for q in range(len(names)):
        by_slot = sorted((slots[k], views[k * len(names) + q]) for k in range(len(slots)))
        first = by_slot[0][1]
        step = first.nbytes
        base = first.base
        for s, v in by_slot:
            address = v.__array_interface__["data"][0]
            if base is None or v.base is not base or address != first.__array_interface__["data"][0] + s * step:
                return None
        stacks.append(np.lib.stride_tricks.as_strided(first, (len(slots), *first.shape), (step, *first.strides)))
    return stacks



def fill_gram(coef: Coefficients, rx: Rows, ry: Rows, names, views, plan, n_jobs: int,
              schedule: DepthPlan | None = None, progress: bool = False) -> None:
    """Compute K(X, Y) (``rx is ry``: K(X, X), the plan symmetric) into ``views``.

    ``views`` are C-contiguous (n, m) ndarrays, flat depth-major then in the order of ``names``;
    ``schedule`` (see :func:`depth_plan`) None is one output per name, of the network ``coef``
    describes.  The tiles run on ``n_jobs`` threads; for K(X, X) each tile is assembled as soon
    as it is computed (exact diagonal, mirror image).
    """  # fmt: skip
    symmetric = plan.symmetric
    n_depths = 1 if schedule is None else len(schedule.depths)
    slots = [0] if schedule is None else schedule.slots
    dtype = views[0].dtype
    if schedule is None:
        diag_values = [rx.diag(g) for g in names]
        stacks = [v[None] for v in views]
    else:
        diag_values = []
        sqnorm = None if coef.code == SERIES else squared_norms(rx.features)  # once for every depth
        for c in schedule.coefs:  # the diagonal recursion of each depth: exactly that of its network
            _, nngp_d, ntk_d = diagonal_recursion(c, rx.features, sqnorm)
            diag_values += [nngp_d if g == "nngp" else ntk_d for g in names]
        stacks = _as_stacks(views, names, slots)  # None: the tile goes through scratch
    # outputs far larger than the cache: non-temporal stores (mirrored ones in whole 64-byte lines)
    phase = stream_phase([v[None] for v in views] if stacks is None else stacks, symmetric)
    # per-thread scratch: the inner products and, for outputs that are not one stack per kernel,
    # the tile of every output (written there by the tile kernel, then placed and mirrored)
    t = plan.tile
    buffers = 1 if stacks is not None else 1 + n_depths * len(names)
    tiling.check_scratch(t, n_jobs, dtype.itemsize, buffers)
    scratch = [np.empty((buffers, t, t), dtype=dtype) for _ in range(n_jobs)]

    def work(i0, i1, j0, j1, worker):
        bi, bj = i1 - i0, j1 - j0
        diagonal = symmetric and i0 == j0
        buf = scratch[worker]
        G = scratch_view(buf[0], bi, bj)
        if stacks is not None:  # the outputs themselves
            targets = dict(zip(names, stacks))
            compute_tile(coef, rx, ry, i0, i1, j0, j1, G, targets.get("nngp"), targets.get("ntk"), (i0, j0),
                         diagonal, schedule, mirror=symmetric and not diagonal,
                         stream=phase is not None and not diagonal, phase=phase or 0)  # fmt: skip
            if diagonal:  # its lower part and exact diagonal (a tile above it was mirrored in compute_tile)
                finish_tile(views, diag_values, i0, i1, j0, j1)
            return
        targets = {g: scratch_view(buf[1 + q * n_depths:], n_depths, bi, bj) for q, g in enumerate(names)}
        compute_tile(coef, rx, ry, i0, i1, j0, j1, G, targets.get("nngp"), targets.get("ntk"), (0, 0), diagonal,
                     schedule)  # fmt: skip
        for k in range(n_depths):
            for q, g in enumerate(names):
                f = k * len(names) + q
                place_tile(views[f], targets[g][slots[k]], diag_values[f] if symmetric else None, i0, j0, symmetric,
                           phase)  # fmt: skip

    tiling.run_tiles(plan, work, n_jobs, progress, "kernel")


def gram_products(coef: Coefficients, rx: Rows, ry: Rows, get: str, plan, V: np.ndarray, n_jobs: int,
                  progress: bool = False) -> np.ndarray:
    """K @ V without storing K (``plan.symmetric``: each tile above the diagonal serves both of
    its mirror images), deterministic for a given n_jobs.

    Each thread accumulates its own fixed share of the tiles (``run_tiles(static=True)``) into
    its own (n, k) accumulator, and the accumulators are summed in thread order, so the rounding
    does not depend on timing.  When n_jobs accumulators do not fit the memory budget, fewer
    threads are used (as many as fit).
    """  # fmt: skip
    n, k = plan.n, V.shape[1]
    t = plan.tile
    dtype = V.dtype
    per_thread = (n * k + 2 * t * t) * dtype.itemsize
    n_jobs = max(1, min(n_jobs, config.memory_budget() // max(per_thread, 1)))
    tiling.check_fits(n_jobs * per_thread, f"the product K @ V with V of shape {V.shape}",
                      "Multiply fewer columns at a time.")  # fmt: skip
    outs = [np.zeros((n, k), dtype=dtype) for _ in range(n_jobs)]
    scratch = [np.empty((2, t, t), dtype=dtype) for _ in range(n_jobs)]
    symmetric = plan.symmetric

    def work(i0, i1, j0, j1, worker):
        G = scratch_view(scratch[worker][0], i1 - i0, j1 - j0)
        K = scratch_view(scratch[worker][1], i1 - i0, j1 - j0)
        want = (K[None] if get == "nngp" else None, K[None] if get == "ntk" else None)
        diagonal = symmetric and i0 == j0
        compute_tile(coef, rx, ry, i0, i1, j0, j1, G, *want, (0, 0), diagonal)
        out = outs[worker]
        if diagonal:
            symmetrize_diagonal_block(K, rx.diag(get)[i0:i1])
        out[i0:i1] += K @ V[j0:j1]
        if symmetric and i0 != j0:
            out[j0:j1] += K.T @ V[i0:i1]

    tiling.run_tiles(plan, work, n_jobs, progress, "matvec", static=True)
    total = outs[0]
    for o in outs[1:]:
        total += o
    return total


# ------------------------------------------------------------------------- file-backed outputs
def _file_range(arr: np.memmap) -> tuple[str, int, int] | None:
    """(file, byte offset, byte count) of a C-contiguous file-backed memmap (or view of one)."""
    filename = getattr(arr, "filename", None)
    if not filename:
        return None
    root = arr
    while isinstance(root, np.ndarray) and not isinstance(root.base, mmap.mmap):
        root = root.base
    if not isinstance(root, np.ndarray):
        return None
    start = int(arr.offset) + (arr.__array_interface__["data"][0] - root.__array_interface__["data"][0])
    return filename, start, arr.nbytes


def reserve_file_space(outputs, name: str = "out") -> None:
    """Reserve the disk blocks of every file-backed ``np.memmap`` among ``outputs``.

    A memmap on a sparse file is only given disk blocks as pages are written, and a full disk
    then kills the process with SIGBUS.  ``os.posix_fallocate`` allocates the byte range up
    front; when the disk cannot hold it, this raises InsufficientMemoryError naming the bytes
    needed and the free space, before anything is computed.
    """
    for arr in outputs:
        where = _file_range(arr) if isinstance(arr, np.memmap) else None
        if where is None or where[2] == 0:
            continue
        filename, start, nbytes = where
        try:
            fd = os.open(filename, os.O_RDWR)
        except OSError:
            continue  # opened read-only elsewhere, or gone: writing will tell
        try:
            os.posix_fallocate(fd, start, nbytes)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                try:
                    free = shutil.disk_usage(os.path.dirname(os.path.abspath(filename))).free
                except OSError:
                    free = None
                have = "unknown free space" if free is None else f"{config.format_bytes(free)} free"
                raise InsufficientMemoryError(
                    f"{name}: the memmap {filename!r} needs {config.format_bytes(nbytes)} of disk "
                    f"({nbytes} bytes) but its file system has {have}; free some space or put the "
                    "memmap on a larger disk"
                ) from None
            # EINVAL/EOPNOTSUPP: a file system without fallocate; writing proceeds unreserved
        finally:
            os.close(fd)
