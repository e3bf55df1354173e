"""Architecture spec (:class:`MLP`), activations and input maps.

Every activation is a small frozen object holding its parameters, an integer ``code`` that
selects its closed-form dual kernel in the compiled recursions (``ntkfast.recursion``), and
NumPy ``phi``/``dphi`` for finite networks and Monte-Carlo checks.  Families are written once:
ReLU, LeakyReLU and Abs are parameter choices of :class:`ABReLU`; Cos and Rbf of :class:`Sin`;
Identity of :class:`Monomial`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from . import config
from .config import check_fits
from .errors import ArgumentError, ArgumentTypeError


class _LazySpecial:
    """``scipy.special``, imported when a ``phi``/``dphi`` first needs it (``import ntkfast`` stays free of
    SciPy, ~0.3-0.5 s)."""

    def __getattr__(self, name):
        from scipy import special as module

        value = getattr(module, name)
        setattr(self, name, value)
        return value


special = _LazySpecial()

# Integer codes understood by ntkfast.recursion.dual / dual_diag.  Monomial families carry their
# degree in the code so that it is a compile-time constant in the kernels.
ABRELU, ERF, GELU, SIN, SIGN, EXP, GAUSSIAN = 0, 1, 2, 3, 4, 5, 6
RECTIFIED_MONOMIAL = 16
MONOMIAL = 32
# Activations without a closed form: the kernels evaluate per-row Hermite coefficients
# (ntkfast.series) instead of scalar parameters.
SERIES = 64
MAX_RECTIFIED_DEGREE = 5
MAX_MONOMIAL_DEGREE = 8


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _degree(n, name: str, max_n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(n).__name__}")
    if not 0 <= n <= max_n:
        raise ValueError(f"{name} must be in 0..{max_n}, got {n}")
    return int(n)


class Activation:
    """Base class: an elementwise nonlinearity with a closed-form dual kernel."""

    code: int
    name: str

    @property
    def params(self) -> tuple[float, float, float]:
        """Up to three float parameters passed to the compiled dual kernel."""
        raise NotImplementedError

    def phi(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def dphi(self, x: np.ndarray) -> np.ndarray:
        """Derivative used by backpropagation (zero where the function is piecewise constant)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ABReLU(Activation):
    """phi(x) = a * min(x, 0) + b * max(x, 0)."""

    a: float = 0.0
    b: float = 1.0
    name: str = field(default="ab_relu", compare=False)
    code = ABRELU

    def __post_init__(self):
        object.__setattr__(self, "a", _real(self.a, "a"))
        object.__setattr__(self, "b", _real(self.b, "b"))

    @property
    def params(self):
        return (self.a, self.b, 0.0)

    def phi(self, x):
        return np.where(x > 0, self.b * x, self.a * x)

    def dphi(self, x):
        return np.where(x > 0, self.b, self.a).astype(np.result_type(x, float))


def ReLU() -> ABReLU:
    """max(x, 0)."""
    return ABReLU(0.0, 1.0, name="relu")


def LeakyReLU(alpha: float = 0.01) -> ABReLU:
    """max(x, 0) + alpha * min(x, 0)."""
    return ABReLU(alpha, 1.0, name="leaky_relu")


def Abs() -> ABReLU:
    """phi(x) = ``|x|``."""
    return ABReLU(-1.0, 1.0, name="abs")


