"""asv benchmarks of the Hermite-series activations (issue 14) against ReLU.

``track_ratio_to_relu``: the depth-3 NTK of n = 4000 rows in d = 784, float64, for a series
activation over the same call with ReLU, measured in the same process (target: at most 3 for
tanh, SiLU, ELU and an ``Elementwise`` callable).  ``time_rows`` is the one-time per-row cost
alone (the diagonal recursion with every layer's Hermite coefficients, ``engine.prepare_rows``),
``time_kernel`` the whole call.  Inputs are unit-variance Gaussian rows, the network
``W_std = 1.4, b_std = 0.1``, so the first-layer variances are about 2.

``TimeCorrelatedRows``: the same on strongly correlated rows (as ``bench.correlated_rows``, written
out here so that older commits run it too: n = 1500, d = 50, input correlations about 0.98), where
ELU/SELU's pairs nearly all take the closed form (``bivariate.elu_dual_row``) and the series
activations their full degrees.
"""

import warnings

import numpy as np

import ntkfast as nf
from ntkfast import engine
from ntkfast.bench import best_time

ACTIVATIONS = ["tanh", "sigmoid", "softplus", "silu", "elu", "selu", "mish", "gelu_tanh", "elementwise"]


def _activation(name):
    return nf.Elementwise(np.tanh) if name == "elementwise" else name


class TimeSeriesActivations:
    params = ([4000], ACTIVATIONS)
    param_names = ["n", "activation"]
    timeout = 600

    def setup(self, n, activation):
        self.X = np.random.default_rng(0).standard_normal((n, 784))
        self.arch = nf.MLP(depth=3, activation=_activation(activation), W_std=1.4, b_std=0.1)
        self.relu = nf.MLP(depth=3, activation="relu", W_std=1.4, b_std=0.1)
        warnings.simplefilter("ignore", nf.SeriesAccuracyWarning)  # ELU/SELU: stated bound ~1e-5
        nf.kernel(self.arch, self.X[:64])  # compile outside the timing
        nf.kernel(self.relu, self.X[:64])
        self.out = np.ones((n, n))

    def time_kernel(self, n, activation):
        nf.kernel(self.arch, self.X, out=self.out)

    def time_rows(self, n, activation):
        engine.prepare_rows(self.arch, self.X)

    def track_ratio_to_relu(self, n, activation):
        series = best_time(lambda: nf.kernel(self.arch, self.X, out=self.out))
        relu = best_time(lambda: nf.kernel(self.relu, self.X, out=self.out))
        return series / relu

    track_ratio_to_relu.unit = "ratio"


class TimeCorrelatedRows:
    params = (["elu", "selu", "tanh"],)
    param_names = ["activation"]
    timeout = 600

    def setup(self, activation):
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((1, 50)) + 0.15 * rng.standard_normal((1500, 50))
        self.arch = nf.MLP(depth=3, activation=activation, W_std=1.4, b_std=0.1)
        self.relu = nf.MLP(depth=3, activation="relu", W_std=1.4, b_std=0.1)
        warnings.simplefilter("ignore", nf.SeriesAccuracyWarning)
        nf.kernel(self.arch, self.X[:64])
        nf.kernel(self.relu, self.X[:64])
        self.out = np.ones((self.X.shape[0],) * 2)

    def time_kernel(self, activation):
        nf.kernel(self.arch, self.X, out=self.out)

    def track_ratio_to_relu(self, activation):
        series = best_time(lambda: nf.kernel(self.arch, self.X, out=self.out))
        relu = best_time(lambda: nf.kernel(self.relu, self.X, out=self.out))
        return series / relu

    track_ratio_to_relu.unit = "ratio"
