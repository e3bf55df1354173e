"""Start-up (issue 17 item 6): what ``import ntkfast`` loads, and what a first kernel call loads from
Numba's cache.  Deterministic: module lists and Numba's cache statistics, never a time."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import _jit, bench
from ntkfast.backends import cpu
from ntkfast.kernel_grad import kernel_with_gradient
from ntkfast.spec import ABRELU, ERF

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numba", "llvmlite", "scipy", "sklearn", "pandas", "matplotlib", "dask", "distributed", "tqdm",
         "threadpoolctl")  # fmt: skip


def fresh_python(code: str, *args: str) -> str:
    """Run ``code`` in a new interpreter on this tree; its last line of output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_import_loads_no_heavy_package():
    code = "import sys, json, ntkfast; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(fresh_python(code)))
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    # the network description is usable without them
    code = "import sys, ntkfast as nf; nf.MLP(depth=2, activation='erf').activation; print('numba' in sys.modules)"
    assert fresh_python(code) == "False"
    # dir() lists the documented names only: help(ntkfast) calls getattr on each, and an optional
    # sub-package (distributed: Dask) must not be imported by it
    code = "import json, sys, pydoc, ntkfast; pydoc.render_doc(ntkfast); print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(fresh_python(code)))
    assert {"ntkfast.gram", "ntkfast.predict"} <= loaded and not {"ntkfast.distributed", "ntkfast.cli", "dask"} & loaded


def test_lazy_public_names():
    from ntkfast import GramOperator, kernel  # from-imports go through the module __getattr__
    from ntkfast.gram import GramOperator as G
    from ntkfast.gram import kernel as k

    assert kernel is k and GramOperator is G
    for name in nf.__all__:
        assert getattr(nf, name) is not None, name
        assert name in dir(nf)
    assert nf.predict.__name__ == "ntkfast.predict" and nf.sklearn.__name__ == "ntkfast.sklearn"
    with pytest.raises(AttributeError, match="no_such_name"):
        nf.no_such_name  # noqa: B018


def test_closure_cache_key_same_across_builds():
    """``tile`` calls other closures; their Dispatchers pickle with a random UUID, so Numba's own key
    differed in every process.  Two builds of the same kernels (as in two processes) share a key, and
    different activation codes do not."""
    build = cpu.recursion_kernels.__wrapped__
    a, b, other = build(ABRELU), build(ABRELU), build(ERF)
    for name in ("tile", "tile_grad", "diag", "layer_row"):
        ka, kb, ko = (getattr(k, name) for k in (a, b, other))
        codegen = ka.targetctx.codegen()
        key = ka._cache._index_key("sig", codegen)
        assert key == kb._cache._index_key("sig", codegen), name
        assert key != ko._cache._index_key("sig", codegen), name
    # a closure over plain values keeps exactly Numba's own key (existing cache entries stay valid)
    from numba.core.caching import FunctionCache

    diag = a.diag
    assert isinstance(a.tile._cache, _jit._StableClosureCache)
    assert diag._cache._index_key("sig", codegen) == FunctionCache(diag.py_func)._index_key("sig", codegen)


def test_warm_first_calls_load_few_specialisations_and_compile_none():
    """With a warm cache a fresh process compiles nothing: relu loads its diagonal and tile kernels
    and the diagonal tiles' ``symmetrize_block``, erf (another closed form) its own two, tanh (a
    series activation) its tile kernel (``symmetrize_block`` is loaded already)."""
    acts = ("relu", "erf", "tanh")
    counts = bench.specialisation_counts(acts)  # after a warm-up process (compiles what is missing)
    if counts["relu"]["loaded"] == 0:
        pytest.skip("Numba's cache is not usable here (nothing was loaded from it)")
    assert {act: counts[act]["compiled"] for act in acts} == dict.fromkeys(acts, 0)
    assert counts["relu"]["loaded"] <= 3 and counts["erf"]["loaded"] <= 2 and counts["tanh"]["loaded"] <= 1


