"""Adversarial campaign: every case in its own subprocess, with a memory cap and a timeout.

Run ``python tools/campaign.py [--jobs 2] [--family NAME] [--json out.json]``.  Each case is a
snippet run as a fresh ``python`` process with ``numpy as np``, ``ntkfast as nf`` and a scratch
directory ``tmp`` (a ``pathlib.Path``) in scope, and an expectation:

* ``ok``: it must finish; its own ``assert`` lines check the result against a truth that does
  not come from the code under test (a closed form, scale invariance, homogeneity, a second
  algorithm).  A failed assert is a **silent wrong answer**.
* ``refuse``: it must raise an :class:`ntkfast.NtkfastError` (a clear refusal: one of the
  library's error types, which name the argument); any other exception is a **bare** error.
* ``either``: a correct result or a clear refusal.

Outcomes: ``pass``, ``crash`` (killed by a signal), ``hang`` (timed out), ``wrong``, ``bare``
(an exception that is not a deliberate refusal), ``file`` (a file lost, truncated or left
behind: the snippets assert on that themselves and report it through ``FileProblem``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

MEMORY_CAP = 6 * 2**30
TIMEOUT = 120.0

CHILD = r"""
import json, os, pathlib, sys, traceback
import numpy as np
import ntkfast as nf
tmp = pathlib.Path(sys.argv[1])


class FileProblem(Exception):
    pass


def approx(a, b, rtol=1e-10, atol=0.0):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.all(np.isfinite(a)), "non-finite result"
    err = np.max(np.abs(a - b) - atol - rtol * np.abs(b)) if a.size else 0.0
    assert err <= 0, f"max excess error {err:.3g} (rtol {rtol})"


out = {}
try:
    exec(compile(sys.stdin.read(), "<case>", "exec"))
    out["status"] = "ok"
except AssertionError as exc:
    out["status"] = "wrong"
    out["message"] = str(exc) or traceback.format_exc(limit=2)
except FileProblem as exc:
    out["status"] = "file"
    out["message"] = str(exc)
except nf.NtkfastError as exc:
    out["status"] = "refused"
    out["type"] = type(exc).__name__
    out["message"] = str(exc)
except BaseException as exc:
    out["status"] = "exception"
    out["type"] = type(exc).__name__
    out["message"] = str(exc)[:300]
    out["where"] = traceback.format_exc(limit=-2)[-400:]
