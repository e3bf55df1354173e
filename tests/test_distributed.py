"""ntkfast.distributed on a real Dask cluster (LocalCluster, two worker processes).

Truths: the local engine (ntkfast.kernel, ntkfast.GramOperator), dense NumPy products of its
matrices, and Dask's own recovery when a worker process is killed mid-computation.
"""

import os
import signal
import threading

import numpy as np
import pytest

pytest.importorskip("dask.distributed")

import dask  # noqa: E402
import dask.array as da  # noqa: E402
from dask.distributed import Client, LocalCluster  # noqa: E402
from distributed.diagnostics.plugin import SchedulerPlugin  # noqa: E402

import ntkfast as nf  # noqa: E402
from ntkfast import distributed  # noqa: E402

# One activation throughout: every worker process loads (or compiles) Numba kernels per activation
# and dtype, seconds each.  Gelu because its f(x, y) and f(y, x) differ in the last ulp, so the
# transposed lower blocks are really checked.
ARCH = nf.MLP(depth=3, activation="gelu", W_std=1.4, b_std=0.1)
ARCH2 = nf.MLP(depth=2, activation="gelu", W_std=1.2, b_std=0.2, parameterization="standard", width=64)


def assert_same_kernel(got, want):
    """Blocks of the cluster's Gram against the local kernel: equal to round-off, not bit for bit.
    The first layer's dot products come from BLAS, and OpenBLAS's AVX-512 kernel (core "SkylakeX",
    chosen on Zen 4 too) sums a dot product in an order that depends on the entry's place in the
    block it multiplies, so one pair can differ by an ulp between two block shapes (measured:
    ~100 of 10^4 entries by 2e-16 relative; with OPENBLAS_CORETYPE=Zen or Haswell, bit for bit)."""
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13 * np.abs(want).max())


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, worker_dashboard_address=None
    ) as cl:
        yield cl


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster) as c:
        yield c


@pytest.fixture
def live_client(client):
    """The module client with both workers up (a kill test may have restarted one)."""
    client.wait_for_workers(2, timeout=60)
    return client


