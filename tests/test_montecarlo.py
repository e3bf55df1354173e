"""``ntkfast.kernel`` against finite random networks written here in NumPy.

The networks follow DESIGN.md section 2 and use nothing from ntkfast except the activations'
``phi``/``dphi``:

* NTK parameterization: a Dense layer with fan-in n is z = a @ (W_std / sqrt(n) * P_W) + b_std * P_b,
  with trainable P_W, P_b ~ N(0, 1).
* Standard parameterization: z = a @ P_W + P_b, P_W ~ N(0, W_std^2 / n), P_b ~ N(0, b_std^2).
* b_std=None: no bias parameters.
* MLP(depth=L): L (Dense, phi) pairs, then a readout Dense.  residual=True: h = Dense(x), L blocks
  h <- h + Dense(phi(h)), readout Dense(phi(h)).

NNGP: the empirical second moment f(x) f(y), averaged over the readout units of one network and
then over independent networks; the per-network averages are iid, which gives a standard error.
The outputs of a network on the n test points are drawn layer by layer without the W matrices:
given a layer's inputs A (n, fan_in), its outputs A (w P_W) + b 1 P_b^T have iid Gaussian columns
of covariance w^2 A A^T + b^2 1 1^T, so with A' = [w A, b 1] = R^T Q^T (QR of A'^T) they are
R^T G, G an (n, fan_out) standard normal matrix: exactly the same law as the network's, for n
instead of fan_in numbers per unit (``sample_outputs``; checked against ``forward`` below).
One NNGP check per activation family: the families' dual maps are proved to ~1e-14 by the
quadrature of tests/test_quadrature.py, so these check what quadrature cannot (the layer
recursion, W_std/b_std, depth, residual blocks, end to end through ``nf.kernel``).
NTK: for one scalar output, Theta(x, y) = sum over parameters of df(x)/dp df(y)/dp, from explicit
backpropagation (checked against finite differences below), averaged over seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

import ntkfast as nf


# ------------------------------------------------------------------------- finite networks
@dataclass
class Net:
    act: object
    residual: bool
    w_scale: list  # per layer: z = a @ (w_scale * P_W) + b_scale * P_b
    b_scale: list
    PW: list
    Pb: list


def make_net(rng, act, d, width, depth, W_std, b_std, param="ntk", residual=False, n_out=1):
    dims = [d] + [width] * (depth + 1 if residual else depth) + [n_out]
    net = Net(act, residual, [], [], [], [])
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        if param == "ntk":
            net.w_scale.append(W_std / math.sqrt(fan_in))
            net.b_scale.append(0.0 if b_std is None else b_std)
            net.PW.append(rng.standard_normal((fan_in, fan_out)))
            net.Pb.append(rng.standard_normal(fan_out))
        else:
            net.w_scale.append(1.0)
            net.b_scale.append(0.0 if b_std is None else 1.0)
            net.PW.append(W_std / math.sqrt(fan_in) * rng.standard_normal((fan_in, fan_out)))
            net.Pb.append((0.0 if b_std is None else b_std) * rng.standard_normal(fan_out))
    return net


def forward(net, X):
    """Returns (inputs, states, out): inputs[l] is layer l's input, states[l] the hidden state
    after layer l (the pre-activation that phi is applied to next), out = states[-1]."""
    L = len(net.PW)
    inputs, states = [X], []
    h = X @ (net.w_scale[0] * net.PW[0]) + net.b_scale[0] * net.Pb[0]
    states.append(h)
    for l in range(1, L):
        a = net.act.phi(h)
        inputs.append(a)
        z = a @ (net.w_scale[l] * net.PW[l]) + net.b_scale[l] * net.Pb[l]
        h = h + z if (net.residual and l < L - 1) else z
        states.append(h)
    return inputs, states, h


def backward(net, states, n):
    """deltas[l] = d f_0 / d z_l (n, fan_out of layer l) for the first output f_0."""
    L = len(net.PW)
    deltas = [None] * L
    deltas[L - 1] = np.zeros((n, net.PW[L - 1].shape[1]))
    deltas[L - 1][:, 0] = 1.0
    for l in range(L - 1, 0, -1):
        g = (deltas[l] @ (net.w_scale[l] * net.PW[l]).T) * net.act.dphi(states[l - 1])
        if net.residual and l < L - 1:  # states[l] = states[l - 1] + z_l: identity branch
            g = g + deltas[l]
        deltas[l - 1] = g
    return deltas


def sample_outputs(rng, act, X, width, depth, W_std, b_std, residual=False, n_out=1):
    """Outputs (n, n_out) of one random NTK-parameterized network on the rows of X, drawn in law
    layer by layer (module docstring): the same distribution as ``forward(make_net(...), X)[2]``."""
    n = X.shape[0]
    dims = [X.shape[1]] + [width] * (depth + 1 if residual else depth) + [n_out]
    L = len(dims) - 1
    h = None
    for l in range(L):
        a = X if l == 0 else act.phi(h)
        cols = [W_std / math.sqrt(dims[l]) * a] + ([] if b_std is None else [np.full((n, 1), b_std)])
        A = np.concatenate(cols, axis=1)  # (n, fan_in [+ 1])
        if A.shape[1] <= n:
            z = A @ rng.standard_normal((A.shape[1], dims[l + 1]))
        else:
            R = np.linalg.qr(A.T, mode="r")  # A = R^T Q^T with Q^T Q = I
            z = R.T @ rng.standard_normal((R.shape[0], dims[l + 1]))
        h = h + z if (residual and 0 < l < L - 1) else z
    return h


def test_sampled_outputs_have_the_law_of_the_network():
    """sample_outputs against forward(make_net): second moments of one output unit agree within
    5 standard errors over 4000 draws each (both are exact draws of the same law)."""
    act, X = nf.Erf(1.2, 0.8, 0.1), X5
    for residual, b_std in ((False, 0.4), (True, None)):
        rng = np.random.default_rng(3)
        a = np.array([sample_outputs(rng, act, X, 6, 2, 1.3, b_std, residual, 50) for _ in range(80)])
        b = np.array(
            [forward(make_net(rng, act, 3, 6, 2, 1.3, b_std, "ntk", residual, 50), X)[2] for _ in range(80)]
        )
        ma, mb = (np.einsum("sik,sjk->sij", v, v).reshape(-1, 25) for v in (a, b))  # per network, summed over units
        diff = ma.mean(0) - mb.mean(0)
        se = np.sqrt(ma.var(0, ddof=1) / len(ma) + mb.var(0, ddof=1) / len(mb))
        assert (np.abs(diff) <= 5 * se + 1e-12).all(), np.max(np.abs(diff) / se)


def per_example_gradients(net, X):
    """(n, n_params): d f_0(x_i) / dp for p = (P_W, P_b) of every layer, flattened."""
    inputs, states, _ = forward(net, X)
    deltas = backward(net, states, X.shape[0])
    parts = []
    for l, (a, dl) in enumerate(zip(inputs, deltas)):
        parts.append((net.w_scale[l] * a[:, :, None] * dl[:, None, :]).reshape(X.shape[0], -1))
        parts.append(net.b_scale[l] * dl)
    return np.concatenate(parts, axis=1)


def empirical_ntk(net, X):
    """sum_l w_scale^2 (A A^T)(D D^T) + b_scale^2 D D^T: the Gram of the per-example gradients,
    layer by layer without forming them."""
    inputs, states, _ = forward(net, X)
    deltas = backward(net, states, X.shape[0])
    theta = 0.0
    for l, (a, dl) in enumerate(zip(inputs, deltas)):
        dd = dl @ dl.T
        theta = theta + net.w_scale[l] ** 2 * (a @ a.T) * dd + net.b_scale[l] ** 2 * dd
    return theta


def _inputs():
    rng = np.random.default_rng(2024)
    X = rng.standard_normal((5, 3))
    X[3] = 2.0 * X[0]  # a parallel pair (rho = 1 in the first layer when there is no bias)
    return X


X5 = _inputs()


def _scale(K):
    d = np.sqrt(np.abs(np.diag(K)))
    return np.outer(d, d)


# ------------------------------------------------------------------- checks of the harness
@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("b_std", [None, 0.4])
def test_backprop_matches_finite_differences(param, residual, b_std):
    """The test's own backprop: gradients = central differences of the forward pass, and the
    layer-wise empirical NTK = Gram of the flattened per-example gradients."""
    rng = np.random.default_rng(7)
    net = make_net(rng, nf.Erf(1.2, 0.8, 0.1), 3, 6, 2, 1.3, b_std, param, residual, n_out=2)
    X = X5
    G = per_example_gradients(net, X)
    h = 1e-6
    fd = []
    for l in range(len(net.PW)):
        for arr in (net.PW[l], net.Pb[l]):
            flat = arr.reshape(-1)
            for j in range(flat.size):
                old = flat[j]
                flat[j] = old + h
                fp = forward(net, X)[2][:, 0]
                flat[j] = old - h
                fm = forward(net, X)[2][:, 0]
                flat[j] = old
                fd.append((fp - fm) / (2 * h))
    # parameter order: per layer, P_W (row-major) then P_b, as in per_example_gradients
    fd = np.array(fd).T  # P_b of a layer without bias (b_scale = 0) has no effect: both 0
    np.testing.assert_allclose(G, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(empirical_ntk(net, X), G @ G.T, rtol=1e-12)


# -------------------------------------------------------------------------------- NNGP (MC)
N_HIDDEN = 512
N_READOUT = 256


def mc_nngp(act, W_std, b_std, residual=False, n_nets=250, seed=0, depth=2):
    """(mean, standard error) of the empirical NNGP over ``n_nets`` networks of width 512;
    each network contributes the average of f(x) f(y) over its 256 readout units."""
    rng = np.random.default_rng(seed)
    ests = np.empty((n_nets, len(X5), len(X5)))
    for m in range(n_nets):
        f = sample_outputs(rng, act, X5, N_HIDDEN, depth, W_std, b_std, residual, N_READOUT)
        ests[m] = f @ f.T / N_READOUT
    return ests.mean(0), ests.std(0, ddof=1) / math.sqrt(n_nets)


def _check_nngp(arch, mean, se, bias_c):
    """|MC - kernel| <= 5 SE + bias_c / width * sqrt(K(x,x) K(y,y)), for K(X, X) and a K(X, Y) block.

    Finite-width bias: given the first hidden layer, the second layer's pre-activations are
    exactly Gaussian with an empirical covariance that fluctuates by O(1/sqrt(width)); the
    kernel is a nonlinear function of it, so E[MC] - K = O(1/width).  Measured at width 512 with
    1500 networks: <= 0.6% of the scale for the bounded-ish activations (c = 5 gives 1%); for
    ReLU(x)^2 and x^2 the fourth moments are large (E[phi^4]/E[phi^2]^2 - 1 = 22 and 10.7 for the
    first layer) and the bias was 4.5% and 2.7% (c = 40 and 20)."""
    K = nf.kernel(arch, X5, get="nngp")
    scale = _scale(K)
    tol = 5 * se + bias_c / N_HIDDEN * scale
    err = np.abs(mean - K)
    assert (err <= tol).all(), f"max |MC - nngp| / tol = {np.max(err / tol):.2f}\nMC:\n{mean}\nSE:\n{se}\nnngp:\n{K}"
    K_xy = nf.kernel(arch, X5[:2], X5[2:], get="nngp")
    assert (np.abs(mean[:2, 2:] - K_xy) <= tol[:2, 2:]).all()


NNGP_CASES = [
    # (activation, W_std, b_std, bias constant): one per family (ReLU/Abs are ABReLU, Sin/Cos are
    # Rbf's family, Identity is Monomial(1)); ReLU with biases is also checked by the residual and
    # NTK cases below, which go through the NNGP recursion
    (nf.LeakyReLU(0.2), 1.3, None, 5),
    (nf.Erf(), 1.5, 0.5, 5),
    (nf.Gelu(), 1.3, 0.5, 5),
    (nf.Rbf(0.5), 1.0, 0.5, 5),
    (nf.Sign(), 1.0, 0.5, 5),
    (nf.Exp(1.0, 0.3), 1.0, 0.5, 5),
    (nf.Gaussian(1.0, -1.0), 1.2, 0.5, 5),
    (nf.RectifiedMonomial(2), 1.0, 0.5, 40),
    (nf.Monomial(2), 0.8, 0.5, 20),
]


@pytest.mark.parametrize("act,W_std,b_std,bias_c", NNGP_CASES, ids=lambda v: getattr(v, "name", None))
def test_nngp_against_random_networks(act, W_std, b_std, bias_c):
    arch = nf.MLP(depth=2, activation=act, W_std=W_std, b_std=b_std, parameterization="ntk")
    mean, se = mc_nngp(act, W_std, b_std)
    _check_nngp(arch, mean, se, bias_c)


@pytest.mark.parametrize("act,W_std,b_std", [(nf.ReLU(), 1.0, 0.3), (nf.Erf(), 1.2, 0.3)], ids=["relu", "erf"])
def test_residual_nngp_against_random_networks(act, W_std, b_std):
    arch = nf.MLP(depth=2, activation=act, W_std=W_std, b_std=b_std, residual=True)
    mean, se = mc_nngp(act, W_std, b_std, residual=True, n_nets=200, seed=1)
    _check_nngp(arch, mean, se, 5)


# --------------------------------------------------------------------------------- NTK (MC)
NTK_CASES = [
    # (activation, W_std, b_std, parameterization, residual, width, seeds)
    (nf.ReLU(), 1.4, None, "ntk", False, 2048, 24),
    (nf.Erf(), 1.5, 0.3, "ntk", False, 2048, 32),
    (nf.ReLU(), 1.2, 0.5, "ntk", False, 1024, 48),
    (nf.ReLU(), 1.3, 0.3, "standard", False, 1024, 48),
    (nf.Erf(), 1.3, None, "standard", False, 1024, 48),
    (nf.ReLU(), 1.0, 0.3, "ntk", True, 1024, 48),
    (nf.Erf(), 1.0, 0.3, "standard", True, 1024, 32),
]


def _ntk_id(case):
    act, W_std, b_std, param, residual, width, _ = case
    return f"{act.name}-{param}-b{b_std}-{'res-' if residual else ''}w{width}"


@pytest.mark.parametrize("case", NTK_CASES, ids=_ntk_id)
def test_ntk_against_random_networks(case):
    """Empirical NTK of one scalar output averaged over seeds vs nf.kernel(get="ntk").

    One network's NTK fluctuates by O(1/sqrt(width)) (measured: 6.5% of sqrt(Θxx Θyy) per seed
    at width 2048, 8-12% at 1024), so the seed counts make the standard error of the mean
    0.5-1.7% (max over entries); the test asserts SE <= 2% and then a 5% agreement (observed:
    <= 2.8%).  In a 400-seed run at width 1024 (these cases except erf/standard/no-bias, which
    was checked at 2048) the mean agreed to <= 0.7% (|z| <= 2.5): the finite-width bias is
    well below 5%, so a 5% discrepancy is the package's."""
    act, W_std, b_std, param, residual, width, seeds = case
    arch = nf.MLP(
        depth=2, activation=act, W_std=W_std, b_std=b_std, parameterization=param, width=width, residual=residual
    )
    ests = []
    for s in range(seeds):
        net = make_net(
            np.random.default_rng(1000 + s), act, X5.shape[1], width, 2, W_std, b_std, param, residual, n_out=1
        )
        ests.append(empirical_ntk(net, X5))
    ests = np.array(ests)
    mean, se = ests.mean(0), ests.std(0, ddof=1) / math.sqrt(seeds)
    theta = nf.kernel(arch, X5, get="ntk")
    scale = _scale(theta)
    assert (se <= 0.02 * scale).all(), f"MC too noisy to test: SE/scale {np.max(se / scale):.3f}"
    rel = np.abs(mean - theta) / scale
    assert (rel <= 0.05).all(), f"max |MC - ntk| / scale = {rel.max():.3f}\nMC:\n{mean}\nntk:\n{theta}"
    theta_xy = nf.kernel(arch, X5[:2], X5[2:], get="ntk")
    assert (np.abs(mean[:2, 2:] - theta_xy) <= 0.05 * scale[:2, 2:]).all()


