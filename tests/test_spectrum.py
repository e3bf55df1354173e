"""ntkfast.spectrum.analyze against closed forms, and its refusals; ntkfast.experiments."""

import warnings

import numpy as np
import pytest
from scipy.sparse.linalg import aslinearoperator

import ntkfast as nf
from ntkfast import experiments, spectrum
from ntkfast.errors import ArgumentError, ArgumentTypeError, SingularKernelError

ARCH = nf.MLP(depth=2, activation="relu", b_std=0.1)


def _circulant(n=64):
    """A symmetric positive definite circulant matrix: its eigenvalues are the DFT of its first row
    (a closed form independent of any eigensolver)."""
    j = np.arange(n)
    c = np.exp(-np.minimum(j, n - j) / 3.0) + 0.1 * np.cos(2 * np.pi * 5 * j / n)
    K = c[(j[None, :] - j[:, None]) % n]
    return K, np.sort(np.fft.fft(c).real)[::-1]


@pytest.mark.filterwarnings("ignore:Exited:UserWarning")  # lobpcg on the paired eigenvalues of a circulant
def test_eigenvalues_equal_the_closed_form_of_a_circulant_matrix():
    K, lam = _circulant()
    assert lam.min() > 0
    res = spectrum.analyze(K)
    np.testing.assert_allclose(res.eigenvalues, lam, rtol=1e-12, atol=1e-13 * lam[0])
    assert res.condition_number == pytest.approx(lam[0] / lam[-1], rel=1e-10)
    assert res.max_lr == pytest.approx(2 * 64 / lam[0], rel=1e-12)
    for method in ("eigsh", "lobpcg"):
        top = spectrum.analyze(aslinearoperator(K), k=4, method=method).eigenvalues
        np.testing.assert_allclose(top, lam[:4], rtol=1e-8)
    # the loss curve of a target along one eigenvector decays at exactly that mode's rate
    v = np.linalg.eigh(K)[1][:, -1]  # the top mode
    one = spectrum.analyze(K, y=v, lr=1.0)
    t = np.array([0.0, 3.0, 50.0])
    np.testing.assert_allclose(one.loss(t), 0.5 / 64 * np.exp(-2 * lam[0] * t / 64), rtol=1e-9)


def test_singular_and_zero_kernels():
    B = np.random.default_rng(0).standard_normal((40, 3))
    res = spectrum.analyze(B @ B.T)  # rank 3: fine, with round-off zeros clipped
    assert res.eigenvalues.min() >= 0 and np.isinf(res.condition_number)
    with pytest.raises(SingularKernelError, match="no positive eigenvalue.*pass lr"):
        spectrum.analyze(np.zeros((5, 5)))
    zero = spectrum.analyze(np.zeros((5, 5)), lr=1.0)
    assert np.isinf(zero.max_lr)
    with pytest.raises(SingularKernelError):  # also a ValueError
        spectrum.analyze(aslinearoperator(np.zeros((5, 5))), k=2, method="eigsh")


def test_non_symmetric_and_malformed_input_refused():
    K, _ = _circulant(16)
    skew = K + np.triu(np.ones_like(K), 1)
    with pytest.raises(ArgumentError, match="K_or_operator: not symmetric"):
        spectrum.analyze(skew)
    with pytest.raises(ArgumentError, match="K_or_operator: not symmetric"):
        spectrum.analyze(aslinearoperator(skew), k=3)
    with pytest.raises(ArgumentError, match="K_or_operator: expected a square numeric matrix"):
        spectrum.analyze([[1.0, 2.0], [3.0]])
    with pytest.raises(ArgumentError, match="NaN"):
        spectrum.analyze(np.full((3, 3), np.nan))
    with pytest.raises(ArgumentError, match="y: expected a numeric array"):
        spectrum.analyze(K, y=[[1.0], [2.0, 3.0]])
    with pytest.raises(ArgumentError, match="sym_rtol"):
        spectrum.analyze(K, sym_rtol=-1.0)
    with pytest.raises(ArgumentError, match="method"):
        spectrum.analyze(K, method=3)
    res = spectrum.analyze(K, y=np.zeros(16))
    with pytest.raises(ArgumentError, match="y: the targets are all zero"):
        res.alignment  # noqa: B018
    with pytest.raises(ArgumentError, match="t: expected times >= 0"):
        res.loss([-1.0])
    with pytest.raises(ArgumentError, match="t: expected times >= 0"):
        res.loss([np.nan])
    with pytest.raises(ArgumentError, match="tol"):
        res.time_to_loss(-1.0)
    with pytest.raises(ArgumentError, match="fraction"):
        res.power_law_exponent((0.5, 0.1))
    with pytest.raises(ArgumentTypeError, match="fraction"):
        res.power_law_exponent(0.5)


