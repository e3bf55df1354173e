"""ELU/SELU on the GPU backend take the same closed form as the CPU (``backends/cuda/bivariate.cuh``,
the CUDA twin of ``bivariate.elu_dual``) for the pairs past the series' cut near rho = +-1; run by
the host emulation of the CUDA kernels (``-m cudaemu``, tests/cuda_emu) and, where a device is
present, on real CuPy (``-m gpu``).

Truth: the CPU kernel, whose closed form is tested against 2-D quadrature (tests/test_elu_exact.py).
Both evaluate the same series below the cut and the same closed form above it, so they agree to
round-off; without the closed form on the device the series alone is ~1e-5 off there.
"""

import warnings

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import series
from ntkfast.backends import gpu


def _correlated_rows(rng, n, d=6):
    """Rows around one direction (input correlations ~0.99) plus an exact duplicate and a negated
    row: most pairs fall past the series' cut, some at rho = +-1."""
    base = rng.standard_normal(d)
    X = base + 0.1 * rng.standard_normal((n, d))
    X[3] = X[1]
    X[4] = -X[2]
    return X / np.linalg.norm(X, axis=1, keepdims=True) * rng.uniform(0.7, 1.3, (n, 1))


@pytest.mark.parametrize(
    "activation, depth, param",
    [(nf.spec.ELU(0.5), 1, "ntk"), ("elu", 2, "standard"), ("selu", 3, "ntk")],
)
def test_gpu_elu_closed_form_equals_cpu(cp, rng, activation, depth, param):
    arch = nf.MLP(depth=depth, activation=activation, W_std=1.3, b_std=0.2, parameterization=param)
    X, Y = _correlated_rows(rng, 29), _correlated_rows(rng, 13)
    for y in (None, Y):
        with warnings.catch_warnings():
            warnings.simplefilter("error", series.SeriesAccuracyWarning)  # exact: nothing to warn of
            ref = nf.kernel(arch, X, y, get=("nngp", "ntk"), backend="cpu")
            got = gpu.kernel(arch, cp.asarray(X), None if y is None else cp.asarray(y), ("nngp", "ntk"), tile=16)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g.get(), r, rtol=0, atol=1e-12 * np.abs(r).max())
