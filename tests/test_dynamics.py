"""ntkfast.predict on the hard cases (issue 12 item 5): rank-deficient kernels, t = inf, learning
rates above the stable bound, very many steps, singular kernels in GP inference.

Truths: the pseudo-inverse (SVD, independent of our eigendecomposition cut-off), explicit
iteration of the linearised dynamics, and large finite times.
"""

import numpy as np
import pytest
import scipy.linalg

from ntkfast import predict
from ntkfast.errors import ArgumentError, SingularKernelError


@pytest.fixture
def low_rank(rng):
    """K = F F^T of rank 4 on 12 points (exactly singular), test kernel Ft F^T, 2 targets."""
    F, Ft = rng.standard_normal((12, 4)), rng.standard_normal((5, 4))
    K = F @ F.T
    y = rng.standard_normal((12, 2))
    return 0.5 * (K + K.T), Ft @ F.T, y


def _pinv_prediction(K, Kt, r):
    return Kt @ np.linalg.pinv(K, rcond=1e-10, hermitian=True) @ r


@pytest.mark.parametrize("t", [np.inf, [np.inf], [1.0, np.inf]])
def test_t_inf_on_a_rank_deficient_kernel_is_the_pseudo_inverse(low_rank, t):
    K, Kt, y = low_rank
    out = predict.gradient_descent_mse(K, y, Kt, t=t)
    last = out if np.ndim(t) == 0 else out[-1]
    expected = _pinv_prediction(K, Kt, y)
    np.testing.assert_allclose(last, expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())


def test_large_finite_times_converge_to_the_limit(low_rank):
    K, Kt, y = low_rank
    lam = np.linalg.eigvalsh(K)
    smallest = lam[lam > 1e-8 * lam.max()].min()
    t = 60.0 * y.size / smallest  # exp(-60) on the slowest learned mode
    train, test = predict.gradient_descent_mse(K, y, Kt, t=[t, 1e6 * t], return_train=True)
    limit = _pinv_prediction(K, Kt, y)
    for k in range(2):
        np.testing.assert_allclose(test[k], limit, rtol=1e-8, atol=1e-10 * np.abs(limit).max())
    # the train outputs reach the projection of y on the range of K, and stay finite
    P = K @ np.linalg.pinv(K, rcond=1e-10, hermitian=True)
    np.testing.assert_allclose(train[1], P @ y, atol=1e-9)


def test_singular_kernel_with_a_ridge_matches_the_solve(low_rank):
    K, Kt, y = low_rank
    reg = 1e-3 * np.mean(np.diag(K))
    got = predict.gradient_descent_mse(K, y, Kt, diag_reg=1e-3)
    np.testing.assert_allclose(got, Kt @ np.linalg.solve(K + reg * np.eye(len(K)), y), rtol=1e-9)


def test_gp_inference_refuses_a_singular_kernel_naming_diag_reg(low_rank):
    K, Kt, y = low_rank
    with pytest.raises(SingularKernelError, match=r"diag_reg=1e-\d+"):
        predict.gp_inference(K, y, Kt)
    with pytest.raises(SingularKernelError, match="diag_reg"):
        predict.gp_inference(np.zeros((3, 3)), y[:3], Kt[:, :3])
    # the suggested ridge works
    mean = predict.gp_inference(K, y, Kt, diag_reg=1e-6)
    assert np.isfinite(mean).all()
    # the NTK-GP at t = inf on a singular Theta is the pseudo-inverse mean, not 1 / round-off
    mean = predict.gp_inference(K, y, Kt, nngp_train=K, nngp_test_train=Kt)
    expected = _pinv_prediction(K, Kt, y)
    np.testing.assert_allclose(mean, expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())


def _iterate(K, Kt, y, lr, momentum, steps):
    """Heavy ball on the linearised model, train and test outputs (test through pinv(K))."""
    N = y.size
    f, prev = np.zeros_like(y), np.zeros_like(y)
    ft = np.zeros((Kt.shape[0], y.shape[1]))
    A = Kt @ np.linalg.pinv(K, rcond=1e-10, hermitian=True)
    for _ in range(steps):
        new = f - lr / N * K @ (f - y) + momentum * (f - prev)
        ft = ft + A @ (new - f)
        f, prev = new, f
    return f, ft


