"""Launch geometry of the kernels of gram.cu: grids and blocks, the GPU tile plan and its
schedule, where each tile's values go, and the slices of the fused matvec."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ... import config, tiling
from ...errors import ArgumentError

# Geometry fixed by gram.cu (tests/test_gpu.py checks it against the source).
BLOCK_RECURSION = (32, 8)  # recursion_tile: threads per block (x: columns, y: rows)
FUSED_TILE = 64  # gram_fused / matvec_fused: BT, entries per block edge
FUSED_THREADS = 16  # TPB: threads per block edge
GPU_MAX_TILE = 8192  # tile edge cap: a float64 scratch tile is 512 MiB


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
    if grid[1] > config.MAX_GRID_Y:
        raise ArgumentError(
            f"tile too tall for one launch ({grid[1]} > {config.MAX_GRID_Y} blocks); use a smaller tile"
        )


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
    if row_tiles > config.MAX_GRID_Y:
        raise ArgumentError(f"too many rows for one launch ({n}); at most {config.MAX_GRID_Y * FUSED_TILE}")
    return MatvecSlices(n_slices, per, col_tiles, row_tiles)


def plan_tiles(n: int, m: int, itemsize: int, symmetric: bool, buffers: int, budget: int, tile: int | None = None):
    """The tile plan of the GPU: the largest power-of-two edge (<= GPU_MAX_TILE, not much more
    than the matrix) whose ``buffers`` scratch tiles fit in ``budget`` bytes."""
    if tile is None:
        tile = GPU_MAX_TILE
        while tile > config.GPU_MIN_TILE and tile // 2 >= max(n, m):
            tile //= 2
        while tile > config.GPU_MIN_TILE and buffers * tile * tile * itemsize > budget:
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


def select(names, arrays):
    """(nngp, ntk) from arrays ordered like ``names``; None for a kernel not asked for."""
    return tuple(arrays[names.index(g)] if g in names else None for g in ("nngp", "ntk"))


def tile_destinations(outs, names, plan, i0, i1, j0, j1, diagonal):
    """(dest, dest_t) of a tile writing straight into whole outputs ``outs`` (ordered like
    ``names``): views of the tile and, for a symmetric plan, of its mirror image.  A diagonal
    tile is its own mirror image (the kernel writes both halves)."""
    dest = select(names, [o[i0:i1, j0:j1] for o in outs])
    if diagonal:
        return dest, dest
    if plan.symmetric:
        return dest, select(names, [o[j0:j1, i0:i1] for o in outs])
    return dest, (None, None)
