"""Closed-form training dynamics of wide networks and GP inference (docs/design.md section 2).

Loss ``1/(2N) ||f(X) - Y||^2`` with ``N = n k`` target entries, learning rate ``lr``.  Under
gradient flow the train residual along eigenvector v_i of Theta decays as exp(-lr lambda_i t / N),
and test outputs follow ``f_t(x) = f_0(x) + Theta(x, X) Theta^-1 (I - exp(-lr Theta t / N)) (Y - f_0(X))``.
Tiny negative eigenvalues from round-off are clipped to zero (a zero mode is simply not learned).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ._validation import check_lapack_size, check_positive_float

__all__ = ["gradient_descent_mse", "gradient_descent", "gp_inference", "max_learning_rate"]


# ----------------------------------------------------------------------------------- checking
def _finite(a, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim not in ndim:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in ndim)}, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: empty array")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def _check_train(K_train, y_train, sym_rtol: float = 1e-8):
    K = _finite(K_train, "K_train", (2,))
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"K_train: expected a square matrix, got shape {K.shape}")
    check_lapack_size(len(K), "K_train", "use ntkfast.solvers.conjugate_gradient or nystrom")
    scale = np.abs(K).max()
    if np.abs(K - K.T).max() > sym_rtol * max(scale, 1e-300):
        raise ValueError("K_train: not symmetric (max |K - K.T| exceeds 1e-8 of max |K|)")
    y = _finite(y_train, "y_train", (1, 2))
    squeeze = y.ndim == 1
    y = y.reshape(len(y), -1)
    if y.shape[0] != K.shape[0]:
        raise ValueError(f"y_train: has {y.shape[0]} rows, K_train has {K.shape[0]}")
    return 0.5 * (K + K.T), y, squeeze


def _check_test(K_test_train, n_train: int):
    if K_test_train is None:
        return None
    Kt = _finite(K_test_train, "K_test_train", (2,))
    if Kt.shape[1] != n_train:
        raise ValueError(f"K_test_train: expected {n_train} columns (training points), got shape {Kt.shape}")
    return Kt


def _times(t):
    arr = np.asarray(t, dtype=np.float64)
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError(f"t: expected times >= 0 (np.inf allowed), got {t!r}")
    return arr


def diag_regularizer(diag: np.ndarray, diag_reg: float, absolute: bool = False) -> float:
    """The ridge added to the diagonal: ``diag_reg * mean(diag)``, or ``diag_reg`` if ``absolute``."""
    if diag_reg < 0 or not np.isfinite(diag_reg):
        raise ValueError(f"diag_reg: expected a finite number >= 0, got {diag_reg!r}")
    return float(diag_reg * (1.0 if absolute else np.mean(diag)))


def _regularize(K, diag_reg: float, absolute: bool) -> np.ndarray:
    reg = diag_regularizer(np.diag(K), diag_reg, absolute)
    return K if reg == 0 else K + reg * np.eye(len(K))


def _initial(f0, shape, name: str) -> np.ndarray:
    f0 = np.asarray(f0, dtype=np.float64)
    if not np.isfinite(f0).all():
        raise ValueError(f"{name}: contains NaN or inf")
    if f0.ndim == 1 and f0.shape[0] == shape[0]:
        f0 = f0[:, None]
    try:
        return np.broadcast_to(f0, shape)
    except ValueError as exc:
        raise ValueError(f"{name}: cannot broadcast shape {f0.shape} to {shape}") from exc


def _eigh(K):
    lam, V = scipy.linalg.eigh(K)
    return np.clip(lam, 0.0, None), V  # round-off negatives: documented clip


def max_learning_rate(K_train, n_outputs: int = 1, momentum: float = 0.0) -> float:
    """Largest stable learning rate of gradient descent on the MSE loss: 2 (1 + momentum) N / lambda_max,
    N = n * n_outputs."""
    K = _finite(K_train, "K_train", (2,))
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"K_train: expected a square matrix, got shape {K.shape}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum: expected 0 <= momentum < 1, got {momentum!r}")
    lam_max = scipy.linalg.eigh(K, eigvals_only=True, subset_by_index=[len(K) - 1, len(K) - 1])[0]
    if lam_max <= 0:
        raise ValueError("K_train: has no positive eigenvalue")
    return 2.0 * (1.0 + momentum) * K.shape[0] * n_outputs / lam_max


def _flow_gain(lam: np.ndarray, lr_t_over_n: float) -> np.ndarray:
    """(1 - exp(-lr lam t / N)) / lam per mode, with its limit lr t / N at lam = 0 (t = inf: 1/lam, 0)."""
    positive = lam > 0
    safe = np.where(positive, lam, 1.0)
    if np.isinf(lr_t_over_n):
        return np.where(positive, 1.0 / safe, 0.0)
    return np.where(positive, -np.expm1(-lam * lr_t_over_n) / safe, lr_t_over_n)


def _setup(K_train, y_train, K_test_train, lr, diag_reg, absolute, fx_train_0, fx_test_0):
    """Checked inputs shared by the dynamics: (K + reg, Kt, y (n, k), 1-D y?, lr, f0, f0(x))."""
    K, y, squeeze = _check_train(K_train, y_train)
    Kt = _check_test(K_test_train, len(K))
    lr = check_positive_float(lr, "lr")
    K = _regularize(K, diag_reg, absolute)
    f0 = _initial(fx_train_0, y.shape, "fx_train_0")
    ft0 = None if Kt is None else _initial(fx_test_0, (Kt.shape[0], y.shape[1]), "fx_test_0")
    return K, Kt, y, squeeze, lr, f0, ft0


def _outputs(y, V, proj, Kt, ft0, decays, gains, lead_shape, squeeze, return_train):
    """Train outputs y - V diag(decay) V^T (y - f0) and test outputs f0(x) + Kt V diag(gain) V^T (y - f0),
    one (decay, gain) pair of per-mode vectors per time."""
    train = np.stack([y - V @ (d[:, None] * proj) for d in decays]).reshape(lead_shape + y.shape)
    test = None
    if Kt is not None:
        test = np.stack([ft0 + Kt @ (V @ (g[:, None] * proj)) for g in gains])
        test = test.reshape(lead_shape + (Kt.shape[0], y.shape[1]))
    return _finish(train, test, Kt, squeeze, return_train)


def _finish(train, test, Kt, squeeze, return_train):
    """Drop the output axis for 1-D y; return what the caller asked for."""
    if squeeze:
        train = train[..., 0]
        test = None if test is None else test[..., 0]
    if Kt is None:
        return train
    return (train, test) if return_train else test


# ---------------------------------------------------------------------------------- dynamics
def gradient_descent_mse(
    K_train,
    y_train,
    K_test_train=None,
    t=np.inf,
    lr: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    fx_train_0=0.0,
    fx_test_0=0.0,
    return_train: bool = False,
):
    """Outputs of an infinitely wide network trained by gradient flow on the MSE loss.

    Parameters
    ----------
    K_train : ndarray of shape (n, n)
        The NTK on the training points.
    y_train : ndarray of shape (n,) or (n, k)
    K_test_train : ndarray of shape (m, n), default=None
        None: return the training-set outputs.
    t : float, np.inf or array of shape (T,), default=np.inf
        One eigendecomposition serves every time; ``t = inf`` alone uses a Cholesky solve.
    lr : float, default=1.0
    diag_reg : float, default=0.0
        Added to the diagonal, relative to ``mean(diag K_train)`` unless ``diag_reg_absolute_scale``.
    fx_train_0, fx_test_0 : float or array, default=0.0
        Outputs at initialisation.
    return_train : bool, default=False
        Also return the training-set outputs: ``(train, test)``.

    Returns
    -------
    ndarray of shape (m, k) (or (T, m, k) for an array of times); y's shape is kept for 1-D y.
    """
    K, Kt, y, squeeze, lr, f0, ft0 = _setup(
        K_train, y_train, K_test_train, lr, diag_reg, diag_reg_absolute_scale, fx_train_0, fx_test_0
    )
    times = _times(t)
    N = y.size
    r0 = y - f0
    if times.ndim == 0 and np.isinf(times):
        coef = scipy.linalg.cho_solve(scipy.linalg.cho_factor(K), r0)
        return _finish(y.copy(), None if Kt is None else ft0 + Kt @ coef, Kt, squeeze, return_train)
    lam, V = _eigh(K)
    flat = times.reshape(-1)
    decays = [np.exp(-lr * lam * s / N) if np.isfinite(s) else (lam <= 0).astype(float) for s in flat]
    gains = [_flow_gain(lam, lr * s / N) for s in flat]
    return _outputs(y, V, V.T @ r0, Kt, ft0, decays, gains, times.shape, squeeze, return_train)


def gradient_descent(
    K_train,
    y_train,
    K_test_train=None,
    steps=1,
    lr: float = 1.0,
    momentum: float = 0.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    fx_train_0=0.0,
    fx_test_0=0.0,
    return_train: bool = False,
):
    """Outputs after ``steps`` discrete gradient-descent steps (heavy-ball ``momentum`` optional).

    In the linearised (infinite-width) regime each eigenmode of the train residual obeys
    ``r_{s+1} = (1 + momentum - lr lambda / N) r_s - momentum r_{s-1}``, and test outputs move by
    ``Theta(x, X) Theta^-1`` times the train outputs' change (updates stay in the span of the
    train gradients).  ``steps`` may be an int or an array of ints (leading axis of the result).
    """
    K, Kt, y, squeeze, lr, f0, ft0 = _setup(
        K_train, y_train, K_test_train, lr, diag_reg, diag_reg_absolute_scale, fx_train_0, fx_test_0
    )
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum: expected 0 <= momentum < 1, got {momentum!r}")
    s_arr = np.asarray(steps)
    if not np.issubdtype(s_arr.dtype, np.integer) or (s_arr < 0).any():
        raise ValueError(f"steps: expected integers >= 0, got {steps!r}")
    N = y.size
    lam, V = _eigh(K)
    proj = V.T @ (y - f0)
    flat = s_arr.reshape(-1)
    # residual factor per mode after s steps: closed form without momentum, else iterate the
    # two-term recursion once up to the largest s
    if momentum == 0:
        factors = {int(s): (1.0 - lr * lam / N) ** int(s) for s in flat}
    else:
        factors, prev, cur = {}, np.ones_like(lam), np.ones_like(lam)
        wanted = set(int(s) for s in flat)
        for s in range(int(flat.max()) + 1):
            if s in wanted:
                factors[s] = cur.copy()
            nxt = (1.0 + momentum - lr * lam / N) * cur - momentum * prev if s > 0 else (1.0 - lr * lam / N) * cur
            prev, cur = cur, nxt
    pinv = np.where(lam > 1e-12 * max(lam.max(), 1e-300), 1.0 / np.where(lam > 0, lam, 1.0), 0.0)
    decays = [factors[int(s)] for s in flat]
    gains = [(1.0 - f) * pinv for f in decays]
    return _outputs(y, V, proj, Kt, ft0, decays, gains, s_arr.shape, squeeze, return_train)


# ------------------------------------------------------------------------------ GP inference
def gp_inference(
    K_train,
    y_train,
    K_test_train,
    K_test_test=None,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    *,
    nngp_train=None,
    nngp_test_train=None,
    nngp_test_test=None,
    t=np.inf,
    lr: float = 1.0,
):
    """GP posterior mean (and covariance when ``K_test_test`` is given).

    With only ``K_*`` blocks (NNGP kernels): the Bayesian posterior of an infinitely wide network,
    mean ``K_tX K^-1 y``, covariance ``K_tt - K_tX K^-1 K_Xt``.

    With ``K_*`` the NTK blocks and the NNGP blocks passed as ``nngp_*`` (the covariance needs
    ``nngp_test_test``; ``K_test_test`` is not used then): the NTK-GP, the
    distribution of an ensemble of infinitely wide networks trained by gradient flow to time ``t``
    (default: convergence).  With ``M = Theta^-1 (I - exp(-lr Theta t / N))``:
    mean ``Theta_tX M y``, covariance ``K_tt + Theta_tX M K_XX M Theta_Xt - (Theta_tX M K_Xt + transpose)``.
    """
    K, y, squeeze = _check_train(K_train, y_train)
    Kt = _check_test(K_test_train, len(K))
    if Kt is None:
        raise ValueError("K_test_train: required")
    K = _regularize(K, diag_reg, diag_reg_absolute_scale)
    Ktt = None if K_test_test is None else _finite(K_test_test, "K_test_test", (2,))
    if Ktt is not None and Ktt.shape != (Kt.shape[0], Kt.shape[0]):
        raise ValueError(f"K_test_test: expected shape {(Kt.shape[0], Kt.shape[0])}, got {Ktt.shape}")
    ntk_gp = nngp_train is not None
    if not ntk_gp:
        factor = scipy.linalg.cho_factor(K)
        mean = Kt @ scipy.linalg.cho_solve(factor, y)
        cov = None if Ktt is None else Ktt - Kt @ scipy.linalg.cho_solve(factor, Kt.T)
    else:
        if nngp_test_train is None:
            raise ValueError("nngp_test_train: required with nngp_train (the NTK-GP needs both NNGP blocks)")
        Kxx = _finite(nngp_train, "nngp_train", (2,))
        Kxt = _finite(nngp_test_train, "nngp_test_train", (2,))
        if Kxx.shape != K.shape or Kxt.shape != Kt.shape:
            raise ValueError("nngp_train / nngp_test_train: shapes must match K_train / K_test_train")
        lam, V = _eigh(K)
        times = _times(t)
        if times.ndim != 0:
            raise ValueError("t: gp_inference takes one time")
        scale = np.inf if np.isinf(times) else check_positive_float(lr, "lr") * float(times) / y.size
        M = (V * _flow_gain(lam, scale)) @ V.T
        A = Kt @ M  # Theta_tX M
        mean = A @ y
        cov = None
        if nngp_test_test is not None:
            Ktt_nngp = _finite(nngp_test_test, "nngp_test_test", (2,))
            cross = A @ Kxt.T
            cov = Ktt_nngp + A @ Kxx @ A.T - (cross + cross.T)
    if squeeze:
        mean = mean[:, 0]
    return mean if cov is None else (mean, cov)
