"""``python -m ntkfast`` and the ``ntkfast`` console script: the command (see :mod:`ntkfast.cli`);
no arguments runs the demo."""

import contextlib
import os
import sys

# ntkfast.cli's exit codes, here too so that a Ctrl-C while Python imports the CLI gets them
_INTERRUPTED, _TERMINATED = 130, 143


def run() -> None:
    """Run :func:`ntkfast.cli.main` and exit with its code.

    When a signal ended the command (its clean-up has run by then), the process exits at once with
    exactly 130 or 143: otherwise CPython reports a ``KeyboardInterrupt`` that had landed in code it
    ran through ``PyRun_*`` (an import, an ``eval``) as death by SIGINT whatever code ``main``
    returned, and finalisation would run the destructors of objects the signal left half-built."""
    try:
        from ntkfast.cli import main
    except KeyboardInterrupt:  # Ctrl-C while Python imports the CLI: one line, no traceback
        _exit_now("ntkfast: interrupted\n", _INTERRUPTED)
    code = main()
    if code in (_INTERRUPTED, _TERMINATED):
        _exit_now("", code)
    sys.exit(code)


def _exit_now(message: str, code: int) -> None:
    with contextlib.suppress(Exception):  # a closed or broken pipe must not stop the exit
        sys.stderr.write(message)
        sys.stderr.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