@pytest.mark.parametrize("momentum", [0.0, 0.3, 0.9])
def test_closed_form_steps_match_explicit_iteration(low_rank, momentum):
    K, Kt, y = low_rank
    lr = 0.9 * predict.max_learning_rate(K, n_outputs=2, momentum=momentum)
    steps = [0, 1, 2, 7, 40]
    train, test = predict.gradient_descent(K, y, Kt, steps=steps, lr=lr, momentum=momentum, return_train=True)
    for k, s in enumerate(steps):
        f, ft = _iterate(K, Kt, y, lr, momentum, s)
        np.testing.assert_allclose(train[k], f, atol=1e-9 * np.abs(y).max())
        np.testing.assert_allclose(test[k], ft, atol=1e-8 * max(np.abs(ft).max(), 1.0))


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.99])
def test_very_many_steps_are_fast_and_reach_the_limit(low_rank, momentum):
    """steps = 10**8 costs O(log steps) per mode (it used to iterate for minutes)."""
    K, Kt, y = low_rank
    lr = 0.5 * predict.max_learning_rate(K, n_outputs=2, momentum=momentum)
    test = predict.gradient_descent(K, y, Kt, steps=10**8, lr=lr, momentum=momentum)
    expected = _pinv_prediction(K, Kt, y)
    np.testing.assert_allclose(test, expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_learning_rate_above_the_stable_bound_is_refused(low_rank, momentum):
    K, Kt, y = low_rank
    bound = predict.max_learning_rate(K, n_outputs=2, momentum=momentum)
    with pytest.raises(ArgumentError, match=r"largest stable learning rate .* = \d"):
        predict.gradient_descent(K, y, Kt, steps=100, lr=1.01 * bound, momentum=momentum)
    # at the bound the iteration oscillates without growing: accepted, finite
    out = predict.gradient_descent(K, y, Kt, steps=100, lr=bound, momentum=momentum)
    assert np.isfinite(out).all()


def test_bad_arguments_are_clear_errors(low_rank):
    K, Kt, y = low_rank
    for kwargs, match in [
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=float("nan")), "momentum"),
        (dict(steps=1.5), "steps"),
        (dict(steps=[]), "steps"),
        (dict(lr=float("nan")), "lr"),
        (dict(diag_reg=-1.0), "diag_reg"),
        (dict(diag_reg=float("inf")), "diag_reg"),
    ]:
        with pytest.raises(ValueError, match=match):
            predict.gradient_descent(K, y, Kt, **kwargs)
    with pytest.raises(ArgumentError, match="t: expected"):
        predict.gradient_descent_mse(K, y, Kt, t=[])
    with pytest.raises(ArgumentError, match="K_train"):
        predict.gradient_descent_mse([[1.0, "a"], [2.0, 3.0]], y[:2])
    with pytest.raises(TypeError, match="diag_reg_absolute_scale"):
        predict.gradient_descent_mse(K, y, Kt, diag_reg_absolute_scale="yes")


def test_flow_gain_cuts_round_off_eigenvalues():
    lam = np.array([0.0, 1e-20, 1e-3, 1.0])
    g = predict.flow_gain(lam, 10.0)
    assert g[0] == 0.0 and g[1] == 0.0
    np.testing.assert_allclose(g[2:], -np.expm1(-lam[2:] * 10.0) / lam[2:], rtol=1e-15)
    np.testing.assert_allclose(predict.flow_gain(lam, np.inf), [0.0, 0.0, 1e3, 1.0])
    # eigh round-off on an exactly singular matrix is below the cut-off
    K = np.ones((50, 50))
    lam = scipy.linalg.eigvalsh(K)
    assert (np.sort(np.abs(lam))[:-1] <= predict.eigenvalue_cutoff(lam)).all()
