"""Files the CLI writes: free space checked and reserved up front, atomic writes (temporary file
+ rename), and no partial file left on any exit path -- an exception, a full disk, Ctrl-C or
SIGTERM.  Full disks are simulated by monkeypatching (``os.posix_fallocate`` raising ENOSPC,
``joblib.dump`` raising OSError) and, where this process may mount one, on a 1 MiB tmpfs."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_helpers import assert_error, call

from ntkfast import cli
from ntkfast.cli import files as cli_files


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(cli_files.PARTIAL_SUFFIX))


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    np.save(tmp_path / "X.npy", X)
    rows = "".join(f"{a!r},{b!r},{c!r},{float(y)!r}\n" for (a, b, c), y in zip(X.tolist(), np.sin(X[:, 0])))
    (tmp_path / "train.csv").write_text("a,b,c,y\n" + rows)
    return tmp_path


def test_kernel_refuses_up_front_when_the_disk_is_too_small(capsys, data, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    out = data / "K.npy"
    assert_error(call(capsys, "kernel", data / "X.npy", "-o", out), 1, "needs 12.6 KiB but only 1000 B are free",
                 "--dtype float32")  # fmt: skip
    assert not out.exists() and leftovers(data) == []


def test_kernel_full_disk_at_reservation_keeps_the_old_file(capsys, data, monkeypatch):
    out = data / "K.npy"
    out.write_bytes(b"a good old file")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    assert_error(call(capsys, "kernel", data / "X.npy", "-o", out), 1, "could not reserve 12.6 KiB",
                 "No space left on device")  # fmt: skip
    assert out.read_bytes() == b"a good old file" and leftovers(data) == []


def test_kernel_failure_midway_leaves_no_partial_file(capsys, data, monkeypatch):
    import ntkfast.gram

    def boom(*args, **kwargs):
        raise RuntimeError("a bug in the middle of the work")

    monkeypatch.setattr(ntkfast.gram, "kernel", boom)
    with pytest.raises(RuntimeError):  # a bug keeps its traceback ...
        cli.main(["kernel", data / "X.npy", "-o", data / "K.npy"])
    assert not (data / "K.npy").exists() and leftovers(data) == []  # ... and leaves nothing behind


def test_fit_full_disk_keeps_the_good_model(capsys, data, monkeypatch):
    import joblib

    model = data / "model.joblib"
    assert call(capsys, "fit", data / "train.csv", "--target", "y", "-o", model, "--depth", 1)[0] == 0
    good = model.read_bytes()
    mode = model.stat().st_mode & 0o777
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # the usual mode, not mkstemp's 0600

    def dump(obj, filename, *a, **kw):
        with open(filename, "wb") as f:
            f.write(b"truncat")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))

    monkeypatch.setattr(joblib, "dump", dump)
    assert_error(call(capsys, "fit", data / "train.csv", "--target", "y", "-o", model, "--depth", 2), 1,
                 "No space left on device")  # fmt: skip
    assert model.read_bytes() == good and leftovers(data) == []


def test_predict_full_disk_keeps_the_old_predictions(capsys, data, monkeypatch):
    import pathlib

    model, preds = data / "model.joblib", data / "preds.csv"
    assert call(capsys, "fit", data / "train.csv", "--target", "y", "-o", model, "--depth", 1)[0] == 0
    assert call(capsys, "predict", model, data / "train.csv", "-o", preds)[0] == 0
    good = preds.read_text()
    assert good.splitlines()[0] == "y_pred" and len(good.splitlines()) == 41

    def write_text(self, text, *a, **kw):
        with open(self, "w") as f:
            f.write(text[:5])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    assert_error(call(capsys, "predict", model, data / "train.csv", "-o", preds), 1, "No space left on device")
    assert preds.read_text() == good and leftovers(data) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs, or a skip where this process may not mount one."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_real_full_disk_on_a_tiny_tmpfs(capsys, data, tiny_tmpfs):
    rng = np.random.default_rng(0)
    np.save(data / "big.npy", rng.standard_normal((600, 3)))  # its Gram: 2.7 MiB > 1 MiB
    out = tiny_tmpfs / "K.npy"
    assert_error(call(capsys, "kernel", data / "big.npy", "-o", out), 1, "needs 2.7 MiB", "are free")
    assert list(tiny_tmpfs.iterdir()) == []
    # the disk fills between the check and the write (another process): the reservation fails cleanly
    (tiny_tmpfs / "filler").write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))
    np.save(data / "mid.npy", rng.standard_normal((100, 3)))  # 78 KiB
    rc, _, err = call(capsys, "kernel", data / "mid.npy", "-o", out)
    assert rc == 1 and "Traceback" not in err and ("could not reserve" in err or "are free" in err), err
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["filler"]
    # on a disk with room the same command works
    (tiny_tmpfs / "filler").unlink()
    assert call(capsys, "kernel", data / "mid.npy", "-o", out, "--no-progress")[0] == 0
    assert np.load(out).shape == (100, 100)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_kernel_exits_cleanly_without_partial_file(tmp_path, sig, code):
    """Ctrl-C / SIGTERM during a long Gram: exit code 130 / 143, one line, no partial file.

    (Minutes of single-threaded work at depth 5000, so it cannot finish first; the signal comes once
    the partial file exists.)"""
    np.save(tmp_path / "X.npy", np.random.default_rng(0).standard_normal((4000, 5)).astype(np.float32))
    out = tmp_path / "K.npy"
    cmd = [sys.executable, "-m", "ntkfast", "kernel", "X.npy", "-o", "K.npy", "--depth", "5000", "--n-jobs", "1",
           "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(tmp_path), "the partial file never appeared"
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert ("interrupted" if sig == signal.SIGINT else "terminated") in err and "Traceback" not in err, err
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_swallowed_by_a_c_callback_is_recorded_and_not_printed(capfd, monkeypatch, sig):
    """A signal whose handler raises inside a ctypes callback (as when it lands while Numba compiles:
    llvmlite's object-cache notifier is one) has its exception swallowed there.  The command still
    sees it (``received_signal``), and Python's "Exception ignored ... Traceback" is not printed."""
    import ctypes

    @ctypes.CFUNCTYPE(None)
    def callback():
        os.kill(os.getpid(), sig)
        for _ in range(1000):  # the handler runs at the next bytecode boundary, inside the callback
            pass

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's own: prints to stderr
    hook = sys.unraisablehook
    with cli_files.sigterm_raises():
        callback()
        assert cli_files.received_signal() == sig
        with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else cli.errors.Terminated):
            cli_files.raise_if_signalled()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    # outside the context the previous hook is back: other unraisable exceptions still print
    assert sys.unraisablehook is hook


