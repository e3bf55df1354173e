"""Ratio benchmarks: our kernel's time over a bare BLAS ``X @ X.T`` of the same array, taken in
one process so that machine speed cancels out.  Run ``python -m ntkfast bench``."""

from __future__ import annotations

import time

import numpy as np

from .gram import kernel
from .spec import MLP

# (n, d) cases of the engine issue: MNIST-sized inputs, and low-dimensional inputs where the
# recursion (not the GEMM) dominates.
GRAM_CASES = ((4000, 784), (8000, 784), (6000, 8))
ARCH = MLP(depth=3, activation="relu", W_std=1.5, b_std=0.05)


def best_time(fn, repeat: int = 3) -> float:
    """Minimum wall time of ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gram_ratios(cases=GRAM_CASES, dtypes=(np.float64, np.float32), repeat: int = 3, arch: MLP = ARCH):
    """Rows of (dtype, n, d, kernel seconds, X @ X.T seconds, ratio, M entry-layers per second)."""
    rows = []
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        for n, d in cases:
            X = rng.standard_normal((n, d)).astype(dtype)
            out = np.empty((n, n), dtype)
            t_kernel = best_time(lambda X=X, out=out: kernel(arch, X, out=out), repeat)
            t_gemm = best_time(lambda X=X, out=out: np.matmul(X, X.T, out=out), repeat)
            rate = n * n * arch.n_steps / t_kernel / 1e6
            rows.append((np.dtype(dtype).name, n, d, t_kernel, t_gemm, t_kernel / t_gemm, rate))
    return rows


def main(quick: bool = False) -> None:
    cases = ((1000, 784), (1500, 8)) if quick else GRAM_CASES
    print(f"ReLU NTK, depth {ARCH.depth}, W_std {ARCH.W_std}, b_std {ARCH.b_std}: kernel(X) vs X @ X.T")
    print(
        f"{'dtype':>8} {'n':>6} {'d':>5} {'kernel s':>9} {'X@X.T s':>9} {'ratio':>6} {'M entry-layers/s':>17}"
    )
    for dt, n, d, tk, tg, ratio, rate in gram_ratios(cases):
        print(f"{dt:>8} {n:>6} {d:>5} {tk:>9.4f} {tg:>9.4f} {ratio:>6.2f} {rate:>17.0f}")
