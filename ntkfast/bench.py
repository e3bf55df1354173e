"""Ratio benchmarks: our kernel's time over a bare BLAS ``X @ X.T`` of the same array, taken in
one process so that machine speed cancels out.  Run ``python -m ntkfast bench``."""

from __future__ import annotations

import time

import numpy as np

from .finite import FiniteMLP
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


def empirical_ntk_times(n: int = 1024, n_naive: int = 32, repeat: int = 2):
    """Structured empirical NTK of a 784-512-512-10 ReLU MLP vs the naive J J^T.

    The naive Jacobian has n * 10 * 669 706 entries (55 GB at n = 1024), so it is timed at
    ``n_naive`` rows and compared with the structured kernel at the same size.
    """
    net = FiniteMLP(MLP(depth=2, activation="relu", width=512, b_std=0.1), out_dim=10, in_dim=784)
    X = np.random.default_rng(0).standard_normal((n, 784))
    rows = {}
    rows["traced"] = best_time(lambda: net.empirical_ntk(X), repeat)
    rows["full"] = best_time(lambda: net.empirical_ntk(X, trace_outputs=False), repeat)
    small = X[:n_naive]

    def naive():
        J = net.jacobian(small).reshape(n_naive * 10, -1)
        return (J @ J.T).reshape(n_naive, 10, n_naive, 10).transpose(0, 2, 1, 3)

    t0 = time.perf_counter()
    naive()
    rows["naive_small"] = time.perf_counter() - t0
    rows["full_small"] = best_time(lambda: net.empirical_ntk(small, trace_outputs=False), repeat)
    return rows


def spectrum_times(n: int = 8000, d: int = 16, k: int = 50):
    """Top-k eigenpairs of the n x n NTK: matrix-free (GramOperator + eigsh, K never stored) and
    dense (form K, then scipy.linalg.eigh with subset_by_index).  Returns seconds and the largest
    eigenvalue gap between the two."""
    import scipy.linalg

    from .gram import GramOperator
    from .spectrum import analyze

    X = np.random.default_rng(0).standard_normal((n, d))
    t0 = time.perf_counter()
    sparse = analyze(GramOperator(ARCH, X), k=k, method="eigsh").eigenvalues
    t_op = time.perf_counter() - t0
    t0 = time.perf_counter()
    K = kernel(ARCH, X)
    dense = scipy.linalg.eigh(K, subset_by_index=[n - k, n - 1], eigvals_only=True)[::-1]
    t_dense = time.perf_counter() - t0
    return {
        "operator_eigsh": t_op,
        "dense_eigh": t_dense,
        "max_rel_diff": float(np.max(np.abs(sparse - dense) / dense)),
    }


def main(quick: bool = False, spectrum: bool = False) -> None:
    if spectrum:
        n = 2000 if quick else 8000
        t = spectrum_times(n)
        print(f"Top-50 eigenpairs of the ReLU NTK, n = {n}, d = 16:")
        print(f"  GramOperator + eigsh (K never stored): {t['operator_eigsh']:.1f} s")
        print(f"  kernel + dense eigh (subset_by_index): {t['dense_eigh']:.1f} s")
        print(f"  largest relative eigenvalue difference: {t['max_rel_diff']:.2e}")
        return
    cases = ((1000, 784), (1500, 8)) if quick else GRAM_CASES
    print(f"ReLU NTK, depth {ARCH.depth}, W_std {ARCH.W_std}, b_std {ARCH.b_std}: kernel(X) vs X @ X.T")
    print(f"{'dtype':>8} {'n':>6} {'d':>5} {'kernel s':>9} {'X@X.T s':>9} {'ratio':>6} {'M entry-layers/s':>17}")
    for dt, n, d, tk, tg, ratio, rate in gram_ratios(cases):
        print(f"{dt:>8} {n:>6} {d:>5} {tk:>9.4f} {tg:>9.4f} {ratio:>6.2f} {rate:>17.0f}")
    n, n_naive = (128, 16) if quick else (1024, 32)
    t = empirical_ntk_times(n, n_naive)
    print("\nEmpirical NTK, MLP 784-512-512-10 ReLU, float64, structured (no Jacobian):")
    print(f"  n = {n}: traced (n, n) {t['traced']:.3f} s, full (n, n, 10, 10) {t['full']:.3f} s")
    print(
        f"  n = {n_naive}: full structured {t['full_small']:.4f} s vs naive J J^T {t['naive_small']:.3f} s "
        f"({t['naive_small'] / t['full_small']:.0f}x)"
    )
