"""asv benchmarks of the scikit-learn layer: estimator fit/predict and the GP kernel's gradient."""

import numpy as np

from ntkfast.sklearn import NTKClassifier, NTKKernel, NTKRegressor


class TimeRegressorFit:
    """NTKRegressor().fit on synthetic tabular data, d = 50 (the issue's n = 10 000 case)."""

    params = [2000, 10000]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((n, 50))
        self.y = np.sin(self.X[:, 0]) + 0.1 * rng.standard_normal(n)
        self.fitted = NTKRegressor().fit(self.X[:1000], self.y[:1000])

    def time_fit(self, n):
        NTKRegressor().fit(self.X, self.y)

    def peakmem_fit(self, n):
        NTKRegressor().fit(self.X, self.y)

    def time_predict_1000(self, n):
        self.fitted.predict(self.X[:1000])


class TimeClassifierFit:
    """NTKClassifier().fit, 10 classes: the leave-one-out temperature costs one extra potri."""

    def setup(self):
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((3000, 64))
        self.y = rng.integers(0, 10, 3000)

    def time_fit(self):
        NTKClassifier().fit(self.X, self.y)


class TimeKernelGradient:
    """NTKKernel with eval_gradient (K and two derivative matrices in one pass) vs K alone."""

    params = [1000, 3000]
    param_names = ["n"]

    def setup(self, n):
        self.X = np.random.default_rng(0).standard_normal((n, 20))
        self.kernel = NTKKernel()
        self.kernel(self.X[:10], eval_gradient=True)  # compile

    def time_kernel(self, n):
        self.kernel(self.X)

    def time_kernel_with_gradient(self, n):
        self.kernel(self.X, eval_gradient=True)
