"""Ratio benchmarks: our kernel's time over a bare BLAS ``X @ X.T`` of the same array, taken in
one process so that machine speed cancels out.  Run ``python -m ntkfast bench``."""

from __future__ import annotations

import math
import time

import numba
import numpy as np

from ._jit import atan2, jit
from ._jit import exp as vexp
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


# OpenBLAS's worker threads spin for about 0.1 s after a threaded call before they sleep
# (OPENBLAS_THREAD_TIMEOUT): a call timed right after X @ X.T shares its cores with them (measured:
# the AVX2-code kernel at n = 4000 took 0.20-0.21 s straight after X @ X.T, 0.184 s after a 0.1 s
# pause).  Each timed call starts after this pause.
SETTLE_S = 0.2


def interleaved_best_times(calls, repeat: int = 5, settle: float = SETTLE_S) -> list[float]:
    """Best wall time of each of ``calls`` over ``repeat`` rounds, the calls taken in turn within
    each round (after one warm-up round), so that a busy machine's bursts fall on all of them
    alike instead of on whichever was being timed then; each after ``settle`` seconds' pause, so
    that none runs beside the BLAS workers the previous one left spinning."""
    for f in calls:
        f()
    best = [math.inf] * len(calls)
    for _ in range(repeat):
        for k, f in enumerate(calls):
            time.sleep(settle)
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def gram_ratios(cases=GRAM_CASES, dtypes=(np.float64, np.float32), repeat: int = 5, arch: MLP = ARCH):
    """Rows of (dtype, n, d, kernel seconds, X @ X.T seconds, ratio, M entry-layers per second);
    the kernel and the product are timed in turn, each the best of ``repeat`` rounds."""
    rows = []
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        for n, d in cases:
            X = rng.standard_normal((n, d)).astype(dtype)
            out = np.empty((n, n), dtype)
            t_kernel, t_gemm = interleaved_best_times(
                (lambda X=X, out=out: kernel(arch, X, out=out), lambda X=X, out=out: np.matmul(X, X.T, out=out)),
                repeat)
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
         dask: bool = False, startup: bool = False, activations: bool = False, limits: bool = False,
         depths: bool = False, grad: bool = False) -> None:  # fmt: skip
    if grad:
        print_grad_ratios(quick)
        return
    if startup:
        print_startup(3 if quick else 5)
        return
    if activations:
        print_activation_times(n=1000 if quick else 4000)
        return
    if limits:
        print_limits(quick)
        return
    if depths:
        print_depths_ratios(quick)
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
    print(f"ReLU NTK, depth {ARCH.depth}, W_std {ARCH.W_std}, b_std {ARCH.b_std}: kernel(X) vs X @ X.T "
          f"(timed in turn, each after a {SETTLE_S:g} s pause, best of 5 rounds)")
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


def dispatcher_cache_stats() -> tuple[int, int]:
    """(specialisations loaded from Numba's cache, specialisations compiled) so far in this process,
    summed over every Dispatcher alive (Numba's per-dispatcher cache statistics)."""
    import gc

    from numba.core.dispatcher import Dispatcher

    hits = misses = 0
    for obj in gc.get_objects():
        if isinstance(obj, Dispatcher):
            hits += sum(obj.stats.cache_hits.values())
            misses += sum(obj.stats.cache_misses.values())
    return hits, misses


# ----------------------------------------------------------------------------- start-up (issue 17 item 6)
# Each figure is taken in a fresh interpreter (``python -c``) with a warm Numba cache; the child prints one
# JSON line.  ``loaded``/``compiled``: cached specialisations a call loaded / compiled (Numba's per-dispatcher
# cache statistics, summed over every dispatcher in the process).  Every phase is timed twice: wall clock and
# the process's CPU time (``time.process_time``, all threads), which a loaded machine inflates far less.
_STARTUP_CHILD = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import ntkfast as nf
t_import, c_import = time.perf_counter() - t0, time.process_time() - c0
heavy = sorted(m for m in ("numba", "scipy", "sklearn", "pandas", "matplotlib", "dask", "threadpoolctl")
               if m in sys.modules)
