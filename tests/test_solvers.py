"""Kernel ridge solvers: matrix-free CG on the GramOperator against the exact solve."""

import warnings

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import solvers

ARCH = nf.MLP(depth=3, activation="relu", b_std=0.1)


def test_cg_on_operator_matches_cholesky(rng):
    X = rng.standard_normal((400, 6))
    y = np.stack([np.sin(X[:, 0]), X[:, 1] ** 2], axis=1)
    K = nf.kernel(ARCH, X)
    exact = solvers.cholesky_solve(K, y, diag_reg=1e-3)
    np.testing.assert_allclose(exact, np.linalg.solve(K + 1e-3 * np.mean(np.diag(K)) * np.eye(400), y), rtol=1e-8)
    for pre in ("jacobi", None):
        res = solvers.conjugate_gradient(nf.GramOperator(ARCH, X), y, diag_reg=1e-3, tol=1e-10, preconditioner=pre)
        assert res.converged and res.residual.max() <= 1e-10
        np.testing.assert_allclose(res.alpha, exact, rtol=1e-6, atol=1e-8 * np.abs(exact).max())
    one = solvers.conjugate_gradient(nf.GramOperator(ARCH, X), y[:, 0], diag_reg=1e-3, tol=1e-10)
    assert one.alpha.shape == (400,)


def test_cg_warns_when_stopped_early_and_rejects_bad_input(rng):
    X = rng.standard_normal((200, 4))
    op = nf.GramOperator(ARCH, X)
    with pytest.warns(solvers.ConvergenceWarning, match="stopped after 2 iterations"):
        res = solvers.conjugate_gradient(op, np.ones(200), diag_reg=1e-6, tol=1e-12, maxiter=2)
    assert not res.converged and res.iterations == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solvers.conjugate_gradient(op, np.ones(200), diag_reg=1e-2, tol=1e-6)
    with pytest.raises(ValueError, match="y: expected shape"):
        solvers.conjugate_gradient(op, np.ones(10))
    with pytest.raises(ValueError, match="NaN"):
        solvers.conjugate_gradient(op, np.full(200, np.nan))
    with pytest.raises(ValueError, match="preconditioner"):
        solvers.conjugate_gradient(op, np.ones(200), preconditioner="ilu")
    with pytest.raises(ValueError, match="diag_reg"):
        solvers.cholesky_solve(np.eye(3), np.ones(3), diag_reg=-1.0)


# ------------------------------------------------------------------------------------ Nyström
def _data(rng, n=300, d=5, noise=0.1):
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2] + noise * rng.standard_normal(n)
    return X, y


def _exact_predictions(X, y, Xt, diag_reg):
    """Kernel ridge predictions from a dense solve with NumPy (independent of our solvers)."""
    K = nf.kernel(ARCH, X)
    return nf.kernel(ARCH, Xt, X) @ np.linalg.solve(K + diag_reg * np.mean(np.diag(K)) * np.eye(len(X)), y)


def test_nystrom_with_all_points_as_centres_is_exact_kernel_ridge(rng):
    X, y = _data(rng)
    Y = np.stack([y, np.cos(X[:, 3])], axis=1)
    Xt = rng.standard_normal((50, 5))
    for diag_reg in (1e-3, 1e-6):
        exact = _exact_predictions(X, Y, Xt, diag_reg)
        for centers in ("uniform", "leverage", X[::-1]):
            fit = solvers.nystrom(ARCH, X, Y, m=300, centers=centers, diag_reg=diag_reg, tol=1e-12, seed=1)
            assert fit.converged and fit.alpha.shape == (300, 2)
            # the preconditioner is exact when m = n: CG needs a step or two
            assert fit.iterations <= 3
            np.testing.assert_allclose(fit.predict(Xt), exact, rtol=0, atol=1e-8 * np.abs(exact).max())
    one = solvers.nystrom(ARCH, X, y, m=300, diag_reg=1e-3, tol=1e-12)
    assert one.predict(Xt).shape == (50,)


