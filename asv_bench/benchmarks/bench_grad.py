"""asv benchmarks of the GP-gradient pass (issue 17 item 4, issue 14's series gradients).

``track_ratio``: ``kernel_with_gradient`` (K with dK/dlog W_std, dK/dlog b_std, depth-3 NTK,
float64) over ``kernel`` on the same rows, measured in the same process (goal: at most 3 for the
closed forms).  ``time_gradient`` is the gradient pass alone.  ``TimeSeriesGradient``: the
Hermite-series activations (per-chunk degrees, ELU's closed form near rho = +-1) at n = 2000,
whose pass evaluates seven polynomials per pair where the forward kernel evaluates two.
"""

import warnings

import numpy as np

import ntkfast as nf
from ntkfast.bench import best_time
from ntkfast.kernel_grad import kernel_with_gradient


class TimeGradient:
    params = ([(2000, 16), (2000, 784), (4000, 16), (4000, 784)], ["relu", "erf", "gelu"])
    param_names = ["n_d", "activation"]
    timeout = 600

    def setup(self, n_d, activation):
        n, d = n_d
        self.X = np.random.default_rng(0).standard_normal((n, d))
        self.arch = nf.MLP(depth=3, activation=activation, W_std=1.4, b_std=0.1)
        kernel_with_gradient(self.arch, self.X[:64])  # compile outside the timing
        nf.kernel(self.arch, self.X[:64])
        self.out = np.empty((n, n))

    def time_gradient(self, n_d, activation):
        kernel_with_gradient(self.arch, self.X)

    def track_ratio(self, n_d, activation):
        grad = best_time(lambda: kernel_with_gradient(self.arch, self.X))
        forward = best_time(lambda: nf.kernel(self.arch, self.X, out=self.out))
        return grad / forward

    track_ratio.unit = "ratio"


class TimeSeriesGradient:
    params = ([(2000, 16), (2000, 784)], ["tanh", "silu", "elu"])
    param_names = ["n_d", "activation"]
    timeout = 600

    def setup(self, n_d, activation):
        n, d = n_d
        self.X = np.random.default_rng(0).standard_normal((n, d))
        self.arch = nf.MLP(depth=3, activation=activation, W_std=1.4, b_std=0.1)
        warnings.simplefilter("ignore", nf.SeriesAccuracyWarning)
        kernel_with_gradient(self.arch, self.X[:32])
        nf.kernel(self.arch, self.X[:32])
        self.out = np.empty((n, n))

    def time_gradient(self, n_d, activation):
        kernel_with_gradient(self.arch, self.X)

    def track_ratio(self, n_d, activation):
        grad = best_time(lambda: kernel_with_gradient(self.arch, self.X))
        forward = best_time(lambda: nf.kernel(self.arch, self.X, out=self.out))
        return grad / forward

    track_ratio.unit = "ratio"