@dataclass(frozen=True)
class Erf(Activation):
    """phi(x) = a * erf(b * x) + c."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    name: str = field(default="erf", compare=False)
    code = ERF

    def __post_init__(self):
        for k in "abc":
            object.__setattr__(self, k, _real(getattr(self, k), k))

    @property
    def params(self):
        return (self.a, self.b, self.c)

    def phi(self, x):
        return self.a * special.erf(self.b * x) + self.c

    def dphi(self, x):
        return self.a * self.b * 2.0 / math.sqrt(math.pi) * np.exp(-((self.b * x) ** 2))


@dataclass(frozen=True)
class Gelu(Activation):
    """Exact GELU: phi(x) = x * Phi(x), Phi the standard normal CDF."""

    name: str = field(default="gelu", compare=False)
    code = GELU

    @property
    def params(self):
        return (0.0, 0.0, 0.0)

    def phi(self, x):
        return x * special.ndtr(x)

    def dphi(self, x):
        return special.ndtr(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


@dataclass(frozen=True)
class Sin(Activation):
    """phi(x) = a * sin(b * x + c)."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    name: str = field(default="sin", compare=False)
    code = SIN

    def __post_init__(self):
        for k in "abc":
            object.__setattr__(self, k, _real(getattr(self, k), k))

    @property
    def params(self):
        return (self.a, self.b, self.c)

    def phi(self, x):
        return self.a * np.sin(self.b * x + self.c)

    def dphi(self, x):
        return self.a * self.b * np.cos(self.b * x + self.c)


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Sin:
    """a * cos(b * x + c), written as a * sin(b * x + c + pi/2)."""
    return Sin(a, b, _real(c, "c") + math.pi / 2, name="cos")


def Rbf(gamma: float = 1.0) -> Sin:
    """The activation whose NNGP is exp(-gamma * (Sxx + Syy - 2 Sxy)): sqrt(2) sin(sqrt(2 gamma) x + pi/4)."""
    gamma = _real(gamma, "gamma")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return Sin(math.sqrt(2.0), math.sqrt(2.0 * gamma), math.pi / 4, name="rbf")


@dataclass(frozen=True)
class Sign(Activation):
    """phi(x) = sign(x).  Its derivative is zero almost everywhere, so layers below add no NTK."""

    name: str = field(default="sign", compare=False)
    code = SIGN

    @property
    def params(self):
        return (0.0, 0.0, 0.0)

    def phi(self, x):
        return np.sign(x)

    def dphi(self, x):
        return np.zeros_like(x, dtype=np.result_type(x, float))


@dataclass(frozen=True)
class Exp(Activation):
    """phi(x) = a * exp(b * x)."""

    a: float = 1.0
    b: float = 1.0
    name: str = field(default="exp", compare=False)
    code = EXP

    def __post_init__(self):
        object.__setattr__(self, "a", _real(self.a, "a"))
        object.__setattr__(self, "b", _real(self.b, "b"))

    @property
    def params(self):
        return (self.a, self.b, 0.0)

    def phi(self, x):
        return self.a * np.exp(self.b * x)

    def dphi(self, x):
        return self.a * self.b * np.exp(self.b * x)


@dataclass(frozen=True)
class Gaussian(Activation):
    """phi(x) = a * exp(b * x**2).  For b > 0 the kernel is finite only while 4 b Sxx < 1."""

    a: float = 1.0
    b: float = -1.0
    name: str = field(default="gaussian", compare=False)
    code = GAUSSIAN

    def __post_init__(self):
        object.__setattr__(self, "a", _real(self.a, "a"))
        object.__setattr__(self, "b", _real(self.b, "b"))

    @property
    def params(self):
        return (self.a, self.b, 0.0)

    def phi(self, x):
        return self.a * np.exp(self.b * x * x)

    def dphi(self, x):
        return 2.0 * self.a * self.b * x * np.exp(self.b * x * x)


@dataclass(frozen=True)
class RectifiedMonomial(Activation):
    """phi(x) = max(x, 0)**n: the arc-cosine kernel of order n (Cho & Saul 2009), n = 0..5."""

    n: int = 1
    name: str = field(default="rectified_monomial", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "n", _degree(self.n, "n", MAX_RECTIFIED_DEGREE))

    @property
    def code(self):
        return RECTIFIED_MONOMIAL + self.n

    @property
    def params(self):
        return (0.0, 0.0, 0.0)

    def phi(self, x):
        return np.where(x > 0, np.maximum(x, 0) ** self.n, 0.0)

    def dphi(self, x):
        if self.n == 0:
            return np.zeros_like(x, dtype=np.result_type(x, float))
        return np.where(x > 0, self.n * np.maximum(x, 0) ** (self.n - 1), 0.0)