def test_nystrom_error_falls_as_centres_grow(rng):
    X, y = _data(rng, n=400)
    Xt = rng.standard_normal((100, 5))
    exact = _exact_predictions(X, y, Xt, 1e-3)
    errors = {}
    for centers in ("uniform", "leverage"):
        errs = []
        for m in (20, 80, 300):
            fit = solvers.nystrom(ARCH, X, y, m=m, centers=centers, diag_reg=1e-3, seed=0)
            assert fit.converged and len(fit.centers) == m
            errs.append(np.sqrt(np.mean((fit.predict(Xt) - exact) ** 2)) / np.std(exact))
        assert errs[0] > errs[1] > errs[2] and errs[2] < errs[0] / 4, errs
        errors[centers] = errs
    # the leverage sampler is not worse than uniform by much at these sizes
    assert errors["leverage"][-1] < 2 * errors["uniform"][-1]


def test_leverage_centres_reproducible_by_seed(rng):
    X, y = _data(rng)
    a = solvers.nystrom(ARCH, X, y, m=40, centers="leverage", diag_reg=1e-3, seed=7)
    b = solvers.nystrom(ARCH, X, y, m=40, centers="leverage", diag_reg=1e-3, seed=7)
    c = solvers.nystrom(ARCH, X, y, m=40, centers="leverage", diag_reg=1e-3, seed=8)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.alpha, b.alpha)
    assert not np.array_equal(a.centers, c.centers)
    # centres are distinct training points
    assert len(np.unique(a.centers, axis=0)) == 40
    assert all((X == row).all(1).any() for row in a.centers)


def test_leverage_scores_prefer_isolated_points(rng):
    # 290 points in a tight cluster and 10 far-away ones: the far ones have leverage ~1
    X = np.concatenate([0.01 * rng.standard_normal((290, 3)) + 1.0, 3 * rng.standard_normal((10, 3))])
    reg = 1e-3 * np.mean(nf.kernel_diag(ARCH, X))
    idx = solvers.leverage_centers(ARCH, X, 30, reg=reg, get="ntk", rng=np.random.default_rng(0))
    assert len(set(idx)) == 30
    assert (idx >= 290).sum() >= 7  # uniform sampling picks 1 of them on average


def test_nystrom_cached_and_streamed_agree_and_float32(rng, monkeypatch):
    X, y = _data(rng)
    Xt = rng.standard_normal((40, 5))
    kw = dict(m=60, diag_reg=1e-3, seed=3, tol=1e-10)
    cached = solvers.nystrom(ARCH, X, y, cache=True, **kw)
    monkeypatch.setattr(nf.config, "BLOCK_BYTES", 60 * 8 * 37)  # 37-row blocks: several, uneven
    streamed = solvers.nystrom(ARCH, X, y, cache=False, **kw)
    assert cached.cached and not streamed.cached
    np.testing.assert_array_equal(cached.centers, streamed.centers)
    np.testing.assert_allclose(streamed.alpha, cached.alpha, rtol=1e-9, atol=1e-12 * np.abs(cached.alpha).max())
    # float32 K_nm (float64 CG): kernel entries carry ~1e-5 relative error; predictions agree
    # with float64 to 1e-4 of their scale
    f32 = solvers.nystrom(ARCH, X, y, dtype=np.float32, **{**kw, "tol": 1e-5})
    p64, p32 = cached.predict(Xt), f32.predict(Xt)
    assert p32.dtype == np.float64 and f32.converged
    assert np.abs(p32 - p64).max() < 1e-4 * np.abs(p64).max()


