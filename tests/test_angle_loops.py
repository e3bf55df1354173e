"""The tile kernel's split loops for the angle families (``recursion.ANGLE_CODES``): the angle's r,
its theta, then (K, Kdot) and the step, each in a loop of its own (``backends.cpu`` ``layer_row``),
and the step without the res terms where res = 0.  The values are those of the one-loop formula
(``recursion.dual`` and ``recursion.step`` pair by pair) to rounding."""

from __future__ import annotations

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import engine
from ntkfast._jit import jit
from ntkfast.backends import cpu
from ntkfast.recursion import ANGLE_CODES, dual, step
from ntkfast.spec import ABReLU, RectifiedMonomial


@jit
def _one_loop(code, params, first, steps, G, sig_rows, sig_cols, nngp, ntk):
    """The recursion pair by pair through ``dual`` and ``step`` (the fused formula)."""
    for i in range(G.shape[0]):
        for j in range(G.shape[1]):
            s = first[0] * G[i, j] + first[1]
            t = first[2] * G[i, j] + first[3]
            for layer in range(steps.shape[0]):
                c = steps[layer]
                k, kdot = dual(code, params[0], params[1], params[2], sig_rows[layer, i], sig_cols[layer, j], s)
                s, t = step(k, kdot, s, t, c[0], c[1], c[2], c[3], c[4])
            nngp[i, j] = s
            ntk[i, j] = t


def _rows(dtype):
    rng = np.random.default_rng(3)
    X = 0.5 * rng.standard_normal((37, 5))
    X[4] = X[1]  # a duplicate row: parallel pairs
    X[7] = -X[2]  # antiparallel
    X[9] = 0.0  # a zero row: Sigma = 0
    X[11] = 1e-3 * X[3]  # a small, parallel row
    return X.astype(dtype)


_ACTIVATIONS = ["relu", ABReLU(a=-0.3, b=1.2), "sign", RectifiedMonomial(n=0), RectifiedMonomial(n=2),
                RectifiedMonomial(n=3)]  # fmt: skip
# max(x, 0)^3 with the identity branch leaves float32's range by the third block: two blocks there
_CASES = [(a, res, dt, 2 if res and dt == np.float32 and getattr(a, "n", 0) == 3 else 3)
          for a in _ACTIVATIONS for res in (False, True) for dt in (np.float64, np.float32)]  # fmt: skip


@pytest.mark.parametrize("activation, residual, dtype, depth", _CASES)
def test_split_loops_match_the_one_loop_formula(activation, residual, dtype, depth):
    arch = nf.MLP(depth=depth, activation=activation, W_std=1.2, b_std=0.1, residual=residual)
    X = _rows(dtype)
    rows, coef = engine.prepare_rows(arch, X)
    assert coef.code in ANGLE_CODES
    n = X.shape[0]
    G = np.ascontiguousarray(X @ X.T)
    nngp = np.empty((1, n, n), dtype)
    ntk = np.empty((1, n, n), dtype)
    write_at = np.array([coef.steps.shape[0]], np.int64)
    cpu.recursion_kernels(coef.code).tile(coef.params, coef.first, coef.steps, G, rows.sig, rows.sig, nngp, ntk, 0, 0,
                                          True, True, dtype(-np.inf), write_at, np.zeros(5, dtype),
                                          np.zeros(1, np.bool_))  # fmt: skip
    ref_nngp = np.empty((n, n), dtype)
    ref_ntk = np.empty((n, n), dtype)
    _one_loop(coef.code, coef.params, coef.first, coef.steps, G, rows.sig, rows.sig, ref_nngp, ref_ntk)
    eps = np.finfo(dtype).eps
    # pairs near parallel amplify a rounding into their angle (the square-root cusp; float32's are
    # recomputed in float64 by the engine): left to the edge checks below.  Sigma of the last step
    # in is the NNGP of the network one step shallower; the output NNGP's correlation bounds it.
    d = np.abs(np.diag(ref_nngp)).astype(np.float64)
    c = ref_nngp.astype(np.float64) ** 2 / (d[:, None] * d[None, :] + 1e-300)
    resolved = 1.0 - c > (1e-2 if dtype == np.float32 else 1e-4)
    for got, ref in ((nngp[0], ref_nngp), (ntk[0], ref_ntk)):
        scale = np.sqrt(np.abs(np.diag(ref))[:, None] * np.abs(np.diag(ref))[None, :]) + np.finfo(dtype).tiny
        err = np.where(resolved, np.abs(got - ref) / scale, 0.0)
        assert np.all(err <= 16 * eps), (err.max(), np.unravel_index(err.argmax(), err.shape))
    # the edges (a zero row, a duplicate pair) to a few roundings of the entry itself
    for i, j in ((9, 0), (9, 9), (1, 4), (2, 7)) if dtype == np.float64 else ((9, 0), (9, 9)):
        assert ntk[0][i, j] == pytest.approx(ref_ntk[i, j], rel=8 * eps, abs=np.finfo(dtype).tiny)


def test_step_without_residual_terms_is_step_at_res_zero():
    """``step(..., residual=False)``: the step at res = 0 (to one rounding of W^2 K + b^2)."""
    rng = np.random.default_rng(0)
    for k, kdot, s, t, w2, b2, alpha, beta in rng.uniform(0.1, 3.0, (100, 8)):
        plain = step(k, kdot, s, t, 0.0, w2, b2, alpha, beta, False)
        full = step(k, kdot, s, t, 0.0, w2, b2, alpha, beta)
        np.testing.assert_allclose(plain, full, rtol=4e-16)
