"""GPU backend (CuPy): host side of the CUDA kernels in ``backends/cuda/gram.cu``.

CuPy is an optional extra (``pip install ntkfast[gpu]``) and is imported only when the GPU is
asked for; importing ntkfast never needs CUDA.  The work is split as on the CPU: the inputs are
validated at this backend's entry points and their rows prepared on the host by
:func:`ntkfast.engine.prepare_rows` (input map, exact diagonal recursion), and the O(n m) part
runs on the device, following the tile
grid of :class:`ntkfast.tiling.TilePlan` (upper triangle only for K(X, X)):

* Gram, ``method="gemm"`` (default): per tile, cuBLAS computes the inner products
  (``cupy.matmul``) and ``recursion_tile`` runs the fused recursion for all layers, one thread per
  entry.  ``method="fused"``: ``gram_fused`` computes the inner products itself (shared-memory
  tiles) and the recursion in one kernel.  ``asv_bench/benchmarks/bench_gpu.py`` compares the two.
* Matrix-free products (``GramOperator``): ``method="gemm"`` computes a tile, multiplies it by V
  with cuBLAS and drops it (symmetric operators use each tile above the diagonal twice);
  ``method="fused"`` never writes a kernel value to global memory (``matvec_fused`` then
  ``sum_slices``).  Both are deterministic: no atomics, fixed summation orders, one stream.
* Outputs: CuPy inputs give CuPy outputs on the device; NumPy inputs (or a NumPy/memmap ``out=``)
  give host outputs, each tile copied back through pinned buffers on a second stream while the
  device computes the next tile.
* Hermite-series activations (tanh, SiLU, ELU, ``Elementwise``...; code ``SERIES``): the per-row
  coefficients and the degree table are computed on the host by :mod:`ntkfast.series` exactly as
  for the CPU, uploaded coefficient-major, and the kernels evaluate per pair and layer the two
  Horner polynomials in rho of ``backends/cpu_series.tile`` (each pair to the degree of its own
  |rho| bin, where the CPU takes a chunk of 32 columns': both within the truncation bound, and
  equal to ~1e-15 at the same degree).  Same tiling plan as the closed forms; no float32 refinement.
* float32 aims at the CPU backend's accuracy: pairs too close to parallel for float32 are
  recomputed in float64 inside the kernels (as on the CPU: ~2e-5 of the kernel's scale; the
  GPU tests ask for 5e-5).  CuPy's ``CUPY_TF32=1`` would let cuBLAS round float32 inner products
  to TF32 and void this bound: leave it unset.

Status: the kernels compile (nvcc for sm_90, and NVRTC through CuPy, in tests/test_cuda_sources.py),
and tests/test_gpu.py runs this host code against the real kernels of gram.cu compiled for the
host (tests/cuda_emu: one host thread per CUDA thread, ``-m cudaemu``); the ``gpu``-marked tests
and the benchmark (``scripts/gpu_check.sh``) have not yet been run on a GPU.  The first use of an (activation,
dtype) pair compiles its module with NVRTC (some seconds; cached on disk by CuPy afterwards).

Diagonal tiles are not split as the CPU plan splits them: a whole diagonal tile is one launch
whose threads below the diagonal exit at once (small sub-tiles would be launch-bound on a GPU).
Compiled modules are cached per (device, activation code, dtype); CuPy also caches the binaries
on disk, keyed by the source text, into which ``recursion.cuh`` is inlined.

Layout: :mod:`.device` (CuPy and the device), :mod:`.source` (the CUDA source, name expressions,
compiled modules), :mod:`.args` (kernel parameter tables, argument packing), :mod:`.geometry`
(grids, tile plans, schedules, matvec slices), :mod:`.run` (orchestration: Gram, matvec,
empirical NTK).
"""

from __future__ import annotations

from .args import PARAMS, ld, pack_args, pack_coefficients
from .device import INSTALL, DeviceUnavailableError, available, device_budget, is_device_array, require, to_host
from .geometry import (
    BLOCK_RECURSION,
    FUSED_THREADS,
    FUSED_TILE,
    GPU_MAX_TILE,
    MatvecSlices,
    grid_fused,
    grid_recursion,
    matvec_slices,
    plan_tiles,
    schedule,
    tile_destinations,
)  # fmt: skip
from .run import DEFAULT_METHOD, METHODS, empirical_ntk, kernel, kernel_diag, matmat
from .source import CUDA_DIR, KERNELS, NVRTC_OPTIONS, clear_cache, load_source, name_expressions

__all__ = [
    "available", "require", "empirical_ntk", "kernel", "kernel_diag", "matmat",
    "BLOCK_RECURSION", "CUDA_DIR", "DEFAULT_METHOD", "DeviceUnavailableError", "FUSED_THREADS", "FUSED_TILE",
    "GPU_MAX_TILE", "INSTALL", "KERNELS", "METHODS", "MatvecSlices", "NVRTC_OPTIONS", "PARAMS", "clear_cache",
    "device_budget", "grid_fused", "grid_recursion", "is_device_array", "ld", "load_source", "matvec_slices",
    "name_expressions", "pack_args", "pack_coefficients", "plan_tiles", "schedule", "tile_destinations", "to_host",
]  # fmt: skip