import numpy as np

def counts():
    from ntkfast.bench import dispatcher_cache_stats
    return dispatcher_cache_stats()

X = np.random.default_rng(0).standard_normal((10, 5))
out = {"import": t_import, "import_cpu": c_import, "heavy_after_import": heavy}
count = sys.argv[1] == "count"  # the counts scan every object (~0.1 s): not in the timed runs
before = (0, 0)
for act in sys.argv[2:]:
    t0, c0 = time.perf_counter(), time.process_time()
    nf.kernel(nf.MLP(depth=3, activation=act), X)
    out[act], out[act + "_cpu"] = time.perf_counter() - t0, time.process_time() - c0
    if count:
        after = counts()
        out[act + "_loaded"], out[act + "_compiled"] = after[0] - before[0], after[1] - before[1]
        before = after
print(json.dumps(out))
"""

# The floor: a trivial cached function, through Numba's own cache (``total``) or through ntkfast's loader
# (``total_loader``: ``_jit.jit``, which loads without Numba's registry refresh).
_NUMBA_FLOOR_MODULE = """
import numba
from ntkfast._jit import jit


def _total(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
    return s


total = numba.njit(cache=True)(_total)
total_loader = jit(_total)
"""

_NUMBA_FLOOR_CHILD = r"""
import json, sys, time
T = lambda: (time.perf_counter(), time.process_time())
t0 = T()
import numpy as np
t1 = T()
import numba
t2 = T()
sys.path.insert(0, sys.argv[1])
import ntkfast_startup_floor as m
x = np.ones(3)
t3 = T()
(m.total if sys.argv[2] == "numba" else m.total_loader)(x)
t4 = T()
out = {}
for k, (a, b) in {"numpy": (t0, t1), "numba": (t1, t2), "first_call": (t3, t4)}.items():
    out[k], out[k + "_cpu"] = b[0] - a[0], b[1] - a[1]
print(json.dumps(out))
"""


def _fresh_process(code: str, *args: str) -> dict:
    import json
    import subprocess
    import sys

    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"start-up probe failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process"] = wall
    return result


def specialisation_counts(activations=("relu", "erf", "tanh")) -> dict:
    """What the first ``kernel`` call of each activation (in that order, one fresh process, warm
    cache) loads from Numba's cache and compiles: ``{activation: {"loaded": int, "compiled": int}}``,
    plus ``heavy_after_import`` (the heavy packages ``import ntkfast`` imported).  One warm-up process
    first compiles into the cache whatever is missing."""
    acts = list(activations)
    _fresh_process(_STARTUP_CHILD, "time", *acts)
    counted = _fresh_process(_STARTUP_CHILD, "count", *acts)
    out = {act: {kind: counted[f"{act}_{kind}"] for kind in ("loaded", "compiled")} for act in acts}
    out["heavy_after_import"] = counted["heavy_after_import"]
    return out


def startup_times(repeat: int = 5, activations=("relu", "erf", "tanh")) -> dict:
    """Start-up costs, each the median of ``repeat`` fresh processes (after one warm-up process).

    Returns a dict of seconds: ``import`` (``import ntkfast``), one entry per activation (its first
    ``kernel`` call on a 10 x 5 X, depth 3, in that order in one process, so the first one pays Numba's
    start and the others only their own kernels), ``process`` (the whole child, interpreter start
    included), the floor (``numpy``, ``numba``: their imports; ``numba_first_call``: the first call of a
    trivial function from Numba's own cache, which initialises Numba's compiler and imports every registry,
    SciPy's BLAS included; ``loader_first_call``: the same function through ntkfast's loader, ``_jit.jit``),
    each but ``process`` also as ``<key>_cpu`` (the process's CPU time), plus ``<activation>_loaded`` /
    ``_compiled`` (specialisations loaded from Numba's cache or compiled, counted in one more process: the
    same in every warm process) and ``heavy_after_import`` (the heavy packages ``import ntkfast`` imported).
    """
    import shutil
    import statistics
    import tempfile

    acts = list(activations)
    counted = specialisation_counts(acts)  # its warm-up also fills Numba's cache if it is cold
    runs = [_fresh_process(_STARTUP_CHILD, "time", *acts) for _ in range(repeat)]
    folder = tempfile.mkdtemp(prefix="ntkfast-startup-")
    floors = {}
    try:
        with open(f"{folder}/ntkfast_startup_floor.py", "w") as f:
            f.write(_NUMBA_FLOOR_MODULE)
        for which in ("numba", "ntkfast"):
            _fresh_process(_NUMBA_FLOOR_CHILD, folder, which)  # fills the cache
            floors[which] = [_fresh_process(_NUMBA_FLOOR_CHILD, folder, which) for _ in range(repeat)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = {"process": statistics.median(r["process"] for r in runs)}
    for key in ("import", *acts):
        for cpu in ("", "_cpu"):
            out[key + cpu] = statistics.median(r[key + cpu] for r in runs)
    for cpu in ("", "_cpu"):
        for key in ("numpy", "numba"):
            out[key + cpu] = statistics.median(r[key + cpu] for r in floors["numba"] + floors["ntkfast"])
        out["numba_first_call" + cpu] = statistics.median(r["first_call" + cpu] for r in floors["numba"])
        out["loader_first_call" + cpu] = statistics.median(r["first_call" + cpu] for r in floors["ntkfast"])
    for act in acts:
        for kind in ("loaded", "compiled"):
            out[f"{act}_{kind}"] = counted[act][kind]
    out["heavy_after_import"] = counted["heavy_after_import"]
    out["repeat"] = repeat
    return out


def print_startup(repeat: int = 5) -> None:
    """``ntkfast bench --startup``: the table of :func:`startup_times`."""
    t = startup_times(repeat)
    print(f"Start-up, warm Numba cache, median of {t['repeat']} fresh processes (seconds: wall / process CPU):")
    print(f"  import ntkfast                         {t['import']:.3f} / {t['import_cpu']:.3f}   (imports "
          f"{t['heavy_after_import'] or 'none'} of numba/scipy/sklearn/pandas/matplotlib/dask/threadpoolctl)")
    for i, act in enumerate(a for a in ("relu", "erf", "tanh") if a in t):
        what = "first kernel call" if i == 0 else "then first call of"
        print(f"  {what + ' ' + act + ',':<38} {t[act]:.3f} / {t[act + '_cpu']:.3f}   ({t[act + '_loaded']} "
              f"specialisation(s) loaded, {t[act + '_compiled']} compiled)")
    print(f"  whole process (interpreter included)   {t['process']:.3f}")
    print("Floor, same machine (a trivial cached function in its own process):")
    print(f"  import numpy {t['numpy']:.3f} / {t['numpy_cpu']:.3f}, import numba {t['numba']:.3f} / "
          f"{t['numba_cpu']:.3f}")
    print(f"  first cached call: Numba's cache {t['numba_first_call']:.3f} / {t['numba_first_call_cpu']:.3f}, "
          f"ntkfast's loader (_jit.jit) {t['loader_first_call']:.3f} / {t['loader_first_call_cpu']:.3f}")


# -------------------------------------------------------- series activations (issue 14, act)
SERIES_ACTIVATIONS = ("tanh", "sigmoid", "softplus", "silu", "elu", "selu", "mish", "gelu_tanh", "elementwise")


def activation_times(n: int = 4000, d: int = 784, depth: int = 3, names=SERIES_ACTIVATIONS, repeat: int = 3,
                     seed: int = 0, X: np.ndarray | None = None) -> list[dict]:
    """Depth-``depth`` NTK of ``n`` Gaussian rows in ``d`` dimensions (or of the rows ``X``), float64,
    for each Hermite-series activation against ReLU, in this process.

    ``"elementwise"`` is ``Elementwise(np.tanh)`` (a user's callable).  Per activation: the whole
    ``kernel`` call, the ReLU call (measured next to it, so the ratio sees the same machine load),
    their ratio, the one-time per-row part alone (``engine.prepare_rows``: the diagonal
    recursion with every layer's Hermite coefficients), which the call includes, and the ratio of
    the rest (the per-pair part, ``(kernel - rows) / relu``).  The per-row part is serial: on
    ``P`` cores it weighs about ``P`` times more against ReLU than on one.
    """  # fmt: skip
    import warnings

    from . import engine
    from .series import SeriesAccuracyWarning
    from .spec import Elementwise

    X = np.random.default_rng(seed).standard_normal((n, d)) if X is None else X
    out = np.empty((X.shape[0], X.shape[0]))
    relu = MLP(depth=depth, activation="relu", W_std=1.4, b_std=0.1)
    rows = []
    for name in names:
        act = Elementwise(np.tanh, name="elementwise(np.tanh)") if name == "elementwise" else name
        arch = MLP(depth=depth, activation=act, W_std=1.4, b_std=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeriesAccuracyWarning)  # ELU/SELU state their bound; see the tests
            t_kernel = best_time(lambda arch=arch: kernel(arch, X, out=out), repeat)
            t_relu = best_time(lambda: kernel(relu, X, out=out), repeat)
            t_rows = best_time(lambda arch=arch: engine.prepare_rows(arch, X), repeat)
        rows.append({"activation": name, "kernel": t_kernel, "relu": t_relu, "ratio": t_kernel / t_relu,
                     "rows": t_rows, "pair_ratio": max(t_kernel - t_rows, 0.0) / t_relu})  # fmt: skip
    return rows


def correlated_rows(n: int = 1500, d: int = 50, noise: float = 0.15, seed: int = 0) -> np.ndarray:
    """Strongly correlated rows (one direction plus ``noise`` times Gaussian noise: input
    correlations about 1 / (1 + noise^2) = 0.98), where ELU/SELU's pairs are nearly all above
    the series' cut and take the closed form (``bivariate.elu_dual_row``)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, d)) + noise * rng.standard_normal((n, d))


def print_activation_times(n: int = 4000, d: int = 784) -> list[dict]:
    """Print :func:`activation_times` as a table, then the same on :func:`correlated_rows`."""
    header = f"{'activation':>12} {'kernel s':>9} {'ReLU s':>8} {'ratio':>6} {'per-row s':>10} {'per-pair ratio':>15}"
    print(f"NTK, depth 3, n = {n}, d = {d}, float64: each series activation against ReLU, in one process")
    print(header)
    rows = activation_times(n, d)
    for r in rows:
        print(f"{r['activation']:>12} {r['kernel']:>9.3f} {r['relu']:>8.3f} {r['ratio']:>6.2f} {r['rows']:>10.3f} "
              f"{r['pair_ratio']:>15.2f}")  # fmt: skip
    m = max(n * 3 // 8, 16)
    print(f"the same on strongly correlated rows (n = {m}, d = 50, input correlations ~0.98)")
    print(header)
    for r in activation_times(names=("elu", "selu", "tanh"), X=correlated_rows(m)):
        print(f"{r['activation']:>12} {r['kernel']:>9.3f} {r['relu']:>8.3f} {r['ratio']:>6.2f} {r['rows']:>10.3f} "
              f"{r['pair_ratio']:>15.2f}")  # fmt: skip
        rows.append({**r, "activation": f"{r['activation']} (correlated)"})
    return rows


# ----------------------------------------------------------------------- the core's limit (issue 17)
# ``ntkfast bench --limits``: what one core can do on the instructions the recursion is made of,
# measured on data in cache, next to what the engine reaches.  The figures are rates per core:
# the engine's row runs ``kernel(..., n_jobs=1)``.
LIMIT_ARRAY = 2048  # elements of the in-cache arrays (16 KiB in float64: L1)
LIMIT_TILE = (64, 512)  # the hot tile of the bare recursion (256 KiB of G in float64: L2)


@jit
def _sqrt_div_loop(a, b, out, repeat):
    """out = sqrt(a) / b, ``repeat`` times: the square root and division of one ReLU entry-layer."""
    for _ in range(repeat):
        for j in range(a.shape[0]):
            out[j] = math.sqrt(a[j]) / b[j]


@jit
def _sqrt_loop(a, b, out, repeat):
    for _ in range(repeat):
        for j in range(a.shape[0]):
            out[j] = math.sqrt(a[j]) + b[j]


@jit
def _div_loop(a, b, out, repeat):
    for _ in range(repeat):
        for j in range(a.shape[0]):
            out[j] = a[j] / b[j]


@jit
def _angle_loop(a, b, out, repeat):
    """atan2(sqrt(a), b): the angle of a ReLU entry-layer (its sqrt, and atan2's one division and
    polynomial), the bulk of its arithmetic."""
    for _ in range(repeat):
        for j in range(a.shape[0]):
            out[j] = atan2(math.sqrt(a[j]), b[j])


@jit
def _exp_loop(a, b, out, repeat):
    """The vectorised exp of the exp families (``_jit.exp``), for scale."""
    for _ in range(repeat):
        for j in range(a.shape[0]):
            out[j] = vexp(a[j]) + b[j]


def loop_rate(loop, dtype, target_s: float = 0.05) -> float:
    """Elements per second of ``loop`` over in-cache arrays (best of 3 after a calibration)."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 2.0, LIMIT_ARRAY).astype(dtype)
    b = rng.uniform(0.5, 2.0, LIMIT_ARRAY).astype(dtype)
    out = np.empty_like(a)
    loop(a, b, out, 1)
    repeat = 16
    while True:
        t0 = time.perf_counter()
        loop(a, b, out, repeat)
        t = time.perf_counter() - t0
        if t > target_s / 4 or repeat > 2**24:
            break
        repeat *= 4
    t = best_time(lambda: loop(a, b, out, repeat), 5)
    return a.size * repeat / t


def hot_tile_rate(arch: MLP, dtype, tile=LIMIT_TILE, target_s: float = 0.05) -> float:
    """Entry-layers per second of the bare recursion (``backends.cpu`` ``tile``, one thread) on a
    small tile whose inner products are already computed and in cache: no GEMM, no output
    beyond the tile, no float32 refinement."""
    from . import engine
    from .backends import cpu

    bi, bj = tile
    X = np.random.default_rng(0).standard_normal((max(bi, bj), 16)).astype(dtype) / 4.0
    rows, coef = engine.prepare_rows(arch, X)
    G = np.ascontiguousarray(X[:bi] @ X[:bj].T)
    out = np.empty((1, bi, bj), dtype)
    sig_r = np.ascontiguousarray(rows.sig[:, :bi])
    sig_c = np.ascontiguousarray(rows.sig[:, :bj])
    write_at = np.array([coef.steps.shape[0]], np.int64)
    tile_fn = cpu.recursion_kernels(coef.code).tile
    args = (coef.params, coef.first, coef.steps, G, sig_r, sig_c, out, out, 0, 0, False, True,
            dtype(-np.inf), write_at, np.zeros(5, dtype), np.zeros(1, np.bool_))  # fmt: skip

    def run(repeat):
        for _ in range(repeat):
            tile_fn(*args)

    run(1)
    t0 = time.perf_counter()
    run(4)
    repeat = max(1, int(target_s / max((time.perf_counter() - t0) / 4, 1e-7)))
    t = best_time(lambda: run(repeat), 5)
    return bi * bj * coef.steps.shape[0] * repeat / t


# Divider-free square root and quotient (issue 17 item 1, measured here, not used by the engine):
# float32 estimates (LLVM emits vrsqrtps / vrcpps for these fast-math helpers; the flags stay on
# their own instructions when inlined) refined by three Newton steps each to float64, then one
# correction of the square root and one of the quotient.
_ESTIMATE = numba.njit(fastmath={"afn", "arcp", "ninf", "nnan", "nsz", "contract", "reassoc"}, error_model="numpy",
                       cache=True, nogil=True)  # fmt: skip


@_ESTIMATE
def _rsqrt_estimate(x):
    return np.float32(1.0) / math.sqrt(x)


@_ESTIMATE
def _rcp_estimate(x):
    return np.float32(1.0) / x


@jit
def _sqrt_div_newton(x, d):
    """sqrt(x) / d for positive normal float64 x, d (within the float32 exponent range) without
    the hardware square root and divider."""
    y = np.float64(_rsqrt_estimate(np.float32(x)))
    h = 0.5 * x
    y = y * (1.5 - h * y * y)
    y = y * (1.5 - h * y * y)
    y = y * (1.5 - h * y * y)
    z = np.float64(_rcp_estimate(np.float32(d)))
    z = z * (2.0 - d * z)
    z = z * (2.0 - d * z)
    z = z * (2.0 - d * z)
    s = x * y
    s = s + 0.5 * y * (x - s * s)
    q = s * z
    return q + z * (s - q * d)


@jit
def _sqrt_div_newton_loop(a, b, out, repeat):
    for _ in range(repeat):
        for j in range(a.shape[0]):
            out[j] = _sqrt_div_newton(a[j], b[j])


LIMIT_LOOPS = (
    ("sqrt + div", _sqrt_div_loop),
    ("sqrt", _sqrt_loop),
    ("div", _div_loop),
    ("sqrt + div, divider-free (float64 only)", _sqrt_div_newton_loop),
    ("atan2(sqrt(a), b) (_jit.atan2)", _angle_loop),
    ("exp (_jit.exp)", _exp_loop),
)


def limits(quick: bool = False, dtypes=(np.float64, np.float32), rounds: int = 3) -> dict:
    """Per-core rates (one thread) in entries or entry-layers per second.

    ``loops``: {name: {dtype: rate}} of the in-cache loops (``LIMIT_LOOPS``); ``hot``: {activation:
    {dtype: rate}} of the bare recursion on a hot tile (:func:`hot_tile_rate`); ``engine``:
    {(n, d): {dtype: rate}} of ``kernel(ARCH, X, Y, n_jobs=1)``, GEMM and all, with Y != X so that
    the recursion computes every entry (K(X, X) computes half and mirrors).  Everything is measured
    ``rounds`` times, interleaved, and the best rate kept: a busy machine's bursts fall on one
    round, not on one row.
    """
    out = {"loops": {}, "hot": {}, "engine": {}}

    def keep(table, key, dt, rate):
        row = table.setdefault(key, {})
        row[np.dtype(dt).name] = max(row.get(np.dtype(dt).name, 0.0), rate)

    n = 1000 if quick else 2000
    rng = np.random.default_rng(0)
    data = {(d, np.dtype(dt).name): [rng.standard_normal((n, d)).astype(dt) for _ in range(2)] + [np.empty((n, n), dt)]
            for d in (8, 784) for dt in dtypes}  # fmt: skip
    for _ in range(rounds):
        for name, loop in LIMIT_LOOPS:
            for dt in dtypes:
                if "float64 only" not in name or dt == np.float64:
                    keep(out["loops"], name, dt, loop_rate(loop, dt))
        for act in ("relu", "sin", "exp"):
            arch = MLP(depth=ARCH.depth, activation=act, W_std=0.5 if act == "exp" else ARCH.W_std, b_std=ARCH.b_std)
            for dt in dtypes:
                keep(out["hot"], act, dt, hot_tile_rate(arch, dt))
        for d in (8, 784):
            for dt in dtypes:
                X, Y, res = data[(d, np.dtype(dt).name)]
                t = best_time(lambda X=X, Y=Y, res=res: kernel(ARCH, X, Y, out=res, n_jobs=1), 1)
                keep(out["engine"], (n, d), dt, n * n * ARCH.n_steps / t)
    return out


def print_limits(quick: bool = False) -> dict:
    """Print :func:`limits` as a table (M per second, one core) and the engine's share of them."""
    res = limits(quick)
    names = ("float64", "float32")
    print("The core's limit, one thread, data in cache (M per second; entries for the loops, entry-layers otherwise)")
    print(f"{'':<58}{names[0]:>10}{names[1]:>10}")

    def row(label, rates):
        cells = "".join(f"{rates[k] / 1e6:>10.0f}" if k in rates else f"{'-':>10}" for k in names)
        print(f"{label:<58}{cells}")

    for name, rates in res["loops"].items():
        row(f"loop: {name}", rates)
    for act, rates in res["hot"].items():
        row(f"bare recursion, {act} depth {ARCH.depth}, hot {LIMIT_TILE[0]}x{LIMIT_TILE[1]} tile", rates)
    for (n, d), rates in res["engine"].items():
        row(f"engine kernel(X, Y, n_jobs=1), ReLU, n = {n}, d = {d}", rates)
    relu = res["hot"]["relu"]
    sqdiv = res["loops"]["sqrt + div"]
    angle = res["loops"]["atan2(sqrt(a), b) (_jit.atan2)"]
    print("engine's share, ReLU (1 sqrt + 1 div per entry-layer):")
    for (n, d), rates in res["engine"].items():
        parts = [f"{k}: {rates[k] / relu[k]:.0%} of the bare recursion, {rates[k] / sqdiv[k]:.0%} of sqrt + div"
                 for k in names if k in rates]  # fmt: skip
        print(f"  n = {n}, d = {d}: " + "; ".join(parts))
    for k in names:
        if k in relu:
            print(f"  bare recursion {k}: {relu[k] / sqdiv[k]:.0%} of the sqrt + div loop, "
                  f"{relu[k] / angle[k]:.0%} of the atan2(sqrt) loop")  # fmt: skip
    return res


# ------------------------------------------------------------- every depth in one pass (issue 15)
DEPTHS_CASES = tuple((act, dtype, get, d) for act in ("relu", "erf") for dtype in (np.float64, np.float32)
                     for get in (("ntk",), ("nngp", "ntk")) for d in (16, 784))  # fmt: skip


def depths_write_floor(stacks, n_jobs: int | None = None) -> None:
    """Write every slot but the last of the (n_depths, n, n) ``stacks`` (the outputs a
    ``depths=`` call writes beyond the deepest one), both triangles, with the stores and the
    tile plan of ``kernel`` and nothing computed: the floor under ``depths=``'s extra cost."""
    from . import engine, tiling
    from .backends import cpu

    n, dtype = stacks[0].shape[1], stacks[0].dtype
    n_jobs = tiling.default_n_jobs() if n_jobs is None else n_jobs
    plan = tiling.plan_tiles(n, n, dtype.itemsize, True, None, n_jobs)
    phase = engine.stream_phase(stacks)
    extra = [s[:-1] for s in stacks]

    def work(i0, i1, j0, j1, worker):
        for out in extra:
            cpu.store_constant_tile(out, 1.0, i0, i1, j0, j1, i0 != j0, phase is not None, phase or 0)

    tiling.run_tiles(plan, work, n_jobs)


def depths_target(floor: float, target: float = 1.2) -> float:
    """The ratio ``depths=`` can be held to: the issue's ``target`` (1.2x the deepest call), or,
    where writing the extra outputs alone already costs more than ``target - 1`` of the deepest
    call (``floor``, from :func:`depths_write_floor`), ``1 + floor``: each core both computes
    its tiles and stores them, so the stores add to the recursion's time."""
    return max(target, 1.0 + floor)


def depths_ratios(n: int = 2000, cases=DEPTHS_CASES, depths=(1, 2, 3, 4, 5), repeat: int = 5):
    """Rows of (activation, dtype, get, d, depths= seconds, deepest seconds, ratio, floor ratio,
    write GB/s).

    ``depths=`` returns one Gram per depth from one tile pass; the deepest single call is
    ``kernel`` of the deepest network alone.  The floor is :func:`depths_write_floor`: writing the
    extra outputs (both triangles) costs that much even with nothing to compute, so a ratio
    ``1 + floor + x`` spends ``x`` above it; the bytes of those outputs over its time are the
    write bandwidth the stores reach.  Outputs are preallocated with their pages faulted in,
    and the three are timed in turn in this process (each the best of ``repeat`` rounds)."""
    rows = []
    rng = np.random.default_rng(0)
    for activation, dtype, get, d in cases:
        X = rng.standard_normal((n, d)).astype(dtype)
        t_all, t_deep, t_floor = _depths_times(MLP(depth=max(depths), activation=activation, W_std=1.4, b_std=0.1),
                                               X, get, depths, repeat)  # fmt: skip
        extra_bytes = len(get) * (len(depths) - 1) * n * n * np.dtype(dtype).itemsize
        rows.append((activation, np.dtype(dtype).name, get, d, t_all, t_deep, t_all / t_deep, t_floor / t_deep,
                     extra_bytes / t_floor / 1e9))  # fmt: skip
    return rows


def _depths_times(arch: MLP, X: np.ndarray, get, depths, repeat: int):
    """Best times of the depths= call, the deepest call and the floor, taken in turn each round
    (on a busy machine all three see the same load)."""
    n = X.shape[0]
    stacks = [np.ones((len(depths), n, n), X.dtype) for _ in get]  # pages faulted in
    outs = tuple(tuple(s[k] for s in stacks) for k in range(len(depths)))
    calls = (lambda: kernel(arch, X, get=get, depths=depths, out=outs), lambda: kernel(arch, X, get=get, out=outs[-1]),
             lambda: depths_write_floor(stacks))  # fmt: skip
    return tuple(interleaved_best_times(calls, repeat))


def print_depths_ratios(quick: bool = False) -> None:
    n = 500 if quick else 2000
    cases = DEPTHS_CASES[:2] if quick else DEPTHS_CASES
    print(f"kernel(..., depths=(1, ..., 5)) vs the deepest call (depth 5), n = {n}.  floor: writing the 4 extra "
          "outputs alone (nothing computed), over the deepest call; GB/s: the bytes of those outputs over that "
          "time; target: 1.2, or 1 + floor where writing them already costs more; above: ratio - 1 - floor")
    print(f"{'act':>5} {'dtype':>8} {'get':>10} {'d':>4} {'depths= s':>10} {'deepest s':>10} {'ratio':>6} "
          f"{'floor':>6} {'GB/s':>5} {'target':>6} {'ratio/target':>12} {'above':>6}")  # fmt: skip
    for act, dt, get, d, t_all, t_deep, ratio, floor, rate in depths_ratios(n, cases):
        target = depths_target(floor)
        print(f"{act:>5} {dt:>8} {'+'.join(get):>10} {d:>4} {t_all:>10.4f} {t_deep:>10.4f} {ratio:>6.2f} "
              f"{floor:>6.2f} {rate:>5.1f} {target:>6.2f} {ratio / target:>12.2f} {ratio - 1 - floor:>6.2f}")


# ----------------------------------------------------------------------- GP-gradient benchmark (issue 17 item 4)
GRAD_CASES = ((2000, 16), (2000, 784), (4000, 16), (4000, 784))
GRAD_ACTIVATIONS = ("relu", "erf", "gelu", "tanh", "silu", "elu")  # the last three: Hermite series


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
    print("Depth-3 NTK, float64: kernel_with_gradient(X) (K, dK/dlog W_std, dK/dlog b_std) vs kernel(X); "
          "goal for the closed forms: at most 3 (the series activations evaluate 7 polynomials per pair, the "
          "forward kernel 2)")
    print(f"{'activation':>10} {'n':>6} {'d':>5} {'kernel s':>9} {'grad s':>9} {'ratio':>6}")
    for act, n, d, tk, tg, ratio in grad_ratios(cases, repeat=1 if quick else 3):
        print(f"{act:>10} {n:>6} {d:>5} {tk:>9.4f} {tg:>9.4f} {ratio:>6.2f}")
