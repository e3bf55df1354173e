"""What the CLI prints while it works: messages, one-line network descriptions, and progress.

Progress is tqdm's: a bar when stderr is a terminal; otherwise (a log file, a batch job) the
same status -- done/total, elapsed, ETA, rate -- as one plain line every ``every`` seconds, so
that a long job is never silent and a log never fills with carriage returns.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

from ..spec import ACTIVATIONS

__all__ = ["say", "describe", "progress", "LogLines", "format_seconds"]


def say(*parts, file=None) -> None:
    print(*parts, file=file or sys.stdout, flush=True)


def describe(arch) -> str:
    """One line for an MLP: depth, activation, stds, parameterization, width, residual."""
    act = arch.activation
    name = getattr(act, "name", None) or type(act).__name__
    if name in ACTIVATIONS and act != ACTIVATIONS[name]():
        name = repr(act)  # parameters other than the defaults: show them
    bias = "no bias" if arch.b_std is None else f"b_std {arch.b_std:g}"
    extra = " residual" if arch.residual else ""
    width = f", width {arch.width}" if arch.parameterization == "standard" else ""
    return (
        f"depth-{arch.depth}{extra} {name} MLP, W_std {arch.W_std:g}, {bias}, {arch.parameterization} param.{width}"
    )


def format_seconds(seconds: float) -> str:
    """``75`` -> ``'1 min 15 s'``; ``5400`` -> ``'1 h 30 min'``."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class LogLines:
    """A text stream that turns tqdm's redrawn status (``'\\r' + status``) into a plain line at
    most every ``every`` seconds, the first after ``every`` seconds, and the last status when the
    bar closes if any line was written; other text passes through."""

    def __init__(self, stream, every: float = 30.0, clock=time.monotonic):
        self.stream = stream
        self.every = float(every)
        self.clock = clock
        self._lock = threading.Lock()
        self._status = None  # latest status not written yet
        self._last = clock()  # when a status line was last written (the first comes after `every`)
        self._written = 0
        self._after_status = False  # the last write was tqdm's: a lone newline closes its bar

    def write(self, text: str) -> int:
        with self._lock:
            if "\r" in text:
                status = text.rsplit("\r", 1)[1].strip()
                if status:
                    self._status = status
                    if self.clock() - self._last >= self.every:
                        self._emit()
                self._after_status = True
            elif self._after_status and not text.strip():
                if "\n" in text and self._status is not None and self._written:
                    self._emit()  # the bar closes: its final state (a job too short to log stays quiet)
                self._after_status = False
            else:
                self.stream.write(text)  # print()'s text and its newline, warnings, ...
                self._after_status = False
            return len(text)

    def _emit(self) -> None:
        self.stream.write(f"[{time.strftime('%H:%M:%S')}] {self._status}\n")
        self.stream.flush()
        self._status = None
        self._last = self.clock()
        self._written += 1

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", "utf-8")


@contextlib.contextmanager
def progress(enabled: bool | None, every: float = 30.0):
    """Yield the ``progress`` flag to pass to the library, with stderr set up for it.

    ``enabled`` None: on (a bar in a terminal, log lines otherwise); False: silent.  While the
    context is active and stderr is not a terminal, stderr is a :class:`LogLines`.
    """
    if enabled is False:
        yield False
        return
    stream = sys.stderr
    if _isatty(stream):
        yield True
        return
    with contextlib.redirect_stderr(LogLines(stream, every)):
        yield True


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
