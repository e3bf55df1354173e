"""The engine layer and the tile machinery: plan coverage, assembly, Ctrl-C, aliasing, disk, resources."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import config, engine, tiling
from ntkfast.errors import ArgumentError, InsufficientMemoryError

ARCH = nf.MLP(depth=3, activation="relu", W_std=1.5, b_std=0.05)
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------- tile plan
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("n, m, tile", [(23, 17, 5), (37, 37, 16), (64, 9, 64), (1, 1, 3), (50, 50, 50)])
def test_cpu_plan_covers_every_entry_once(monkeypatch, symmetric, n, m, tile):
    """Every entry of K(X, X) (tiles on/above the diagonal plus their mirror images) and of
    K(X, Y) is covered by exactly one tile; ragged edges; the recursive diagonal split."""
    monkeypatch.setattr(config, "DIAGONAL_TILE", 4)
    m = n if symmetric else m
    plan = tiling.plan_tiles(n, m, 8, symmetric, tile=tile)
    counts = np.zeros((n, m), int)
    for i0, i1, j0, j1 in plan:
        assert 0 <= i0 < i1 <= n and 0 <= j0 < j1 <= m
        if symmetric:
            assert j0 >= i0
            if i0 == j0:  # a diagonal block: square, and split down to DIAGONAL_TILE
                assert i1 == j1 and i1 - i0 <= max(4, 1)
                counts[i0:i1, j0:j1] += np.triu(np.ones((i1 - i0, j1 - j0), int))
                counts[i0:i1, j0:j1] += np.tril(np.ones((i1 - i0, j1 - j0), int), -1)
            else:
                assert j0 >= i1  # strictly above the diagonal
                counts[i0:i1, j0:j1] += 1
                counts[j0:j1, i0:i1] += 1
        else:
            counts[i0:i1, j0:j1] += 1
    assert (counts == 1).all()
    assert len(plan) == sum(1 for _ in plan)


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("symmetric", [True, False])
def test_kernel_writes_every_entry_once(monkeypatch, rng, symmetric, n_jobs):
    """The whole CPU pipeline with the tile computation replaced by a counter: after the
    assembly every off-diagonal entry was written by exactly one tile (or its mirror), and the
    diagonal holds the exact diagonal values."""
    monkeypatch.setattr(config, "DIAGONAL_TILE", 4)

    def count(coef, rx, ry, i0, i1, j0, j1, G, nngp, ntk, offset, diagonal=False, write_at=None, mirror=False,
              **store):
        for o in (nngp, ntk):
            if o is not None:
                o[:, offset[0]:offset[0] + i1 - i0, offset[1]:offset[1] + j1 - j0] += 1
                if mirror:  # the tile's mirror image, written by compute_tile itself
                    o[:, offset[1]:offset[1] + j1 - j0, offset[0]:offset[0] + i1 - i0] += 1

    monkeypatch.setattr(engine, "compute_tile", count)
    X = rng.standard_normal((29, 3))
    Y = None if symmetric else rng.standard_normal((19, 3))
    shape = (29, 29 if symmetric else 19)
    outs = (np.zeros(shape), np.zeros(shape))
    nf.kernel(ARCH, X, Y, get=("nngp", "ntk"), out=outs, tile=7, n_jobs=n_jobs)
    diag = nf.kernel_diag(ARCH, X, get=("nngp", "ntk"))
    for o, d in zip(outs, diag):
        if symmetric:
            np.testing.assert_array_equal(np.diag(o), d)
            o = o + np.diag(1 - np.diag(o))
        np.testing.assert_array_equal(o, np.ones(shape))
    # with depths the tile goes through scratch (written whole, so only coverage is visible)
    monkeypatch.setattr(engine, "compute_tile", lambda *a, **k: [o.fill(1) for o in a[8:10] if o is not None])
    outs = tuple((np.zeros(shape), np.zeros(shape)) for _ in range(2))
    nf.kernel(ARCH, X, Y, get=("nngp", "ntk"), out=outs, tile=7, n_jobs=n_jobs, depths=(2, 1))
    for d_out, d in zip(outs, (2, 1)):
        for o, dg in zip(d_out, nf.kernel_diag(ARCH, X, get=("nngp", "ntk"), depths=(d,))[0]):
            if symmetric:
                np.testing.assert_array_equal(np.diag(o), dg)
                o = o + np.diag(1 - np.diag(o))
            np.testing.assert_array_equal(o, np.ones(shape))


def test_engine_rows_and_coefficients_contract(rng):
    """The names other backends code against, and what they hold."""
    X = rng.standard_normal((6, 4)).astype(np.float32)
    rows, coef = engine.prepare_rows(ARCH, X)
    assert isinstance(rows, engine.Rows) and isinstance(coef, engine.Coefficients)
    assert rows.features.dtype == np.float32 and rows.sig.shape == (ARCH.n_steps, 6)
    assert rows.features64.dtype == np.float64 and rows.sig64.shape == (ARCH.n_steps, 6)
    assert coef.float64 is not None and coef.float64.steps.dtype == np.float64
    np.testing.assert_array_equal(rows.ntk, nf.kernel_diag(ARCH, X))
    c = engine.coefficients(ARCH, 4, np.float64)
    assert c.float64 is None and c.steps.shape == (ARCH.n_steps, 5) and c.code == ARCH.activation.code
    op = nf.GramOperator(ARCH, X)
    assert op.rows_x is op.rows_y and op.coefficients.code == coef.code and op.plan.symmetric
    with pytest.raises(AttributeError):
        op.rows_x = rows


def test_backends_do_not_import_the_api_module():
    for path in (ROOT / "ntkfast" / "backends" / "cpu.py", ROOT / "ntkfast" / "engine.py"):
        text = path.read_text()
        assert "gram import" not in text and "import gram" not in text


# ---------------------------------------------------------------------------------- Ctrl-C
_INTERRUPTED = textwrap.dedent(
    """
    import sys
    import numpy as np
    import ntkfast as nf

    what, n_jobs = sys.argv[1], int(sys.argv[2])
    X = np.random.default_rng(0).standard_normal((1500, 8))
    arch = nf.MLP(depth=40000)  # minutes of work on one core
    nf.kernel(nf.MLP(depth=2), X[:40], n_jobs=n_jobs)  # compile first
    nf.GramOperator(nf.MLP(depth=2), X[:40], n_jobs=n_jobs) @ np.ones(40)
    print("ready", flush=True)
    if what == "kernel":
        nf.kernel(arch, X, n_jobs=n_jobs, tile=128)
    else:
        nf.GramOperator(arch, X, n_jobs=n_jobs, tile=128) @ np.ones(1500)
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize(
    "what, n_jobs", [pytest.param("kernel", 1, marks=pytest.mark.slow), ("kernel", 2), ("operator", 2)]
)
def test_ctrl_c_stops_at_the_next_tile(what, n_jobs):
    """SIGINT in the middle of a computation of minutes: the process ends with KeyboardInterrupt
    after the tiles in progress (seconds), rather than running to completion."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED, what, str(n_jobs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "ready"
        threading.Event().wait(1.5)  # well inside the long call
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)  # completion would take many minutes
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "finished" not in out
    assert proc.returncode != 0 and "KeyboardInterrupt" in err


def test_worker_exception_cancels_the_other_tiles():
    plan = tiling.TilePlan(200, 200, 10, False)  # 400 tiles
    done = []
    failed = threading.Event()

    def work(i0, i1, j0, j1, worker):
        if worker == 0:
            failed.set()
            raise RuntimeError("boom")
        failed.wait()
        threading.Event().wait(0.02)
        done.append((i0, j0))

    with pytest.raises(RuntimeError, match="boom"):
        tiling.run_tiles(plan, work, n_jobs=2, static=True)
    assert len(done) <= 3  # the other worker stopped after its current tile


# ---------------------------------------------------------------------------------- aliasing
def test_out_aliasing_is_refused(rng):
    X = rng.standard_normal((6, 6))
    o = np.zeros((6, 6))
    for out, Y in [((o, o), None), ((o, o[:, :]), None), (X, None), ((o, X), None),
                   (o, o), (o.reshape(-1)[:36].reshape(6, 6), o)]:  # fmt: skip
        with pytest.raises(ArgumentError, match="out"):
            nf.kernel(ARCH, X, Y, get="ntk" if not isinstance(out, tuple) else ("nngp", "ntk"), out=out)


def test_random_aliasing_patterns(rng):
    """Outputs and inputs cut at random offsets from one buffer: refused exactly when some pair
    shares memory, and the inputs are untouched after a refusal; computed right otherwise."""
    n = 5
    for _ in range(60):
        buf = rng.standard_normal(6 * n * n)
        keep = buf.copy()

        def window(buf=buf):
            off = int(rng.integers(0, buf.size - n * n + 1))
            return buf[off:off + n * n].reshape(n, n)

        X = window()
        Y = window() if rng.random() < 0.5 else None
        o1, o2 = window(), window()
        arrays = [o1, o2, X] + ([] if Y is None else [Y])
        pairs = [(a, b) for a in range(2) for b in range(a + 1, len(arrays))]
        overlap = any(np.shares_memory(arrays[a], arrays[b]) for a, b in pairs)
        Xc, Yc = X.copy(), None if Y is None else Y.copy()
        if overlap:
            with pytest.raises(ArgumentError, match="out"):
                nf.kernel(ARCH, X, Y, get=("nngp", "ntk"), out=(o1, o2))
            np.testing.assert_array_equal(buf, keep)
        else:
            nf.kernel(ARCH, X, Y, get=("nngp", "ntk"), out=(o1, o2))
            ref = nf.kernel(ARCH, Xc, Yc, get=("nngp", "ntk"))
            np.testing.assert_array_equal(o1, ref[0])
            np.testing.assert_array_equal(o2, ref[1])


def test_depths_outputs_overlap_refused(rng):
    X = rng.standard_normal((5, 3))
    o = np.empty((5, 5))
    with pytest.raises(ArgumentError, match="overlap"):
        nf.kernel(ARCH, X, depths=(1, 2), out=(o, o))


# ---------------------------------------------------------------------------------- full disk
def test_memmap_out_reserves_its_byte_range(monkeypatch, tmp_path, rng):
    calls = []
    monkeypatch.setattr(engine.os, "posix_fallocate", lambda fd, start, size: calls.append((start, size)))
    X = rng.standard_normal((12, 3))
    mm = np.lib.format.open_memmap(tmp_path / "K.npy", mode="w+", dtype=np.float64, shape=(20, 12))
    nf.kernel(ARCH, X[:8], X, out=mm[4:12])  # a view of a memmap: its own byte range
    assert calls == [(mm.offset + 4 * 12 * 8, 8 * 12 * 8)]
    np.testing.assert_array_equal(mm[4:12], nf.kernel(ARCH, X[:8], X))


def test_memmap_out_on_a_full_disk_is_refused(monkeypatch, tmp_path, rng):
    def full(fd, start, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine.os, "posix_fallocate", full)
    X = rng.standard_normal((10, 3))
    mm = np.memmap(tmp_path / "K.bin", mode="w+", dtype=np.float64, shape=(10, 10))
    with pytest.raises(InsufficientMemoryError, match="800 bytes.*free"):
        nf.kernel(ARCH, X, out=mm)


def test_memmap_out_on_a_real_tiny_tmpfs(rng):
    """With root, a 1 MiB tmpfs: a 2 MiB memmap is refused up front (not SIGBUS); skipped without."""
    mnt = tempfile.mkdtemp()
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", mnt], capture_output=True)
    except OSError:
        res = None
    if res is None or res.returncode != 0:
        os.rmdir(mnt)
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        X = rng.standard_normal((512, 3))
        mm = np.memmap(os.path.join(mnt, "K.bin"), mode="w+", dtype=np.float64, shape=(512, 512))
        with pytest.raises(InsufficientMemoryError, match="free"):
            nf.kernel(ARCH, X, out=mm)
        del mm
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)


# ---------------------------------------------------------------------------------- resources
def test_huge_tile_and_thread_counts_are_refused(rng, monkeypatch):
    X = rng.standard_normal((10, 3))
    with pytest.raises(ArgumentError, match="tile"):
        nf.kernel(ARCH, X, tile=10**9)
    with pytest.raises(ArgumentError, match="n_jobs"):
        nf.kernel(ARCH, X, n_jobs=10**6)
    with pytest.raises(ArgumentError, match="n_jobs"):
        nf.GramOperator(ARCH, X, n_jobs=10**6)
    with pytest.raises(ArgumentError, match="tile"):
        nf.GramOperator(ARCH, X, tile=10**9)
    X = rng.standard_normal((2000, 3))
    out = np.empty((2000, 2000))
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "8M")
    with pytest.raises(InsufficientMemoryError, match="scratch"):
        nf.kernel(ARCH, X, out=out, tile=2000)


def test_operator_products_deterministic_and_budgeted(rng, monkeypatch):
    X = rng.standard_normal((300, 4))
    V = rng.standard_normal((300, 3))
    ref = nf.kernel(ARCH, X) @ V
    op = nf.GramOperator(ARCH, X, tile=32, n_jobs=2)
    first = op @ V
    for _ in range(3):
        np.testing.assert_array_equal(op @ V, first)  # bit-identical for a given n_jobs
    np.testing.assert_allclose(first, ref, rtol=1e-12)
    # a budget for one accumulator only: fewer threads, same tiles, still right
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", str(300 * 3 * 8 + 2 * 32 * 32 * 8 + 100))
    np.testing.assert_allclose(op @ V, ref, rtol=1e-12)
    monkeypatch.setenv("NTKFAST_MEMORY_BUDGET", "1K")
    with pytest.raises(InsufficientMemoryError, match="K @ V"):
        op @ V


def test_kernel_grad_peak_memory_is_what_it_budgets(rng):
    """K and dK (3 n^2 doubles) plus per-thread tile scratch: the assembly adds no n^2 temporaries."""
    import tracemalloc

    from ntkfast.kernel_grad import kernel_with_gradient

    arch = nf.MLP(depth=2, b_std=0.1)
    n = 600
    X = rng.standard_normal((n, 5))
    ref_K, ref_dK = kernel_with_gradient(arch, X[:50])
    t = tiling.plan_tiles(n, n, 8, True, n_jobs=2).tile
    # the same call once untraced: every kernel it runs (the multi-tile assembly's too) is compiled or
    # loaded from Numba's cache before the trace, whatever ran earlier in this process
    kernel_with_gradient(arch, X, n_jobs=2)
    tracemalloc.start()
    try:
        K, dK = kernel_with_gradient(arch, X, n_jobs=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 3 * n * n * 8 + 2 * 4 * t * t * 8 + 2**20
    np.testing.assert_array_equal(K, K.T)
    np.testing.assert_array_equal(dK, dK.transpose(1, 0, 2))
    np.testing.assert_allclose(K[:50, :50], ref_K, rtol=1e-13)
    np.testing.assert_allclose(dK[:50, :50], ref_dK, rtol=1e-12, atol=1e-15)


def test_ctrl_c_while_starting_the_workers_leaves_no_thread_behind(monkeypatch):
    """A Ctrl-C that lands in ``Thread.start()`` (it waits for the new thread) used to escape
    before the pool was shut down: the started workers then kept the interpreter from exiting."""
    import concurrent.futures
    import threading

    from ntkfast import tiling

    real_submit = concurrent.futures.ThreadPoolExecutor.submit
    calls = []

    def submit(self, fn, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(concurrent.futures.ThreadPoolExecutor, "submit", submit)
    before = threading.active_count()
    plan = tiling.TilePlan(64, 64, 8, False)
    with pytest.raises(KeyboardInterrupt):
        tiling.run_tiles(plan, lambda *tile: None, n_jobs=2)
    assert threading.active_count() == before