@dataclass(frozen=True)
class Monomial(Activation):
    """phi(x) = x**n, n = 0..8."""

    n: int = 1
    name: str = field(default="monomial", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "n", _degree(self.n, "n", MAX_MONOMIAL_DEGREE))

    @property
    def code(self):
        return MONOMIAL + self.n

    @property
    def params(self):
        return (0.0, 0.0, 0.0)

    def phi(self, x):
        return x**self.n if self.n else np.ones_like(x)

    def dphi(self, x):
        return self.n * x ** (self.n - 1) if self.n else np.zeros_like(x)


def Identity() -> Monomial:
    """phi(x) = x (a linear network)."""
    return Monomial(1, name="identity")


# ------------------------------------------------------------------- series (no closed form)
class SeriesActivation(Activation):
    """An activation whose dual kernel is a Hermite series with per-row coefficients.

    The kernels see the code :data:`SERIES` and read coefficients computed by
    :mod:`ntkfast.series` (one-dimensional quadrature of ``phi`` and ``dphi`` per row and
    layer) instead of scalar parameters.  ``smooth`` says whether ``phi`` is infinitely
    differentiable (then the series converges geometrically and reaches float64 accuracy); the
    non-smooth ones (ELU with alpha != 1, SELU) are computed to the degree cap and warn with the
    bound reached.
    """

    code = SERIES
    smooth = True

    @property
    def params(self):
        return (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Tanh(SeriesActivation):
    """phi(x) = tanh(x)."""

    name: str = field(default="tanh", compare=False)

    def phi(self, x):
        return np.tanh(x)

    def dphi(self, x):
        t = np.tanh(x)
        return 1.0 - t * t


@dataclass(frozen=True)
class Sigmoid(SeriesActivation):
    """The logistic function phi(x) = 1 / (1 + exp(-x))."""

    name: str = field(default="sigmoid", compare=False)

    def phi(self, x):
        return special.expit(x)

    def dphi(self, x):
        p = special.expit(x)
        return p * special.expit(-x)


@dataclass(frozen=True)
class Softplus(SeriesActivation):
    """phi(x) = log(1 + exp(beta x)) / beta."""

    beta: float = 1.0
    name: str = field(default="softplus", compare=False)

    def __post_init__(self):
        beta = _real(self.beta, "beta")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        object.__setattr__(self, "beta", beta)

    def phi(self, x):
        return np.logaddexp(0.0, self.beta * x) / self.beta

    def dphi(self, x):
        return special.expit(self.beta * x)


@dataclass(frozen=True)
class SiLU(SeriesActivation):
    """phi(x) = x sigmoid(beta x) (SiLU for beta = 1; swish in general)."""

    beta: float = 1.0
    name: str = field(default="silu", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "beta", _real(self.beta, "beta"))

    def phi(self, x):
        return x * special.expit(self.beta * x)

    def dphi(self, x):
        p = special.expit(self.beta * x)
        return p + self.beta * x * p * special.expit(-self.beta * x)


def Swish(beta: float = 1.0) -> SiLU:
    """x sigmoid(beta x)."""
    return SiLU(beta, name="swish")


@dataclass(frozen=True)
class ELU(SeriesActivation):
    """phi(x) = x for x > 0, alpha (exp(x) - 1) for x <= 0, times ``scale`` (SELU's lambda).

    phi' jumps at 0 unless alpha = 1 (then phi'' does): the Hermite series converges like a power
    of the degree near rho = +-1, so the CPU kernel takes the pairs beyond the series' reach in
    closed form (``bivariate.elu_dual``: bivariate normal orthant terms), for pre-activation
    variances in ``series.ELU_EXACT_VARIANCES``; outside that range, and on the GPU, the series
    runs to its degree cap and warns with the bound reached.
    """

    alpha: float = 1.0
    scale: float = 1.0
    name: str = field(default="elu", compare=False)
    smooth = False
    exact_dual = "elu"  # series.exact_params: the closed form of bivariate.elu_dual applies

    def __post_init__(self):
        object.__setattr__(self, "alpha", _real(self.alpha, "alpha"))
        object.__setattr__(self, "scale", _real(self.scale, "scale"))

    def phi(self, x):
        return self.scale * np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0.0)))

    def dphi(self, x):
        return self.scale * np.where(x > 0, 1.0, self.alpha * np.exp(np.minimum(x, 0.0)))


