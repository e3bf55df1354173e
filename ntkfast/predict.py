"""Closed-form training dynamics of wide networks and GP inference (docs/design.md, section 2).

Loss ``1/(2N) ||f(X) - Y||^2`` with ``N = n k`` target entries, learning rate ``lr``.  Under
gradient flow the train residual along eigenvector v_i of Theta decays as exp(-lr lambda_i t / N),
and test outputs follow ``f_t(x) = f_0(x) + Theta(x, X) Theta^-1 (I - exp(-lr Theta t / N)) (Y - f_0(X))``.

Eigenvalues at or below ``rcond * lambda_max`` (:func:`eigenvalue_cutoff`, ``rcond = n eps``) are
round-off: they are treated as exactly 0, so their modes do not move, at every time.  With this,
``t = inf`` is the limit of gradient flow on a rank-deficient Theta: the minimum-norm interpolant
on the range of Theta (``Theta(x, X) pinv(Theta) (Y - f_0)``), never ``1 / round-off``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from ._validation import (
    check_lapack_size,
    check_positive_float,
    check_positive_int,
    check_real,
)
from .errors import ArgumentError, ArgumentTypeError, SingularKernelError
from .solvers.dense import diag_regularizer, eigenvalue_cutoff, flow_gain

__all__ = [
    "gradient_descent_mse",
    "gradient_descent",
    "gp_inference",
    "max_learning_rate",
    "diag_regularizer",
    "eigenvalue_cutoff",
    "flow_gain",
]


# ----------------------------------------------------------------------------------- checking
def _finite(a, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"{name}: expected a numeric array ({exc})") from None
    if a.ndim not in ndim:
        raise ArgumentError(f"{name}: expected {' or '.join(f'{d}-D' for d in ndim)}, got shape {a.shape}")
    if a.size == 0:
        raise ArgumentError(f"{name}: empty array")
    if not np.isfinite(a).all():
        raise ArgumentError(f"{name}: contains NaN or inf")
    return a


def _square(K_train, name: str = "K_train") -> np.ndarray:
    K = _finite(K_train, name, (2,))
    if K.shape[0] != K.shape[1]:
        raise ArgumentError(f"{name}: expected a square matrix, got shape {K.shape}")
    return K


def _check_train(K_train, y_train, sym_rtol: float = 1e-8):
    K = _square(K_train)
    check_lapack_size(len(K), "K_train", "use ntkfast.solvers.conjugate_gradient or nystrom")
    scale = np.abs(K).max()
    if np.abs(K - K.T).max() > sym_rtol * max(scale, 1e-300):
        raise ArgumentError("K_train: not symmetric (max |K - K.T| exceeds 1e-8 of max |K|)")
    y = _finite(y_train, "y_train", (1, 2))
    squeeze = y.ndim == 1
    y = y.reshape(len(y), -1)
    if y.shape[0] != K.shape[0]:
        raise ArgumentError(f"y_train: has {y.shape[0]} rows, K_train has {K.shape[0]}")
    return 0.5 * (K + K.T), y, squeeze


def _check_test(K_test_train, n_train: int):
    if K_test_train is None:
        return None
    Kt = _finite(K_test_train, "K_test_train", (2,))
    if Kt.shape[1] != n_train:
        raise ArgumentError(f"K_test_train: expected {n_train} columns (training points), got shape {Kt.shape}")
    return Kt


def _times(t):
    try:
        arr = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentError(f"t: expected times >= 0 (np.inf allowed), got {t!r}") from None
    if arr.size == 0 or np.isnan(arr).any() or (arr < 0).any():
        raise ArgumentError(f"t: expected times >= 0 (np.inf allowed), got {t!r}")
    return arr


def _momentum(momentum) -> float:
    m = check_real(momentum, "momentum")
    if not 0 <= m < 1:
        raise ArgumentError(f"momentum: expected 0 <= momentum < 1, got {momentum!r}")
    return m


def _steps(steps) -> np.ndarray:
    s_arr = np.asarray(steps)
    if s_arr.dtype == bool or not np.issubdtype(s_arr.dtype, np.integer) or s_arr.size == 0 or (s_arr < 0).any():
        raise ArgumentError(f"steps: expected integers >= 0, got {steps!r}")
    return s_arr.astype(np.int64)


def _regularize(K, diag_reg: float, absolute: bool) -> np.ndarray:
    reg = diag_regularizer(np.diag(K), diag_reg, absolute)
    return K if reg == 0 else K + reg * np.eye(len(K))


def _initial(f0, shape, name: str) -> np.ndarray:
    try:
        f0 = np.asarray(f0, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"{name}: expected a number or a numeric array ({exc})") from None
    if not np.isfinite(f0).all():
        raise ArgumentError(f"{name}: contains NaN or inf")
    if f0.ndim == 1 and f0.shape[0] == shape[0]:
        f0 = f0[:, None]
    try:
        return np.broadcast_to(f0, shape)
    except ValueError:
        raise ArgumentError(f"{name}: cannot broadcast shape {f0.shape} to {shape}") from None


def _eigh(K):
    """Eigenpairs with the round-off eigenvalues (negative, or below :func:`eigenvalue_cutoff`) set to 0."""
    lam, V = scipy.linalg.eigh(K)
    lam = np.where(lam > eigenvalue_cutoff(lam), lam, 0.0)
    return lam, V


def _max_eigenvalue(K) -> float:
    return float(scipy.linalg.eigh(K, eigvals_only=True, subset_by_index=[len(K) - 1, len(K) - 1])[0])


def max_learning_rate(K_train, n_outputs: int = 1, momentum: float = 0.0) -> float:
    """Largest stable learning rate of gradient descent on the MSE loss: 2 (1 + momentum) N / lambda_max,
    N = n * n_outputs.

    Parameters
    ----------
    K_train : ndarray of shape (n, n)
    n_outputs : int, default=1
    momentum : float, default=0.0
        Heavy-ball momentum in [0, 1).

    Returns
    -------
    float
    """
    K = _square(K_train)
    n_outputs = check_positive_int(n_outputs, "n_outputs", allow_none=False)
    momentum = _momentum(momentum)
    lam_max = _max_eigenvalue(K)
    if lam_max <= 0:
        raise ArgumentError("K_train: has no positive eigenvalue")
    return 2.0 * (1.0 + momentum) * K.shape[0] * n_outputs / lam_max




def _singular(K, what: str, diag_reg_name: str = "diag_reg") -> SingularKernelError:
    """The refusal for a kernel matrix a Cholesky solve cannot use, with a diag_reg to try."""
    n = len(K)
    mean_diag = float(np.mean(np.diag(K)))
    lam_max = float(np.abs(K).sum(axis=0).max())  # ||K||_1 >= lambda_max
    if mean_diag > 0 and lam_max > 0:
        need = 1e4 * n * np.finfo(np.float64).eps * lam_max / mean_diag
        suggestion = f"{10.0 ** math.ceil(math.log10(max(need, 1e-12))):.0e}"
    else:
        suggestion = "1e-6 with diag_reg_absolute_scale=True"
    return SingularKernelError(
        f"{what}: the kernel matrix is singular (or not positive definite) to working precision; "
        f"add a ridge with {diag_reg_name}=... (relative to the mean diagonal), e.g. {diag_reg_name}={suggestion}"
    )


def _cholesky(K, what: str):
    """``scipy.linalg.cho_factor(K)`` if K is numerically positive definite, else None.

    Positive definite here means the factorisation succeeds *and* LAPACK's condition estimate
    (``pocon``) is above ``1e3 n eps``: a factor of a numerically singular K would amplify
    round-off into the solution.
    """
    try:
        factor = scipy.linalg.cho_factor(K)
    except (np.linalg.LinAlgError, ValueError):
        return None
    anorm = float(np.abs(K).sum(axis=0).max())
    pocon = scipy.linalg.lapack.get_lapack_funcs("pocon", (factor[0],))
    rcond, info = pocon(factor[0], anorm, uplo="L" if factor[1] else "U")
    if info != 0 or not rcond > 1e3 * len(K) * np.finfo(np.float64).eps:
        return None
    return factor


def _setup(K_train, y_train, K_test_train, lr, diag_reg, absolute, fx_train_0, fx_test_0):
    """Checked inputs shared by the dynamics: (K + reg, Kt, y (n, k), 1-D y?, lr, f0, f0(x))."""
    K, y, squeeze = _check_train(K_train, y_train)
    Kt = _check_test(K_test_train, len(K))
    lr = check_positive_float(lr, "lr")
    if not isinstance(absolute, (bool, np.bool_)):
        raise ArgumentTypeError(f"diag_reg_absolute_scale: expected a bool, got {absolute!r}")
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


def _heavy_ball_factors(tau: np.ndarray, momentum: float, s: int) -> np.ndarray:
    """r_s per mode for r_{k+1} = tau r_k - momentum r_{k-1}, r_{-1} = r_0 = 1 (heavy ball from rest).

    The state (r_k, r_{k-1}) is multiplied by the 2x2 companion matrix [[tau, -m], [1, 0]]; its
    s-th power comes from repeated squaring, O(log s) per mode whatever ``s``, and stays accurate
    at repeated characteristic roots (where the closed form A mu1^s + B mu2^s cancels).
    """
    n = tau.shape[0]
    # P = [[p00, p01], [p10, p11]] per mode, starting at the identity; B = the companion matrix
    p00, p01, p10, p11 = np.ones(n), np.zeros(n), np.zeros(n), np.ones(n)
    b00, b01, b10, b11 = tau.copy(), np.full(n, -momentum), np.ones(n), np.zeros(n)
    k = s
    while k:
        if k & 1:
            p00, p01, p10, p11 = (p00 * b00 + p01 * b10, p00 * b01 + p01 * b11,
                                  p10 * b00 + p11 * b10, p10 * b01 + p11 * b11)  # fmt: skip
        k >>= 1
        if k:
            b00, b01, b10, b11 = (b00 * b00 + b01 * b10, b00 * b01 + b01 * b11,
                                  b10 * b00 + b11 * b10, b10 * b01 + b11 * b11)  # fmt: skip
    return p00 + p01  # first component of P @ (1, 1)


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
        One eigendecomposition serves every time.  ``t = inf`` alone uses a Cholesky solve when
        K_train (+ ridge) is numerically positive definite; otherwise, and for ``inf`` inside an
        array, the limit of gradient flow: the minimum-norm interpolant on the range of K_train
        (eigenvalues below ``n eps lambda_max`` are 0 and their modes do not move).
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
        factor = _cholesky(K, "K_train")
        if factor is not None:
            coef = scipy.linalg.cho_solve(factor, r0)
            return _finish(y.copy(), None if Kt is None else ft0 + Kt @ coef, Kt, squeeze, return_train)
        # numerically singular: the limit of gradient flow, through the eigendecomposition below
    lam, V = _eigh(K)
    moving = lam > 0  # round-off eigenvalues are exactly 0 after _eigh
    flat = times.reshape(-1)
    decays = [np.where(moving, np.exp(-lr * lam * s / N), 1.0) if np.isfinite(s) else (~moving).astype(float)
              for s in flat]  # fmt: skip
    gains = [flow_gain(lam, lr * s / N) for s in flat]
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

    Each mode's factor after s steps comes in closed form ((1 - lr lambda / N)^s, or the s-th
    power of the 2x2 companion matrix with momentum), so the cost does not grow with ``steps``.

    Raises
    ------
    ArgumentError
        If ``lr`` exceeds the largest stable rate 2 (1 + momentum) N / lambda_max (the outputs
        would diverge); the message gives the bound.
    """
    K, Kt, y, squeeze, lr, f0, ft0 = _setup(
        K_train, y_train, K_test_train, lr, diag_reg, diag_reg_absolute_scale, fx_train_0, fx_test_0
    )
    momentum = _momentum(momentum)
    s_arr = _steps(steps)
    N = y.size
    lam, V = _eigh(K)
    lam_max = float(lam.max())
    if lam_max > 0:
        lr_max = 2.0 * (1.0 + momentum) * N / lam_max
        if lr > lr_max * (1 + 1e-12):
            raise ArgumentError(
                f"lr: {lr!r} is above the largest stable learning rate 2 (1 + momentum) N / lambda_max = "
                f"{lr_max:.6g} (N = {N} target entries, lambda_max = {lam_max:.6g}, momentum = {momentum}): "
                "gradient descent would diverge; use a smaller lr (see ntkfast.predict.max_learning_rate)"
            )
    moving = lam > 0  # round-off eigenvalues are exactly 0 after _eigh: those modes do not move
    proj = V.T @ (y - f0)
    x = lr * lam / N
    flat = s_arr.reshape(-1)
    decays, gains = [], []
    safe = np.where(moving, lam, 1.0)
    for s in flat:
        s = int(s)
        if momentum == 0:
            # (1 - x)^s, with 1 - (1 - x)^s from expm1 where x < 1 (small x: no cancellation)
            small = x < 1
            log_base = np.log1p(-np.where(small, x, 0.0))
            f = np.where(small, np.exp(s * log_base), (1.0 - x) ** s)
            one_minus_f = np.where(small, -np.expm1(s * log_base), 1.0 - f)
        else:  # per-mode 2x2 recurrence: O(log s), not O(s)
            f = _heavy_ball_factors(1.0 + momentum - x, momentum, s)
            one_minus_f = 1.0 - f
        decays.append(np.where(moving, f, 1.0))
        gains.append(np.where(moving, one_minus_f / safe, 0.0))
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
    Round-off eigenvalues of Theta are 0 there (``M`` is then the pseudo-inverse at t = inf).

    Raises
    ------
    SingularKernelError
        Without ``nngp_*``: if K_train (+ ridge) is not numerically positive definite.  The
        default is no ridge; the message names ``diag_reg`` and a value to try.
    """
    K, y, squeeze = _check_train(K_train, y_train)
    Kt = _check_test(K_test_train, len(K))
    if Kt is None:
        raise ArgumentError("K_test_train: required")
    if not isinstance(diag_reg_absolute_scale, (bool, np.bool_)):
        raise ArgumentTypeError(f"diag_reg_absolute_scale: expected a bool, got {diag_reg_absolute_scale!r}")
    K = _regularize(K, diag_reg, diag_reg_absolute_scale)
    Ktt = None if K_test_test is None else _finite(K_test_test, "K_test_test", (2,))
    if Ktt is not None and Ktt.shape != (Kt.shape[0], Kt.shape[0]):
        raise ArgumentError(f"K_test_test: expected shape {(Kt.shape[0], Kt.shape[0])}, got {Ktt.shape}")
    ntk_gp = nngp_train is not None
    if not ntk_gp:
        factor = _cholesky(K, "K_train")
        if factor is None:
            raise _singular(K, "gp_inference: K_train")
        mean = Kt @ scipy.linalg.cho_solve(factor, y)
        cov = None if Ktt is None else Ktt - Kt @ scipy.linalg.cho_solve(factor, Kt.T)
    else:
        if nngp_test_train is None:
            raise ArgumentError("nngp_test_train: required with nngp_train (the NTK-GP needs both NNGP blocks)")
        Kxx = _finite(nngp_train, "nngp_train", (2,))
        Kxt = _finite(nngp_test_train, "nngp_test_train", (2,))
        if Kxx.shape != K.shape or Kxt.shape != Kt.shape:
            raise ArgumentError("nngp_train / nngp_test_train: shapes must match K_train / K_test_train")
        lam, V = _eigh(K)
        times = _times(t)
        if times.ndim != 0:
            raise ArgumentError("t: gp_inference takes one time")
        scale = np.inf if np.isinf(times) else check_positive_float(lr, "lr") * float(times) / y.size
        M = (V * flow_gain(lam, scale)) @ V.T
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
