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


def fit_times(n: int = 10_000, d: int = 50, seed: int = 0) -> dict:
    """``NTKRegressor().fit`` on synthetic data, and the same fit's two parts timed alone: the
    Gram (``ntkfast.kernel``) and the Cholesky solve of it."""
    import scipy.linalg

    from .sklearn import NTKRegressor
    from .solvers import cho_factor_inplace

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)
    NTKRegressor().fit(X[:200], y[:200])  # compile
    t0 = time.perf_counter()
    reg = NTKRegressor().fit(X, y)
    total = time.perf_counter() - t0
    t0 = time.perf_counter()
    K = kernel(reg.arch_, X)
    t_kernel = time.perf_counter() - t0
    K[np.diag_indices_from(K)] += 1e-4 * np.mean(np.diag(K))
    t0 = time.perf_counter()
    scipy.linalg.cho_solve(cho_factor_inplace(K), y)
    t_solve = time.perf_counter() - t0
    return {"n": n, "d": d, "fit": total, "kernel": t_kernel, "solve": t_solve, "solver": reg.solver_}


def main(quick: bool = False, spectrum: bool = False, scale: bool = False, fit: bool = False,
         dask: bool = False, grad: bool = False) -> None:  # fmt: skip
    if grad:
        print_grad_ratios(quick)
        return
    if dask:
        dask_scale_benchmark(n=20_000 if quick else 200_000, m=300 if quick else 1000)
        return
    if fit:
        t = fit_times(2000 if quick else 10_000)
        print(f"NTKRegressor().fit, n = {t['n']}, d = {t['d']} (solver {t['solver']}): {t['fit']:.2f} s")
        print(f"  alone: kernel {t['kernel']:.2f} s ({t['kernel'] / t['fit']:.0%}), "
              f"Cholesky solve {t['solve']:.2f} s ({t['solve'] / t['fit']:.0%})")  # fmt: skip
        return
    if scale:
        if quick:
            scale_benchmark(n=20_000, n_test=5_000, m=500, exact_n=4_000, exact_test=5_000)
        else:
            scale_benchmark()
        return
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


# ----------------------------------------------------------------------------- scale benchmark
SCALE_ARCH = MLP(depth=3, activation="relu", W_std=1.4, b_std=0.1)


