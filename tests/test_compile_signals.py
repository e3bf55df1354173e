"""A Ctrl-C (or the CLI's SIGTERM) that lands while Numba compiles or loads a kernel is not lost.

LLVM calls back into Python during compilation; a handler raising inside such a ctypes callback
has its exception swallowed.  ``_jit.signals_held`` records the signal while a dispatcher compiles
and runs the handler it was meant for afterwards."""

from __future__ import annotations

import os
import signal

import pytest

from ntkfast import _jit


def _signal_self(sig):
    os.kill(os.getpid(), sig)
    for _ in range(1000):  # an unheld handler would run at the next bytecode boundary, here
        pass


def test_ctrl_c_during_a_compile_is_raised_after_it():
    done = []

    def compile_for_args(x):
        _signal_self(signal.SIGINT)
        done.append(x)
        return x

    with pytest.raises(KeyboardInterrupt):
        _jit.signals_held(compile_for_args)(3)
    assert done == [3]  # the compile ran to its end; the interrupt came after
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_handler_the_signal_was_meant_for_runs(monkeypatch):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda s, frame: seen.append(s))
    try:
        assert _jit.signals_held(lambda: (_signal_self(signal.SIGTERM), seen.copy())[1])() == []
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_no_signal_no_change_and_errors_propagate():
    assert _jit.signals_held(lambda a, b=1: a + b)(1, b=2) == 3

    def failing():
        raise ValueError("typing failed")

    with pytest.raises(ValueError, match="typing failed"):
        _jit.signals_held(failing)()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ntkfast_dispatchers_hold_signals_while_compiling():
    @_jit.jit
    def add_one(x):  # pragma: no cover - compiled
        return x + 1

    if not hasattr(add_one, "_compile_for_args"):
        pytest.skip("NUMBA_DISABLE_JIT=1: no dispatcher")
    assert add_one._compile_for_args.__wrapped__ is not None
    assert add_one(1.5) == 2.5