@pytest.mark.parametrize("in_a_cycle", [False, True], ids=["held-by-the-traceback", "in-a-reference-cycle"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_destructor_of_an_object_the_signal_cut_short_is_not_printed(capfd, monkeypatch, sig, in_a_cycle):
    """A signal landing inside a constructor leaves a half-built object whose destructor fails (as
    llvmlite's ``ObjectRef.__del__`` does on a missing ``_as_parameter_`` when SIGTERM cuts Numba's
    compile short).  It dies when ``main`` drops the interrupted frames, or at the next garbage
    collection if it sits in a cycle; neither may print "Exception ignored ... Traceback"."""

    class Handle:
        def __init__(self):
            if in_a_cycle:
                self.cycle = self
            os.kill(os.getpid(), sig)
            for _ in range(1000):  # the handler runs at the next bytecode boundary
                pass
            self._as_parameter_ = 1

        def __del__(self):
            del self._as_parameter_

    class Command:
        @staticmethod
        def run(args):
            Handle()
            return cli.EXIT_OK

    monkeypatch.setattr(cli, "command_module", lambda name: Command)
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's own: prints to stderr
    code = cli.main(["demo"])
    import gc

    gc.collect()
    err = capfd.readouterr().err
    assert code == (cli.EXIT_INTERRUPTED if sig == signal.SIGINT else cli.EXIT_TERMINATED), err
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert sys.unraisablehook is sys.__unraisablehook__


def _signal_self(sig):
    os.kill(os.getpid(), sig)
    for _ in range(1000):  # a handler that is not held runs at the next bytecode boundary, here
        pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_right_after_the_partial_file_is_created_leaves_nothing(tmp_path, monkeypatch, sig):
    """The signal lands between ``mkstemp`` creating the file and the ``try`` that removes it: it is
    held there and raised inside the ``try``, so the clean-up still owns the file."""
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        made = real(*args, **kwargs)
        _signal_self(sig)
        return made

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with cli_files.sigterm_raises():
        with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else cli.errors.Terminated):
            with cli_files.atomic_output(tmp_path / "K.npy"):
                pytest.fail("the body must not run: the signal came first")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_second_signal_during_the_clean_up_does_not_cut_it_short(tmp_path, monkeypatch, sig):
    """A failure starts the clean-up and a signal (the user's second Ctrl-C) lands inside it: the
    partial file is still removed, and the signal is raised after."""
    import pathlib

    real = pathlib.Path.unlink

    def unlink(self, *args, **kwargs):
        _signal_self(sig)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "unlink", unlink)
    with cli_files.sigterm_raises():
        with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else cli.errors.Terminated):
            with cli_files.atomic_output(tmp_path / "K.npy") as partial:
                partial.write_bytes(b"half")
                raise RuntimeError("the work failed")
    assert list(tmp_path.iterdir()) == []
