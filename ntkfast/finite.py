"""Finite-width networks in NumPy: forward pass, analytic per-example Jacobians, the empirical
NTK layer by layer, and full-batch gradient descent.

Conventions (docs/design.md section 2).  A Dense layer with fan-in N maps ``a`` to
``a @ (w_scale * W) + b_scale * b``: NTK parameterization ``w_scale = W_std / sqrt(N)``,
``b_scale = b_std``, ``W, b ~ N(0, 1)``; standard parameterization ``w_scale = b_scale = 1``,
``W ~ N(0, W_std^2 / N)``, ``b ~ N(0, b_std^2)``.  ``b_std=None``: no bias parameters.

Flat parameter order (``jacobian``'s last axis): Dense layers in forward order; within a layer
``W`` row-major (fan_in, fan_out), then ``b`` (fan_out,) when the network has biases.

The empirical NTK never forms the Jacobian: for a Dense layer with inputs ``A`` (n, N) and
back-propagated output gradients ``D`` (n, k, out), its contribution is
``w_scale^2 (A A^T) * <D_x, D_y>`` plus ``b_scale^2 <D_x, D_y>`` for the bias.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ._validation import check_arch, check_array, check_backend, check_positive_float, check_positive_int
from .spec import MLP
from .tiling import check_fits, memory_budget

__all__ = ["FiniteMLP", "TrainingDivergedError", "TrainResult", "monte_carlo_kernel"]


class TrainingDivergedError(FloatingPointError):
    """Gradient descent blew up: the learning rate exceeds the stable bound 2N / lambda_max."""


@dataclass
class TrainResult:
    """What :meth:`FiniteMLP.train` returns: the loss before each step and after the last."""

    net: FiniteMLP
    loss: np.ndarray  # (steps + 1,)


@dataclass(frozen=True)
class _Dense:
    fan_in: int
    fan_out: int
    w_scale: float
    b_scale: float  # 0 when there is no bias


class FiniteMLP:
    """A finite network of the architecture ``arch`` (an :class:`ntkfast.MLP`).

    Parameters
    ----------
    arch : MLP
        Hidden widths come from ``arch.width`` (an int, or one per hidden layer).
    out_dim : int, default=1
    seed : int, default=0
        Parameters are drawn with ``numpy.random.default_rng(seed)`` when the input dimension is
        known: from ``in_dim``, or at the first call with data.
    in_dim : int, default=None
        Input dimension (before the input map).

    Examples
    --------
    >>> import numpy as np, ntkfast as nf
    >>> net = nf.FiniteMLP(nf.MLP(depth=2, width=64), out_dim=3, in_dim=5)
    >>> X = np.ones((4, 5))
    >>> net.apply(X).shape, net.jacobian(X).shape, net.empirical_ntk(X).shape
    ((4, 3), (4, 3, 4739), (4, 4))
    """

    def __init__(self, arch: MLP, out_dim: int = 1, seed: int = 0, in_dim: int | None = None):
        self.arch = check_arch(arch)
        self.out_dim = check_positive_int(out_dim, "out_dim", allow_none=False)
        self.seed = seed
        self._params: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._in_dim = None
        if in_dim is not None:
            self._init_params(check_positive_int(in_dim, "in_dim", allow_none=False))

    # ------------------------------------------------------------------------------ structure
    def _feature_dim(self, in_dim: int) -> int:
        """Fan-in of the first Dense layer: the input map's output size, or the input size."""
        return self.arch.input_map.out_dim(in_dim) if self.arch.input_map is not None else in_dim

    def _layers(self, d0: int) -> list[_Dense]:
        """The Dense layers for a first-layer fan-in ``d0``."""
        arch = self.arch
        widths = list(arch.hidden_widths)
        if arch.residual:
            sizes = [d0] + [widths[0]] * (arch.depth + 1) + [self.out_dim]
        else:
            sizes = [d0] + widths + [self.out_dim]
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            if arch.parameterization == "ntk":
                w_scale, b_scale = arch.W_std / math.sqrt(n_in), (arch.b_std or 0.0)
            else:
                w_scale, b_scale = 1.0, (0.0 if arch.b_std is None else 1.0)
            layers.append(_Dense(n_in, n_out, w_scale, b_scale))
        return layers

    @property
    def has_bias(self) -> bool:
        return self.arch.b_std is not None

    def _init_params(self, in_dim: int) -> None:
        rng = np.random.default_rng(self.seed)
        params = []
        standard = self.arch.parameterization == "standard"
        for layer in self._layers(self._feature_dim(in_dim)):
            w_std = self.arch.W_std / math.sqrt(layer.fan_in) if standard else 1.0
            W = w_std * rng.standard_normal((layer.fan_in, layer.fan_out))
            b = None
            if self.has_bias:
                b = (self.arch.b_std if standard else 1.0) * rng.standard_normal(layer.fan_out)
            params.append((W, b))
        self._params, self._in_dim = params, in_dim

    @classmethod
    def from_params(cls, arch: MLP, params) -> FiniteMLP:
        """A network with the given parameters: a list of (W, b), W of shape (fan_in, fan_out),
        b of shape (fan_out,) or (1, fan_out) (None when ``arch.b_std`` is None)."""
        arch = check_arch(arch)
        if not isinstance(params, (list, tuple)) or not params:
            raise TypeError("params: expected a non-empty list of (W, b) pairs")
        has_bias = arch.b_std is not None
        pairs = []
        for i, pair in enumerate(params):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise TypeError(f"params[{i}]: expected a (W, b) pair")
            W = np.array(pair[0], dtype=np.float64)
            b = None if pair[1] is None else np.array(pair[1], dtype=np.float64).reshape(-1)
            if W.ndim != 2 or not np.isfinite(W).all():
                raise ValueError(f"params[{i}]: W must be a finite 2-D array, got shape {W.shape}")
            if (b is not None) != has_bias:
                raise ValueError(f"params[{i}]: b must be {'given' if has_bias else 'None'} for b_std={arch.b_std}")
            if b is not None and (b.shape != (W.shape[1],) or not np.isfinite(b).all()):
                raise ValueError(f"params[{i}]: b must be finite with shape ({W.shape[1]},), got {b.shape}")
            pairs.append((W, b))
        net = cls(arch, out_dim=pairs[-1][0].shape[1])
        # with an input map the first fan-in is the map's output size; the input size is
        # then learnt (and checked) at the first call
        in_dim = None if arch.input_map is not None else pairs[0][0].shape[0]
        expected = [(layer.fan_in, layer.fan_out) for layer in net._layers(pairs[0][0].shape[0])]
        got = [W.shape for W, _ in pairs]
        if got != expected:
            raise ValueError(f"params: expected W shapes {expected} for this architecture, got {got}")
        net._params, net._in_dim = pairs, in_dim
        return net

    @property
    def params(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """List of (W, b) per Dense layer (b is None without biases)."""
        if self._params is None:
            raise AttributeError("params are drawn once the input dimension is known: pass in_dim= or call apply(X)")
        return self._params

    @property
    def n_params(self) -> int:
        return sum(W.size + (0 if b is None else b.size) for W, b in self.params)

    def _check_X(self, X, name="X") -> np.ndarray:
        X = check_array(X, name, np.dtype(np.float64))
        if self._params is None:
            self._init_params(X.shape[1])
        elif self._in_dim is not None and X.shape[1] != self._in_dim:
            raise ValueError(f"{name}: has {X.shape[1]} features, the network expects {self._in_dim}")
        elif self._in_dim is None:  # from_params with an input map: check through the first layer
            d0 = self.arch.input_map.out_dim(X.shape[1])
            if d0 != self._params[0][0].shape[0]:
                raise ValueError(
                    f"{name}: the input map gives {d0} features, the first layer expects {self._params[0][0].shape[0]}"
                )
            self._in_dim = X.shape[1]
        return X

    def _scales(self) -> list[_Dense]:
        return self._layers(self.params[0][0].shape[0])

    # --------------------------------------------------------------------------- forward pass
    def _forward(self, X: np.ndarray):
        """Outputs and, per Dense layer, its input activations and the pre-activations."""
        phi = self.arch.activation.phi
        h = X if self.arch.input_map is None else self.arch.input_map.apply(X)
        inputs, pre = [], []  # inputs[l]: input of Dense l; pre[l]: argument of phi feeding Dense l
        layers = self._scales()
        for idx, ((W, b), layer) in enumerate(zip(self.params, layers)):
            if idx == 0:
                a, z = h, None
            else:
                z = h
                a = phi(z)
            inputs.append(a)
            pre.append(z)
            out = a @ W
            out *= layer.w_scale  # scaling the (n, out) product, not a copy of W
            if b is not None:
                out += layer.b_scale * b
            residual_block = self.arch.residual and 0 < idx < len(layers) - 1
            h = h + out if residual_block else out
        return h, inputs, pre

    def apply(self, X) -> np.ndarray:
        """Network outputs f(X), shape (n, out_dim)."""
        X = self._check_X(X)
        return self._forward(X)[0]

    # -------------------------------------------------------------------------- backward pass
    def _backward(self, inputs, pre, seed_grad):
        """Gradients w.r.t. each Dense layer's output, for output seeds ``seed_grad`` (n, k, out).

        Returns ``deltas[l]`` of shape (n, k, fan_out_l): d f_k / d (output of Dense l).
        """
        dphi = self.arch.activation.dphi
        layers = self._scales()
        L = len(layers)
        deltas = [None] * L
        g = seed_grad  # gradient w.r.t. the current hidden state h
        for idx in range(L - 1, -1, -1):
            W = self.params[idx][0]
            layer = layers[idx]
            residual_block = self.arch.residual and 0 < idx < L - 1
            deltas[idx] = g
            if idx == 0:
                break
            through = (g @ W.T) * (layer.w_scale * dphi(pre[idx]))[:, None, :]
            g = g + through if residual_block else through
        return deltas

    def _features(self, X: np.ndarray):
        """Per layer: (scaled inputs w_scale * A, deltas D (n, k, out), b_scale)."""
        out, inputs, pre = self._forward(X)
        n = X.shape[0]
        seed = np.broadcast_to(np.eye(self.out_dim), (n, self.out_dim, self.out_dim))
        deltas = self._backward(inputs, pre, seed)
        return out, [(layer.w_scale * a, d, layer.b_scale) for layer, a, d in zip(self._scales(), inputs, deltas)]

    def jacobian(self, X) -> np.ndarray:
        """Per-example Jacobian d f(x) / d params, shape (n, out_dim, n_params), analytic."""
        X = self._check_X(X)
        n, k = X.shape[0], self.out_dim
        check_fits(
            n * k * self.n_params * 8,
            f"a Jacobian of shape ({n}, {k}, {self.n_params})",
            "Use empirical_ntk, which never forms it.",
        )
        _, feats = self._features(X)
        blocks = []
        for a, d, b_scale in feats:
            blocks.append(np.einsum("ip,ikq->ikpq", a, d).reshape(n, k, -1))
            if self.has_bias:
                blocks.append(b_scale * d)
        return np.concatenate(blocks, axis=2)

    # --------------------------------------------------------------------------- empirical NTK
    def empirical_ntk(
        self,
        X,
        Y=None,
        trace_outputs: bool = True,
        diagonal: bool = False,
        block_size: int | None = None,
        backend: str = "auto",
    ) -> np.ndarray:
        """The empirical NTK sum_p df(x)/dp df(y)/dp, layer by layer without the Jacobian.

        Parameters
        ----------
        X : array-like of shape (n, d)
        Y : array-like of shape (m, d), default=None (Y = X)
        trace_outputs : bool, default=True
            True: the mean of the k diagonal output blocks, shape (n, m) (neural-tangents'
            default ``trace_axes=(-1,)``); False: the full kernel, shape (n, m, k, k).
        diagonal : bool, default=False
            Only Theta(x_i, x_i): shape (n,) traced, (n, k, k) full.  ``Y`` must be None.
        block_size : int, default=None
            Rows per block (by default from the memory budget), so large n fit in memory.
        backend : {"auto", "cpu", "gpu"}, default="auto"
            "gpu" (or "auto" with CuPy inputs): the per-layer Gram products on the GPU
            (``ntkfast.backends.gpu.empirical_ntk``; not for ``diagonal``).
        """
        if check_backend(backend, X, Y) == "gpu" and not diagonal:
            from .backends import gpu

            return gpu.empirical_ntk(self, X, Y, trace_outputs, block_size)
        X = self._check_X(X)
        symmetric = Y is None
        Y = X if symmetric else self._check_X(Y, "Y")
        k = self.out_dim
        if diagonal:
            if not symmetric:
                raise ValueError("diagonal: only for Y=None")
            return self._ntk_diagonal(X, trace_outputs, block_size)
        n, m = X.shape[0], Y.shape[0]
        shape = (n, m) if trace_outputs else (n, m, k, k)
        check_fits(
            int(np.prod(shape)) * 8,
            f"an empirical NTK of shape {shape}",
            "Use diagonal=True, trace_outputs=True, or fewer rows.",
        )
        return self._fill_ntk(X, Y, symmetric, trace_outputs, block_size, np.zeros(shape))

    def _fill_ntk(self, X, Y, symmetric, trace_outputs, block_size, out, to_device=None):
        """Write the empirical NTK into ``out`` block by block (rows of X against rows of Y).

        ``to_device`` moves each block's per-layer features to where ``out`` lives (the GPU
        backend passes CuPy's); ``_ntk_block`` only uses ``@`` and elementwise arithmetic, so
        the same formula runs on either array type.
        """
        bs = block_size or self._block_size()

        def features(rows):
            f = self._features(rows)[1]
            return f if to_device is None else [(to_device(a), to_device(d), b) for a, d, b in f]

        y_blocks = dict((j0, features(Y[j0 : j0 + bs])) for j0 in range(0, Y.shape[0], bs))
        for i0 in range(0, X.shape[0], bs):
            fx = y_blocks[i0] if symmetric else features(X[i0 : i0 + bs])
            for j0, fy in y_blocks.items():
                out[i0 : i0 + bs, j0 : j0 + bs] = _ntk_block(fx, fy, trace_outputs, self.has_bias)
        return out

    def _block_size(self) -> int:
        widest = max(max(W.shape) for W, _ in self.params)
        per_row = 8 * (len(self.params) * widest * (1 + self.out_dim))
        return int(max(16, min(4096, memory_budget() // (8 * per_row))))

    def _ntk_diagonal(self, X, trace_outputs, block_size):
        n, k = X.shape[0], self.out_dim
        out = np.zeros(n) if trace_outputs else np.zeros((n, k, k))
        bs = block_size or self._block_size()
        for i0 in range(0, n, bs):
            feats = self._features(X[i0 : i0 + bs])[1]
            for a, d, b_scale in feats:
                sq = np.einsum("ip,ip->i", a, a)
                dd = np.einsum("ikq,ilq->ikl", d, d)
                if self.has_bias:
                    block = (sq + b_scale**2)[:, None, None] * dd
                else:
                    block = sq[:, None, None] * dd
                if trace_outputs:
                    out[i0 : i0 + bs] += np.trace(block, axis1=1, axis2=2) / k
                else:
                    out[i0 : i0 + bs] += block
        return out

    def empirical_nngp(self, X, Y=None) -> np.ndarray:
        """f(x) . f(y) / k, shape (n, m)."""
        fx = self.apply(X)
        fy = fx if Y is None else self.apply(Y)
        return fx @ fy.T / self.out_dim

    def _max_ntk_eigenvalue(self, X: np.ndarray) -> float:
        """lambda_max of the full (n k, n k) empirical NTK; for n k > 4000 that of the traced kernel
        (the full one is close to I_k (x) traced for a wide network)."""
        n, k = X.shape[0], self.out_dim
        if n * k <= 4000:
            full = self.empirical_ntk(X, trace_outputs=False).transpose(0, 2, 1, 3).reshape(n * k, n * k)
            return _top_eigenvalue(full)
        return _top_eigenvalue(self.empirical_ntk(X))

    # -------------------------------------------------------------------------------- training
    def train(self, X, y, lr: float, steps: int, *, max_loss_growth: float = 1e6) -> TrainResult:
        """Full-batch gradient descent on the MSE loss 1/(2N) ||f(X) - y||^2, N = n * out_dim.

        Returns a :class:`TrainResult` with a trained copy of the network and the loss history
        (``steps + 1`` values: before each step and after the last).  Raises
        :class:`TrainingDivergedError` with the largest stable rate 2N / lambda_max if the loss
        becomes non-finite or grows by ``max_loss_growth``.
        """
        X = self._check_X(X)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        if y.shape != (X.shape[0], self.out_dim):
            raise ValueError(f"y: expected shape ({X.shape[0]}, {self.out_dim}), got {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError("y: contains NaN or inf")
        lr = check_positive_float(lr, "lr")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
        net = FiniteMLP.from_params(self.arch, [(W.copy(), None if b is None else b.copy()) for W, b in self.params])
        net._in_dim = self._in_dim
        N = y.size
        losses = np.empty(steps + 1)
        layers = net._scales()
        for step in range(steps + 1):
            out, inputs, pre = net._forward(X)
            resid = out - y
            losses[step] = 0.5 * np.sum(resid * resid) / N
            if not np.isfinite(losses[step]) or losses[step] > max_loss_growth * max(losses[0], 1e-300):
                lam = self._max_ntk_eigenvalue(X)
                raise TrainingDivergedError(
                    f"gradient descent diverged at step {step} (loss {losses[step]:.3g}) with lr={lr}; "
                    f"the largest stable learning rate is 2N / lambda_max = {2 * N / lam:.4g}"
                )
            if step == steps:
                break
            deltas = net._backward(inputs, pre, (resid / N)[:, None, :])
            for (W, b), layer, a, d in zip(net.params, layers, inputs, deltas):  # in place: net owns copies
                d = d[:, 0, :]
                W -= a.T @ ((lr * layer.w_scale) * d)
                if b is not None:
                    b -= (lr * layer.b_scale) * d.sum(axis=0)
        return TrainResult(net, losses)


def _top_eigenvalue(theta: np.ndarray) -> float:
    import scipy.linalg

    n = len(theta)
    return float(scipy.linalg.eigh(theta, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0])


def _ntk_block(fx, fy, trace_outputs: bool, has_bias: bool) -> np.ndarray:
    """Sum over layers of (A_x A_y^T) * <D_x, D_y> (+ bias term) for one block pair."""
    total = None
    for (ax, dx, b_scale), (ay, dy, _) in zip(fx, fy):
        aa = ax @ ay.T
        if has_bias:
            aa = aa + b_scale**2
        n, k, q = dx.shape
        m = dy.shape[0]
        if trace_outputs:
            dd = dx.reshape(n, k * q) @ dy.reshape(m, k * q).T / k
            term = aa * dd
        else:
            dd = (dx.reshape(n * k, q) @ dy.reshape(m * k, q).T).reshape(n, k, m, k).transpose(0, 2, 1, 3)
            term = aa[:, :, None, None] * dd
        total = term if total is None else total + term
    return total


def monte_carlo_kernel(
    arch: MLP,
    X,
    Y=None,
    n_samples: int = 100,
    width: int | None = None,
    seed: int = 0,
    get: str = "nngp",
    out_dim: int = 16,
) -> np.ndarray:
    """Average empirical NNGP or NTK over ``n_samples`` random finite networks.

    A check of the analytic kernel anyone can run: it converges to ``ntkfast.kernel`` as
    ``width`` and ``n_samples`` grow.  Each network has ``out_dim`` independent readout units,
    which are averaged too (the traced kernel).
    """
    arch = check_arch(arch)
    if get not in ("nngp", "ntk"):
        raise ValueError(f"get: expected 'nngp' or 'ntk', got {get!r}")
    n_samples = check_positive_int(n_samples, "n_samples", allow_none=False)
    if width is not None:
        arch = MLP(
            arch.depth,
            arch.activation,
            arch.W_std,
            arch.b_std,
            arch.parameterization,
            check_positive_int(width, "width", allow_none=False),
            arch.residual,
            arch.input_map,
        )
    total = None
    for s in range(n_samples):
        net = FiniteMLP(arch, out_dim=out_dim, seed=seed + s)
        k = net.empirical_nngp(X, Y) if get == "nngp" else net.empirical_ntk(X, Y)
        total = k if total is None else total + k
    return total / n_samples
