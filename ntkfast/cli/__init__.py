"""The ``ntkfast`` command (also ``python -m ntkfast``).

Subcommands: ``demo`` (the default), ``kernel``, ``fit``, ``predict``, ``spectrum`` and ``bench``,
one module each in :mod:`ntkfast.cli.commands`, with a function ``run(args) -> int``.  The package:

- :mod:`~ntkfast.cli.parser`: the argument parser (network options named like ``MLP``'s fields);
- :mod:`~ntkfast.cli.tables`: reading ``.npy`` and CSV files (pandas);
- :mod:`~ntkfast.cli.files`: output checks, free space, atomic writes, SIGTERM;
- :mod:`~ntkfast.cli.console`: messages and progress (tqdm bar or periodic log lines);
- :mod:`~ntkfast.cli.preprocess`: the ColumnTransformer saved with a model;
- :mod:`~ntkfast.cli.report`, :mod:`~ntkfast.cli.plots`: the spectrum report and the figures;
- :mod:`~ntkfast.cli.estimate`, :mod:`~ntkfast.cli.network`: time estimates for the plan; the MLP.

:func:`main` turns every deliberate refusal -- :class:`ntkfast.errors.NtkfastError`, which the
library's checks and the CLI's own :class:`CommandError` raise, and ``OSError`` from files and
disks -- into one line ``ntkfast <command>: error: ...`` on stderr and exit code 1.  Argument
errors are argparse's (exit code 2); Ctrl-C is 130, SIGTERM 143.  Anything else is a bug and
keeps its traceback (so does everything with ``NTKFAST_DEBUG=1``).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

from .. import config
from ..errors import NtkfastError
from .errors import (
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CommandError,
    Terminated,
)
from .files import quiet_after_signal, raise_if_signalled, received_signal, sigterm_raises
from .parser import build_parser

__all__ = [
    "main",
    "build_parser",
    "CommandError",
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_CODES",
]


def command_module(name: str):
    """The module that runs command ``name`` (imported on first use)."""
    return importlib.import_module(f"{__name__}.commands.{name}")


def main(argv: list[str] | None = None) -> int:
    """Run the ``ntkfast`` command and return its exit code (see ``ntkfast --help``).

    ``argv`` defaults to ``sys.argv[1:]``; an empty command line runs ``demo``.  Usage errors
    (argparse's, exit 2) are returned like the others, not raised as ``SystemExit``.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    with quiet_after_signal():  # also while the handlers below drop the interrupted work's frames
        return _run(argv)


def _run(argv: list[str]) -> int:
    parser = build_parser()
    prog = parser.prog
    try:
        try:
            with sigterm_raises():
                args = parser.parse_args(argv or ["demo"])
                prog = args.parser.prog
                code = command_module(args.command).run(args)
                raise_if_signalled()  # the command finished, but a signal had asked it to stop
                return code
        except Exception:
            signum = received_signal()  # a signal whose exception a C callback turned into another
            if signum is None:
                raise
            raise (Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()) from None
    except SystemExit as exc:  # argparse: --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `ntkfast predict ... | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except (NtkfastError, OSError, MemoryError) as exc:
        # NtkfastError: a deliberate refusal (the library's checks name the argument and what
        # was expected; CommandError names the file, column and line); OSError: files and disks;
        # MemoryError: the machine ran out (a refusal up front is InsufficientMemoryError)
        if config.debug():
            raise
        message = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
            message = f"{exc.filename}: {exc.strerror}"
        elif isinstance(exc, MemoryError) and not isinstance(exc, NtkfastError):
            message = f"out of memory ({message})"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_FAILURE
