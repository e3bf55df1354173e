"""asv benchmarks of finite networks: the structured empirical NTK, gradient descent against the same
steps written as bare BLAS calls with in-place updates, and Monte-Carlo kernels against their floor.

Run as a script for the ratios in one process (what the README and the issue report):
``python asv_bench/benchmarks/bench_finite.py``.
"""

import time

import numpy as np
from scipy.linalg import blas

import ntkfast as nf


class TimeEmpiricalNTK:
    """MLP 784-512-512-10 ReLU: traced (n, n) and full (n, n, 10, 10) empirical NTK."""

    params = [256, 1024]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        self.net = nf.FiniteMLP(nf.MLP(depth=2, activation="relu", width=512, b_std=0.1), out_dim=10, in_dim=784)
        self.X = np.random.default_rng(0).standard_normal((n, 784))

    def time_traced(self, n):
        self.net.empirical_ntk(self.X)

    def time_full(self, n):
        self.net.empirical_ntk(self.X, trace_outputs=False)

    def time_diagonal(self, n):
        self.net.empirical_ntk(self.X, diagonal=True)

    def time_gemm_floor(self, n):
        """X @ X.T: the first layer's Gram, one of the products the kernel is made of."""
        self.X @ self.X.T


def reference_train(params, layers, X, y, lr, steps, phi, dphi):
    """The steps of ``FiniteMLP.train`` (non-residual) as bare BLAS calls: ``dgemm`` forward and
    backward products, in-place ``dgemm`` (``beta=1``) weight updates; returns the final loss.

    ``params``: list of (W, b) C-contiguous (updated in place); ``layers``: (w_scale, b_scale) each.
    """
    N = y.size
    loss = None
    for step in range(steps + 1):
        h, inputs, pre = X, [], []
        for idx, ((W, b), (ws, bs)) in enumerate(zip(params, layers)):
            a = h if idx == 0 else phi(h)
            inputs.append(a)
            pre.append(None if idx == 0 else h)
            out = blas.dgemm(ws, W.T, a.T).T  # ws * a @ W, C-ordered
            if b is not None:
                out += bs * b
            h = out
        resid = h - y
        loss = 0.5 * float(np.sum(resid * resid)) / N
        if step == steps:
            break
        g = resid / N
        for idx in range(len(params) - 1, -1, -1):
            (W, b), (ws, bs) = params[idx], layers[idx]
            a = inputs[idx]
            if idx > 0:
                g_below = blas.dgemm(ws, W.T, g.T, trans_a=1).T  # ws * g @ W.T
                g_below *= dphi(pre[idx])
            blas.dgemm(-lr * ws, g.T, a.T, beta=1.0, c=W.T, overwrite_c=1, trans_b=1)  # W -= lr ws a^T g
            if b is not None:
                b -= (lr * bs) * g.sum(axis=0)
            if idx > 0:
                g = g_below
    return loss


class TimeTrain:
    """Gradient descent: ``FiniteMLP.train`` against :func:`reference_train` on the same network."""

    params = ["1024x256", "2048x16"]
    param_names = ["width x n"]
    timeout = 300

    def setup(self, shape):
        width, n = (int(v) for v in shape.split("x"))
        self.arch = nf.MLP(depth=2, activation="erf", width=width, b_std=0.1)
        self.net = nf.FiniteMLP(self.arch, in_dim=16)
        rng = np.random.default_rng(0)
        self.X, self.y = rng.standard_normal((n, 16)), rng.standard_normal((n, 1))
        self.lr = 0.1

    def time_train_20_steps(self, shape):
        self.net.train(self.X, self.y, lr=self.lr, steps=20)

    def time_reference_blas_20_steps(self, shape):
        params = [(W.copy(), b.copy()) for W, b in self.net.params]
        layers = [(layer.w_scale, layer.b_scale) for layer in self.net._scales()]
        act = self.arch.activation
        reference_train(params, layers, self.X, self.y, self.lr, 20, act.phi, act.dphi)


class TimeMonteCarlo:
    """``monte_carlo_kernel`` per sample (20 points, depth 2, width 1024) against its floor: drawing
    one network's parameters and the forward GEMMs."""

    params = ["nngp", "ntk"]
    param_names = ["get"]
    timeout = 300

    def setup(self, get):
        self.arch = nf.MLP(depth=2, activation="relu", width=1024, b_std=0.1)
        self.X = np.random.default_rng(0).standard_normal((20, 10))

    def time_five_samples(self, get):
        nf.monte_carlo_kernel(self.arch, self.X, n_samples=5, get=get)

    def time_five_floors(self, get):
        for s in range(5):
            floor_sample(self.arch, self.X, 16, s, get)


def floor_sample(arch, X, out_dim, seed, get="nngp"):
    """The irreducible work of one Monte-Carlo network: draw its W and b, and its GEMMs (forward;
    for the NTK also the (n k, width) x (width, width) backward products and the per-layer Grams)."""
    rng = np.random.default_rng(seed)
    h, n, k = X, X.shape[0], out_dim
    sizes = [X.shape[1]] + list(arch.hidden_widths) + [out_dim]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        W = rng.standard_normal((fan_in, fan_out))
        b = rng.standard_normal(fan_out)
        params.append(W)
        h = np.maximum(h, 0) @ W + b
    if get == "nngp":
        return h @ h.T
    D = np.broadcast_to(params[-1].T, (n, k, sizes[-2])).reshape(n * k, -1)
    total = 0.0
    for W in params[-2:0:-1]:
        D = D @ W.T
        G = D.reshape(n, -1)
        total = total + G @ G.T
    return total


def _best(f, *args, repeat=5):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    """Ratios measured in one process (interleaved where two things are compared)."""
    bench = TimeEmpiricalNTK()
    bench.setup(1024)
    t_ntk, t_gemm = _best(bench.time_traced, 1024), _best(bench.time_gemm_floor, 1024)
    print(f"empirical NTK 784-512-512-10 ReLU, n=1024, traced: {t_ntk:.3f} s = {t_ntk / t_gemm:.1f} x X @ X.T")
    for shape in TimeTrain.params:
        bench = TimeTrain()
        bench.setup(shape)
        t_train = _best(bench.time_train_20_steps, shape, repeat=3)
        t_ref = _best(bench.time_reference_blas_20_steps, shape, repeat=3)
        print(f"train width x n = {shape}, 20 steps: {t_train:.3f} s, bare BLAS {t_ref:.3f} s, "
              f"ratio {t_train / t_ref:.2f}")
    for get in TimeMonteCarlo.params:
        bench = TimeMonteCarlo()
        bench.setup(get)
        t_mc = _best(bench.time_five_samples, get, repeat=3) / 5
        t_floor = _best(bench.time_five_floors, get, repeat=3) / 5
        print(f"monte_carlo_kernel get={get}: {1e3 * t_mc:.1f} ms per sample, floor (draws + GEMMs) "
              f"{1e3 * t_floor:.1f} ms, ratio {t_mc / t_floor:.2f}")


if __name__ == "__main__":
    main()