def scale_data(n: int, d: int = 28, noise: float = 0.3, seed: int = 0):
    """Synthetic regression data of the HIGGS shape: standardised Gaussian features X (n, d) and
    a smooth target of a few random projections (a multi-index model), plus Gaussian noise.

    Returns ``X, y, f`` with ``f`` the noiseless target (y = f + noise).
    """
    rng = np.random.default_rng(seed)
    # fixed directions (seeded apart from the samples, so train and test share them)
    W = np.linalg.qr(np.random.default_rng(12345).standard_normal((d, 4)))[0]
    X = rng.standard_normal((n, d))
    U = X @ W
    f = np.sin(0.8 * U[:, 0]) + 0.5 * U[:, 1] * U[:, 2] + 0.3 * U[:, 3]
    return X, f + noise * rng.standard_normal(n), f


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def scale_benchmark(
    n: int = 1_000_000,
    n_test: int = 100_000,
    d: int = 28,
    m: int = 3000,
    exact_n: int | None = 20_000,
    exact_test: int = 20_000,
    diag_reg: float = 1e-4,
    dtype=np.float32,
    centers: str = "uniform",
    tol: float = 1e-5,
    maxiter: int = 100,
    noise: float = 0.3,
    seed: int = 0,
    progress: bool = False,
    arch: MLP = SCALE_ARCH,
) -> dict:
    """NTK regression at scale with :func:`ntkfast.solvers.nystrom`, timed per stage, and the
    exact Cholesky solver at ``exact_n`` training points for the accuracy comparison.

    Stages: data generation (not counted), Nyström fit (centres, preconditioner, K_nm, CG) and
    prediction on ``n_test`` points; "total" is fit + predict.  With ``exact_n``, the first
    ``exact_n`` training points are fitted by both the exact solver and Nyström (same m) and
    both are scored on the first ``exact_test`` test points.  Returns a dict of the figures
    (and prints them).
    """
    from .solvers import nystrom, plan_solver, solve
    from .tiling import format_bytes, memory_budget

    out = {"n": n, "n_test": n_test, "d": d, "m": m, "dtype": np.dtype(dtype).name, "centers": centers}
    X, y, _ = scale_data(n, d, noise, seed)
    Xt, yt, ft = scale_data(n_test, d, noise, seed + 1)
    print(f"NTK regression, {arch!r}; n = {n}, n_test = {n_test}, d = {d}; Nyström m = {m} ({centers}), "
          f"{np.dtype(dtype).name} K_nm, diag_reg = {diag_reg:g}, tol = {tol:g}")  # fmt: skip
    plan = plan_solver(n, n_test, 1, d, m, np.dtype(dtype).itemsize)
    print(f"  plan (solver='auto'): {plan.method}; K_nm cached: {plan.cache}; budget {format_bytes(plan.budget)}")

    t0 = time.perf_counter()
    # cache=True: refuse up front rather than recompute K_nm at every iteration (minutes each at 1M)
    fit = nystrom(arch, X, y, m, centers=centers, diag_reg=diag_reg, dtype=dtype, tol=tol, maxiter=maxiter,
                  seed=seed, progress=progress, cache=True)  # fmt: skip
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = fit.predict(Xt, progress=progress)
    t_pred = time.perf_counter() - t0
    out.update(
        stages=dict(fit.timings), fit=t_fit, predict=t_pred, total=t_fit + t_pred, iterations=fit.iterations,
        residual=float(fit.residual.max()), cached=fit.cached, rmse=_rmse(pred, yt), rmse_f=_rmse(pred, ft),
    )  # fmt: skip
    st = fit.timings
    print(f"  fit {t_fit:.1f} s (centres {st['centers']:.1f}, preconditioner {st['preconditioner']:.1f}, "
          f"K_nm {st['K_nm']:.1f}{' cached' if fit.cached else ' streamed'}, CG {st['cg']:.1f} s for "
          f"{fit.iterations} iterations, residual {fit.residual.max():.1e}); predict {t_pred:.1f} s; "
          f"total {t_fit + t_pred:.1f} s")  # fmt: skip
    print(f"  test RMSE {out['rmse']:.4f} (against the noiseless target {out['rmse_f']:.4f}; noise std {noise})")

    if exact_n:
        limit = int(np.sqrt(memory_budget() / 8))
        print(f"Exact comparison at n = {exact_n} (the exact solver's n x n Gram fits up to n ~ {limit} here):")
        Xe, ye = X[:exact_n], y[:exact_n]
        Xs, ys, fs = Xt[:exact_test], yt[:exact_test], ft[:exact_test]
        t0 = time.perf_counter()
        exact = solve(arch, Xe, ye, "cholesky", diag_reg=diag_reg)
        pe = exact.predict(Xs)
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        ny = nystrom(arch, Xe, ye, min(m, exact_n), centers=centers, diag_reg=diag_reg, dtype=dtype, tol=tol,
                     maxiter=maxiter, seed=seed)  # fmt: skip
        pn = ny.predict(Xs)
        t_ny = time.perf_counter() - t0
        out["exact"] = dict(
            n=exact_n, n_test=exact_test, time=t_exact, time_nystrom=t_ny, rmse=_rmse(pe, ys), rmse_f=_rmse(pe, fs),
            rmse_nystrom=_rmse(pn, ys), rmse_f_nystrom=_rmse(pn, fs), rmse_full_n=_rmse(pred[:exact_test], ys),
        )  # fmt: skip
        e = out["exact"]
        print(f"  exact Cholesky: {t_exact:.1f} s, test RMSE {e['rmse']:.4f} (noiseless {e['rmse_f']:.4f})")
        print(f"  Nyström m = {min(m, exact_n)}: {t_ny:.1f} s, test RMSE {e['rmse_nystrom']:.4f} "
              f"(noiseless {e['rmse_f_nystrom']:.4f}); ratio {e['rmse_nystrom'] / e['rmse']:.4f}")  # fmt: skip
        print(f"  Nyström at the full n = {n} on the same {exact_test} test points: RMSE {e['rmse_full_n']:.4f}")
    return out


