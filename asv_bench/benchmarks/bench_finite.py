"""asv benchmarks of the finite-network empirical NTK (structured, never forming the Jacobian)."""

import numpy as np

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


class TimeTrain:
    def setup(self):
        self.net = nf.FiniteMLP(nf.MLP(depth=2, activation="erf", width=1024, b_std=0.1), in_dim=16)
        rng = np.random.default_rng(0)
        self.X, self.y = rng.standard_normal((256, 16)), rng.standard_normal(256)

    def time_train_50_steps(self):
        self.net.train(self.X, self.y, lr=0.1, steps=50)
