"""The checklist for adding an activation (docs/design.md, "Adding an activation"), as a test.

An activation lives in many places: its object in ``ntkfast.spec`` (code, params, phi, dphi, a
name in ``ACTIVATIONS``), the Numba dispatch in ``ntkfast.recursion`` (``dual``, ``dual_diag``,
``dual_grad``, ``dual_diag_grad``, ``GRADIENT_CODES``), the CUDA twin ``recursion.cuh`` (enum
value, ``case`` in ``dual`` and ``dual_diag``), and the tests that prove it (quadrature, CUDA host
harness).  Forgetting one of them does not fail loudly elsewhere: an unknown code falls through the
``if``/``elif`` chains to the monomial branch, and the GPU would compute some other kernel.  Every
check below is parametrised over every activation that ``spec.ACTIVATIONS`` can build, so a new
name added there fails here until each place knows it.

Truth for the dispatch: ``dual``'s K is compared with E[phi(u) phi(v)] by a polar Gauss-Legendre rule
written here, with the activation's own NumPy ``phi`` (the precise proof is tests/test_quadrature.py;
this only has to tell one family from another, so the tolerance is 1e-6).
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import recursion, spec

ROOT = Path(__file__).resolve().parents[1]
CUH = ROOT / "ntkfast" / "backends" / "cuda" / "recursion.cuh"
TESTS = Path(__file__).resolve().parent

# Activations whose hyper-parameter gradient (kernel_grad / NTKKernel(eval_gradient=True)) is
# deliberately not implemented, with the reason; docs/design.md lists the same.
NO_GRADIENT: dict[int, str] = {}
# Hermite-series activations: the gradient is ntkfast.backends.cpu_series_grad (per-row derivative
# coefficients, no recursion.dual_grad); kernel_grad.has_gradient accepts them.
SERIES_GRADIENT = (spec.SERIES,)

# Kdot = E[phi'(u) phi'(v)] only in the distributional sense where phi jumps (dphi is 0 a.e.): sign, step.
DISTRIBUTIONAL_KDOT = (spec.SIGN, spec.RECTIFIED_MONOMIAL)

# Family constants in spec: a code is either one of these or base + degree for the two ranged families.
FAMILIES = ("ABRELU", "ERF", "GELU", "SIN", "SIGN", "EXP", "GAUSSIAN", "SERIES")
# Families the engine computes outside recursion.dual (on the GPU: gram.cu series_layers): the Hermite series
# (ntkfast.series, backends/cpu_series; proved in tests/test_activations.py).
OUTSIDE_RECURSION = ("SERIES",)
RANGED = {"RECTIFIED_MONOMIAL": "MAX_RECTIFIED_DEGREE", "MONOMIAL": "MAX_MONOMIAL_DEGREE"}


def _every_activation():
    """One instance per name in ACTIVATIONS, plus every degree of the ranged families (each its own code)."""
    acts = {}
    for name, factory in spec.ACTIVATIONS.items():
        act = factory()
        acts[f"{name}"] = act
    for base, max_name in RANGED.items():
        cls = spec.RectifiedMonomial if base == "RECTIFIED_MONOMIAL" else spec.Monomial
        for n in range(getattr(spec, max_name) + 1):
            acts[f"{base.lower()}{n}"] = cls(n)
    return acts


ACTS = _every_activation()
IDS = list(ACTS)


def _family(code: int) -> str:
    """The spec constant that names ``code``'s family (the name the dispatch chains test against)."""
    for name in FAMILIES:
        if getattr(spec, name) == code:
            return name
    for base, max_name in RANGED.items():
        if 0 <= code - getattr(spec, base) <= getattr(spec, max_name):
            return base
    raise AssertionError(f"code {code} is not a spec family constant: add it to spec and to this test's FAMILIES")


# ------------------------------------------------------------------------------------- quadrature truth
_LEG_X, _LEG_W = np.polynomial.legendre.leggauss(40)


def _gauss_legendre(lo, hi):
    return 0.5 * (hi - lo) * _LEG_X + 0.5 * (hi + lo), 0.5 * (hi - lo) * _LEG_W