def test_gram_operator_needs_no_symmetry_probe(rng, monkeypatch):
    X = rng.standard_normal((80, 3))
    op = nf.GramOperator(ARCH, X)
    calls = []
    matmat = type(op)._matmat
    monkeypatch.setattr(type(op), "_matmat", lambda self, V: calls.append(V.shape) or matmat(self, V))
    top = spectrum.analyze(op, k=3).eigenvalues
    np.testing.assert_allclose(top, np.linalg.eigvalsh(nf.kernel(ARCH, X))[::-1][:3], rtol=1e-9)
    assert (80, 2) not in calls  # no two-column probe: the operator says it is symmetric


def test_dense_eigendecomposition_goes_through_the_budget(monkeypatch):
    K, _ = _circulant(64)
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "20K")
    with pytest.raises(nf.InsufficientMemoryError, match=r"analyze: the dense eigendecomposition of a 64 x 64 K"):
        spectrum.analyze(K)


def test_fourier_feature_spectra_moved_to_experiments():
    new = experiments.fourier_feature_spectra(n=32, scales=(4.0,), depth=1, n_features=16)
    with pytest.warns(DeprecationWarning, match="moved to ntkfast.experiments"):
        old = spectrum.fourier_feature_spectra(n=32, scales=(4.0,), depth=1, n_features=16)
    assert set(new) == set(old) == {"plain", 4.0}
    for key in new:
        np.testing.assert_array_equal(new[key].eigenvalues, old[key].eigenvalues)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiments.fourier_feature_spectra(n=16, scales=(), depth=1)
    for bad, match in (
        (dict(n=0), "n: expected a positive integer"),
        (dict(n=2, dim=2), "fewer than 2 grid points"),
        (dict(scales=(1.0, -2.0)), "scales"),
        (dict(depth=1.5), "depth"),
        (dict(seed=-1), "seed"),
    ):
        with pytest.raises((ArgumentError, ArgumentTypeError), match=match):
            experiments.fourier_feature_spectra(**bad)
    with pytest.raises(ArgumentTypeError, match="scales"):
        experiments.fourier_feature_spectra(scales=4.0)


def test_extreme_scales_give_results_or_clear_errors():
    K, lam = _circulant(32)
    for s in (1e-250, 1e250):  # eigenvalues scale with K, the default learning rate inversely
        res = spectrum.analyze(s * K)
        np.testing.assert_allclose(res.eigenvalues / s, lam, rtol=1e-10, atol=1e-12 * lam[0])
        assert res.lr * s == pytest.approx(32 / lam[0], rel=1e-10)
    with pytest.raises(SingularKernelError, match="too small for the default learning rate"):
        spectrum.analyze(1e-320 * K)
    with pytest.raises(ArgumentError, match="overflows float64"):
        spectrum.analyze(K, y=np.full(32, 1e300))
    # discrete steps above the stable rate: modes without target energy add nothing (not NaN)
    v = np.linalg.eigh(K)[1][:, -1]
    res = spectrum.analyze(K, y=v, lr=3 * 32 / lam[-1])
    loss = res.loss(np.array([0.0, 1.0, np.inf]), discrete=True)
    assert not np.isnan(loss).any() and loss[0] == pytest.approx(0.5 / 32)


def test_time_to_loss_zero_is_infinite():
    K, _ = _circulant(16)
    res = spectrum.analyze(K, y=np.ones(16))
    assert res.time_to_loss(0.0) == np.inf
    # a small positive tol is reached in finite time (1e-10: above the ~1e-16 loss floor that the
    # round-off of the modal energies leaves, whose size depends on the LAPACK kernel)
    assert np.isfinite(res.time_to_loss(1e-10))
