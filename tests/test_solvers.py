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