# SELU's constants (Klambauer et al. 2017), to float64 precision
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def SELU() -> ELU:
    """scale * ELU(alpha) with the self-normalising constants."""
    return ELU(SELU_ALPHA, SELU_SCALE, name="selu")


@dataclass(frozen=True)
class Mish(SeriesActivation):
    """phi(x) = x tanh(softplus(x))."""

    name: str = field(default="mish", compare=False)

    def phi(self, x):
        return x * np.tanh(np.logaddexp(0.0, x))

    def dphi(self, x):
        t = np.tanh(np.logaddexp(0.0, x))
        return t + x * (1.0 - t * t) * special.expit(x)


_GELU_TANH_C = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class GeluTanh(SeriesActivation):
    """The tanh approximation of GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    name: str = field(default="gelu_tanh", compare=False)

    def phi(self, x):
        x = np.asarray(x)
        xc = np.clip(x, -1e30, 1e30)  # x^3 stays finite; tanh has saturated long before
        return 0.5 * x * (1.0 + np.tanh(_GELU_TANH_C * (xc + 0.044715 * (xc * xc * xc))))

    def dphi(self, x):
        x = np.clip(np.asarray(x), -1e30, 1e30)
        x2 = x * x  # at most 1e60: finite
        t = np.tanh(_GELU_TANH_C * x * (1.0 + 0.044715 * x2))
        sech2 = 1.0 - t * t  # exactly 0 once tanh saturates, so the product below stays finite
        return 0.5 * (1.0 + t) + 0.5 * x * sech2 * (_GELU_TANH_C * (1.0 + 3 * 0.044715 * x2))


def _complex_step(phi):
    """phi'(x) = Im phi(x + i h) / h with h = 1e-20: exact to rounding for a phi written with
    NumPy's analytic complex functions."""

    def dphi(x):
        x = np.asarray(x, dtype=np.float64)
        return np.imag(phi(x + 1e-20j)) / 1e-20

    return dphi


def _central_difference(phi):
    """The five-point central difference with h = eps^(1/5) max(1, |x|): truncation and rounding
    errors balance at ~1e-12 relative for a smooth phi (it is wrong within 2h of a kink)."""

    def dphi(x):
        x = np.asarray(x, dtype=np.float64)
        h = 7.4e-4 * np.maximum(1.0, np.abs(x))
        return (phi(x - 2 * h) - 8.0 * phi(x - h) + 8.0 * phi(x + h) - phi(x + 2 * h)) / (12.0 * h)

    return dphi


