"""The closed-form GP-gradient pass (``backends.cpu.tile_grad``): vectorised, and right over chunks and tiles."""

import re

import numba
import numpy as np
import pytest

import ntkfast as nf
from ntkfast.kernel_grad import kernel_with_gradient


@pytest.mark.parametrize("name", ["relu", "erf", "gelu"])
def test_gradient_row_loop_vectorises(name):
    """``layer_grad_row`` compiles to SIMD code (a vector square root in the optimised IR) with every
    recursion function inlined, as the forward kernel's loop (tests/test_numerics.py)."""
    from ntkfast import spec
    from ntkfast._jit import JIT_OPTIONS
    from ntkfast.backends import cpu

    act = spec.get_activation(name)
    row = cpu.recursion_kernels(act.code).layer_grad_row
    fresh = numba.njit(**dict(JIT_OPTIONS, cache=False))(row.py_func)  # cached code cannot be inspected
    W = cpu.GRAD_CHUNK
    c = np.array([0.0, 1.0, 0.1, 1.0, 1.0])
    fresh(*act.params, 1.0, 0.1, 0.2, np.ones(3 * W), np.full(6 * W, 0.5), W, c, c, c)
    ir = "\n".join(fresh.inspect_llvm().values())
    assert re.search(r"@llvm\.sqrt\.v\d+f64\(", ir), "the gradient's row loop did not vectorise"
    assert not re.search(r"call i32 @_ZN7ntkfast9recursion", ir), "a recursion function was not inlined"


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu"])
def test_closed_form_gradient_over_several_column_chunks(activation, monkeypatch):
    """The vectorised closed-form pass (chunks of backends.cpu.GRAD_CHUNK columns, tiles, threads)
    against central differences of the forward kernel, on tiles wider than one chunk."""
    from ntkfast import config
    from ntkfast.backends import cpu

    # (MIN_TILE too: plan_tiles would otherwise give 2 threads tiles of MIN_TILE = 128 columns, one chunk)
    monkeypatch.setattr(config, "MIN_TILE", 2 * cpu.GRAD_CHUNK + 17)
    monkeypatch.setattr(config, "DEFAULT_TILE", 2 * cpu.GRAD_CHUNK + 17)
    X = np.random.default_rng(7).standard_normal((3 * cpu.GRAD_CHUNK + 5, 4))
    arch = nf.MLP(depth=3, activation=activation, W_std=1.3, b_std=0.2)
    K, dK = kernel_with_gradient(arch, X, n_jobs=2)
    np.testing.assert_array_equal(K, nf.kernel(arch, X))
    h = 1e-4
    for p, (dw, db) in enumerate(((1.0, 0.0), (0.0, 1.0))):

        def f(step, dw=dw, db=db):
            return nf.kernel(nf.MLP(depth=3, activation=activation, W_std=1.3 * np.exp(step * dw),
                                    b_std=0.2 * np.exp(step * db)), X)  # fmt: skip

        d1 = (f(h) - f(-h)) / (2 * h)
        d2 = (f(h / 2) - f(-h / 2)) / h
        fd = (4 * d2 - d1) / 3
        assert np.abs(dK[..., p] - fd).max() <= 1e-8 * np.abs(fd).max()


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu"])
@pytest.mark.parametrize("options", [{"residual": True}, {"residual": True, "parameterization": "standard"},
                                     {"parameterization": "standard", "get": "nngp"}, {"b_std": None}])  # fmt: skip
def test_closed_form_gradient_of_residual_and_standard_networks(activation, options):
    """The row kernel's two loops (inside and outside residual blocks: the identity branch's terms
    are left out where res = 0) and the structurally zero coefficient derivatives it skips, for
    both parameterizations, against central differences of the forward kernel."""
    options = dict(options)
    get = options.pop("get", "ntk")
    b_std = options.pop("b_std", 0.2)
    X = np.random.default_rng(11).standard_normal((40, 3))
    arch = nf.MLP(depth=3, activation=activation, W_std=1.3, b_std=b_std, **options)
    K, dK = kernel_with_gradient(arch, X, get=get)
    np.testing.assert_array_equal(K, nf.kernel(arch, X, get=get))
    h = 1e-4
    for p, (dw, db) in enumerate(((1.0, 0.0), (0.0, 1.0))):
        if b_std is None and p == 1:
            np.testing.assert_array_equal(dK[..., 1], 0.0)
            continue

        def f(step, dw=dw, db=db):
            b = None if b_std is None else b_std * np.exp(step * db)
            return nf.kernel(nf.MLP(depth=3, activation=activation, W_std=1.3 * np.exp(step * dw), b_std=b,
                                    **options), X, get=get)  # fmt: skip

        fd = (4 * (f(h / 2) - f(-h / 2)) / h - (f(h) - f(-h)) / (2 * h)) / 3
        assert np.abs(dK[..., p] - fd).max() <= 1e-8 * np.abs(fd).max()


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_streamed_mirrored_strips_change_no_value(activation, monkeypatch):
    """``tile_grad`` stores strips of 8 rows (their edges on 64-byte lines of the outputs, so not on the
    tiles' edges here: 150-row tiles) and their mirror images; with non-temporal stores (forced by
    STREAM_MIN_BYTES = 0) every value is bit for bit that of ordinary stores, K that of the forward
    kernel, and K and dK exactly symmetric."""
    from ntkfast import config, engine

    monkeypatch.setattr(config, "MIN_TILE", 150)
    monkeypatch.setattr(config, "DEFAULT_TILE", 150)
    X = np.random.default_rng(3).standard_normal((600, 5))
    arch = nf.MLP(depth=3, activation=activation, W_std=1.3, b_std=0.2)
    K0, dK0 = kernel_with_gradient(arch, X, n_jobs=2)
    monkeypatch.setattr(config, "STREAM_MIN_BYTES", 0)
    K1, dK1 = kernel_with_gradient(arch, X, n_jobs=2)
    assert engine.stream_phase([K1[None], dK1.transpose(2, 0, 1)]) == 0  # the streaming path was taken
    np.testing.assert_array_equal(K1, K0)
    np.testing.assert_array_equal(dK1, dK0)
    np.testing.assert_array_equal(K1, nf.kernel(arch, X))
    np.testing.assert_array_equal(K1, K1.T)
    np.testing.assert_array_equal(dK1, dK1.transpose(1, 0, 2))