LOADER_CHILD = r"""
import json, sys
import numpy as np
import ntkfast as nf
from ntkfast.bench import dispatcher_cache_stats as cache_stats
from ntkfast.kernel_grad import kernel_with_gradient


X = np.random.default_rng(1).standard_normal((12, 5))
X[7] = X[2]  # nearly parallel pairs: float32 refines them in float64 (near_parallel, pairs)
out = {}
out["relu"] = np.asarray(nf.kernel(nf.MLP(depth=3), X, get=("nngp", "ntk"))).tolist()
out["relu32"] = nf.kernel(nf.MLP(depth=3, W_std=1.3, b_std=0.2), X, dtype=np.float32).tolist()
out["erf_y"] = nf.kernel(nf.MLP(depth=2, activation="erf"), X[:5], X[5:]).tolist()
out["tanh"] = nf.kernel(nf.MLP(depth=3, activation="tanh"), X).tolist()
out["scipy"] = sorted({"scipy.sparse", "scipy.linalg", "scipy.special"} & set(sys.modules))  # none of them
out["depths"] = np.asarray(nf.kernel(nf.MLP(depth=3, residual=True), X, depths=(1, 3))).tolist()
out["diag"] = nf.kernel_diag(nf.MLP(depth=3, activation="erf"), X).tolist()
out["grad"] = np.asarray(kernel_with_gradient(nf.MLP(depth=2), X)[1]).tolist()
out["registries"] = "numba.np.arraymath" in sys.modules  # imported by Numba's refresh only
out["hits"], out["misses"] = cache_stats()
# after loads without Numba's refresh, a compilation in the same process still works (it refreshes),
# and so do kernels loaded after it
import numba

@numba.njit
def mixed(a):
    seen = {}
    for i in range(a.shape[0]):
        seen[i] = a[i]
    return np.dot(a, a) + len(seen)

out["mixed"] = mixed(np.arange(3.0))
out["after"] = nf.kernel(nf.MLP(depth=2, activation="gelu"), X).tolist()
print(json.dumps(out))
"""


def test_kernels_loaded_without_numba_refresh_compute_the_same():
    """``_jit._KernelCache`` loads cached kernels without Numba's registry refresh: in a fresh process with
    a warm cache, every kernel of the first calls (f64/f32 tiles, refinement pairs, rectangular, series,
    depths, diagonal, gradient) gives exactly what this process computes, no registry (and no SciPy
    sub-package) is imported, and a compilation afterwards (which does refresh) and the kernels loaded
    after it still work."""
    fresh_python(LOADER_CHILD)  # warm-up: compiles into the cache whatever is missing
    got = json.loads(fresh_python(LOADER_CHILD))
    if got["hits"] == 0:
        pytest.skip("Numba's cache is not usable here (nothing was loaded from it)")
    assert got["misses"] == 0 and not got["registries"]
    assert got["scipy"] == []  # kernel() of relu, erf, tanh imports no SciPy sub-package (GramOperator does)
    assert got["mixed"] == 5.0 + 3
    X = np.random.default_rng(1).standard_normal((12, 5))
    X[7] = X[2]
    want = {
        "relu": np.asarray(nf.kernel(nf.MLP(depth=3), X, get=("nngp", "ntk"))),
        "relu32": nf.kernel(nf.MLP(depth=3, W_std=1.3, b_std=0.2), X, dtype=np.float32),
        "erf_y": nf.kernel(nf.MLP(depth=2, activation="erf"), X[:5], X[5:]),
        "tanh": nf.kernel(nf.MLP(depth=3, activation="tanh"), X),
        "depths": np.asarray(nf.kernel(nf.MLP(depth=3, residual=True), X, depths=(1, 3))),
        "diag": nf.kernel_diag(nf.MLP(depth=3, activation="erf"), X),
        "after": nf.kernel(nf.MLP(depth=2, activation="gelu"), X),
        "grad": kernel_with_gradient(nf.MLP(depth=2), X)[1],
    }
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-13, atol=0, err_msg=key)


TOKEN_CHILD = r"""
import pickle, hashlib
from ntkfast._jit import _stable_token, jit

def build(k):
    @jit
    def callee(x):
        return sum(i * k for i in range(x)) if "a" in {"a", "b", "c"} else 0.5

    return callee

print(hashlib.sha256(pickle.dumps(_stable_token(build(3)))).hexdigest())
"""


def test_stable_token_independent_of_process(tmp_path):
    """Nested code objects (a generator) and a frozenset constant: the same token under two hash seeds."""
    script = tmp_path / "token_child.py"  # Numba caches only functions defined in a file
    script.write_text(TOKEN_CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    tokens = set()
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                              env=dict(env, PYTHONHASHSEED=seed))  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        tokens.add(done.stdout.strip())
    assert len(tokens) == 1