def _expectation(f, g, sxx, syy, sxy):
    """E[f(u) g(v)] for (u, v) ~ N(0, [[sxx, sxy], [sxy, syy]]) in polar coordinates.

    u = sqrt(sxx) R cos(a), v = sqrt(syy) R cos(a - theta) with cos(theta) = rho; every kink or jump of
    the activations sits at u = 0 or v = 0, i.e. on four rays, so the angle is split there and each piece
    (and R in [0, 12] split in four) gets its own Gauss-Legendre rule.
    """
    theta = math.acos(sxy / math.sqrt(sxx * syy))
    rays = sorted({0.0, 2 * math.pi} | {(r + k * math.pi / 2) % (2 * math.pi) for r in (0.0, theta) for k in (1, 3)})
    a, wa = map(np.concatenate, zip(*(_gauss_legendre(lo, hi) for lo, hi in zip(rays[:-1], rays[1:]))))
    r, wr = map(np.concatenate, zip(*(_gauss_legendre(lo, lo + 3.0) for lo in (0.0, 3.0, 6.0, 9.0))))
    wr = wr * r * np.exp(-0.5 * r * r)
    A, R = np.meshgrid(a, r, indexing="ij")
    u, v = math.sqrt(sxx) * R * np.cos(A), math.sqrt(syy) * R * np.cos(A - theta)
    return float(np.einsum("i,j,ij->", wa, wr, f(u) * g(v)) / (2 * math.pi))


SXX, SYY, SXY = 0.8, 0.5, 0.3


# ----------------------------------------------------------------------------------------------- spec
@pytest.mark.parametrize("name", IDS)
def test_spec_object(name):
    """code is an int, params three floats, phi/dphi vectorised (shape kept, finite)."""
    act = ACTS[name]
    assert isinstance(act, spec.Activation)
    assert isinstance(act.code, int)
    _family(act.code)
    p = act.params
    assert len(p) == 3 and all(isinstance(float(v), float) and math.isfinite(v) for v in p)
    x = np.linspace(-2.0, 2.0, 35).reshape(5, 7)
    for fn in (act.phi, act.dphi):
        y = np.asarray(fn(x))
        assert y.shape == x.shape and np.all(np.isfinite(y))
    assert spec.get_activation(act) is act


def test_every_name_resolves():
    for name in spec.ACTIVATIONS:
        assert nf.MLP(depth=1, activation=name).activation == spec.ACTIVATIONS[name]()


def test_codes_are_distinct_per_family():
    """Two different families never share a code (the kernels would silently pick the wrong one)."""
    seen: dict[int, type] = {}
    for act in ACTS.values():
        if act.code == spec.SERIES:  # one code for all of them: the kernels read per-row coefficients
            assert isinstance(act, spec.SeriesActivation), act
            continue
        assert seen.setdefault(act.code, type(act)) is type(act), act


# ------------------------------------------------------------------------------------------- recursion
@pytest.mark.parametrize("name", IDS)
def test_recursion_dispatch_knows_the_code(name):
    """dual's K is E[phi(u) phi(v)] (so the code reaches this family's branch), dual_diag agrees with dual."""
    act = ACTS[name]
    if act.code == spec.SERIES:
        _check_series(act)
        return
    k, kdot = recursion.dual(act.code, *act.params, SXX, SYY, SXY)
    assert math.isfinite(k) and math.isfinite(kdot)
    truth = _expectation(act.phi, act.phi, SXX, SYY, SXY)
    assert k == pytest.approx(truth, rel=1e-6, abs=1e-9), (k, truth)
    kdot_truth = _expectation(act.dphi, act.dphi, SXX, SYY, SXY)
    if act.code not in DISTRIBUTIONAL_KDOT:
        assert kdot == pytest.approx(kdot_truth, rel=1e-6, abs=1e-9), (kdot, kdot_truth)
    kd, kdotd = recursion.dual_diag(act.code, *act.params, SXX)
    k1, kdot1 = recursion.dual(act.code, *act.params, SXX, SXX, SXX)
    assert kd == pytest.approx(k1, rel=1e-9, abs=1e-12)
    assert kdotd == pytest.approx(kdot1, rel=1e-9, abs=1e-12) or not math.isfinite(kdot1)