def test_nystrom_bad_input(rng, monkeypatch):
    X, y = _data(rng, n=50)
    with pytest.raises(ValueError, match="m: 51 centres requested but there are only n = 50"):
        solvers.nystrom(ARCH, X, y, m=51)
    with pytest.raises(ValueError, match="m: 10 does not match the 5 rows of centers"):
        solvers.nystrom(ARCH, X, y, m=10, centers=X[:5])
    with pytest.raises(ValueError, match="centers: has 2 features"):
        solvers.nystrom(ARCH, X, y, centers=X[:5, :2])
    with pytest.raises(ValueError, match="centers: expected 'uniform', 'leverage'"):
        solvers.nystrom(ARCH, X, y, m=5, centers="kmeans")
    with pytest.raises(ValueError, match="y: contains NaN"):
        solvers.nystrom(ARCH, X, np.where(np.arange(50) == 3, np.nan, y), m=5)
    with pytest.raises(ValueError, match="X: contains NaN"):
        solvers.nystrom(ARCH, np.where(X > 2, np.nan, X), y, m=5)
    with pytest.raises(ValueError, match="tol"):
        solvers.nystrom(ARCH, X, y, m=5, tol=0)
    with pytest.raises(ValueError, match="maxiter"):
        solvers.nystrom(ARCH, X, y, m=5, maxiter=0)
    with pytest.raises(ValueError, match="m: expected a positive integer"):
        solvers.nystrom(ARCH, X, y, m=0)
    with pytest.raises(ValueError, match="centers: contains repeated rows"):
        solvers.nystrom(ARCH, X, y, centers=np.repeat(X[:3], 2, axis=0))
    with pytest.warns(UserWarning, match="centres repeat other rows of X; using the 5 distinct ones"):
        fit = solvers.nystrom(ARCH, np.repeat(X[:5], 10, axis=0), y, m=20, seed=0)
    assert fit.alpha.shape == (5, 1)
    # a budget with room for streamed K_nm blocks (10 rows) but not for all of K_nm
    monkeypatch.setattr(nf.config, "BLOCK_BYTES", 10 * 5 * 8)
    needs = solvers.plan_solver(50, d=5, m=5).needs
    assert needs["nystrom_cached"] > needs["nystrom"]
    with pytest.raises(nf.InsufficientMemoryError, match=r"cache=True: K_nm \(50 x 5, float64\) needs"):
        solvers.nystrom(ARCH, X, y, m=5, cache=True, budget=needs["nystrom"])
    assert not solvers.nystrom(ARCH, X, y, m=5, budget=needs["nystrom"]).cached
    with pytest.warns(solvers.ConvergenceWarning, match="nystrom stopped after 1 iterations"):
        fit = solvers.nystrom(ARCH, X, y, m=30, diag_reg=1e-6, tol=1e-14, maxiter=1)
    assert not fit.converged and fit.iterations == 1


def test_cg_breakdown_and_nan_stop_instead_of_looping():
    from scipy.sparse.linalg import aslinearoperator

    indefinite = aslinearoperator(np.diag(np.r_[np.ones(5), -np.ones(5)]))
    with pytest.warns(solvers.ConvergenceWarning, match="not positive definite"):
        res = solvers.conjugate_gradient(indefinite, np.ones(10), preconditioner=None, maxiter=10**9)
    assert not res.converged
    nan_op = aslinearoperator(np.full((4, 4), np.nan))
    with pytest.raises(FloatingPointError, match="NaN"):
        solvers.conjugate_gradient(nan_op, np.ones(4), preconditioner=None)