@dataclass(frozen=True, eq=False)
class Elementwise(SeriesActivation):
    """A user's activation: ``phi`` (and optionally ``dphi``) vectorised NumPy functions of one array.

    ``phi`` is called on whole ``(rows, nodes)`` arrays, one call per layer (never per kernel
    entry).  Without ``dphi`` the derivative is the complex step ``Im phi(x + ih)/h`` when ``phi``
    accepts complex input and that agrees with a central difference at probe points (exact to
    rounding), else the five-point central difference (~1e-12 relative for a smooth ``phi``);
    ``dphi_method`` says which.  The series assumes ``phi`` smooth except possibly at 0; its
    truncation bound (and the warning when the degree cap binds) comes from the computed
    coefficients, so a non-smooth ``phi`` is reported, not hidden.
    """

    fn: object = None
    dfn: object = None
    name: str = "elementwise"
    dphi_method: str = field(default="", compare=False)

    def __init__(self, phi, dphi=None, name=None):
        if not callable(phi):
            raise TypeError(f"phi must be a callable, got {type(phi).__name__}")
        if dphi is not None and not callable(dphi):
            raise TypeError(f"dphi must be a callable or None, got {type(dphi).__name__}")
        if name is None:
            name = getattr(phi, "__name__", "elementwise")
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {type(name).__name__}")
        method = "given"
        if dphi is None:
            dphi, method = _numerical_derivative(phi)
        object.__setattr__(self, "fn", phi)
        object.__setattr__(self, "dfn", dphi)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dphi_method", method)

    def __eq__(self, other):
        return isinstance(other, Elementwise) and self.fn is other.fn and self.dfn is other.dfn

    def __hash__(self):
        return hash((id(self.fn), id(self.dfn)))

    def __repr__(self):
        return f"Elementwise({self.name}, dphi={self.dphi_method})"

    def phi(self, x):
        return self.fn(x)

    def dphi(self, x):
        return self.dfn(x)


def _numerical_derivative(phi):
    probe = np.array([-2.3, -0.7, -0.1, 0.13, 0.9, 3.1])
    central = _central_difference(phi)
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(phi(probe + 1e-20j))
        ok = np.iscomplexobj(out) and out.shape == probe.shape
        if ok:
            cs = np.imag(out) / 1e-20
            ref = np.asarray(central(probe), dtype=np.float64)
            ok = bool(np.all(np.isfinite(cs)) and np.allclose(cs, ref, rtol=1e-6, atol=1e-9))
    except Exception:  # any failure on complex input: phi is not complex-step capable
        ok = False
    if ok:
        return _complex_step(phi), "complex-step"
    return central, "central-difference"


ACTIVATIONS = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "abs": Abs,
    "ab_relu": ABReLU,
    "erf": Erf,
    "gelu": Gelu,
    "sin": Sin,
    "cos": Cos,
    "rbf": Rbf,
    "sign": Sign,
    "exp": Exp,
    "gaussian": Gaussian,
    "rectified_monomial": RectifiedMonomial,
    "monomial": Monomial,
    "identity": Identity,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "softplus": Softplus,
    "silu": SiLU,
    "swish": Swish,
    "elu": ELU,
    "selu": SELU,
    "mish": Mish,
    "gelu_tanh": GeluTanh,
}


def get_activation(activation: str | Activation) -> Activation:
    """An :class:`Activation` from a name in ``ACTIVATIONS`` or an activation object."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.lower().replace("-", "_")
        if key not in ACTIVATIONS:
            raise ArgumentError(
                f"activation: unknown name {activation!r}; expected one of {sorted(ACTIVATIONS)}"
            )
        return ACTIVATIONS[key]()
    raise ArgumentTypeError(
        f"activation must be a name or an ntkfast activation object, got {type(activation).__name__}"
    )


# ----------------------------------------------------------------------------------- input maps
class InputMap:
    """A fixed (untrained) first layer applied to the inputs before the first Dense layer.

    Fourier maps send x (d,) to gamma(x) = [sin(2 pi B x), cos(2 pi B x)] (2m,), so that
    ``<gamma(x), gamma(y)> = sum_k cos(2 pi b_k . (x - y))``, a stationary input kernel
    (Tancik et al. 2020).  Subclasses say how B (m, d) is obtained.
    """

    def matrix(self, d: int) -> np.ndarray:
        raise NotImplementedError

    def out_dim(self, d: int) -> int:
        return 2 * self.matrix(d).shape[0]

    def apply(self, X: np.ndarray) -> np.ndarray:
        n, m = X.shape[0], self.out_dim(X.shape[1]) // 2
        check_fits(
            3 * n * m * X.dtype.itemsize,
            f"Fourier features of {n} rows ({2 * m} features, {X.dtype})",
            "Use fewer features (n_features) or fewer rows per call.",
        )
        B = self.matrix(X.shape[1]).astype(X.dtype, copy=False)
        proj = X @ (2.0 * np.pi * B.T).astype(X.dtype, copy=False)
        return np.concatenate([np.sin(proj), np.cos(proj)], axis=1)


def _check_real(value, name: str) -> float:
    """A finite real number, with ArgumentTypeError/ArgumentError naming ``name``
    (``_validation.check_real`` cannot be imported here: it imports this module)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name}: expected a real number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # a Python int beyond float's range, e.g. 10**400
        raise ArgumentError(f"{name}: {value!r} is beyond the float64 range") from None
    if not math.isfinite(value):
        raise ArgumentError(f"{name}: expected a finite number, got {value}")
    return value


