"""Input and output files: checks made before the work, free-space checks, and atomic writes.

Every file the CLI writes appears under its name only once complete: it is written to a
temporary file in the same directory (same file system, so the final ``os.replace`` is atomic)
and renamed.  On any failure -- an exception, a full disk, Ctrl-C, SIGTERM (see
:func:`sigterm_raises`) -- the temporary file is removed and a file that was already there under
the requested name is left untouched.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from ..config import format_bytes
from .errors import CommandError, Terminated

__all__ = [
    "input_file",
    "output_file",
    "check_free_space",
    "reserve",
    "atomic_output",
    "sigterm_raises",
    "quiet_after_signal",
    "PARTIAL_SUFFIX",
]

PARTIAL_SUFFIX = ".partial"


def input_file(path: str) -> Path:
    """``path`` as a Path; CommandError when it is missing or a directory."""
    p = Path(path)
    if not p.exists():
        raise CommandError(f"{path}: no such file")
    if p.is_dir():
        raise CommandError(f"{path}: is a directory, expected a file")
    return p


def output_file(path: str, inputs=()) -> Path:
    """Check an output path before the work is done, not after."""
    p = Path(path)
    if p.is_dir():
        raise CommandError(f"{path}: is a directory, expected a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise CommandError(f"{path}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise CommandError(f"{path}: directory {str(parent)!r} is not writable")
    for q in inputs:
        if q is not None and p.exists() and Path(q).exists() and p.samefile(q):
            raise CommandError(f"{path}: the output would overwrite the input")
    return p


def _directory(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def check_free_space(path: Path, nbytes: int, what: str, hint: str = "") -> None:
    """Refuse up front, with both numbers, when ``nbytes`` exceed the free space where ``path`` goes."""
    free = shutil.disk_usage(_directory(path)).free
    if nbytes > free:
        raise CommandError(
            f"{path}: {what} needs {format_bytes(nbytes)} but only {format_bytes(free)} are free in "
            f"{str(_directory(path))!r}; free some space or write elsewhere{hint}"
        )


def reserve(path: Path, nbytes: int, final: Path) -> None:
    """Allocate ``nbytes`` of disk for ``path`` now (``os.posix_fallocate``), so that writing
    through a memory map can never hit a full disk (which kills the process with SIGBUS)."""
    if not hasattr(os, "posix_fallocate"):  # not on this platform: the up-front check must do
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            return  # a file system without fallocate: glibc's fallback is not available either
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            free = shutil.disk_usage(_directory(path)).free
            raise CommandError(
                f"{final}: could not reserve {format_bytes(nbytes)} on disk ({os.strerror(exc.errno)}; "
                f"{format_bytes(free)} free in {str(_directory(path))!r}); free some space or write elsewhere"
            ) from None
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a temporary path next to ``path``; on success it is synced and renamed to ``path``.

    On any exception (``KeyboardInterrupt`` and :class:`~ntkfast.cli.errors.Terminated` included)
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = None
    _hold_signals()  # no signal's exception between creating the file and owning its clean-up
    held = True
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=_directory(path))
        tmp = Path(name)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the result gets the usual mode
        held = False
        _release_signals()  # one that arrived meanwhile is raised here, inside the try
        yield tmp
        raise_if_signalled()  # a signal swallowed on the way (inside a C callback) still cancels
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    finally:
        if not held:
            _hold_signals()  # a second Ctrl-C cannot cut the clean-up short; it is raised after it
        try:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        finally:
            _release_signals()


_held: list[int] = []  # > 0 while a critical section holds the signals back (_hold_signals)
_pending: list[int] = []  # signals that arrived while held


def _hold_signals() -> None:
    """Hold back the exceptions of :func:`sigterm_raises`'s handlers until :func:`_release_signals`:
    a SIGTERM/SIGINT arriving meanwhile is recorded, and raised there.  (Blocking the signal itself
    would not do: a process-directed signal goes to any thread that does not block it, BLAS's and
    Numba's too.)  Sections nest."""
    _held.append(1)


def _release_signals() -> None:
    """End a :func:`_hold_signals` section; when it was the outermost, a signal that arrived
    meanwhile is raised here."""
    _held.pop()
    if not _held and _pending:
        signum = _pending[-1]
        _pending.clear()
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_received: list[int] = []  # the signals that arrived while sigterm_raises() was active


def _raise_terminated(signum, frame):
    _received.append(signum)
    if _held:
        _pending.append(signum)
        return
    raise Terminated()


def _raise_interrupted(signum, frame):
    _received.append(signum)
    if _held:
        _pending.append(signum)
        return
    raise KeyboardInterrupt()


def raise_if_signalled() -> None:
    """Raise :class:`Terminated` / ``KeyboardInterrupt`` if a signal arrived whose exception was lost."""
    signum = received_signal()
    if signum is not None:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def received_signal() -> int | None:
    """The last SIGTERM/SIGINT that arrived while :func:`sigterm_raises` was active, or None.

    A signal that lands inside a C callback (Numba compiling a kernel, for one) has its exception
    swallowed there and resurfaces as another error; the command still honours the signal."""
    return _received[-1] if _received else None


@contextlib.contextmanager
def sigterm_raises():
    """While active, SIGTERM raises :class:`Terminated` and SIGINT ``KeyboardInterrupt`` in the
    main thread (so ``finally`` blocks run and partial files are removed), and both are recorded
    (:func:`received_signal`); the previous handlers are restored afterwards.  Destructors that
    fail once a signal has arrived are not printed (:func:`quiet_after_signal`).  A no-op
    outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    _pending.clear()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_int = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        with quiet_after_signal():
            yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


@contextlib.contextmanager
def quiet_after_signal():
    """While active, once :func:`sigterm_raises` has recorded a signal, exceptions raised where
    Python cannot propagate them (``sys.unraisablehook``) are not printed.

    They are consequences of the interruption, not news: the handler's own exception swallowed
    by a C callback (Numba compiling, for one), or the destructor of an object whose constructor
    the signal cut short (llvmlite's ``ObjectRef.__del__`` then fails on a missing attribute).
    The command honours the signal and says so in one line.  Before any signal, every such
    exception goes to the previous hook.  On leaving, after a signal, reference cycles are
    collected while still quiet; the previous hook is then restored."""
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_quiet_signal_exceptions, previous_hook)
    try:
        yield
    finally:
        if _received:
            gc.collect()
        sys.unraisablehook = previous_hook


def _quiet_signal_exceptions(previous_hook, unraisable) -> None:
    if _received:
        return
    previous_hook(unraisable)