# ------------------------------------------------------------------------------ planner, solve
def test_plan_solver_choices_and_refusals():
    small = solvers.plan_solver(1000, n_test=100, d=10, budget="1G")
    assert small.method == "cholesky" and small.needs["cholesky"] > 8 * 1000**2
    mid = solvers.plan_solver(50_000, d=28, budget="4G")  # 50k^2 * 8 = 18.6 GiB does not fit
    assert mid.method == "cg"
    big = solvers.plan_solver(10**6, n_test=10**5, d=28, itemsize=4, budget="4G")
    assert big.method == "nystrom" and big.m == 2000 and not big.cache
    roomy = solvers.plan_solver(10**6, d=28, itemsize=4, budget="24G")
    assert roomy.method == "nystrom" and roomy.cache
    assert roomy.needs["nystrom_cached"] - roomy.needs["nystrom"] > 10**6 * 2000 * 4 - nf.config.BLOCK_BYTES - 1
    shrunk = solvers.plan_solver(10**6, d=28, budget="350M")
    assert shrunk.method == "nystrom" and nf.config.NYSTROM_MIN_M <= shrunk.m < 2000
    with pytest.raises(nf.InsufficientMemoryError, match=r"No solver fits: n = 1000000: exact Cholesky needs 7\.3 TiB"):
        solvers.plan_solver(10**6, d=28, budget="50M")
    with pytest.raises(
        nf.InsufficientMemoryError, match="solver='cholesky' does not fit.*solver='auto' would use 'cg'"
    ):
        solvers.plan_solver(15_000, budget="1G", solver="cholesky")
    with pytest.raises(ValueError, match="solver: expected"):
        solvers.plan_solver(10, solver="lsqr")
    with pytest.raises(ValueError, match="budget"):
        solvers.plan_solver(10, budget=-1)
    with pytest.raises(ValueError, match="m: 20 centres requested but there are only n = 10"):
        solvers.plan_solver(10, m=20)


def test_plan_solver_reads_the_environment_budget(monkeypatch):
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "10M")
    plan = solvers.plan_solver(2000, d=5)
    assert plan.budget == 10 * 2**20 and plan.method == "cg"


def test_solve_runs_each_method_to_the_same_answer(rng):
    X, y = _data(rng, n=250)
    Xt = rng.standard_normal((30, 5))
    exact = _exact_predictions(X, y, Xt, 1e-3)
    auto = solvers.solve(ARCH, X, y, diag_reg=1e-3)
    assert auto.method == "cholesky" and auto.predict(Xt).shape == (30,)
    np.testing.assert_allclose(auto.predict(Xt), exact, rtol=0, atol=1e-9 * np.abs(exact).max())
    cg = solvers.solve(ARCH, X, y, "cg", diag_reg=1e-3, tol=1e-11)
    assert cg.method == "cg" and cg.converged
    np.testing.assert_allclose(cg.predict(Xt), exact, rtol=0, atol=1e-7 * np.abs(exact).max())
    ny = solvers.solve(ARCH, X, y, "nystrom", diag_reg=1e-3, m=250, tol=1e-12)
    np.testing.assert_allclose(ny.predict(Xt), exact, rtol=0, atol=1e-8 * np.abs(exact).max())
    # a budget too small for the Gram but fine for CG
    needs = solvers.plan_solver(250, d=5).needs
    budget = (needs["cholesky"] + needs["cg"]) // 2
    assert solvers.solve(ARCH, X, y, diag_reg=1e-3, budget=budget, tol=1e-6).method == "cg"
    with pytest.raises(nf.InsufficientMemoryError, match="No solver fits"):
        solvers.solve(ARCH, X, y, budget=1000)


def test_progress_bars_run(rng, capsys):
    pytest.importorskip("tqdm")
    X, y = _data(rng, n=100)
    fit = solvers.nystrom(ARCH, X, y, m=20, diag_reg=1e-3, progress=True)
    assert fit.converged
    assert "Nyström CG" in capsys.readouterr().err