def _check_int(value, name: str, minimum: int, maximum: int, why: str = "") -> int:
    """An integer in minimum..maximum (not a bool), with a message naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ArgumentError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ArgumentError(f"{name}: {value} is above the largest supported value, {maximum}{why}")
    return int(value)


@dataclass(frozen=True, eq=False)
class FourierFeatures(InputMap):
    """Deterministic positional encoding with a given frequency matrix ``B`` of shape (m, d)."""

    B: np.ndarray

    def __post_init__(self):
        try:
            B = np.array(self.B, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"B: expected a 2-D numeric array (m, d) ({exc})") from None
        if B.ndim != 2 or B.size == 0:
            raise ArgumentError(f"B must be a non-empty 2-D array (m, d), got shape {B.shape}")
        if not np.all(np.isfinite(B)):
            raise ArgumentError("B must be finite")
        B.setflags(write=False)
        object.__setattr__(self, "B", B)

    def __eq__(self, other):
        return isinstance(other, FourierFeatures) and np.array_equal(self.B, other.B)

    def __hash__(self):
        return hash((self.B.shape, self.B.tobytes()))

    def __repr__(self):
        return f"FourierFeatures(B=<{self.B.shape[0]}x{self.B.shape[1]} array>)"

    def matrix(self, d: int) -> np.ndarray:
        if self.B.shape[1] != d:
            raise ArgumentError(f"X has {d} features but FourierFeatures.B expects {self.B.shape[1]}")
        return self.B


@dataclass(frozen=True)
class RandomFourierFeatures(InputMap):
    """Fourier features with B ~ N(0, scale**2) of shape (n_features, d), drawn from ``seed``.

    ``seed`` must be an integer >= 0 (B is drawn again at every use, so it must be the same
    each time; a Generator would give different features for X and Y).  B is budget-checked
    (``n_features * d`` float64) before it is drawn.
    """

    n_features: int = 256
    scale: float = 1.0
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "n_features", _check_int(self.n_features, "n_features", 1, config.MAX_WIDTH))
        scale = _check_real(self.scale, "scale")
        if scale <= 0:
            raise ArgumentError(f"scale must be > 0, got {self.scale}")
        object.__setattr__(self, "scale", scale)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ArgumentTypeError(
                f"seed: expected an integer >= 0 (B is drawn again at each use and must be the same each time), "
                f"got {self.seed!r}"
            )
        if self.seed < 0:
            raise ArgumentError(f"seed: expected an integer >= 0, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))

    def out_dim(self, d: int) -> int:
        return 2 * self.n_features  # without drawing B

    def matrix(self, d: int) -> np.ndarray:
        check_fits(
            8 * self.n_features * d,
            f"the RandomFourierFeatures matrix B of shape ({self.n_features}, {d}) (float64)",
            "Use fewer n_features.",
        )
        rng = np.random.default_rng(self.seed)
        B = rng.standard_normal((self.n_features, d))
        B *= self.scale
        return B


# ----------------------------------------------------------------------------------------- MLP
@dataclass(frozen=True)
class MLP:
    """A fully-connected network, the unit every kernel is computed for.

    ``depth`` times (Dense, activation) then a readout Dense, all with the same ``W_std`` and
    ``b_std`` (neural-tangents' ``stax`` conventions).  With ``residual=True``: ``h = Dense(x)``,
    then ``depth`` blocks ``h <- h + Dense(phi(h))``, then ``Dense(phi(h))`` as readout.

    Parameters
    ----------
    depth : int, default=1
        Number of hidden (Dense, activation) pairs (residual blocks when ``residual=True``).
    activation : str or Activation, default="relu"
    W_std : float, default=1.0
    b_std : float or None, default=0.0
        ``None`` means no bias parameters.
    parameterization : {"ntk", "standard"}, default="ntk"
    width : int or tuple of int, default=512
        Hidden width(s): used by the standard parameterization's NTK and by finite networks.
    residual : bool, default=False
    input_map : InputMap or None, default=None
        A fixed first layer, e.g. :class:`FourierFeatures`.

    Examples
    --------
    >>> import ntkfast as nf
    >>> arch = nf.MLP(depth=3, activation="relu", W_std=1.5, b_std=0.05)
    >>> arch.n_steps
    3
    """

    depth: int = 1
    activation: str | Activation = "relu"
    W_std: float = 1.0
    b_std: float | None = 0.0
    parameterization: str = "ntk"
    width: int | tuple[int, ...] = 512
    residual: bool = False
    input_map: InputMap | None = None

    def __post_init__(self):
        why = " (each kernel entry costs O(depth); see ntkfast.config.MAX_DEPTH)"
        object.__setattr__(self, "depth", _check_int(self.depth, "depth", 0, config.MAX_DEPTH, why))
        object.__setattr__(self, "activation", get_activation(self.activation))
        W_std = _check_real(self.W_std, "W_std")
        if W_std < 0:
            raise ArgumentError(f"W_std must be >= 0, got {W_std}")
        object.__setattr__(self, "W_std", W_std)
        if self.b_std is not None:
            b_std = _check_real(self.b_std, "b_std")
            if b_std < 0:
                raise ArgumentError(f"b_std must be >= 0 or None, got {b_std}")
            object.__setattr__(self, "b_std", b_std)
        if not isinstance(self.parameterization, str) or self.parameterization not in ("ntk", "standard"):
            raise ArgumentError(f"parameterization must be 'ntk' or 'standard', got {self.parameterization!r}")
        if not isinstance(self.residual, (bool, np.bool_)):
            raise ArgumentTypeError(f"residual must be a bool, got {self.residual!r}")
        object.__setattr__(self, "residual", bool(self.residual))
        if self.input_map is not None and not isinstance(self.input_map, InputMap):
            raise ArgumentTypeError("input_map must be an ntkfast InputMap (e.g. FourierFeatures) or None")
        object.__setattr__(self, "width", self._check_width(self.width))

    @classmethod
    def from_params(cls, source) -> MLP:
        """The one way a front end builds its network: from an object whose attributes (or a
        mapping whose keys) are named like this class's fields.

        The estimators, the GP kernels and the CLI (its parsed arguments) all call this, so an
        option they expose always reaches the network; fields ``source`` does not have keep
        their defaults.

        Examples
        --------
        >>> import ntkfast as nf
        >>> nf.MLP.from_params({"depth": 2, "residual": True, "width": 7, "unrelated": 1})
        MLP(depth=2, activation=ABReLU(a=0.0, b=1.0, name='relu'), W_std=1.0, b_std=0.0, parameterization='ntk', \
width=7, residual=True, input_map=None)
        """
        if isinstance(source, Mapping):
            values = {f.name: source[f.name] for f in fields(cls) if f.name in source}
        else:
            values = {f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)}
        return cls(**values)

    def _check_width(self, width):
        def is_int(w):
            return isinstance(w, numbers.Integral) and not isinstance(w, bool)

        if is_int(width):
            widths = (int(width),)
        elif isinstance(width, (tuple, list)) and all(is_int(w) for w in width):
            widths = tuple(int(w) for w in width)
            if len(widths) not in (1, max(self.depth, 1)):
                raise ArgumentError(f"width: expected an int or {self.depth} hidden widths, got {len(widths)}")
            if self.residual and len(set(widths)) > 1:
                raise ArgumentError("width: residual blocks need one common width")
        else:
            raise ArgumentTypeError(f"width must be an int or a tuple of ints, got {width!r}")
        if any(w < 1 for w in widths):
            raise ArgumentError(f"width must be >= 1, got {width}")
        if any(w > config.MAX_WIDTH for w in widths):
            raise ArgumentError(
                f"width: {max(widths)} is above the largest supported width, 2**53 (the standard "
                "parameterization uses it as a float64 coefficient)"
            )
        return widths[0] if len(widths) == 1 else widths

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        """Width of each hidden layer (the fan-in of the Dense layer that follows it)."""
        n = self.depth + 1 if self.residual else self.depth
        if isinstance(self.width, int):
            return (self.width,) * n
        return self.width if not self.residual else (self.width[0],) * n

    @property
    def n_steps(self) -> int:
        """Number of (activation, Dense) steps after the first Dense layer."""
        return self.depth + 1 if self.residual else self.depth

    def layer_coefficients(self, d_in: int) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients of the affine steps of the recursion (see ``ntkfast.recursion``).

        Returns ``first`` = [w, b, alpha, beta] with Sigma_1 = w <x,y> + b, Theta_1 = alpha <x,y> + beta,
        and ``steps`` (n_steps, 5) rows [res, W_std**2, b_std**2, alpha, beta] for
        Sigma <- res*Sigma + W^2 K + b^2, Theta <- res*Theta + alpha K + beta + W^2 Kdot Theta.
        """
        w2 = self.W_std**2
        b2 = 0.0 if self.b_std is None else self.b_std**2
        if self.parameterization == "ntk":
            first = np.array([w2 / d_in, b2, w2 / d_in, b2])
            alphas = [w2] * self.n_steps
            beta = b2
        else:
            beta = 0.0 if self.b_std is None else 1.0
            first = np.array([w2 / d_in, b2, 1.0, beta])
            alphas = [float(w) for w in self.hidden_widths]
        steps = np.zeros((self.n_steps, 5))
        for k in range(self.n_steps):
            res = 1.0 if (self.residual and k < self.depth) else 0.0
            steps[k] = (res, w2, b2, alphas[k], beta)
        return first, steps

    def layer_coefficient_gradients(self, d_in: int) -> tuple[np.ndarray, np.ndarray]:
        """Derivatives of :meth:`layer_coefficients` in (log W_std, log b_std).

        Returns ``dfirst`` (2, 4) and ``dsteps`` (2, n_steps, 5).  Every coefficient is
        const, W_std^2 * const or b_std^2, so d/dlog W_std doubles the W_std^2 terms and
        d/dlog b_std doubles the b_std^2 ones.
        """
        w2 = self.W_std**2
        b2 = 0.0 if self.b_std is None else self.b_std**2
        ntk = 1.0 if self.parameterization == "ntk" else 0.0
        dfirst = np.array([[2 * w2 / d_in, 0.0, ntk * 2 * w2 / d_in, 0.0], [0.0, 2 * b2, 0.0, ntk * 2 * b2]])
        dsteps = np.zeros((2, self.n_steps, 5))
        dsteps[0, :, 1] = 2 * w2
        dsteps[0, :, 3] = ntk * 2 * w2
        dsteps[1, :, 2] = 2 * b2
        dsteps[1, :, 4] = ntk * 2 * b2
        return dfirst, dsteps