def _check_series(act):
    """The series route (ntkfast.series) for a SERIES activation: K, Kdot against the quadrature,
    and the diagonal (the energies) against the pair formula at rho = 1."""
    import warnings

    from ntkfast import series

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", series.SeriesAccuracyWarning)  # ELU/SELU: bound ~1e-5 at rho = 1
        ls = series.layer_series(act, np.array([SXX, SYY]))
    rho = SXY / math.sqrt(SXX * SYY)
    k, kdot = series.evaluate(ls, ls, np.array([0]), np.array([1]), np.array([rho]))
    assert k[0] == pytest.approx(_expectation(act.phi, act.phi, SXX, SYY, SXY), rel=1e-6, abs=1e-9)
    assert kdot[0] == pytest.approx(_expectation(act.dphi, act.dphi, SXX, SYY, SXY), rel=1e-6, abs=1e-9)
    k1, kdot1 = series.evaluate(ls, ls, np.array([0]), np.array([0]), np.array([1.0]))
    assert ls.e2[0] == pytest.approx(k1[0], rel=max(1e-9, 10 * ls.bound))
    assert ls.e2d[0] == pytest.approx(kdot1[0], rel=max(1e-9, 10 * ls.bound))


@pytest.mark.parametrize("name", IDS)
def test_gradient_or_documented_exclusion(name):
    """In GRADIENT_CODES (and dual_grad / dual_diag_grad agree with dual), or listed in NO_GRADIENT."""
    act = ACTS[name]
    if act.code in SERIES_GRADIENT:
        from ntkfast.kernel_grad import has_gradient

        assert has_gradient(nf.MLP(depth=1, activation=act))
        return
    if act.code in NO_GRADIENT:
        from ntkfast.kernel_grad import has_gradient

        assert act.code not in recursion.GRADIENT_CODES
        assert not has_gradient(nf.MLP(depth=1, activation=act))
        return
    assert act.code in recursion.GRADIENT_CODES, f"{name}: add its *_grad to recursion.dual_grad or to NO_GRADIENT"
    from ntkfast.kernel_grad import has_gradient

    assert has_gradient(nf.MLP(depth=1, activation=act))
    k, kdot = recursion.dual(act.code, *act.params, SXX, SYY, SXY)
    g = recursion.dual_grad(act.code, *act.params, SXX, SYY, SXY)
    assert len(g) == 8 and all(math.isfinite(v) for v in g)
    assert g[0] == pytest.approx(k, rel=1e-9, abs=1e-12) and g[1] == pytest.approx(kdot, rel=1e-9, abs=1e-12)
    kd, kdotd = recursion.dual_diag(act.code, *act.params, SXX)
    gd = recursion.dual_diag_grad(act.code, *act.params, SXX)
    assert gd[0] == pytest.approx(kd, rel=1e-9, abs=1e-12) and gd[1] == pytest.approx(kdotd, rel=1e-9, abs=1e-12)
    # dK/dsxy = Kdot (Price's theorem) except where Kdot is the almost-everywhere derivative (sign, step)
    if act.code not in (spec.SIGN, spec.RECTIFIED_MONOMIAL):
        assert g[4] == pytest.approx(kdot, rel=1e-9, abs=1e-12)


def _python_source_mentions(fn, family: str) -> bool:
    import inspect

    src = inspect.getsource(getattr(fn, "py_func", fn))
    return re.search(rf"\b{family}\b", src) is not None


@pytest.mark.parametrize("fn", ["dual", "dual_diag", "dual_grad"])
def test_recursion_dispatch_names_every_family(fn):
    """Each dispatch chain names every family constant (an unknown code would fall through to the monomials)."""
    f = getattr(recursion, fn)
    missing = {_family(a.code) for a in ACTS.values() if not _python_source_mentions(f, _family(a.code))}
    missing -= set(OUTSIDE_RECURSION)
    if fn == "dual_grad":
        missing -= {_family(c) for c in NO_GRADIENT}
    assert not missing, f"recursion.{fn} has no branch for {sorted(missing)}"


# ----------------------------------------------------------------------------------------------- CUDA
def _cuda_function_body(source: str, name: str) -> str:
    start = re.search(rf"inline\s+Dual<T>\s+{name}\s*\(", source)
    assert start, f"recursion.cuh has no {name}()"
    depth, i = 0, source.index("{", start.end())
    for j in range(i, len(source)):
        depth += {"{": 1, "}": -1}.get(source[j], 0)
        if depth == 0:
            return source[i : j + 1]
    raise AssertionError(f"unbalanced braces in {name}()")