def test_dense_factorisations_beyond_what_lapack_survives_are_refused(monkeypatch):
    """A dense factorisation larger than LAPACK survives crashes the interpreter (OpenBLAS's
    threaded potrf segfaulted at n = 30 000): Cholesky runs single-threaded above VERIFIED_N and is
    refused above its limit, eigendecompositions are refused above theirs, and "auto" then plans
    an iterative solver."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 45))
    K = A @ A.T
    y = rng.standard_normal(40)
    reference = np.linalg.solve(K + 0.1 * np.mean(np.diag(K)) * np.eye(40), y)
    monkeypatch.setattr(nf.config, "VERIFIED_N", 10)  # the single-threaded path
    np.testing.assert_allclose(solvers.cholesky_solve(K, y, 0.1), reference, rtol=1e-10)

    monkeypatch.setattr(nf.config, "CHOLESKY_MAX_N", 50)
    monkeypatch.setenv("NTKFAST_DENSE_MAX_N", "30")
    K = np.eye(60)
    with pytest.raises(ValueError, match="LAPACK"):
        solvers.cholesky_solve(K, np.ones(60))
    with pytest.raises(ValueError, match="LAPACK"):
        nf.predict.gradient_descent_mse(K, np.ones(60), K[:3])
    with pytest.raises(ValueError, match="LAPACK"):
        nf.spectrum.analyze(K)
    assert solvers.plan_solver(60, budget="1G").method == "cg"
    assert solvers.plan_solver(45, budget="1G").method == "cholesky"
    with pytest.raises(ValueError, match="LAPACK"):
        solvers.plan_solver(60, solver="cholesky", budget="1G")


# ------------------------------------------------------------------ misuse: clear refusals
def test_singular_kernel_names_diag_reg_and_a_value_that_works(rng):
    X = rng.standard_normal((20, 4))
    K = nf.kernel(ARCH, np.repeat(X, 2, axis=0))  # every row twice: K is singular
    y = rng.standard_normal(40)
    with pytest.raises(nf.errors.SingularKernelError, match=r"diag_reg=0.*e\.g\. diag_reg=1e-06"):
        solvers.cholesky_solve(K, y)
    with pytest.raises(nf.errors.SingularKernelError, match=r"diag_reg=1e-20 \(absolute\).*\(absolute\)"):
        solvers.cholesky_solve(K, y, 1e-20, diag_reg_absolute_scale=True)
    # the suggested value solves, and agrees with an independent dense solve
    reg = 1e-6 * np.mean(np.diag(K))
    np.testing.assert_allclose(
        solvers.cholesky_solve(K, y, 1e-6), np.linalg.solve(K + reg * np.eye(40), y), rtol=1e-6, atol=0
    )
    with pytest.raises(nf.errors.SingularKernelError, match="diag_reg"):
        solvers.solve(ARCH, np.repeat(X, 2, axis=0), y)  # the "cholesky" path of solve
    with pytest.raises(ValueError):  # still a ValueError for callers that catch that
        solvers.cholesky_solve(np.zeros((3, 3)), np.ones(3))


def test_rank_deficient_kernel_is_refused_whatever_the_sign_of_round_off():
    """A = B B^T of rank 3 in exact arithmetic: LAPACK may meet a pivot of round-off size of
    either sign; both must give SingularKernelError (not coefficients of size 1e16)."""
    for seed in range(8):
        B = np.random.default_rng(seed).standard_normal((30, 3))
        with pytest.raises(nf.errors.SingularKernelError, match="diag_reg"):
            solvers.cholesky_solve(B @ B.T, np.ones(30))


def test_dense_inputs_refused_clearly(rng, monkeypatch):
    K = nf.kernel(ARCH, rng.standard_normal((10, 3)))
    with pytest.raises(nf.errors.ArgumentError, match="K: not symmetric"):
        solvers.cholesky_solve(K + np.triu(np.ones_like(K), 1), np.ones(10))
    with pytest.raises(nf.errors.ArgumentError, match="K: expected a square numeric matrix"):
        solvers.cholesky_solve([[1.0, 2.0], [3.0]], [1.0, 2.0])
    with pytest.raises(nf.errors.ArgumentError, match=r"y: expected a numeric array"):
        solvers.cholesky_solve(np.eye(2), [[1.0], [2.0, 3.0]])
    with pytest.raises(nf.errors.ArgumentError, match="K: expected a non-empty square"):
        solvers.cholesky_solve(np.ones((2, 3)), np.ones(2))
    with pytest.raises(nf.errors.ArgumentTypeError, match="diag_reg"):
        solvers.cholesky_solve(np.eye(2), np.ones(2), diag_reg="0.1")
    # the float64 copy of K goes through the memory budget; overwrite_k=True needs no copy
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "500")
    with pytest.raises(nf.InsufficientMemoryError, match=r"float64 copy of K \(10 x 10\).*overwrite_k=True"):
        solvers.cholesky_solve(K.astype(np.float32), np.ones(10), 1e-3)
    ref = np.linalg.solve(K + 1e-3 * np.mean(np.diag(K)) * np.eye(10), np.ones(10))
    np.testing.assert_allclose(solvers.cholesky_solve(K.copy(), np.ones(10), 1e-3, overwrite_k=True), ref, rtol=1e-10)


def test_budget_seed_and_ragged_arguments_give_clear_errors(rng):
    X, y = _data(rng, n=60)
    for bad in ("1.2.3G", "-5M", "lots", float("inf"), float("nan"), 0, 10**400):
        with pytest.raises(nf.errors.ArgumentError, match="budget"):
            solvers.plan_solver(10, budget=bad)
    with pytest.raises(nf.errors.ArgumentTypeError, match="budget"):
        solvers.plan_solver(10, budget=[1])
    for bad in ("abc", -1, 1.5):
        with pytest.raises(nf.errors.ArgumentError, match="seed"):
            solvers.nystrom(ARCH, X, y, m=10, seed=bad)
    with pytest.raises(nf.errors.ArgumentTypeError, match="seed"):
        solvers.nystrom(ARCH, X, y, m=10, seed=True)
    # a seed beyond 64 bits is a valid NumPy seed: accepted, and reproducible
    a, b = (solvers.nystrom(ARCH, X, y, m=10, diag_reg=1e-3, seed=2**80) for _ in range(2))
    np.testing.assert_array_equal(a.centers, b.centers)
    with pytest.raises(nf.errors.ArgumentError, match="X: expected a 2-D array"):
        solvers.nystrom(ARCH, [[1.0, 2.0], [3.0]], [1.0, 2.0])
    with pytest.raises(nf.errors.ArgumentError, match="y: expected a numeric array"):
        solvers.solve(ARCH, X[:2], [[1.0], [2.0, 3.0]])
    with pytest.raises(nf.errors.ArgumentError, match="cache: expected True, False or None"):
        solvers.nystrom(ARCH, X, y, m=10, cache="yes")
    with pytest.raises(nf.errors.ArgumentError, match="n: .* is above the largest supported value"):
        solvers.plan_solver(10**400)
    with pytest.raises(nf.errors.ArgumentError, match="n_jobs"):
        solvers.plan_solver(10, n_jobs=0)


def test_allocations_that_grow_with_user_numbers_are_refused_up_front(rng, monkeypatch):
    X, y = _data(rng, n=300)
    with pytest.raises(nf.errors.ArgumentError, match="m: 1000000000 centres requested but there are only n = 300"):
        solvers.nystrom(ARCH, X, y, m=10**9)
    with pytest.raises(nf.InsufficientMemoryError, match=r"solver=.nystrom. does not fit.*m = 1000000000"):
        solvers.plan_solver(10**12, m=10**9, solver="nystrom")
    # the m x m factors are refused before any kernel is computed
    with pytest.raises(nf.InsufficientMemoryError, match=r"nystrom: m = 300 centres .* need .*fewer centres"):
        solvers.nystrom(ARCH, X, y, m=300, budget="1M")
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "200K")
    op = nf.GramOperator(ARCH, X)
    with pytest.raises(nf.InsufficientMemoryError, match=r"conjugate-gradient vectors \(6 x 300 x 100 float64\)"):
        solvers.conjugate_gradient(op, np.ones((300, 100)))
    monkeypatch.delenv("NTKFAST_MEMORY_BUDGET")
    fit = solvers.solve(ARCH, X, y, diag_reg=1e-3)
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "1M")
    with pytest.raises(nf.InsufficientMemoryError, match=r"predict: 100000 x 1 predictions.*batches"):
        fit.predict(np.zeros((100_000, 5)))


def test_cg_refuses_a_non_symmetric_operator_and_handles_a_zero_row(rng):
    from scipy.sparse.linalg import aslinearoperator

    A = rng.standard_normal((30, 30))
    spd = A @ A.T + 30 * np.eye(30)
    with pytest.raises(nf.errors.ArgumentError, match="op: not symmetric"):
        solvers.conjugate_gradient(aslinearoperator(spd + np.triu(A, 1)), np.ones(30), preconditioner=None)
    with pytest.raises(nf.errors.ArgumentTypeError, match="op: expected a scipy LinearOperator"):
        solvers.conjugate_gradient(spd, np.ones(30))

    class Diagonal(type(aslinearoperator(spd))):  # a PSD operator with a zero row and column
        def diagonal(self):
            return np.diag(self.A)

    psd = spd.copy()
    psd[0], psd[:, 0] = 0.0, 0.0
    y = np.r_[0.0, np.ones(29)]
    res = solvers.conjugate_gradient(Diagonal(psd), y, tol=1e-12)  # Jacobi: 1/0 would be NaN
    assert res.converged
    np.testing.assert_allclose(res.alpha[1:], np.linalg.solve(psd[1:, 1:], y[1:]), rtol=1e-9)
    assert res.alpha[0] == 0.0


@pytest.mark.parametrize("exponent", [-996, -498, 498, 996])
def test_solutions_scale_with_the_targets_and_the_kernel(rng, exponent):
    """Kernel ridge is linear in y and alpha(s K, y) = alpha(K, y) / s (relative ridge): a truth
    at every representable scale (s a power of two, so that scaling is exact), where unscaled
    inner products of CG would over- or underflow."""
    X, y = _data(rng, n=80)
    K = nf.kernel(ARCH, X)
    s = 2.0**exponent  # 1.5e-300 .. 6.7e299
    ref = solvers.cholesky_solve(K, y, 1e-3)
    np.testing.assert_allclose(solvers.cholesky_solve(K, s * y, 1e-3) / s, ref, rtol=1e-12)
    np.testing.assert_allclose(solvers.cholesky_solve(s * K, y, 1e-3) * s, ref, rtol=1e-12)
    res = solvers.conjugate_gradient(nf.GramOperator(ARCH, X), s * y, 1e-3, tol=1e-12)
    assert res.converged
    np.testing.assert_allclose(res.alpha / s, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())


def test_targets_that_alias_k_and_other_malformed_targets(rng):
    K = nf.kernel(ARCH, rng.standard_normal((30, 3)))
    ref = np.linalg.solve(K + 1e-3 * np.mean(np.diag(K)) * np.eye(30), K[:, 0])
    work = K.copy()
    np.testing.assert_allclose(solvers.cholesky_solve(work, work[:, 0], 1e-3, overwrite_k=True), ref, rtol=1e-10)
    with pytest.raises(nf.errors.ArgumentTypeError, match="K: complex"):
        solvers.cholesky_solve(K + 0j, np.ones(30))
    with pytest.raises(nf.errors.ArgumentTypeError, match="y: complex"):
        solvers.cholesky_solve(K, np.ones(30) + 1j)
    with pytest.raises(nf.errors.ArgumentError, match="k >= 1"):
        solvers.cholesky_solve(K, np.ones((30, 0)))
    with pytest.raises(nf.errors.ArgumentError, match="k >= 1"):
        solvers.conjugate_gradient(nf.GramOperator(ARCH, rng.standard_normal((30, 3))), np.ones((30, 0)))


def test_non_finite_results_are_library_errors():
    from scipy.sparse.linalg import aslinearoperator

    nan_op = aslinearoperator(np.full((4, 4), np.nan))
    with pytest.raises(solvers.NonFiniteError, match="NaN") as info:
        solvers.conjugate_gradient(nan_op, np.ones(4), preconditioner=None)
    assert isinstance(info.value, nf.errors.NtkfastError) and isinstance(info.value, FloatingPointError)
