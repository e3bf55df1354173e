"""asv benchmarks of the analytic Gram engine (``cd asv_bench && asv run --python=same``).

The ``track_ratio_to_gemm`` benchmarks record our time over a bare ``X @ X.T`` of the same array
measured in the same process, the figure that does not depend on the machine's speed.
"""

import numpy as np

import ntkfast as nf
from ntkfast.bench import ARCH, best_time


def _data(n, d, dtype="float64", seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


class TimeGram:
    """ReLU NTK, depth 3, K(X, X) over n, d and dtype, against the GEMM floor."""

    params = ([1000, 4000], [8, 784], ["float64", "float32"])
    param_names = ["n", "d", "dtype"]
    timeout = 120

    def setup(self, n, d, dtype):
        self.X = _data(n, d, dtype)
        self.out = np.zeros((n, n), dtype)
        self.out.fill(0)  # fault the pages in now, not inside the first timed call
        nf.kernel(ARCH, self.X[:64])  # Numba compiles (or loads its cache) outside the timing

    def time_ntk(self, n, d, dtype):
        nf.kernel(ARCH, self.X, out=self.out)

    def time_gemm_baseline(self, n, d, dtype):
        np.matmul(self.X, self.X.T, out=self.out)

    def track_ratio_to_gemm(self, n, d, dtype):
        ours = best_time(lambda: nf.kernel(ARCH, self.X, out=self.out))
        gemm = best_time(lambda: np.matmul(self.X, self.X.T, out=self.out))
        return ours / gemm

    track_ratio_to_gemm.unit = "ratio"


class TimeActivations:
    params = ["relu", "erf", "gelu", "sin", "sign"]
    param_names = ["activation"]

    def setup(self, activation):
        self.arch = nf.MLP(depth=3, activation=activation, b_std=0.1)
        self.X = _data(2000, 16)
        nf.kernel(self.arch, self.X[:64])

    def time_ntk(self, activation):
        nf.kernel(self.arch, self.X)


class TimeDepth:
    params = [1, 3, 10]
    param_names = ["depth"]

    def setup(self, depth):
        self.arch = nf.MLP(depth=depth, activation="relu", b_std=0.1)
        self.X = _data(2000, 64)
        nf.kernel(self.arch, self.X[:64])

    def time_ntk(self, depth):
        nf.kernel(self.arch, self.X)

    def time_nngp_and_ntk(self, depth):
        nf.kernel(self.arch, self.X, get=("nngp", "ntk"))


class TimeGramOperator:
    """Matrix-free products: tiles recomputed on the fly, K never stored."""

    timeout = 120

    def setup(self):
        X = _data(4000, 64)
        self.op = nf.GramOperator(ARCH, X)
        self.v = np.ones(4000)
        self.V = _data(4000, 16, seed=1)
        nf.GramOperator(ARCH, X[:64]) @ self.v[:64]

    def time_matvec(self):
        self.op @ self.v

    def time_matmat_16(self):
        self.op @ self.V


class PeakmemGramOperator:
    """Peak memory of a matvec at n = 8000: far below the 512 MB a dense float64 K needs."""

    timeout = 120

    def setup(self):
        self.X = _data(8000, 64)
        nf.GramOperator(ARCH, self.X[:64]) @ np.ones(64)

    def peakmem_matvec(self):
        nf.GramOperator(ARCH, self.X) @ np.ones(8000)


class TimeKernelDiag:
    def setup(self):
        self.X = _data(100_000, 32)
        nf.kernel_diag(ARCH, self.X[:64])

    def time_kernel_diag(self):
        nf.kernel_diag(ARCH, self.X)


class TimeFloat32Refinement:
    """float32 with many near-duplicate rows: the float64 recomputation of nearly parallel pairs."""

    def setup(self):
        base = _data(500, 64, "float32")
        noise = 1e-4 * _data(500, 64, "float32", seed=2)
        self.X = np.concatenate([base, base + noise])
        nf.kernel(ARCH, self.X[:64])

    def time_ntk_near_duplicates(self):
        nf.kernel(ARCH, self.X)


class TrackExpFamilies:
    """The exp families (sin, rbf, exp, gaussian: ``ntkfast._jit.exp``, vectorised) over ReLU, same
    depth, shape and dtype, timed in one process (issue 17 item 3: at most 1.5)."""

    params = (["sin", "rbf", "exp", "gaussian"], [8, 784], ["float64", "float32"])
    param_names = ["activation", "d", "dtype"]
    timeout = 240

    def setup(self, activation, d, dtype):
        self.X = _data(2000, d, dtype)
        self.out = np.zeros((2000, 2000), dtype)
        # exp's kernel grows like exp(exp(...)) with depth: a smaller W_std keeps it finite
        w_std = 0.5 if activation == "exp" else ARCH.W_std
        self.arch = nf.MLP(depth=ARCH.depth, activation=activation, W_std=w_std, b_std=ARCH.b_std)
        nf.kernel(self.arch, self.X[:64])
        nf.kernel(ARCH, self.X[:64])

    def time_ntk(self, activation, d, dtype):
        nf.kernel(self.arch, self.X, out=self.out)

    def track_ratio_to_relu(self, activation, d, dtype):
        ours = best_time(lambda: nf.kernel(self.arch, self.X, out=self.out))
        relu = best_time(lambda: nf.kernel(ARCH, self.X, out=self.out))
        return ours / relu

    track_ratio_to_relu.unit = "ratio"