def dask_scale_benchmark(n: int = 200_000, n_test: int = 20_000, d: int = 28, m: int = 1000, n_workers: int = 2,
                         dtype=np.float32, tol: float = 1e-5, seed: int = 0) -> dict:  # fmt: skip
    """The Nyström fit of :func:`scale_benchmark` in one process and on a Dask LocalCluster
    (``n_workers`` processes of one thread each, K_nm recomputed on the workers at every CG
    iteration), on the same data and centres.  Returns and prints both times, their ratio and
    the largest difference between the two models' predictions."""
    from dask.distributed import Client, LocalCluster

    from .solvers import nystrom

    X, y, _ = scale_data(n, d, seed=seed)
    Xt, _, _ = scale_data(n_test, d, seed=seed + 1)
    kw = dict(diag_reg=1e-4, dtype=dtype, tol=tol, seed=seed)
    nystrom(SCALE_ARCH, X[:500], y[:500], 50, **kw)  # compile
    t0 = time.perf_counter()
    local = nystrom(SCALE_ARCH, X, y, m, cache=False, **kw)
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    nystrom(SCALE_ARCH, X, y, m, cache=True, **kw)
    t_cached = time.perf_counter() - t0
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.run(lambda: nystrom(SCALE_ARCH, X[:500], y[:500], 50, **kw) and None)  # compile on the workers
            t0 = time.perf_counter()
            remote = nystrom(SCALE_ARCH, X, y, m, client=client, **kw)
            t_dask = time.perf_counter() - t0
    diff = float(np.abs(remote.predict(Xt) - local.predict(Xt)).max())
    out = {"n": n, "m": m, "local": t_local, "local_cached": t_cached, "dask": t_dask, "ratio": t_dask / t_local,
           "iterations": (local.iterations, remote.iterations), "max_prediction_difference": diff}  # fmt: skip
    print(f"Nyström NTK regression, n = {n}, m = {m}, {np.dtype(dtype).name} K_nm, {local.iterations} CG iterations")
    print(f"  one process, K_nm recomputed per iteration: {t_local:.1f} s (cached K_nm: {t_cached:.1f} s)")
    print(f"  Dask LocalCluster, {n_workers} workers x 1 thread: {t_dask:.1f} s "
          f"({t_dask / t_local:.2f}x the one-process time); predictions differ by {diff:.1e}")  # fmt: skip
    return out


# ----------------------------------------------------------------------- GP-gradient benchmark (issue 17 item 4)
GRAD_CASES = ((2000, 16), (2000, 784), (4000, 16), (4000, 784))
GRAD_ACTIVATIONS = ("relu", "erf", "gelu")


def grad_ratios(cases=GRAD_CASES, activations=GRAD_ACTIVATIONS, repeat: int = 3, depth: int = 3):
    """Rows of (activation, n, d, kernel seconds, kernel_with_gradient seconds, ratio): the GP-gradient
    pass (K and dK/dlog W_std, dK/dlog b_std, float64 NTK) over the forward kernel, in one process."""
    from .kernel_grad import kernel_with_gradient

    rows = []
    rng = np.random.default_rng(0)
    for act in activations:
        arch = MLP(depth=depth, activation=act, W_std=1.4, b_std=0.1)
        for n, d in cases:
            X = rng.standard_normal((n, d))
            out = np.empty((n, n))
            t_kernel = best_time(lambda X=X, out=out, arch=arch: kernel(arch, X, out=out), repeat)
            t_grad = best_time(lambda X=X, arch=arch: kernel_with_gradient(arch, X), repeat)
            rows.append((act, n, d, t_kernel, t_grad, t_grad / t_kernel))
    return rows


def print_grad_ratios(quick: bool = False) -> None:
    """``ntkfast bench --grad``: the table of :func:`grad_ratios` (goal: ratio at most 3)."""
    cases = ((1000, 16), (1000, 784)) if quick else GRAD_CASES
    print("Depth-3 NTK, float64: kernel_with_gradient(X) (K, dK/dlog W_std, dK/dlog b_std) vs kernel(X)")
    print(f"{'activation':>10} {'n':>6} {'d':>5} {'kernel s':>9} {'grad s':>9} {'ratio':>6}")
    for act, n, d, tk, tg, ratio in grad_ratios(cases, repeat=1 if quick else 3):
        print(f"{act:>10} {n:>6} {d:>5} {tk:>9.4f} {tg:>9.4f} {ratio:>6.2f}")
