"""GPU benchmarks (moved out of ``ntkfast.backends.gpu``): the Gram and the matrix-free product on
the device against the cuBLAS floor ``X @ X.T``, and the two implementations (``method="gemm"``:
cuBLAS + the elementwise recursion kernel; ``"fused"``: the hand-tiled kernels) against each other.

``benchmark()`` prints the figures and their ratios (``scripts/gpu_check.sh`` runs it); the asv
classes below record the same ratios and are skipped on a machine without a GPU.
"""

from __future__ import annotations

import time

import numpy as np

import ntkfast as nf
from ntkfast.backends import gpu


def benchmark(
    n: int = 50000, d: int = 784, dtype: str = "float32", *, depth: int = 3, activation: str = "relu", k: int = 1,
    repeat: int = 3, seed: int = 0, verbose: bool = True,
) -> dict:  # fmt: skip
    """Time the GPU Gram and matvec against cuBLAS floors; compare ``method="gemm"`` with ``"fused"``.

    Reports seconds (best of ``repeat``, device time) for: the cuBLAS GEMM ``X @ X.T`` (the floor
    of any Gram), the whole K(X, X) on the device with each method, and ``op @ V`` (k columns) with
    each method (host wall time, including the copies of V), and the ratios of each to the floor
    and of the hand-tiled kernels to cuBLAS + recursion.  Needs a GPU with room for the n x n output.
    """
    from cupyx.profiler import benchmark as cupy_bench

    cupy = gpu.require()
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    Xh = rng.standard_normal((n, d)).astype(dtype)
    X = cupy.asarray(Xh)
    arch = nf.MLP(depth=depth, activation=activation, W_std=1.4, b_std=0.1)
    out = cupy.empty((n, n), dtype)

    def best(f):
        return float(np.min(cupy_bench(f, n_repeat=repeat, n_warmup=1).gpu_times))

    res = {"n": n, "d": d, "dtype": dtype.name, "depth": depth, "activation": activation, "k": k}
    res["gemm_floor_s"] = best(lambda: cupy.matmul(X, X.T, out=out))
    for method in gpu.METHODS:
        res[f"gram_{method}_s"] = best(lambda m=method: gpu.kernel(arch, X, out=out, method=m))
    out = None  # free the n x n buffer before the matrix-free products
    op = nf.GramOperator(arch, Xh, backend="gpu")
    V = rng.standard_normal((n, k)).astype(dtype)
    for method in gpu.METHODS:
        gpu.matmat(op, V, method)  # warm-up: compiles, uploads the rows
        t0 = time.perf_counter()
        for _ in range(repeat):
            gpu.matmat(op, V, method)
        res[f"matvec_{method}_s"] = (time.perf_counter() - t0) / repeat
    floor = res["gemm_floor_s"]
    for method in gpu.METHODS:
        res[f"gram_{method}_over_gemm"] = res[f"gram_{method}_s"] / floor
        res[f"matvec_{method}_over_gemm"] = res[f"matvec_{method}_s"] / floor
    res["gram_fused_over_gram_gemm"] = res["gram_fused_s"] / res["gram_gemm_s"]
    res["matvec_fused_over_matvec_gemm"] = res["matvec_fused_s"] / res["matvec_gemm_s"]
    if verbose:
        for key, v in res.items():
            print(f"{key:>30}: {v:.4g}" if isinstance(v, float) else f"{key:>30}: {v}")
    return res


class TrackGpuRatios:
    """The ratios of :func:`benchmark` (skipped without a GPU)."""

    params = (["float32", "float64"],)
    param_names = ["dtype"]
    timeout = 600

    def setup(self, dtype):
        if not gpu.available():
            raise NotImplementedError("no CUDA device")  # asv: skip
        self.res = benchmark(n=20000, d=784, dtype=dtype, repeat=2, verbose=False)

    def track_gram_gemm_over_gemm(self, dtype):
        return self.res["gram_gemm_over_gemm"]

    def track_gram_fused_over_gram_gemm(self, dtype):
        return self.res["gram_fused_over_gram_gemm"]

    def track_matvec_gemm_over_gemm(self, dtype):
        return self.res["matvec_gemm_over_gemm"]

    def track_matvec_fused_over_matvec_gemm(self, dtype):
        return self.res["matvec_fused_over_matvec_gemm"]