def _data(n, d=10, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


# ------------------------------------------------------------------ lazy kernel


def test_kernel_symmetric_equals_local_bit_for_bit(live_client):
    # chunks a multiple of the tile: the same tiles as the local engine, so the same numbers
    X = _data(330)
    K = distributed.kernel(ARCH, X, chunks=128, tile=64)
    assert isinstance(K, da.Array) and K.dtype == np.float64 and K.chunks == ((128, 128, 74),) * 2
    Kd = K.compute()
    assert_same_kernel(Kd, nf.kernel(ARCH, X, tile=64))
    np.testing.assert_array_equal(Kd, Kd.T)  # lower blocks are the transposes, as locally
    np.testing.assert_array_equal(np.diag(Kd), nf.kernel_diag(ARCH, X))  # exact diagonal recursion


def test_kernel_cross_and_tuple_equal_local(live_client):
    X, Y = _data(250, seed=1), _data(170, seed=2)
    nngp, ntk = distributed.kernel(ARCH, X, Y, get=("nngp", "ntk"), chunks=100, tile=50)
    assert nngp.shape == ntk.shape == (250, 170)
    a, b = dask.compute(nngp, ntk)
    assert_same_kernel(a, nf.kernel(ARCH, X, Y, get="nngp", tile=50))
    assert_same_kernel(b, nf.kernel(ARCH, X, Y, get="ntk", tile=50))


def test_kernel_any_chunking_agrees_to_an_ulp(live_client):
    # chunks that do not line up with the local tiles: BLAS rounds edge rows differently
    X = _data(300, seed=3)
    K = distributed.kernel(ARCH, X, chunks=77).compute()
    K_local = nf.kernel(ARCH, X)
    np.testing.assert_allclose(K, K_local, rtol=1e-14, atol=1e-14 * np.abs(K_local).max())
    np.testing.assert_array_equal(np.diag(K), np.diag(K_local))


def test_kernel_dask_array_input_keeps_row_chunks(live_client):
    X, Y = _data(260, seed=4), _data(90, seed=5)
    Xd = da.from_array(X, chunks=(100, -1))
    K = distributed.kernel(ARCH2, Xd, get=("ntk",), tile=50)
    assert isinstance(K, tuple) and K[0].chunks == ((100, 100, 60),) * 2
    assert_same_kernel(K[0].compute(), nf.kernel(ARCH2, X, tile=50))
    KY = distributed.kernel(ARCH2, Xd, da.from_array(Y, chunks=(45, 10)), get="nngp", tile=50)
    assert KY.chunks == ((100, 100, 60), (45, 45))
    # These blocks (rows 100/100/60, columns 45/45) are not aligned with any one local tile edge:
    # an entry may then sit at a GEMM micro-tile edge or in the scalar tail of the vectorised
    # recursion loop on one side only, which can round 1 ulp differently (the aligned cases above
    # are bit-identical)
    np.testing.assert_allclose(KY.compute(), nf.kernel(ARCH2, X, Y, get="nngp", tile=50), rtol=2e-15, atol=0)
    # chunks= rechunks a dask input along rows
    assert distributed.kernel(ARCH2, Xd, chunks=130).chunks == ((130, 130),) * 2


def test_kernel_is_lazy_and_computes_each_upper_block_once(live_client, monkeypatch):
    X = _data(400, seed=6)
    calls = []
    real = distributed._kernel_block

    def counting(Xi, Xj, **kw):
        calls.append(Xj is None)
        return real(Xi, Xj, **kw)

    monkeypatch.setattr(distributed, "_kernel_block", counting)
    K = distributed.kernel(ARCH2, X, chunks=100)
    assert calls == []  # lazy
    # 4 row blocks: 16 output blocks from 10 block computations, 4 of them diagonal
    # (the graph is inspected in-process here; the counting wrapper does not travel to workers)
    Kd = K.compute(scheduler="sync")
    assert len(calls) == 10 and sum(calls) == 4
    assert_same_kernel(Kd, K.compute())  # the same graph on the cluster
    # a slice computes only the blocks it needs, and the same numbers
    calls.clear()
    part = K[100:200, 300:].compute(scheduler="sync")
    assert len(calls) == 1
    np.testing.assert_allclose(part, nf.kernel(ARCH2, X)[100:200, 300:], rtol=1e-14)


# ------------------------------------------------------------------ operators


def test_gram_operator_equals_local(live_client):
    X = _data(310, seed=7)
    op = distributed.GramOperator(ARCH, X, chunks=100)
    assert op.shape == (310, 310) and op.row_chunks == (100, 100, 100, 10)
    local = nf.GramOperator(ARCH, X)
    K = nf.kernel(ARCH, X)
    rng = np.random.default_rng(0)
    V = rng.standard_normal((310, 3))
    v = rng.standard_normal(310)
    np.testing.assert_allclose(op @ V, local @ V, rtol=1e-12, atol=0)
    np.testing.assert_allclose(op @ V, K @ V, rtol=1e-12, atol=0)
    np.testing.assert_allclose(op @ v, K @ v, rtol=1e-12, atol=0)
    np.testing.assert_allclose(op.rmatvec(v), K @ v, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(op.diagonal(), local.diagonal())


def test_gram_operator_nngp_and_dask_input(live_client):
    X = _data(230, seed=8)
    op = distributed.GramOperator(ARCH2, da.from_array(X, chunks=(60, -1)), get="nngp", client=live_client)
    assert op.row_chunks == (60, 60, 60, 50)
    v = np.random.default_rng(1).standard_normal(230)
    np.testing.assert_allclose(op @ v, nf.kernel(ARCH2, X, get="nngp") @ v, rtol=1e-12)
    np.testing.assert_array_equal(op.diagonal(), nf.kernel_diag(ARCH2, X, get="nngp"))


@pytest.mark.slow  # the workers compile (or load) the float32 kernels: ~10 s more
def test_float32_kernel_and_operator(live_client):
    X = _data(330, dtype=np.float32)
    K = distributed.kernel(ARCH, X, chunks=128, tile=64)
    assert K.dtype == np.float32
    Kd, K_local = K.compute(), nf.kernel(ARCH, X, tile=64)
    # a few float32 ulps, not bit for bit: inside Dask's worker threads OpenBLAS's float32 product
    # A @ A.T (diagonal tiles) was seen to round differently from the same call in the main thread
    np.testing.assert_allclose(Kd, K_local, rtol=2e-6, atol=2e-6 * np.abs(K_local).max())
    np.testing.assert_array_equal(Kd, Kd.T)
    np.testing.assert_array_equal(np.diag(Kd), nf.kernel_diag(ARCH, X))
    op = distributed.GramOperator(ARCH, X, chunks=128)
    assert op.dtype == np.float32
    v = np.random.default_rng(1).standard_normal(330).astype(np.float32)
    np.testing.assert_allclose(op @ v, nf.GramOperator(ARCH, X) @ v, rtol=2e-5)


@pytest.mark.filterwarnings("ignore::ntkfast.solvers.ConvergenceWarning")
def test_gram_operator_plugs_into_conjugate_gradient(cluster, live_client):
    # a few CG iterations (each one is a round trip to the cluster) track the local operator's
    X = _data(200, seed=9)
    y = np.sin(X[:, :2])
    op = distributed.GramOperator(ARCH2, X, chunks=100, client=cluster.scheduler_address)
    try:
        res = nf.solvers.conjugate_gradient(op, y, diag_reg=1e-2, maxiter=6)
        ref = nf.solvers.conjugate_gradient(nf.GramOperator(ARCH2, X), y, diag_reg=1e-2, maxiter=6)
        assert res.iterations == ref.iterations == 6
        np.testing.assert_allclose(res.alpha, ref.alpha, rtol=1e-9, atol=1e-12 * np.abs(ref.alpha).max())
    finally:
        op.client.close()  # the address made a client of its own


def test_nystrom_products_equal_dense(live_client):
    X, C = _data(290, seed=10), _data(40, seed=11)
    rng = np.random.default_rng(2)
    v, V, y = rng.standard_normal(40), rng.standard_normal((40, 2)), rng.standard_normal((290, 3))
    Knm = nf.kernel(ARCH, X, C)
    op = distributed.NystromOperator(ARCH, X, C, chunks=100)
    assert op.shape == (40, 40)
    np.testing.assert_allclose(op @ v, Knm.T @ (Knm @ v), rtol=1e-12)
    np.testing.assert_allclose(op @ V, Knm.T @ (Knm @ V), rtol=1e-12)
    np.testing.assert_allclose(op.rhs(y), Knm.T @ y, rtol=1e-12)
    np.testing.assert_allclose(op.rhs(y[:, 0]), Knm.T @ y[:, 0], rtol=1e-12)
    yd = da.from_array(y[:, 0], chunks=100)
    np.testing.assert_allclose(op.rhs(yd), Knm.T @ y[:, 0], rtol=1e-12)
    # the one-shot functions
    np.testing.assert_allclose(
        distributed.nystrom_normal_matvec(ARCH, X, C, v, chunks=64), Knm.T @ (Knm @ v), rtol=1e-12
    )
    np.testing.assert_allclose(distributed.nystrom_rhs(ARCH, X, C, y, get="ntk"), Knm.T @ y, rtol=1e-12)


# ------------------------------------------------------------------ bad input: clear errors, no hang


def test_closed_client_is_refused(cluster, live_client):
    X = _data(50)
    other = Client(cluster.scheduler_address, set_as_default=False)
    op = distributed.GramOperator(ARCH2, X, client=other, chunks=25)
    other.close()
    with pytest.raises(ValueError, match="not running"):
        distributed.GramOperator(ARCH2, X, client=other)
    with pytest.raises(ValueError, match="not running"):
        op @ np.ones(50)
    with pytest.raises(ValueError, match="not running"):
        distributed.NystromOperator(ARCH2, X, X[:5], client=other)


def test_no_client_and_bad_client(monkeypatch, live_client):
    import dask.distributed

    def no_client():
        raise ValueError("No global client found and no address provided")

    monkeypatch.setattr(dask.distributed, "get_client", no_client)
    with pytest.raises(ValueError, match="no Dask client"):
        distributed.GramOperator(ARCH2, _data(20))
    with pytest.raises(TypeError, match="client"):
        distributed.GramOperator(ARCH2, _data(20), client=42)


def test_unreachable_scheduler_fails_fast():
    with pytest.raises(OSError):
        distributed.GramOperator(ARCH2, _data(20), client="tcp://127.0.0.1:9", timeout=1)


def test_bad_chunking_is_refused(live_client):
    X = _data(60)
    by_features = da.from_array(X, chunks=(30, 5))
    with pytest.raises(ValueError, match="feature axis.*rechunk"):
        distributed.kernel(ARCH2, by_features)
    with pytest.raises(ValueError, match="feature axis"):
        distributed.GramOperator(ARCH2, by_features)
    unknown = da.from_array(X, chunks=(30, -1))[da.from_array(X[:, 0] > 0, chunks=30)]
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        distributed.kernel(ARCH2, unknown)
    for bad in (0, [30, 20], "big", 2.5):
        with pytest.raises(ValueError, match="chunks"):
            distributed.kernel(ARCH2, X, chunks=bad)
    with pytest.raises(ValueError, match="features"):
        distributed.kernel(ARCH2, X, _data(5, d=3))
    with pytest.raises(ValueError, match="features"):
        distributed.kernel(ARCH2, da.from_array(X, chunks=(30, -1)), da.from_array(_data(5, d=3)))
    with pytest.raises(ValueError, match="get"):
        distributed.GramOperator(ARCH2, X, get=("nngp", "ntk"))
    with pytest.raises(TypeError, match="arch"):
        distributed.kernel("relu", X)
    with pytest.raises(ValueError, match="NaN"):
        distributed.kernel(ARCH2, np.where(X > 2, np.nan, X))


def test_mismatched_y_chunks_are_refused(live_client):
    X, C = _data(100), _data(10, seed=1)
    op = distributed.NystromOperator(ARCH2, da.from_array(X, chunks=(50, -1)), C)
    with pytest.raises(ValueError, match=r"row chunks \(40, 40, 20\) differ from those of X \(50, 50\)"):
        op.rhs(da.from_array(np.ones(100), chunks=40))
    with pytest.raises(ValueError, match="y: expected shape"):
        op.rhs(np.ones(99))
    with pytest.raises(ValueError, match="dimension mismatch"):  # scipy's LinearOperator check
        op @ np.ones(11)
    with pytest.raises(ValueError, match="NaN"):
        op.rhs(np.full(100, np.nan))
    with pytest.raises(ValueError, match="NaN"):
        op.rhs(da.from_array(np.full(100, np.nan), chunks=50))  # found in the result, not silently used


def test_nan_in_a_dask_block_raises_at_compute(live_client):
    X = _data(80)
    X[70, 3] = np.nan
    K = distributed.kernel(ARCH2, da.from_array(X, chunks=(40, -1)))  # lazy: values not looked at yet
    with pytest.raises(ValueError, match="NaN"):
        K.compute()


def test_timeout_raises_instead_of_waiting(live_client):
    op = distributed.GramOperator(ARCH, _data(600), chunks=100, timeout=1e-3)
    with pytest.raises(TimeoutError):
        op @ np.ones(600)


# ------------------------------------------------------------------ failures: Dask recovers


class _KillWorkerOnce(SchedulerPlugin):
    """Kills a worker process (SIGKILL) the first time a task whose key contains ``marker``
    finishes: preferably a worker still processing another such task, else the one that just
    finished (its result in memory is then lost too)."""

    def __init__(self, scheduler, marker, pids):
        self.scheduler, self.marker, self.pids = scheduler, marker, pids
        self.killed = None
        self.lock = threading.Lock()

    def _ours(self, key):
        return self.marker in str(key)

    def transition(self, key, start, finish, *args, **kwargs):
        if finish != "memory" or not self._ours(key):
            return
        with self.lock:
            if self.killed is not None:
                return
            busy = [
                ts.processing_on.address
                for ts in self.scheduler.tasks.values()
                if ts.state == "processing" and self._ours(ts.key) and ts.processing_on is not None
            ]
            holders = [ws.address for ws in self.scheduler.tasks[key].who_has or ()]
            victim = (busy or holders or [None])[0]
            if victim in self.pids:
                self.killed = victim
                os.kill(self.pids[victim], signal.SIGKILL)


def _run_with_a_kill(cluster, client, marker, compute):
    pids = client.run(os.getpid)
    plugin = _KillWorkerOnce(cluster.scheduler, marker, pids)
    cluster.scheduler.add_plugin(plugin, name="kill-once")
    try:
        result = compute()
    finally:
        cluster.scheduler.remove_plugin(name="kill-once")
    assert plugin.killed is not None, "no worker was killed: the test did not exercise recovery"
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker
    assert set(client.run(os.getpid).values()) != set(pids.values())
    return result


def test_kernel_survives_a_killed_worker(cluster, live_client):
    X = _data(600, seed=12)
    K = distributed.kernel(ARCH, X, chunks=100, tile=50)
    Kd = _run_with_a_kill(cluster, live_client, "ntkfast-kernel-block", K.compute)
    assert_same_kernel(Kd, nf.kernel(ARCH, X, tile=50))


def test_gram_operator_survives_a_killed_worker_and_lost_inputs(cluster, live_client):
    X = _data(600, seed=13)
    v = np.random.default_rng(3).standard_normal(600)
    op = distributed.GramOperator(ARCH, X, chunks=100)
    expected = nf.kernel(ARCH, X) @ v
    u = _run_with_a_kill(cluster, live_client, "ntkfast-gram-pair", lambda: op @ v)
    np.testing.assert_allclose(u, expected, rtol=1e-12)
    # client.restart() cancels every future, the scattered X included; the next product must
    # scatter it again (cancelling them here is the same for the operator, without the restart)
    live_client.cancel(op._blocks.futures())
    np.testing.assert_allclose(op @ v, expected, rtol=1e-12)


def test_nystrom_solver_on_the_cluster_equals_the_local_one(client):
    """The Nyström/FALKON solver with its K_nm products on the cluster gives the local answer."""
    from ntkfast.solvers import nystrom

    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 5))
    y = np.sin(X[:, 0])
    arch = nf.MLP(depth=2, activation="relu", W_std=1.4, b_std=0.1)
    local = nystrom(arch, X, y, 40, diag_reg=1e-3, seed=0, tol=1e-10)
    remote = nystrom(arch, X, y, 40, diag_reg=1e-3, seed=0, tol=1e-10, client=client)
    np.testing.assert_array_equal(remote.centers, local.centers)
    # both solve to tol 1e-10 from kernels equal to round-off (assert_same_kernel): the
    # predictions agree to about the system's condition number times that (measured 1.3e-9)
    np.testing.assert_allclose(remote.predict(X[:50]), local.predict(X[:50]), rtol=1e-7, atol=1e-10)