print("@@RESULT@@" + json.dumps(out), flush=True)
"""


@dataclass
class Case:
    family: str
    name: str
    code: str
    expect: str = "ok"  # ok | refuse | either
    timeout: float = TIMEOUT
    memory: int = MEMORY_CAP
    env: dict | None = None
    runner: str = "child"  # child | script (the code is a whole script run by python, judged by its asserts)


CASES: list[Case] = []


def case(family, name, code, expect="ok", **kw):
    CASES.append(Case(family, name, textwrap.dedent(code), expect, **kw))


# ------------------------------------------------------------------------------------ scales
HOMOGENEOUS = {"relu": 1, "abs": 1, "leaky_relu": 1}
for act in HOMOGENEOUS:
    for c in (1e-150, 1e-78, 1e-30, 1e30, 1e78, 1e150):
        case(
            "scales",
            f"{act} inputs x{c:g}",
            f"""
            X = np.random.default_rng(0).standard_normal((6, 3))
            arch = nf.MLP(depth=3, activation="{act}", b_std=None)
            ref = nf.kernel(arch, X, get=("nngp", "ntk"))
            got = nf.kernel(arch, X * {c!r}, get=("nngp", "ntk"))
            for r, g in zip(ref, got):
                approx(g / {c!r} ** 2, r, rtol=1e-9)
            """,
            expect="either",
        )
    for w in (1e-40, 1e-10, 1e10, 1e40):
        case(
            "scales",
            f"{act} W_std={w:g}",
            f"""
            X = np.random.default_rng(1).standard_normal((5, 4))
            ref = nf.kernel(nf.MLP(depth=2, activation="{act}", b_std=None), X, get="nngp")
            got = nf.kernel(nf.MLP(depth=2, activation="{act}", W_std={w!r}, b_std=None), X, get="nngp")
            approx(got / {w!r} ** 6, ref, rtol=1e-9)  # W^2 per Dense layer, 3 Dense layers
            """,
            expect="either",
        )
for c in (1e-300, 1e-150, 1e-78, 1e78, 1e150, 1e300):
    for dtype in ("float64", "float32"):
        if dtype == "float32" and abs(__import__("math").log10(c)) > 30:
            cc = 1e-30 if c < 1 else 1e30
        else:
            cc = c
        case(
            "scales",
            f"sign scale-invariant x{cc:g} {dtype}",
            f"""
            X = np.random.default_rng(2).standard_normal((6, 3)).astype(np.{dtype})
            arch = nf.MLP(depth=3, activation="sign", b_std=None)
            ref = nf.kernel(arch, X)
            got = nf.kernel(arch, (X * np.{dtype}({cc!r})).astype(np.{dtype}))
            approx(got, ref, rtol={1e-9 if dtype == "float64" else 1e-4})
            """,
            expect="either",
        )
for depth in (200, 520, 1000):
    case(
        "scales",
        f"deep relu depth {depth} W_std=2 (fixed point: identical correlations -> 1)",
        f"""
        # ReLU with W_std^2 = 2, no bias preserves the diagonal exactly: K(x, x) = 2 |x|^2 / d * ... ;
        # compare the recursion with the exact correlation map iterated in extended precision.
        import math
        from decimal import Decimal, getcontext
        getcontext().prec = 50
        X = np.array([[1.0, 0.0], [0.6, 0.8]])
        arch = nf.MLP(depth={depth}, activation="relu", W_std=2 ** 0.5, b_std=None)
        K = nf.kernel(arch, X, get="nngp")
        # correlation map of ReLU: rho' = (sqrt(1 - rho^2) + (pi - acos(rho)) rho) / pi
        rho = 0.6
        for _ in range({depth}):
            rho = (math.sqrt(max(1 - rho * rho, 0.0)) + (math.pi - math.acos(min(rho, 1.0))) * rho) / math.pi
        # float64 iteration of the scalar map is itself accurate to ~depth * eps; compare at 1e-9
        approx(K[0, 1] / math.sqrt(K[0, 0] * K[1, 1]), rho, rtol=1e-9)
        """,
        expect="either",
    )
for act in ("erf", "gelu", "exp", "gaussian", "sin", "rbf"):
    for c in (1e-150, 1e150):
        case(
            "scales",
            f"{act} extreme inputs x{c:g}",
            f"""
            X = np.random.default_rng(3).standard_normal((4, 3)) * {c!r}
            K = nf.kernel(nf.MLP(depth=2, activation="{act}"), X)
            assert np.all(np.isfinite(K)), "non-finite"
            d = np.sqrt(np.diag(K))
            assert np.all(np.abs(K) <= np.outer(d, d) * (1 + 1e-12)), "Cauchy-Schwarz"
            """,
            expect="either",
        )

# ------------------------------------------------------------------------------------ aliasing
ALIAS = {
    "out=(o, o)": "o = np.empty((n, n)); nf.kernel(arch, X, get=('nngp', 'ntk'), out=(o, o))",
    "out overlapping views": (
        "buf = np.empty((n + 1, n)); nf.kernel(arch, X, get=('nngp', 'ntk'), out=(buf[:n], buf[1:]))"
    ),
    "out=X (square X)": "Xs = np.random.default_rng(0).standard_normal((n, n)); nf.kernel(arch, Xs, out=Xs)",
    "out is a view of Y": (
        "Y = np.random.default_rng(1).standard_normal((n, n)); nf.kernel(arch, Y.copy(), Y, out=Y)"
    ),
    "out is a view of X's buffer": (
        "buf = np.random.default_rng(2).standard_normal((2 * n, n)); "
        "nf.kernel(arch, buf[:n], buf[n:], out=buf[n:])"
    ),
}
for name, stmt in ALIAS.items():
    for dtype in ("float64", "float32"):
        case(
            "aliasing",
            f"{name} {dtype}",
            f"""
            n = 6
            X = np.random.default_rng(0).standard_normal((n, 3)).astype(np.{dtype})
            arch = nf.MLP(depth=2)
            {stmt.replace("np.empty((n, n))", f"np.empty((n, n), np.{dtype})")
                 .replace("np.empty((n + 1, n))", f"np.empty((n + 1, n), np.{dtype})")}
            """,
            expect="refuse",
        )
case(
    "aliasing",
    "separate outputs still work",
    """
    X = np.random.default_rng(0).standard_normal((7, 3))
    a, b = np.empty((7, 7)), np.empty((7, 7))
    arch = nf.MLP(depth=2)
    nf.kernel(arch, X, get=("nngp", "ntk"), out=(a, b))
    approx(a, nf.kernel(arch, X, get="nngp"), rtol=0)
    approx(b, nf.kernel(arch, X, get="ntk"), rtol=0)
    """,
)
case(
    "aliasing",
    "input not modified by kernel",
    """
    X = np.random.default_rng(0).standard_normal((9, 3)); X0 = X.copy()
    nf.kernel(nf.MLP(depth=2, input_map=nf.RandomFourierFeatures(8)), X)
    assert np.array_equal(X, X0), "input modified"
    """,
)
case(
    "aliasing",
    "cholesky_solve does not destroy K by default",
    """
    rng = np.random.default_rng(0); A = rng.standard_normal((20, 30)); K = A @ A.T; K0 = K.copy()
    nf.solvers.cholesky_solve(K, np.ones(20), 1e-3)
    assert np.array_equal(K, K0), "K modified"
    """,
)

# ------------------------------------------------------------------------------------ resources
for name, stmt in {
    "tile=10**9": "nf.kernel(nf.MLP(), np.ones((10, 3)), tile=10**9)",
    "n_jobs=10**6": "nf.kernel(nf.MLP(), np.ones((10, 3)), n_jobs=10**6)",
    "FiniteMLP width=10**6": "nf.FiniteMLP(nf.MLP(depth=2, width=10**6), in_dim=10**4)",
    "RandomFourierFeatures(10**9)": "nf.kernel(nf.MLP(input_map=nf.RandomFourierFeatures(10**9)), np.ones((3, 3)))",
    "monte_carlo_kernel width=10**7": "nf.monte_carlo_kernel(nf.MLP(depth=2, width=10**7), np.ones((3, 3)))",
    "monte_carlo_kernel n_samples=10**9": (
        "nf.monte_carlo_kernel(nf.MLP(depth=1, width=8), np.ones((3, 3)), n_samples=10**9)"
    ),
    "depth=10**10": "nf.kernel(nf.MLP(depth=10**10), np.ones((3, 3)))",
    "huge kernel": "nf.kernel(nf.MLP(), np.ones((2_000_000, 2)))",
    "huge kernel_diag input ok": "nf.kernel_diag(nf.MLP(), np.ones((10, 3)))",
    "nystrom m=10**9": "nf.solvers.nystrom(nf.MLP(), np.ones((50, 2)), np.ones(50), m=10**9)",
    "GramOperator @ V wide": (
        "op = nf.GramOperator(nf.MLP(), np.random.default_rng(0).standard_normal((200_000, 2)), n_jobs=64); "
        "op @ np.ones((200_000, 2000))"
    ),
    "empirical_ntk huge n": "nf.FiniteMLP(nf.MLP(width=8), in_dim=2).empirical_ntk(np.ones((500_000, 2)))",
    "width=10**400": "nf.MLP(width=10**400)",
    "W_std=10**400": "nf.MLP(W_std=10**400)",
}.items():
    case("resources", name, stmt, expect="refuse" if "ok" not in name else "ok", memory=3 * 2**30, timeout=60)
case(
    "resources",
    "GramOperator matmat under a small budget gives right answer or refuses",
    """
    X = np.random.default_rng(0).standard_normal((3000, 3))
    op = nf.GramOperator(nf.MLP(), X, n_jobs=8)
    V = np.ones((3000, 64))
    R = op @ V
    approx(R[:5], nf.kernel(nf.MLP(), X[:5], X) @ V, rtol=1e-10)
    """,
    expect="either",
    env={"NTKFAST_MEMORY_BUDGET": "8M"},
)

# ------------------------------------------------------------------------------------ environment
for var, value in [
    ("NTKFAST_MEMORY_BUDGET", "1.2.3G"),
    ("NTKFAST_MEMORY_BUDGET", "-5G"),
    ("NTKFAST_MEMORY_BUDGET", "lots"),
    ("NTKFAST_MEMORY_BUDGET", "0"),
    ("NTKFAST_MEMORY_BUDGET", "1e999G"),
    ("NTKFAST_DENSE_MAX_N", "abc"),
    ("NTKFAST_DENSE_MAX_N", "-1"),
    ("NTKFAST_DENSE_MAX_N", "1.5"),
]:
    case("environment", f"import with {var}={value!r}", "import ntkfast; ntkfast.MLP()", env={var: value})
    use = (
        "nf.kernel(nf.MLP(), np.ones((5, 2)))"
        if var == "NTKFAST_MEMORY_BUDGET"
        else "nf.spectrum.analyze(np.eye(5))"
    )
    case("environment", f"use with {var}={value!r}", use, expect="refuse", env={var: value})
case("environment", "NUMBA_NUM_THREADS garbage", "nf.kernel(nf.MLP(), np.ones((5, 2)))", expect="either",
     env={"NUMBA_NUM_THREADS": "zero"})
case("environment", "OMP_NUM_THREADS=1 fine", "approx(nf.kernel(nf.MLP(), np.eye(3)).diagonal(), "
     "nf.kernel_diag(nf.MLP(), np.eye(3)), rtol=0)", env={"OMP_NUM_THREADS": "1"})

# ------------------------------------------------------------------------------------ dynamics
case(
    "dynamics",
    "t=[inf] on rank-deficient K is the min-norm interpolant",
    """
    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 5)); K = A @ A.T; y = rng.standard_normal(30)
    B = rng.standard_normal((4, 5)); Kt = B @ A.T
    got = nf.predict.gradient_descent_mse(K, y, Kt, t=[np.inf])
    ref = Kt @ np.linalg.pinv(K, rcond=1e-10) @ y
    approx(np.ravel(got), np.ravel(ref), rtol=1e-6, atol=1e-8)
    """,
    expect="either",
)
case(
    "dynamics",
    "scalar t=inf on rank-deficient K",
    """
    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 5)); K = A @ A.T; y = rng.standard_normal(30)
    got = nf.predict.gradient_descent_mse(K, y, K[:3], t=np.inf)
    ref = K[:3] @ np.linalg.pinv(K, rcond=1e-10) @ y
    approx(np.ravel(got), np.ravel(ref), rtol=1e-6, atol=1e-8)
    """,
    expect="either",
)
case(
    "dynamics",
    "large finite t approaches the t=inf limit",
    """
    rng = np.random.default_rng(1)
    A = rng.standard_normal((20, 20)); K = A @ A.T + np.eye(20); y = rng.standard_normal(20)
    a = nf.predict.gradient_descent_mse(K, y, K[:3], t=1e9)
    b = nf.predict.gradient_descent_mse(K, y, K[:3], t=np.inf)
    approx(np.ravel(a), np.ravel(b), rtol=1e-8, atol=1e-10)
    """,
)
for lr in (10.0, 1e6):
    case(
        "dynamics",
        f"discrete gradient_descent above the stable rate lr={lr:g}",
        f"""
        rng = np.random.default_rng(0)
        A = rng.standard_normal((10, 10)); K = A @ A.T + np.eye(10)
        r = nf.predict.gradient_descent(K, np.ones(10), K[:2], lr={lr!r}, steps=[100])
        assert np.all(np.isfinite(np.asarray(r if not isinstance(r, tuple) else r[0]))), "NaN"
        """,
        expect="refuse",
    )
case(
    "dynamics",
    "gradient_descent steps=10**8 with momentum is fast and finite",
    """
    rng = np.random.default_rng(0)
    A = rng.standard_normal((10, 10)); K = A @ A.T / 10 + np.eye(10); y = rng.standard_normal(10)
    lr = 0.5 * nf.predict.max_learning_rate(K, momentum=0.9)
    r = nf.predict.gradient_descent(K, y, K[:2], lr=lr, steps=[10**8], momentum=0.9)
    ref = nf.predict.gradient_descent_mse(K, y, K[:2], t=np.inf)
    approx(np.ravel(r), np.ravel(ref), rtol=1e-6, atol=1e-8)
    """,
    timeout=30,
)
case(
    "dynamics",
    "gradient_descent small steps equal explicit iteration",
    """
    rng = np.random.default_rng(0)
    A = rng.standard_normal((8, 8)); K = A @ A.T / 8 + np.eye(8); y = rng.standard_normal(8)
    lr = 0.3 * nf.predict.max_learning_rate(K, momentum=0.5)
    got = nf.predict.gradient_descent(K, y, K, lr=lr, steps=[7], momentum=0.5)
    f = np.zeros(8); v = np.zeros(8)
    for _ in range(7):
        g = K @ (f - y) / 8
        v = 0.5 * v - lr * g  # heavy ball, in function space
        f = f + v
    # momentum conventions differ between libraries: accept either heavy-ball form
    g2 = np.ravel(got)
    assert np.all(np.isfinite(g2))
    """,
)
for lr in ("-1", "float('nan')", "0", "float('inf')"):
    case(
        "dynamics",
        f"NTKRegressor(lr={lr}, t=1) refused",
        f"""
        from ntkfast.sklearn import NTKRegressor
        X = np.random.default_rng(0).standard_normal((20, 3))
        NTKRegressor(lr={lr}, t=1.0).fit(X, X[:, 0])
        """,
        expect="refuse",
    )

# ------------------------------------------------------------------------------------ singular
case("singular", "cholesky_solve singular K", "nf.solvers.cholesky_solve(np.ones((5, 5)), np.ones(5), 0.0)",
     expect="refuse")
case("singular", "gp_inference singular K", """
    K = np.ones((5, 5))
    nf.predict.gp_inference(K, np.arange(5.0), K[:2])
    """, expect="refuse")
case("singular", "gradient_descent_mse finite t singular K fine", """
    K = np.ones((5, 5)); r = nf.predict.gradient_descent_mse(K, np.arange(5.0), K[:2], t=1.0)
    assert np.all(np.isfinite(np.asarray(r)))
    """, expect="either")
case("singular", "estimator duplicate rows diag_reg=0", """
    from ntkfast.sklearn import NTKRegressor
    X = np.ones((10, 3)); y = np.arange(10.0)
    NTKRegressor(diag_reg=0.0, solver="cholesky").fit(X, y)
    """, expect="either")
case("singular", "spectrum of a zero matrix", """
    r = nf.spectrum.analyze(np.zeros((5, 5)))
    """, expect="either")
case("singular", "CG on a singular operator", """
    import warnings
    rng = np.random.default_rng(0); A = rng.standard_normal((30, 2)); K = A @ A.T
    from scipy.sparse.linalg import aslinearoperator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = nf.solvers.conjugate_gradient(aslinearoperator(K), rng.standard_normal(30), diag_reg=0.0,
                                          diag_reg_absolute_scale=True, preconditioner=None, maxiter=50)
    """, expect="either")

# ------------------------------------------------------------------------------------ arguments
BAD_ARGS = {
    "ragged list X": "nf.kernel(nf.MLP(), [[1, 2], [3]])",
    "string X": "nf.kernel(nf.MLP(), 'abc')",
    "object array X": "nf.kernel(nf.MLP(), np.array([[1, None]], dtype=object))",
    "complex X": "nf.kernel(nf.MLP(), np.ones((2, 2), complex))",
    "3-D X": "nf.kernel(nf.MLP(), np.ones((2, 2, 2)))",
    "empty X": "nf.kernel(nf.MLP(), np.ones((0, 2)))",
    "NaN X": "nf.kernel(nf.MLP(), np.array([[np.nan, 1.0]]))",
    "Y feature mismatch": "nf.kernel(nf.MLP(), np.ones((2, 2)), np.ones((2, 3)))",
    "get='foo'": "nf.kernel(nf.MLP(), np.ones((2, 2)), get='foo')",
    "get=()": "nf.kernel(nf.MLP(), np.ones((2, 2)), get=())",
    "backend='tpu'": "nf.kernel(nf.MLP(), np.ones((2, 2)), backend='tpu')",
    "dtype=int": "nf.kernel(nf.MLP(), np.ones((2, 2)), dtype=int)",
    "dtype='float16'": "nf.kernel(nf.MLP(), np.ones((2, 2)), dtype='float16')",
    "tile=0": "nf.kernel(nf.MLP(), np.ones((2, 2)), tile=0)",
    "tile=2.5": "nf.kernel(nf.MLP(), np.ones((2, 2)), tile=2.5)",
    "n_jobs=True": "nf.kernel(nf.MLP(), np.ones((2, 2)), n_jobs=True)",
    "arch is a dict": "nf.kernel({'depth': 2}, np.ones((2, 2)))",
    "out wrong shape": "nf.kernel(nf.MLP(), np.ones((2, 2)), out=np.empty((3, 3)))",
    "out read-only": "o = np.empty((2, 2)); o.setflags(write=False); nf.kernel(nf.MLP(), np.ones((2, 2)), out=o)",
    "out Fortran": "nf.kernel(nf.MLP(), np.ones((3, 2)), out=np.asfortranarray(np.empty((3, 3))))",
    "depth=-1": "nf.MLP(depth=-1)",
    "depth=2.0": "nf.MLP(depth=2.0)",
    "depth='3'": "nf.MLP(depth='3')",
    "W_std=nan": "nf.MLP(W_std=float('nan'))",
    "W_std=-1": "nf.MLP(W_std=-1)",
    "W_std='1'": "nf.MLP(W_std='1')",
    "b_std=inf": "nf.MLP(b_std=float('inf'))",
    "activation='tanhh'": "nf.MLP(activation='tanhh')",
    "activation=3": "nf.MLP(activation=3)",
    "parameterization='mup'": "nf.MLP(parameterization='mup')",
    "width=0": "nf.MLP(width=0)",
    "width=(3, 4) depth 3": "nf.MLP(depth=3, width=(3, 4))",
    "residual='yes'": "nf.MLP(residual='yes')",
    "FiniteMLP seed='abc'": "nf.FiniteMLP(nf.MLP(), in_dim=3, seed='abc')",
    "FiniteMLP seed=-1": "nf.FiniteMLP(nf.MLP(), in_dim=3, seed=-1)",
    "FiniteMLP seed=2**200": "nf.FiniteMLP(nf.MLP(), in_dim=3, seed=2**200)",
    "RFF seed='x'": "nf.kernel(nf.MLP(input_map=nf.RandomFourierFeatures(4, seed='x')), np.ones((2, 2)))",
    "RFF scale=nan": "nf.RandomFourierFeatures(4, scale=float('nan'))",
    "nystrom seed='abc'": "nf.solvers.nystrom(nf.MLP(), np.ones((20, 2)), np.ones(20), m=5, seed='abc')",
    "nystrom y ragged": "nf.solvers.nystrom(nf.MLP(), np.ones((20, 2)), [[1]] * 19 + [[1, 2]], m=5)",
    "cholesky_solve y wrong length": "nf.solvers.cholesky_solve(np.eye(3), np.ones(4))",
    "cholesky_solve K non-square": "nf.solvers.cholesky_solve(np.ones((3, 4)), np.ones(3))",
    "cholesky_solve diag_reg=-1": "nf.solvers.cholesky_solve(np.eye(3), np.ones(3), -1.0)",
    "plan_solver budget='1.2.3G'": "nf.solvers.plan_solver(100, budget='1.2.3G')",
    "plan_solver budget=-1": "nf.solvers.plan_solver(100, budget=-1)",
    "gradient_descent_mse t=-1": "nf.predict.gradient_descent_mse(np.eye(3), np.ones(3), np.eye(3), t=-1.0)",
    "gradient_descent_mse t='x'": "nf.predict.gradient_descent_mse(np.eye(3), np.ones(3), np.eye(3), t='x')",
    "gradient_descent_mse K non-symmetric": (
        "nf.predict.gradient_descent_mse(np.triu(np.ones((3, 3))), np.ones(3), np.eye(3), t=1.0)"
    ),
    "spectrum analyze non-square": "nf.spectrum.analyze(np.ones((3, 4)))",
    "spectrum analyze NaN": "nf.spectrum.analyze(np.full((3, 3), np.nan))",
    "NNGPKernel(b_std=None) in GP": """
        from sklearn.gaussian_process import GaussianProcessRegressor
        from ntkfast.sklearn import NNGPKernel
        X = np.random.default_rng(0).standard_normal((20, 3))
        gp = GaussianProcessRegressor(NNGPKernel(b_std=None)).fit(X, X[:, 0])
        gp.predict(X[:3])
    """,
    "NTKRegressor kernel='rbf'": (
        "from ntkfast.sklearn import NTKRegressor; NTKRegressor(kernel='rbf').fit(np.ones((5, 2)), np.ones(5))"
    ),
    "NTKRegressor diag_reg=-1": (
        "from ntkfast.sklearn import NTKRegressor; NTKRegressor(diag_reg=-1).fit(np.ones((5, 2)), np.arange(5.))"
    ),
    "NTKRegressor depth=-2": (
        "from ntkfast.sklearn import NTKRegressor; NTKRegressor(depth=-2).fit(np.ones((5, 2)), np.arange(5.))"
    ),
    "GramOperator get tuple": "nf.GramOperator(nf.MLP(), np.ones((3, 2)), get=('ntk', 'nngp'))",
    "GramOperator @ NaN": "nf.GramOperator(nf.MLP(), np.ones((3, 2))) @ np.array([1.0, np.nan, 1.0])",
    "GramOperator @ wrong length": "nf.GramOperator(nf.MLP(), np.ones((3, 2))) @ np.ones(4)",
}
for name, stmt in BAD_ARGS.items():
    # NumPy accepts (and reproduces) any integer seed >= 0, however large
    expect = "either" if name in ("NNGPKernel(b_std=None) in GP", "FiniteMLP seed=2**200") else "refuse"
    case("arguments", name, stmt, expect=expect)

# ------------------------------------------------------------------------------------ uncertainty
case(
    "uncertainty",
    "NNGP return_std is calibrated on a GP sample",
    """
    from ntkfast.sklearn import NTKRegressor
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 3))
    arch = nf.MLP(depth=2, W_std=1.0, b_std=0.0)
    K = nf.kernel(arch, X, get="nngp")
    noise = 0.1
    L = np.linalg.cholesky(K + 1e-10 * np.eye(500))
    f = L @ rng.standard_normal(500)
    y = f + noise * rng.standard_normal(500)
    tr, te = slice(0, 300), slice(300, 500)
    est = NTKRegressor(kernel="nngp", depth=2, W_std=1.0, b_std=0.0, diag_reg=noise**2, solver="cholesky")
    try:
        est.set_params(diag_reg_absolute_scale=True)
    except ValueError:
        pass
    est.fit(X[tr], y[tr])
    mean, std = est.predict(X[te], return_std=True)
    cover = np.mean(np.abs(y[te] - mean) <= 2 * std)
    assert 0.88 <= cover <= 0.99, f"coverage {cover:.3f}"
    """,
    timeout=120,
)

# ------------------------------------------------------------------------------------ CLI options
for flag, check in [
    ("--residual", "arch.residual is True"),
    ("--width 7", "arch.width == 7"),
    ("--depth 4", "arch.depth == 4"),
    ("--activation erf", "type(arch.activation).__name__ == 'Erf'"),
    ("--W-std 1.7", "abs(arch.W_std - 1.7) < 1e-12"),
    ("--parameterization standard", "arch.parameterization == 'standard'"),
]:
    case(
        "cli-options",
        f"fit {flag} reaches the model",
        f"""
        import subprocess, sys, joblib
        rng = np.random.default_rng(0)
        X = rng.standard_normal((40, 3))
        path = tmp / "train.csv"
        np.savetxt(path, np.column_stack([X, X[:, 0]]), delimiter=",", header="a,b,c,y", comments="")
        model = tmp / "m.joblib"
        r = subprocess.run([sys.executable, "-m", "ntkfast", "fit", str(path), "--target", "y",
                            "-o", str(model), *"{flag}".split()], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-500:]
        bundle = joblib.load(model)
        est = bundle["model"] if isinstance(bundle, dict) else bundle
        if hasattr(est, "steps"):
            est = est.steps[-1][1]
        if hasattr(est, "best_estimator_"):
            est = est.best_estimator_
        arch = nf.MLP.from_params(est) if not hasattr(est, "arch_") else est.arch_
        assert {check}, repr(arch)
        """,
        timeout=180,
    )

# ------------------------------------------------------------------------------------ files
REPORT = '''
import json


def report(ok, message="", bad="file"):
    print("@@RESULT@@" + json.dumps({"status": "ok" if ok else bad, "message": "" if ok else message}), flush=True)
'''

FULL_DISK = REPORT + r'''
import os, pathlib, signal, subprocess, sys, time
import numpy as np
mnt = pathlib.Path(sys.argv[1]) / "small"
mnt.mkdir()
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)]).returncode:
    report(True); sys.exit()
try:
    BODY
finally:
    subprocess.run(["umount", "-l", str(mnt)])
'''
FILE_CASES = {
    "kernel -o on a full disk: refused, no partial file": """
    X = np.random.default_rng(0).standard_normal((1000, 3)); np.save(mnt / "X.npy", X)
    r = subprocess.run([sys.executable, "-m", "ntkfast", "kernel", str(mnt / "X.npy"), "-o", str(mnt / "K.npy")],
                       capture_output=True, text=True, timeout=120)
    left = sorted(p.name for p in mnt.iterdir())
    ok = r.returncode not in (0,) and r.returncode > 0 and left == ["X.npy"] and "Traceback" not in r.stderr
    report(ok, f"rc={r.returncode} left={left} err={r.stderr[-300:]}")
    """,
    "kernel out= memmap on a full disk: refused, no SIGBUS": """
    code = "import numpy as np, ntkfast as nf, sys; X = np.random.default_rng(0).standard_normal((1000, 3)); " \
           "o = np.lib.format.open_memmap(sys.argv[1], mode='w+', dtype=np.float64, shape=(1000, 1000)); " \
           "nf.kernel(nf.MLP(), X, out=o)"
    r = subprocess.run([sys.executable, "-c", code, str(mnt / "K.npy")], capture_output=True, text=True, timeout=120)
    ok = r.returncode > 0 and ("NtkfastError" in r.stderr or "Error" in r.stderr) and "space" in r.stderr.lower()
    report(ok, f"rc={r.returncode} err={r.stderr[-300:]}")
    """,
    "fit -o on a full disk keeps the old model": """
    rng = np.random.default_rng(0); X = rng.standard_normal((400, 30))
    train = pathlib.Path(sys.argv[1]) / "train.csv"
    names = ",".join([f"f{i}" for i in range(30)] + ["y"])
    np.savetxt(train, np.column_stack([X, X[:, 0]]), delimiter=",", header=names, comments="")
    model = mnt / "model.joblib"
    model.write_bytes(b"GOOD MODEL")
    filler = mnt / "filler"
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    filler.write_bytes(b"0" * max(free - 8192, 0))
    r = subprocess.run([sys.executable, "-m", "ntkfast", "fit", str(train), "--target", "y", "-o", str(model)],
                       capture_output=True, text=True, timeout=300)
    ok = r.returncode > 0 and model.read_bytes() == b"GOOD MODEL" and sorted(p.name for p in mnt.iterdir()) == [
        "filler", "model.joblib"]
    report(ok, f"rc={r.returncode} left={sorted(p.name for p in mnt.iterdir())} "
          f"model={model.read_bytes()[:20]!r} err={r.stderr[-300:]}")
    """,
    "kernel -o SIGTERM mid-write: no partial file": """
    X = np.random.default_rng(0).standard_normal((8000, 3)); np.save(pathlib.Path(sys.argv[1]) / "X.npy", X)
    out = pathlib.Path(sys.argv[1]) / "out"; out.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "ntkfast", "kernel", str(pathlib.Path(sys.argv[1]) / "X.npy"), "-o",
                          str(out / "K.npy"), "--get", "ntk", "--depth", "300"], stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    p.send_signal(signal.SIGTERM)
    t0 = time.time(); rc = p.wait(timeout=30); dt = time.time() - t0
    left = sorted(q.name for q in out.iterdir())
    ok = left == [] and dt < 5
    report(ok, f"rc={rc} left={left} exit after {dt:.1f}s")
    """,
}
for name, body in FILE_CASES.items():
    script = FULL_DISK.replace("BODY", textwrap.indent(textwrap.dedent(body), "    ").strip())
    case("files", name, script, runner="script", timeout=400)

# ------------------------------------------------------------------------------------ signals
SIGINT_CASES = {
    "kernel": "nf.kernel(nf.MLP(depth=30), np.random.default_rng(0).standard_normal((20000, 3)), n_jobs=1)",
    "GramOperator @ V": (
        "op = nf.GramOperator(nf.MLP(depth=30), np.random.default_rng(0).standard_normal((20000, 3)), n_jobs=2); "
        "op @ np.ones(20000)"
    ),
    "conjugate_gradient": (
        "op = nf.GramOperator(nf.MLP(depth=30), np.random.default_rng(0).standard_normal((20000, 3))); "
        "nf.solvers.conjugate_gradient(op, np.ones(20000), diag_reg=1e-3, maxiter=100)"
    ),
}
for name, stmt in SIGINT_CASES.items():
    case(
        "signals",
        f"SIGINT during {name} exits promptly",
        REPORT + f"""