@pytest.mark.parametrize("fn", ["dual", "dual_diag"])
def test_cuda_dispatch_names_every_family(fn):
    """recursion.cuh: the enum carries spec's value, and the switch has a case (or the ranged default) for it."""
    source = CUH.read_text()
    body = _cuda_function_body(source, fn)
    for family in sorted({_family(a.code) for a in ACTS.values()} - set(OUTSIDE_RECURSION)):
        assert re.search(rf"\b{family}\s*=\s*{getattr(spec, family)}\b", source), f"recursion.cuh enum: {family}"
        if family in RANGED:
            assert re.search(rf"\b{family}\b", body), f"recursion.cuh {fn}: no branch for {family}"
        else:
            assert re.search(rf"case\s+{family}\s*:", body), f"recursion.cuh {fn}: no case {family}"


def test_gpu_name_expressions_cover_every_code():
    """The GPU module instantiates its templates from the code alone (no per-activation list to forget)."""
    try:
        from ntkfast.backends.gpu import name_expressions
    except ImportError:  # the GPU package may move it; its own tests cover the new place
        pytest.skip("ntkfast.backends.gpu.name_expressions not found")
    for act in ACTS.values():
        exprs = name_expressions(act.code, "float64")
        assert exprs and all(f"<{act.code}, double>" in e or "sum_slices" in e for e in exprs)


# --------------------------------------------------------------------------------------- finite nets
@pytest.mark.parametrize("name", IDS)
def test_finite_network_runs(name):
    """FiniteMLP forward and empirical NTK work with the activation (phi/dphi through the layers)."""
    act = ACTS[name]
    X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    net = nf.FiniteMLP(nf.MLP(depth=2, activation=act, W_std=1.2, b_std=0.1, width=8), out_dim=1, seed=0)
    f = net.apply(X)
    theta = net.empirical_ntk(X)
    assert np.all(np.isfinite(f)) and theta.shape == (4, 4) and np.all(np.isfinite(theta))


# ------------------------------------------------------------------------------------ the proving tests
def _load_test_module(filename: str):
    spec_ = importlib.util.spec_from_file_location(f"_checklist_{filename[:-3]}", TESTS / filename)
    module = importlib.util.module_from_spec(spec_)
    try:
        spec_.loader.exec_module(module)
    except pytest.skip.Exception as exc:  # a module-level skip (e.g. nvcc missing) still defines nothing
        pytest.skip(f"{filename}: {exc}")
    return module


def _codes_covered(acts) -> set[str]:
    return {_family(a.code) for a in acts}


def test_quadrature_test_covers_every_family():
    """tests/test_quadrature.py (the precise truth) is parametrised over every family."""
    covered = _codes_covered(_load_test_module("test_quadrature.py").ACTS)
    series_module = _load_test_module("test_activations.py")  # the series family's precise truths
    proved = {type(a) for a in (*series_module.SMOOTH.values(), *series_module.KINKED.values())}
    if all(type(a) in proved for a in ACTS.values() if a.code == spec.SERIES):
        covered |= {"SERIES"}
    missing = {_family(a.code) for a in ACTS.values()} - covered
    assert not missing, f"tests/test_quadrature.py ACTS has no {sorted(missing)}"


def test_cuda_host_harness_covers_every_family():
    """tests/test_cuda_sources.py checks recursion.cuh against the Python for every family."""
    text = (TESTS / "test_cuda_sources.py").read_text()
    match = re.search(r"^ACTIVATIONS = \[(.*?)^\]", text, re.S | re.M)
    assert match, "tests/test_cuda_sources.py: ACTIVATIONS list not found"
    acts = eval(match.group(1).replace("\n", " ").join("[]"), {"spec": spec})  # noqa: S307 (our own test file)
    missing = {_family(a.code) for a in ACTS.values()} - _codes_covered(acts) - set(OUTSIDE_RECURSION)
    assert not missing, f"tests/test_cuda_sources.py ACTIVATIONS has no {sorted(missing)}"
