"""Ctrl-C stops the iterative solvers promptly and returns nothing (issue 12, item 2).

Each case runs a solver that would go on for a very long time (tol=1e-300, maxiter=10**9) in a
subprocess, waits until the child has made its second operator product (it prints "tick" at
each), sends SIGINT, and checks that the child dies with KeyboardInterrupt without printing a
result.  The only time limit is a generous guard against a hang; the measured delay between
the signal and the exit is printed (``pytest -s``) rather than asserted.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from scipy.sparse.linalg import LinearOperator
    import ntkfast as nf
    from ntkfast import solvers

    arch = nf.MLP(depth=3, activation="relu", b_std=0.1)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 8))
    y = np.sin(X[:, 0])

    def tick():
        print("tick", flush=True)

    if sys.argv[1] == "cg":
        gram = nf.GramOperator(arch, X)

        class Announcing(LinearOperator):
            symmetric = True

            def __init__(self):
                super().__init__(dtype=np.float64, shape=gram.shape)

            def diagonal(self):
                return gram.diagonal()

            def _matmat(self, V):
                tick()
                return gram @ V

        result = solvers.conjugate_gradient(Announcing(), y, diag_reg=1e-12, tol=1e-300, maxiter=10**9)
    elif sys.argv[1] == "nystrom":  # interrupted in FALKON's CG, K_nm recomputed by row blocks
        knm = sys.modules["ntkfast.solvers.nystrom"]._Knm
        product = knm.normal_matmat

        def announcing(self, Z):
            tick()
            return product(self, Z)

        knm.normal_matmat = announcing
        result = solvers.nystrom(arch, X, y, m=1000, cache=False, diag_reg=1e-12, tol=1e-300, maxiter=10**9, seed=0)
    else:  # interrupted while leverage scores are computed, block by block
        module = sys.modules["ntkfast.solvers.nystrom"]
        compute = module.kernel

        def announcing(*args, **kwargs):
            tick()
            return compute(*args, **kwargs)

        module.kernel = announcing
        nf.config.BLOCK_BYTES = 8 * 1000 * 5  # blocks of 5 pool points: 600 of them
        result = solvers.nystrom(
            arch, X, y, m=1000, centers="leverage", diag_reg=1e-12, tol=1e-300, maxiter=10**9, seed=0
        )
    print("RETURNED", result, flush=True)
    """
)


def _interrupt_after_ticks(case: str, ticks: int = 2, guard: float = 600.0):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, case], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    watchdog = threading.Timer(guard, proc.kill)  # a hang fails the test instead of the run
    watchdog.start()
    try:
        seen = 0
        while seen < ticks:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line.strip() == "tick"
        assert seen == ticks, f"the child stopped before its product {ticks}: {proc.stderr.read()[-2000:]}"
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # a child that ignores Ctrl-C fails here
        delay = time.perf_counter() - sent
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err, delay


@pytest.mark.parametrize("case", ["cg", "nystrom", "nystrom-leverage"])
def test_ctrl_c_stops_the_solver_and_returns_nothing(case):
    rc, out, err, delay = _interrupt_after_ticks(case, ticks=3)
    where = "in leverage_centers" if "leverage_centers" in err else ""
    print(f"{case}: exited {delay:.2f} s after SIGINT (rc {rc}) {where}")
    assert "KeyboardInterrupt" in err, err[-2000:]
    assert "RETURNED" not in out
    assert rc != 0