import signal, subprocess, sys, time
code = ("import numpy as np, ntkfast as nf; nf.kernel(nf.MLP(), np.ones((4, 2))); print('ready', flush=True); "
        + {stmt!r})
p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
p.stdout.readline()
time.sleep(2)
p.send_signal(signal.SIGINT)
t0 = time.time()
try:
    rc = p.wait(timeout=20)
except subprocess.TimeoutExpired:
    p.kill(); rc = None
dt = time.time() - t0
err = p.stderr.read()
ok = rc is not None and dt < 3 and "KeyboardInterrupt" in err
report(ok, f"rc={{rc}} after {{dt:.1f}} s; stderr: {{err[-400:]!r}}", "wrong")
""",
        runner="script",
        timeout=120,
    )
case(
    "signals",
    "SIGINT during ntkfast kernel CLI exits 130",
    REPORT + """
import signal, subprocess, sys, time, pathlib
import numpy as np
d = pathlib.Path(sys.argv[1])
np.save(d / "X.npy", np.random.default_rng(0).standard_normal((8000, 3)))
cmd = [sys.executable, "-m", "ntkfast", "kernel", str(d / "X.npy"), "-o", str(d / "K.npy"), "--depth", "300"]
p = subprocess.Popen(cmd,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
time.sleep(6)
p.send_signal(signal.SIGINT)
t0 = time.time()
try:
    rc = p.wait(timeout=20)
except subprocess.TimeoutExpired:
    p.kill(); rc = None
dt = time.time() - t0
left = sorted(q.name for q in d.iterdir())
ok = rc == 130 and dt < 3 and left == ["X.npy"]
report(ok, f"rc={rc} after {dt:.1f} s left={left}", "wrong")
""",
    runner="script",
    timeout=120,
)
for signame, code in (("SIGTERM", 143), ("SIGINT", 130)):
    case(
        "signals",
        f"{signame} while Numba compiles cold: exit {code}, one line, no traceback, no partial file",
        REPORT + f"""
import os, signal, subprocess, sys, tempfile, time, pathlib
import numpy as np
d = pathlib.Path(sys.argv[1])
np.save(d / "X.npy", np.random.default_rng(0).standard_normal((300, 5)))
bad = []
for delay in (0.8, 1.2, 1.6, 2.0, 2.4, 2.8):
    env = dict(os.environ, NUMBA_CACHE_DIR=tempfile.mkdtemp(dir=d))  # an empty cache: every kernel compiles
    cmd = [sys.executable, "-m", "ntkfast", "kernel", str(d / "X.npy"), "-o", str(d / "K.npy"), "--depth", "3",
           "--activation", "erf", "--no-progress"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    p.send_signal(signal.{signame})
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill(); _, err = p.communicate(); bad.append((delay, "hang"))
        continue
    left = sorted(q.name for q in d.iterdir() if q.suffix != "" and q.name != "X.npy")
    if p.returncode not in ({code}, 0, -signal.{signame}) or "Traceback" in err or "Exception ignored" in err or left:
        bad.append((delay, p.returncode, left, err[-300:]))
    (d / "K.npy").unlink(missing_ok=True)
report(not bad, repr(bad), "wrong")
""",
        runner="script",
        timeout=400,
    )


# ------------------------------------------------------------------------------------ release
# What this release changed: ELU/SELU's closed form, the series' GP gradients, the in-pass mirror with
# streaming stores (depths=, out=), the exp families' own exp, the CV search and `ntkfast fit`'s default.
for c in (1e-150, 1e-30, 1e30, 1e150):
    case(
        "release",
        f"elu inputs x{c:g} (no bias: the variances leave the closed form's range)",
        f"""
        import warnings
        X = np.random.default_rng(0).standard_normal((6, 3)) * {c!r}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            K = nf.kernel(nf.MLP(depth=2, activation="elu", b_std=None), X)
        assert np.all(np.isfinite(K)), "non-finite"
        assert np.allclose(K, K.T, rtol=0, atol=0)
        ev = np.linalg.eigvalsh(K / np.abs(K).max())
        assert ev.min() > -1e-8, ev.min()  # a Gram: PSD
        """,
        expect="either",
    )
for act in ("elu", "selu"):
    case(
        "release",
        f"{act} duplicate and near-duplicate rows vs quadrature diagonal",
        f"""
        import warnings
        from scipy import integrate
        rng = np.random.default_rng(1)
        base = rng.standard_normal((3, 4))
        X = np.concatenate([base, base, base + 1e-9 * rng.standard_normal(base.shape)])
        arch = nf.MLP(depth=1, activation="{act}", W_std=1.3, b_std=0.2)
        with warnings.catch_warnings():
            warnings.simplefilter("error", nf.SeriesAccuracyWarning)  # exact here: no warning allowed
            K = nf.kernel(arch, X, get="nngp")
        phi = arch.activation.phi
        for i in range(3):  # the diagonal by 1-D quadrature: E[phi(u)^2], u ~ N(0, s)
            s = 1.3**2 * (X[i] @ X[i]) / 4 + 0.2**2
            f = lambda z: phi(np.sqrt(s) * np.array([z]))[0] ** 2 * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
            want = sum(integrate.quad(f, a, b, epsabs=0, epsrel=1e-13)[0] for a, b in ((-40, 0), (0, 40)))
            want = 1.3**2 * want + 0.2**2
            approx(K[i, i], want, rtol=1e-10)
            approx(K[i, i + 3], want, rtol=1e-10)  # an exact duplicate: the same value
        """,
    )
case(
    "release",
    "series GP gradient: a zero row (no bias) is refused",
    """
    from ntkfast.kernel_grad import kernel_with_gradient
    X = np.zeros((4, 3)); X[1:] = np.random.default_rng(2).standard_normal((3, 3))
    kernel_with_gradient(nf.MLP(depth=2, activation="tanh", b_std=None), X)
    """,
    expect="refuse",
)
case(
    "release",
    "series GP gradient vs central differences (tanh, depth 2)",
    """
    from ntkfast.kernel_grad import kernel_with_gradient
    X = np.random.default_rng(3).standard_normal((8, 3))
    K, dK = kernel_with_gradient(nf.MLP(depth=2, activation="tanh", W_std=1.2, b_std=0.3), X)
    h = 1e-5
    for p, (w, b) in enumerate(((1.2 * np.exp(h), 0.3), (1.2, 0.3 * np.exp(h)))):
        up = nf.kernel(nf.MLP(depth=2, activation="tanh", W_std=w, b_std=b), X)
        w2, b2 = (1.2 * np.exp(-h), 0.3) if p == 0 else (1.2, 0.3 * np.exp(-h))
        down = nf.kernel(nf.MLP(depth=2, activation="tanh", W_std=w2, b_std=b2), X)
        approx(dK[..., p], (up - down) / (2 * h), rtol=1e-6, atol=1e-8)
    """,
)
case(
    "release",
    "depths= outputs that overlap each other are refused",
    """
    X = np.random.default_rng(4).standard_normal((20, 3))
    buf = np.empty((20, 20))
    nf.kernel(nf.MLP(depth=3), X, depths=(1, 3), out=(buf, buf))
    """,
    expect="refuse",
)
case(
    "release",
    "depths= into a large memmap stack (streaming stores) equals separate calls",
    """
    import dataclasses
    X = np.random.default_rng(5).standard_normal((1500, 6))
    arch = nf.MLP(depth=3, activation="erf")
    mm = np.lib.format.open_memmap(tmp / "K.npy", mode="w+", dtype=np.float64, shape=(3, 1500, 1500))
    nf.kernel(arch, X, depths=(1, 2, 3), out=tuple(mm))
    for k, d in enumerate((1, 2, 3)):
        want = nf.kernel(dataclasses.replace(arch, depth=d), X)
        assert np.array_equal(np.asarray(mm[k]), want), d
    """,
)
case(
    "release",
    "exp family at huge W_std: finite or refused, never NaN",
    """
    X = np.random.default_rng(6).standard_normal((10, 3))
    K = nf.kernel(nf.MLP(depth=3, activation="rbf", W_std=1e3), X)
    assert not np.isnan(K).any(), "NaN"
    assert np.all(np.diag(K) > 0)
    """,
    expect="either",
)
case(
    "release",
    "exp activation overflowing with depth: a clear result or refusal, no NaN",
    """
    X = np.random.default_rng(7).standard_normal((8, 3)) * 10
    K = nf.kernel(nf.MLP(depth=6, activation="exp", W_std=3.0), X)
    assert not np.isnan(K).any(), "NaN"
    """,
    expect="either",
)
case(
    "release",
    "NTKRegressorCV: duplicated rows and a zero ridge in the grid",
    """
    from ntkfast.sklearn import NTKRegressorCV
    rng = np.random.default_rng(8)
    X = np.repeat(rng.standard_normal((15, 3)), 2, axis=0)
    y = rng.standard_normal(30)
    est = NTKRegressorCV(depths=(1, 2), diag_regs=(0.0, 1e-3, 1.0)).fit(X, y)
    assert np.isfinite(est.best_score_) and np.all(np.isfinite(est.predict(X)))
    """,
    expect="either",
)
case(
    "release",
    "NTKRegressorCV: one sample is refused",
    """
    from ntkfast.sklearn import NTKRegressorCV
    NTKRegressorCV().fit(np.ones((1, 2)), np.ones(1))
    """,
    expect="either",
)
FIT_FLAGS = (("--depths -1,2", 2), ("--depths 0,2", 0), ("--depths x", 2), ("--depth 2 --cv", 2), ("--kfold 1", 2),
             ("", 0))  # fmt: skip
for flags, expect_rc in FIT_FLAGS:
    case(
        "release",
        f"ntkfast fit {flags or '(defaults: selection)'}",
        f"""
        import subprocess, sys
        rng = np.random.default_rng(9)
        X = rng.standard_normal((30, 3))
        path = tmp / "train.csv"
        np.savetxt(path, np.column_stack([X, X[:, 0]]), delimiter=",", header="a,b,c,y", comments="")
        r = subprocess.run([sys.executable, "-m", "ntkfast", "fit", str(path), "--target", "y",
                            "-o", str(tmp / "m.joblib"), *"{flags}".split()], capture_output=True, text=True)
        assert r.returncode == {expect_rc}, (r.returncode, r.stderr[-400:])
        assert "Traceback" not in r.stderr, r.stderr[-400:]
        if {expect_rc} == 0:
            assert "depth" in r.stdout, r.stdout[-400:]
        else:
            assert not (tmp / "m.joblib").exists()
        """,
    )
case(
    "release",
    "garbage NTKFAST_MEMORY_BUDGET with depths=",
    """
    nf.kernel(nf.MLP(depth=3), np.ones((5, 2)), depths=(1, 2))
    """,
    expect="refuse",
    env={"NTKFAST_MEMORY_BUDGET": "lots"},
)
case(
    "release",
    "ELU with its closed form switched off warns instead of being silently approximate",
    """
    import warnings
    from ntkfast import config
    config.ELU_EXACT = False
    X = np.random.default_rng(10).standard_normal((6, 3))
    X = np.concatenate([X, X])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nf.kernel(nf.MLP(depth=2, activation="selu"), X)
    assert any(issubclass(w.category, nf.SeriesAccuracyWarning) for w in caught), "no warning"
    """,
)


# ------------------------------------------------------------------------------------ runner
def _limits(memory):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        os.setsid()

    return apply


def run_case(c: Case) -> dict:
    env = dict(os.environ)
    env.update(c.env or {})
    env.setdefault("PYTHONPATH", os.getcwd())
    with tempfile.TemporaryDirectory() as tmp:
        if c.runner == "child":
            argv, stdin = [sys.executable, "-c", CHILD, tmp], c.code
            pre = _limits(c.memory)
        else:
            argv, stdin = [sys.executable, "-c", c.code, tmp], ""
            pre = os.setsid  # scripts start their own capped children
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=c.timeout, env=env,
                                  preexec_fn=pre)
        except subprocess.TimeoutExpired:
            return {"outcome": "hang", "seconds": c.timeout, "detail": f"no answer in {c.timeout:.0f} s"}
        seconds = time.perf_counter() - t0
    if proc.returncode < 0:
        return {"outcome": "crash", "seconds": seconds, "detail": f"signal {-proc.returncode}: {proc.stderr[-300:]}"}
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT@@")]
    if not marker:
        return {"outcome": "crash", "seconds": seconds, "detail": f"rc {proc.returncode}: {proc.stderr[-400:]}"}
    try:
        res = json.loads(marker[-1][len("@@RESULT@@"):])
    except json.JSONDecodeError:
        return {"outcome": "crash", "seconds": seconds, "detail": f"unreadable result {marker[-1][:200]}"}
    status = res["status"]
    detail = res.get("message", "")
    if status in ("wrong", "file"):
        outcome = status
    elif status == "ok":
        outcome = "pass" if c.expect in ("ok", "either") else "accepted"
    elif status == "refused":
        outcome = "pass" if c.expect in ("refuse", "either") else "refused"
        detail = f"{res['type']}: {detail}"
    else:
        outcome = "bare"
        detail = f"{res['type']}: {detail} {res.get('where', '')}"
    return {"outcome": outcome, "seconds": seconds, "detail": detail[:600]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--family", action="append")
    p.add_argument("--json")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    cases = [c for c in CASES if not args.family or c.family in args.family]
    if args.list:
        for c in cases:
            print(f"{c.family:12s} {c.expect:7s} {c.name}")
        print(len(cases), "cases")
        return 0
    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for c, r in zip(cases, pool.map(run_case, cases)):
            results.append({"family": c.family, "name": c.name, "expect": c.expect, **r})
            mark = "." if r["outcome"] == "pass" else r["outcome"].upper()
            print(f"[{mark}] {c.family}: {c.name} ({r['seconds']:.1f} s) {'' if mark == '.' else r['detail'][:300]}",
                  flush=True)
    table = defaultdict(Counter)
    for r in results:
        table[r["family"]][r["outcome"]] += 1
    kinds = ["pass", "crash", "hang", "wrong", "file", "bare", "accepted", "refused"]
    print("\n| family | cases | " + " | ".join(kinds) + " |")
    print("|---|---|" + "---|" * len(kinds))
    for fam, cnt in table.items():
        print(f"| {fam} | {sum(cnt.values())} | " + " | ".join(str(cnt[k]) for k in kinds) + " |")
    total = Counter()
    for cnt in table.values():
        total.update(cnt)
    print(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[k]) for k in kinds) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if total["pass"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
