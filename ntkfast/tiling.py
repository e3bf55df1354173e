"""The tile plan every backend follows: tile sizes from a memory budget, the upper-triangle
schedule for K(X, X), output allocation (or a caller's ``out=``/memmap), and progress."""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import config
from .config import check_fits, format_bytes, memory_budget
from .errors import InsufficientMemoryError

__all__ = ["InsufficientMemoryError", "TilePlan", "allocate", "check_fits", "check_scratch", "default_n_jobs",
           "format_bytes", "max_n_jobs", "memory_budget", "plan_tiles", "run_tiles"]


@dataclass(frozen=True)
class TilePlan:
    """Tiles of an (n, m) output; with ``symmetric`` only blocks on or above the diagonal.

    Diagonal blocks of a symmetric plan are split recursively (down to ``config.DIAGONAL_TILE``) into
    two diagonal halves and the off-diagonal quarter between them, so the wasted lower
    triangle of a diagonal tile shrinks from tile^2 / 2 to DIAGONAL_TILE^2 / 2 per sub-block.
    """

    n: int
    m: int
    tile: int
    symmetric: bool

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        t = self.tile
        for i0 in range(0, self.n, t):
            i1 = min(i0 + t, self.n)
            if self.symmetric:
                yield from _diagonal_tiles(i0, i1)
            for j0 in range(i0 + t if self.symmetric else 0, self.m, t):
                yield i0, i1, j0, min(j0 + t, self.m)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _diagonal_tiles(a: int, b: int) -> Iterator[tuple[int, int, int, int]]:
    if b - a <= config.DIAGONAL_TILE:
        yield a, b, a, b
        return
    mid = (a + b) // 2
    yield from _diagonal_tiles(a, mid)
    yield a, mid, mid, b
    yield from _diagonal_tiles(mid, b)


def plan_tiles(
    n: int, m: int, itemsize: int, symmetric: bool, tile: int | None = None, n_jobs: int | None = None
) -> TilePlan:
    """Choose the tile edge: ``tile`` if given; else the default, made smaller (not below
    ``config.MIN_TILE``) so that every thread gets a few tiles, and capped by the memory budget."""
    if tile is None:
        jobs = default_n_jobs() if n_jobs is None else n_jobs
        tile = min(config.DEFAULT_TILE, max(config.MIN_TILE, math.ceil(max(n, m) / (2 * jobs))))
        # scratch per tile: the tile itself plus two row buffers per thread; keep it a small
        # fraction of the budget
        while tile > 64 and 4 * tile * tile * itemsize > memory_budget() // 8:
            tile //= 2
    return TilePlan(n, m, max(1, min(int(tile), max(n, m))), symmetric)  # no scratch beyond the matrix


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar when ``enabled``, else a no-op with the same ``update``/``close``."""
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="tile")
    return _NoProgress()


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def allocate(shape: tuple[int, int], dtype: np.dtype, count: int, align: int = 0) -> list[np.ndarray]:
    """``count`` uninitialised (n, m) arrays within the memory budget; with ``align``, each one's
    data starts on an ``align``-byte boundary (the streaming stores of the assembly want 64)."""
    dtype = np.dtype(dtype)
    nbytes = count * shape[0] * shape[1] * dtype.itemsize
    check_fits(
        nbytes,
        f"{count} kernel matrix(es) of shape {shape} ({dtype.name})",
        "Pass out= a np.memmap (or np.lib.format.open_memmap) to write it to disk, or use "
        "ntkfast.GramOperator for matrix-free products that never store it.",
    )
    if not align:
        return [np.empty(shape, dtype=dtype) for _ in range(count)]
    size = shape[0] * shape[1] * dtype.itemsize
    arrays = []
    for _ in range(count):
        raw = np.empty(size + align, np.uint8)
        start = -raw.ctypes.data % align
        arrays.append(raw[start:start + size].view(dtype).reshape(shape))
    return arrays


def default_n_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, found once (a lookup costs ~0.5 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def max_n_jobs() -> int:
    """The most threads a caller may ask for: 4 per core, at least 8, at most 256."""
    return min(256, max(8, 4 * default_n_jobs()))


def check_scratch(tile: int, n_jobs: int, itemsize: int, buffers: int, what: str = "the tiles") -> None:
    """Refuse per-thread scratch (``buffers`` tile x tile arrays per thread) above the memory budget."""
    check_fits(
        n_jobs * buffers * tile * tile * itemsize,
        f"{what} (scratch of {buffers} x {tile} x {tile} per thread, {n_jobs} threads)",
        "Pass a smaller tile= (or leave it to the default) or fewer n_jobs.",
    )


def run_tiles(plan: TilePlan, work, n_jobs: int | None = None, progress: bool = False, desc: str = "tiles",
              static: bool = False):
    """Call ``work(i0, i1, j0, j1, worker)`` for every tile of ``plan`` on ``n_jobs`` threads.

    ``worker`` is a small per-thread integer (0 .. n_jobs-1) for per-thread scratch.  BLAS is
    limited to one thread meanwhile: each tile's GEMM is single-threaded and the tiles run in
    parallel, which keeps BLAS's spinning workers from starving the recursion.

    By default threads pull the next tile from a shared queue (tiles differ in cost).  With
    ``static`` worker ``w`` gets the fixed tiles ``w, w + n_jobs, ...`` (largest first) in a
    fixed order, so whatever it accumulates per worker does not depend on thread timing.

    Interrupts: the main thread waits in short slices; on KeyboardInterrupt (Ctrl-C) or an
    exception in any worker it sets a cancel flag that every worker checks before its next
    tile, waits for the tiles in progress to finish (a tile takes milliseconds) and re-raises.
    """
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    n_jobs = default_n_jobs() if n_jobs is None else n_jobs
    # largest tiles first: the small ones left at the end even out the threads' finishing times
    tiles = sorted(plan, key=lambda t: (t[1] - t[0]) * (t[3] - t[2]), reverse=True)
    n_jobs = max(1, min(n_jobs, len(tiles)))
    bar = progress_bar(len(tiles), progress, desc)
    cancel = threading.Event()
    try:
        with _blas_controller().limit(limits=1, user_api="blas"):
            if n_jobs == 1:
                for t in tiles:  # in the main thread: Ctrl-C lands between two tiles
                    work(*t, 0)
                    bar.update()
                return
            queue = iter(tiles)
            lock = threading.Lock()

            def next_tile(worker, mine):
                if cancel.is_set():
                    return None
                if static:
                    return next(mine, None)
                with lock:
                    return next(queue, None)

            def run(worker):
                mine = iter(tiles[worker::n_jobs])
                while (t := next_tile(worker, mine)) is not None:
                    try:
                        work(*t, worker)
                    except BaseException:
                        cancel.set()
                        raise
                    bar.update()

            pool = ThreadPoolExecutor(max_workers=n_jobs)
            futures = []
            try:
                # submits inside the try: a Ctrl-C landing in Thread.start() (it waits for the new
                # thread) must still shut the pool down, or its workers keep the interpreter alive
                for w in range(n_jobs):
                    futures.append(pool.submit(run, w))
                pending = futures
                while pending:  # short waits: the main thread stays responsive to Ctrl-C
                    _, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
                    if any(f.done() and f.exception() is not None for f in futures):
                        break
            finally:  # after Ctrl-C or a worker's exception the others stop after their current tile
                cancel.set()
                pool.shutdown(wait=True, cancel_futures=True)
            for f in futures:
                f.result()  # re-raise a worker's exception
    finally:
        bar.close()
