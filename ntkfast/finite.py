"""Finite-width networks in NumPy: forward pass, analytic per-example Jacobians, the empirical
NTK layer by layer, and full-batch gradient descent.

Conventions (docs/design.md, "Math conventions").  A Dense layer with fan-in N maps ``a`` to
``a @ (w_scale * W) + b_scale * b``: NTK parameterization ``w_scale = W_std / sqrt(N)``,
``b_scale = b_std``, ``W, b ~ N(0, 1)``; standard parameterization ``w_scale = b_scale = 1``,
``W ~ N(0, W_std^2 / N)``, ``b ~ N(0, b_std^2)``.  ``b_std=None``: no bias parameters.

Flat parameter order (``jacobian``'s last axis): Dense layers in forward order; within a layer
``W`` row-major (fan_in, fan_out), then ``b`` (fan_out,) when the network has biases.

The empirical NTK never forms the Jacobian: for a Dense layer with inputs ``A`` (n, N) and
back-propagated output gradients ``D`` (n, k, out), its contribution is
``w_scale^2 (A A^T) * <D_x, D_y>`` plus ``b_scale^2 <D_x, D_y>`` for the bias.

Speed.  Every product is one 2-D GEMM per layer: the (n, k, width) gradients are multiplied as
an (n k, width) matrix (a 3-D ``@`` would run n small products that each stream all of W), and
gradient descent updates each W in place with one BLAS ``dgemm`` (``beta=1``), so no array the
size of W is allocated per step.  For the traced kernel two layers need no (n k)-row product at
all: the readout's gradients are the identity (``<D_x, D_y> = k``), and the last hidden layer's
are ``D[i, c, q] = w_scale W[q, c] phi'(z_iq)``, so ``sum_c <D_x[c], D_y[c]> = (phi'_x * s) phi'_y^T``
with ``s_q = w_scale^2 sum_c W[q, c]^2``: an (n, width) product instead of an (n, k width) one.
K(X, X) is computed on and above the block diagonal and mirrored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from . import config
from ._validation import (
    check_arch,
    check_array,
    check_backend,
    check_choice,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_seed,
    check_targets,
)
from .config import check_fits, format_bytes, memory_budget
from .errors import ArgumentError, ArgumentTypeError, InsufficientMemoryError
from .spec import MLP

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


def _as_array(X, name: str):
    """``X`` as an ndarray, with a clear error for what NumPy cannot read as one (ragged rows)."""
    if isinstance(X, np.ndarray) or hasattr(X, "toarray") or hasattr(X, "tocsr"):
        return X
    try:
        return np.asarray(X)
    except (ValueError, TypeError) as exc:
        raise ArgumentError(
            f"{name}: could not be read as a 2-D numeric array of shape (n_samples, n_features) "
            f"(rows of different lengths?): {exc}"
        ) from None


class FiniteMLP:
    """A finite network of the architecture ``arch`` (an :class:`ntkfast.MLP`).

    Parameters
    ----------
    arch : MLP
        Hidden widths come from ``arch.width`` (an int, or one per hidden layer).
    out_dim : int, default=1
    seed : int, numpy Generator or None, default=0
        Parameters are drawn with ``numpy.random.default_rng(seed)`` when the input dimension is
        known: from ``in_dim``, or at the first call with data.
    in_dim : int, default=None
        Input dimension (before the input map).

    Raises
    ------
    InsufficientMemoryError
        When the parameters (``n_params`` float64 values) do not fit in the memory budget
        (``ntkfast.config.memory_budget()``); raised before anything is drawn.

    Examples
    --------
    >>> import numpy as np, ntkfast as nf
    >>> net = nf.FiniteMLP(nf.MLP(depth=2, width=64), out_dim=3, in_dim=5)
    >>> X = np.ones((4, 5))
    >>> net.apply(X).shape, net.jacobian(X).shape, net.empirical_ntk(X).shape
    ((4, 3), (4, 3, 4739), (4, 4))
    """

    def __init__(self, arch: MLP, out_dim: int = 1, seed=0, in_dim: int | None = None):
        self.arch = check_arch(arch)
        self.out_dim = check_positive_int(out_dim, "out_dim", allow_none=False)
        check_seed(seed)
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
        layers = self._layers(self._feature_dim(in_dim))
        count = sum(layer.fan_in * layer.fan_out + (layer.fan_out if self.has_bias else 0) for layer in layers)
        shapes = ", ".join(f"{layer.fan_in}x{layer.fan_out}" for layer in layers[:4]) + (
            ", ..." if len(layers) > 4 else ""
        )
        check_fits(
            8 * count,
            f"a FiniteMLP with {count} parameters (W shapes {shapes}, float64)",
            "Use a smaller width, out_dim or input dimension, or the infinite-width kernel ntkfast.kernel.",
        )
        rng = check_seed(self.seed)
        params = []
        standard = self.arch.parameterization == "standard"
        for layer in layers:
            W = rng.standard_normal((layer.fan_in, layer.fan_out))
            if standard:
                W *= self.arch.W_std / math.sqrt(layer.fan_in)  # in place: no second W-sized array
            b = None
            if self.has_bias:
                b = rng.standard_normal(layer.fan_out)
                if standard:
                    b *= self.arch.b_std
            params.append((W, b))
        self._params, self._in_dim = params, in_dim

    @classmethod
    def from_params(cls, arch: MLP, params) -> FiniteMLP:
        """A network with the given parameters: a list of (W, b), W of shape (fan_in, fan_out),
        b of shape (fan_out,) or (1, fan_out) (None when ``arch.b_std`` is None).  They are copied."""
        arch = check_arch(arch)
        if not isinstance(params, (list, tuple)) or not params:
            raise ArgumentTypeError("params: expected a non-empty list of (W, b) pairs")
        has_bias = arch.b_std is not None
        pairs = []
        for i, pair in enumerate(params):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ArgumentTypeError(f"params[{i}]: expected a (W, b) pair")
            try:
                W = np.array(pair[0], dtype=np.float64)
                b = None if pair[1] is None else np.array(pair[1], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise ArgumentError(f"params[{i}]: W and b must be numeric arrays ({exc})") from None
            if W.ndim != 2 or not np.isfinite(W).all():
                raise ArgumentError(f"params[{i}]: W must be a finite 2-D array, got shape {W.shape}")
            if (b is not None) != has_bias:
                raise ArgumentError(
                    f"params[{i}]: b must be {'given' if has_bias else 'None'} for b_std={arch.b_std}"
                )
            if b is not None and (b.shape != (W.shape[1],) or not np.isfinite(b).all()):
                raise ArgumentError(f"params[{i}]: b must be finite with shape ({W.shape[1]},), got {b.shape}")
            pairs.append((W, b))
        net = cls(arch, out_dim=pairs[-1][0].shape[1])
        # with an input map the first fan-in is the map's output size; the input size is
        # then learnt (and checked) at the first call
        in_dim = None if arch.input_map is not None else pairs[0][0].shape[0]
        expected = [(layer.fan_in, layer.fan_out) for layer in net._layers(pairs[0][0].shape[0])]
        got = [W.shape for W, _ in pairs]
        if got != expected:
            raise ArgumentError(f"params: expected W shapes {expected} for this architecture, got {got}")
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

    def check_input(self, X, name: str = "X") -> np.ndarray:
        """``X`` as a finite C-contiguous float64 array of shape (n, in_dim), checked against the network.

        The parameters are drawn here when the input dimension was not known yet.

        Parameters
        ----------
        X : array-like of shape (n, d)
        name : str, default="X"
            The argument's name in error messages.

        Returns
        -------
        ndarray of shape (n, d), float64
        """
        X = check_array(_as_array(X, name), name, np.dtype(np.float64))
        if self._params is None:
            self._init_params(X.shape[1])
        elif self._in_dim is not None and X.shape[1] != self._in_dim:
            raise ArgumentError(f"{name}: has {X.shape[1]} features, the network expects {self._in_dim}")
        elif self._in_dim is None:  # from_params with an input map: check through the first layer
            d0 = self.arch.input_map.out_dim(X.shape[1])
            if d0 != self._params[0][0].shape[0]:
                raise ArgumentError(
                    f"{name}: the input map gives {d0} features, the first layer expects {self._params[0][0].shape[0]}"
                )
            self._in_dim = X.shape[1]
        return X

    _check_X = check_input  # the former private name, kept until every caller uses check_input

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
            if residual_block:
                out += h
            h = out
        return h, inputs, pre

    def apply(self, X) -> np.ndarray:
        """Network outputs f(X), shape (n, out_dim)."""
        X = self.check_input(X)
        return self._forward(X)[0]

    # -------------------------------------------------------------------------- backward pass
    def _backward(self, pre, grad, top: int) -> list:
        """Gradients w.r.t. each Dense layer's output, from ``grad`` (n, k, fan_out of Dense ``top``),
        the gradient w.r.t. the output of Dense ``top``, down to Dense 0.

        Returns ``deltas`` with ``deltas[l]`` of shape (n, k, fan_out_l) for l <= top (None above).
        Each layer is one (n k, fan_out) @ (fan_out, fan_in) GEMM.
        """
        dphi = self.arch.activation.dphi
        layers = self._scales()
        L = len(layers)
        deltas = [None] * L
        g = grad
        n, k = g.shape[:2]
        for idx in range(top, -1, -1):
            deltas[idx] = g
            if idx == 0:
                break
            W = self.params[idx][0]
            through = np.matmul(np.reshape(g, (n * k, W.shape[1])), W.T, out=np.empty((n * k, W.shape[0])))
            through = through.reshape(n, k, W.shape[0])
            through *= (layers[idx].w_scale * dphi(pre[idx]))[:, None, :]
            if self.arch.residual and 0 < idx < L - 1:  # h_out = h_in + Dense(phi(h_in))
                through += g
            g = through
        return deltas

    def _features(self, X: np.ndarray, traced: bool):
        """Per Dense layer: (scaled inputs ``w_scale * A`` (n, fan_in), gradients, ``b_scale``).

        With ``traced=False`` the gradients are ``D`` (n, k, fan_out).  With ``traced=True`` they are
        a matrix ``G`` (n, r) with ``G_x G_y^T = sum_c <D_x[c], D_y[c]>``, or None for the readout
        (the sum is then k): ``D`` reshaped to (n, k fan_out) except for the last hidden layer,
        whose ``G`` has fan_out columns (see the module docstring).
        """
        _, inputs, pre = self._forward(X)
        layers = self._scales()
        L, n, k = len(layers), X.shape[0], self.out_dim
        grads = [None] * L
        if L == 1:  # depth 0: the readout alone
            if not traced:
                grads[0] = np.broadcast_to(np.eye(k), (n, k, k))
        else:
            W = self.params[L - 1][0]  # (q, k)
            s = layers[L - 1].w_scale * self.arch.activation.dphi(pre[L - 1])  # (n, q)
            if L > 2 or not traced:
                # D[i, c, q] = w_scale phi'(z_iq) W[q, c], the gradient at the last hidden layer's output
                D = np.multiply(s[:, None, :], W.T[None, :, :], out=np.empty((n, k, W.shape[0])))
                deltas = self._backward(pre, D, L - 2)
                for idx in range(L - 1):
                    grads[idx] = deltas[idx] if not traced else deltas[idx].reshape(n, -1)
            if traced:
                grads[L - 2] = s * np.sqrt(np.einsum("qc,qc->q", W, W))
            else:
                grads[L - 1] = np.broadcast_to(np.eye(k), (n, k, k))
        return [(layer.w_scale * a, g, layer.b_scale) for layer, a, g in zip(layers, inputs, grads)]

    def jacobian(self, X) -> np.ndarray:
        """Per-example Jacobian d f(x) / d params, shape (n, out_dim, n_params), analytic."""
        X = self.check_input(X)
        n, k = X.shape[0], self.out_dim
        check_fits(
            n * k * self.n_params * 8,
            f"a Jacobian of shape ({n}, {k}, {self.n_params})",
            "Use empirical_ntk, which never forms it.",
        )
        blocks = []
        for a, d, b_scale in self._features(X, traced=False):
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

        Raises
        ------
        InsufficientMemoryError
            When the result, or one block's per-layer features, do not fit in the memory budget.
        """
        if not isinstance(trace_outputs, (bool, np.bool_)):
            raise ArgumentTypeError(f"trace_outputs: expected a bool, got {trace_outputs!r}")
        if not isinstance(diagonal, (bool, np.bool_)):
            raise ArgumentTypeError(f"diagonal: expected a bool, got {diagonal!r}")
        block_size = check_positive_int(block_size, "block_size")
        if check_backend(backend, X, Y) == "gpu" and not diagonal:
            from .backends import gpu

            return gpu.empirical_ntk(self, X, Y, trace_outputs, block_size)
        X = self.check_input(X)
        symmetric = Y is None
        Y = X if symmetric else self.check_input(Y, "Y")
        k = self.out_dim
        if diagonal:
            if not symmetric:
                raise ArgumentError("diagonal: only for Y=None")
            return self._ntk_diagonal(X, trace_outputs, block_size)
        n, m = X.shape[0], Y.shape[0]
        shape = (n, m) if trace_outputs else (n, m, k, k)
        check_fits(
            math.prod(shape) * 8,
            f"an empirical NTK of shape {shape}",
            "Use diagonal=True, trace_outputs=True, or fewer rows.",
        )
        return self.fill_ntk(X, Y, symmetric, trace_outputs, block_size, np.zeros(shape))

    def fill_ntk(self, X, Y, symmetric, trace_outputs, block_size, out, to_device=None):
        """Write the empirical NTK into ``out`` block by block (rows of X against rows of Y).

        The engine behind :meth:`empirical_ntk` and the GPU backend; the arguments are trusted
        (``X`` and ``Y`` from :meth:`check_input`, ``out`` of shape (n, m) traced or (n, m, k, k)).

        Parameters
        ----------
        X, Y : ndarray of shape (n, d), (m, d)
        symmetric : bool
            ``Y is X``: only blocks on and above the diagonal are computed, the others mirrored.
        trace_outputs : bool
        block_size : int or None
            Rows per block; None: from the memory budget.
        out : array of the result's shape, written in place
            A NumPy array, or any array type with slicing, ``@`` and elementwise arithmetic.
        to_device : callable, default=None
            Moves each block's per-layer features to where ``out`` lives (the GPU backend passes
            CuPy's); the per-block formula only uses ``@`` and elementwise arithmetic, so it runs
            on either array type.

        Returns
        -------
        out
        """
        bs = self._check_block_size(block_size, trace_outputs, max(X.shape[0], Y.shape[0]))
        k = self.out_dim

        def features(rows):
            f = self._features(rows, trace_outputs)
            if to_device is None:
                return f
            return [(to_device(a), None if g is None else to_device(g), b) for a, g, b in f]

        n, m = X.shape[0], Y.shape[0]
        cached = m * self._row_bytes(trace_outputs) <= memory_budget() // 4
        if symmetric and cached and block_size is None:
            # smaller blocks skip more of the mirrored lower triangle (4 blocks a side: 10 of 16
            # products); features are computed once per block either way
            bs = min(bs, max(config.SYMMETRIC_MIN_BLOCK, min(config.SYMMETRIC_MAX_BLOCK, -(-n // 4))))
        y_blocks = {j0: features(Y[j0 : j0 + bs]) for j0 in range(0, m, bs)} if cached else {}

        def y_features(j0):
            return y_blocks[j0] if cached else features(Y[j0 : j0 + bs])

        for i0 in range(0, n, bs):
            fx = y_features(i0) if symmetric else features(X[i0 : i0 + bs])
            for j0 in range(i0 if symmetric else 0, m, bs):
                fy = fx if symmetric and j0 == i0 else y_features(j0)
                block = _ntk_block(fx, fy, trace_outputs, self.has_bias, k)
                out[i0 : i0 + bs, j0 : j0 + bs] = block
                if symmetric and j0 != i0:
                    out[j0 : j0 + bs, i0 : i0 + bs] = block.T if trace_outputs else block.transpose(1, 0, 3, 2)
        return out

    _fill_ntk = fill_ntk  # the former private name, kept until every caller uses fill_ntk

    def _row_bytes(self, traced: bool) -> int:
        """Bytes of one row's forward pass and per-layer features."""
        k = self.out_dim
        total = 0
        for W, _ in self.params:
            fan_in, fan_out = W.shape
            total += 3 * fan_in + 2 * fan_out + k * fan_out * (2 if traced else 3)
        return 8 * total

    def _check_block_size(self, block_size, traced: bool, rows: int) -> int:
        """Rows per block (at most ``rows``): ``block_size``, or the most (up to :data:`config.MAX_BLOCK`) that
        the memory budget allows for two blocks of features and the block's products."""
        per_row = 2 * self._row_bytes(traced)
        per_pair = 8 * (4 if traced else 4 * self.out_dim**2)
        budget = memory_budget() // 2
        if block_size is None:
            # the largest bs with bs * per_row + bs^2 * per_pair <= budget
            disc = per_row * per_row + 4 * per_pair * budget
            block_size = min(config.MAX_BLOCK, int((math.sqrt(disc) - per_row) / (2 * per_pair)))
        block_size = max(1, min(block_size, rows))
        need = block_size * per_row + block_size**2 * per_pair
        if need > budget:
            raise InsufficientMemoryError(
                f"empirical NTK: a block of {block_size} row(s) needs {format_bytes(need)} for its per-layer "
                f"features and products, above half the memory budget ({format_bytes(budget)}). Use a smaller "
                "block_size, trace_outputs=True, fewer outputs or a narrower network."
            )
        return block_size

    def _ntk_diagonal(self, X, trace_outputs, block_size):
        n, k = X.shape[0], self.out_dim
        out = np.zeros(n) if trace_outputs else np.zeros((n, k, k))
        bs = self._check_block_size(block_size, trace_outputs, n)
        for i0 in range(0, n, bs):
            for a, g, b_scale in self._features(X[i0 : i0 + bs], trace_outputs):
                sq = np.einsum("ip,ip->i", a, a)
                if self.has_bias:
                    sq += b_scale**2
                if trace_outputs:
                    gg = float(k) if g is None else np.einsum("ir,ir->i", g, g)
                    out[i0 : i0 + bs] += sq * gg / k
                else:
                    out[i0 : i0 + bs] += sq[:, None, None] * np.einsum("ikq,ilq->ikl", g, g)
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

        Each step is one forward and one backward pass of 2-D GEMMs, and an in-place BLAS update
        of every W (no W-sized temporary).
        """
        from scipy.linalg import blas

        X = self.check_input(X)
        y, _ = check_targets(y, X.shape[0])
        if y.shape != (X.shape[0], self.out_dim):
            raise ArgumentError(f"y: expected shape ({X.shape[0]}, {self.out_dim}), got {y.shape}")
        lr = check_positive_float(lr, "lr")
        steps = check_nonnegative_int(steps, "steps")
        max_loss_growth = check_positive_float(max_loss_growth, "max_loss_growth")
        check_fits(
            8 * (self.n_params + steps + 1),
            f"training ({self.n_params} parameters copied, a loss history of {steps + 1} values)",
            "Use fewer steps or a smaller network.",
        )
        net = FiniteMLP.from_params(self.arch, self.params)  # from_params copies
        net._in_dim = self._in_dim
        N = y.size
        losses = np.empty(steps + 1)
        layers = net._scales()
        L = len(layers)
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
            resid /= N
            deltas = net._backward(pre, resid[:, None, :], L - 1)
            for (W, b), layer, a, d in zip(net.params, layers, inputs, deltas):  # in place: net owns copies
                d = d[:, 0, :]
                _subtract_outer(W, a, d, lr * layer.w_scale, blas)
                if b is not None:
                    b -= (lr * layer.b_scale) * d.sum(axis=0)
        return TrainResult(net, losses)


def _subtract_outer(W: np.ndarray, a: np.ndarray, d: np.ndarray, alpha: float, blas) -> None:
    """``W -= alpha * a.T @ d`` in place with one ``dgemm`` (``beta=1``) and no W-sized temporary.

    ``W`` (fan_in, fan_out) is C-contiguous, so ``W.T`` is the Fortran-ordered (fan_out, fan_in)
    matrix BLAS updates: ``W.T <- W.T - alpha * d.T @ a``.
    """
    a = np.ascontiguousarray(a)
    d = np.ascontiguousarray(d)
    res = blas.dgemm(-alpha, d.T, a.T, beta=1.0, c=W.T, overwrite_c=1, trans_b=1)
    if not np.shares_memory(res, W):  # BLAS worked on a copy (an unexpected layout): write it back
        W[...] = res.T


def _top_eigenvalue(theta: np.ndarray) -> float:
    import scipy.linalg

    n = len(theta)
    return float(scipy.linalg.eigh(theta, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0])


def _ntk_block(fx, fy, trace_outputs: bool, has_bias: bool, k: int):
    """Sum over layers of (A_x A_y^T + b^2) * <D_x, D_y> for one block pair (see ``_features``)."""
    total = None
    for (ax, gx, b_scale), (ay, gy, _) in zip(fx, fy):
        aa = ax @ ay.T
        if has_bias:
            aa += b_scale**2
        if trace_outputs:
            if gx is None:  # the readout: sum_c <D_x[c], D_y[c]> = k
                term = aa
                term *= k
            else:
                term = gx @ gy.T
                term *= aa
        else:  # accumulated in the (n, k, m, k) layout of the GEMM, transposed once at the end
            n, m, q = gx.shape[0], gy.shape[0], gx.shape[2]
            term = (gx.reshape(n * k, q) @ gy.reshape(m * k, q).T).reshape(n, k, m, k)
            term *= aa[:, None, :, None]
        if total is None:
            total = term
        else:
            total += term
    if trace_outputs:
        total /= k
        return total
    return total.transpose(0, 2, 1, 3)


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
    which are averaged too (the traced kernel).  Network ``s`` is ``FiniteMLP(arch, out_dim,
    seed=seed + s)``.

    Parameters
    ----------
    arch : MLP
    X : array-like of shape (n, d)
    Y : array-like of shape (m, d), default=None (Y = X)
    n_samples : int, default=100
        At most 10**6: beyond that the finite-width bias, O(1/width), dominates the Monte-Carlo error.
    width : int, default=None
        Hidden width of the networks (default: ``arch.width``).
    seed : int, default=0
        An integer >= 0; network s is drawn from ``seed + s``.
    get : {"nngp", "ntk"}, default="nngp"
    out_dim : int, default=16

    Raises
    ------
    InsufficientMemoryError
        When one network's parameters do not fit in the memory budget (checked before any is drawn).
    """
    arch = check_arch(arch)
    get = check_choice(get, "get", ("nngp", "ntk"))
    n_samples = check_positive_int(n_samples, "n_samples", allow_none=False, maximum=config.MAX_SAMPLES)
    seed = check_nonnegative_int(seed, "seed")
    out_dim = check_positive_int(out_dim, "out_dim", allow_none=False)
    if width is not None:
        arch = replace(arch, width=check_positive_int(width, "width", allow_none=False))
    X = _as_array(X, "X")
    Y = None if Y is None else _as_array(Y, "Y")
    total = None
    for s in range(n_samples):
        net = FiniteMLP(arch, out_dim=out_dim, seed=seed + s)
        k = net.empirical_nngp(X, Y) if get == "nngp" else net.empirical_ntk(X, Y)
        if total is None:
            total = k
        else:
            total += k
    total /= n_samples
    return total