@pytest.mark.parametrize("activation", ["erf", "gelu"])
@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_diagonal_gradient_at_huge_variances(activation, get):
    """Variances ~1e40: the diagonal's derivative (``recursion.dual_diag_grad``, from the closed form
    of the diagonal rather than the sum of the general partials, which cancels there: GELU was 2e3
    times its size off at 1e40) against central differences of ``kernel_diag``."""
    X = np.random.default_rng(0).standard_normal((20, 3)) * 1e20
    arch = nf.MLP(depth=3, activation=activation, W_std=1.4, b_std=0.1)
    K, dK = kernel_with_gradient(arch, X, get=get)
    h = 1e-4
    # (only W_std: b_std's effect, ~0.1 against K ~ 1e40, is below the forward kernel's rounding)

    def f(step):
        return nf.kernel_diag(nf.MLP(depth=3, activation=activation, W_std=1.4 * np.exp(step), b_std=0.1), X, get=get)

    fd = (f(h) - f(-h)) / (2 * h)
    np.testing.assert_allclose(np.diagonal(dK[..., 0]), fd, rtol=1e-6)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "abs", "erf"])
@pytest.mark.parametrize("scale", [1e-100, 1.0, 1e100, 1e300])
def test_log_variable_partials_match_dual_grad(name, scale):
    """``recursion.dual_grad_log`` (one partial per variance, in the family's log variable: what the tile
    loop uses, times ``grad_hoist``) against ``dual_grad``'s partials in (sxx, syy, sxy), which
    tests/test_scales.py checks against finite differences at these scales; K and Kdot bit for bit."""
    from ntkfast import recursion, spec

    act = spec.get_activation(name)
    code = act.code
    assert code in recursion.LOG_GRAD_CODES
    for sxx, syy, sxy in ((1.3, 0.7, 0.4), (1.3, 0.7, -0.9), (2.0, 0.5, 0.0), (1.0, 1.0, 1.0), (1e-3, 2.0, 0.03)):
        sxx, syy, sxy = sxx * scale, syy * scale, sxy * scale
        k, kdot, kx, ky, kxy, dx, dy, dxy = recursion.dual_grad(code, *act.params, sxx, syy, sxy)
        lk, lkdot, kl, dl, ldxy, lkxy, px, pz = recursion.dual_grad_log(code, *act.params, sxx, syy, sxy)
        hx, hy = (recursion.grad_hoist(code, *act.params, s) for s in (sxx, syy))
        assert (lk, lkdot) == (k, kdot)
        # px, pz: a pair held at parallel (erf's (1, 1, 1): recursion._scaled_det1_held)
        gots = (kl * px * hx, kl * hy, kl * pz + lkxy, dl * px * hx, dl * hy, ldxy)
        for got, want in zip(gots, (kx, ky, kxy, dx, dy, dxy)):
            assert got == pytest.approx(want, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("activation", ["sin", "cos", "rbf"])
@pytest.mark.parametrize("scale", [1.0, 1e50, 1e150])
def test_sin_family_gradient_of_parallel_pairs_at_any_scale(activation, scale):
    """A duplicate row's gradient equals the diagonal's, and an antiparallel row's is finite, at
    any input scale: the sin family's partials go through those of the pair's distance, held at
    its floor for parallel pairs (``recursion._sq_distance_grad``).  Summed as 1 + 1 - 2 over
    derivatives of size sxx, they left the rounding of those times Theta: -3e83 times the right
    value at scale 1e50, -inf at 1e120."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 6))
    X[1] = X[0]
    X[2] = -X[0]
    X *= scale
    for depth in (1, 2, 3):
        arch = nf.MLP(depth=depth, activation=activation, W_std=1.4, b_std=0.1)
        K, dK = kernel_with_gradient(arch, X)
        assert np.isfinite(K).all() and np.isfinite(dK).all()
        np.testing.assert_allclose(dK[0, 1], dK[0, 0], rtol=1e-12)
        np.testing.assert_allclose(dK, dK.transpose(1, 0, 2), rtol=0, atol=0)
        if scale == 1.0:  # against central differences of the kernel in log W_std
            h = 1e-5
            up = nf.kernel(nf.MLP(depth=depth, activation=activation, W_std=1.4 * np.exp(h), b_std=0.1), X)
            down = nf.kernel(nf.MLP(depth=depth, activation=activation, W_std=1.4 * np.exp(-h), b_std=0.1), X)
            np.testing.assert_allclose(dK[..., 0], (up - down) / (2 * h), rtol=0, atol=1e-8 * np.abs(dK[..., 0]).max())