# ----------------------------------------------------------------------- Fourier features
@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("act", ["relu", "erf", nf.Gelu()])
def test_fourier_features_equal_explicit_features(param, act):
    rng = np.random.default_rng(11)
    B = 0.7 * rng.standard_normal((4, 3))
    X = rng.uniform(-1, 1, (6, 3))
    Y = rng.uniform(-1, 1, (3, 3))

    def gamma(Z):
        proj = 2 * np.pi * Z @ B.T
        return np.concatenate([np.sin(proj), np.cos(proj)], axis=1)

    kw = dict(depth=1, activation=act, W_std=1.4, b_std=0.2, parameterization=param, width=300)
    with_map = nf.MLP(**kw, input_map=nf.FourierFeatures(B))
    plain = nf.MLP(**kw)
    for get in ("nngp", "ntk"):
        np.testing.assert_allclose(
            nf.kernel(with_map, X, get=get), nf.kernel(plain, gamma(X), get=get), rtol=1e-12, atol=1e-14
        )
        np.testing.assert_allclose(
            nf.kernel(with_map, X, Y, get=get),
            nf.kernel(plain, gamma(X), gamma(Y), get=get),
            rtol=1e-12,
            atol=1e-14,
        )
        # <gamma(x), gamma(y)> = sum_k cos(2 pi b_k . (x - y)): the kernel is stationary
        shift = np.array([0.3, -1.1, 0.45])
        np.testing.assert_allclose(
            nf.kernel(with_map, X + shift, Y + shift, get=get),
            nf.kernel(with_map, X, Y, get=get),
            rtol=1e-10,
            atol=1e-12,
        )
