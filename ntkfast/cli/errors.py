"""The CLI's error type and exit codes (documented in every ``--help``)."""

from __future__ import annotations

from ..errors import NtkfastError

EXIT_OK = 0
EXIT_FAILURE = 1  # the command could not do its job: bad file, bad data, not enough memory or disk, ...
EXIT_USAGE = 2  # the command line itself is wrong (argparse's convention)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT (128 + 2)
EXIT_TERMINATED = 143  # SIGTERM (128 + 15)

EXIT_CODES = """\
exit codes:
  0    success
  1    the command failed: missing or unreadable file, unknown column, unreadable
       values, shape mismatch, not enough memory or disk space (one line on stderr
       says why); an output file is never left half-written
  2    invalid command line: unknown command or option, bad option value
  130  interrupted (Ctrl-C); 143: terminated (SIGTERM); partial files are removed
Any other failure is a bug and shows its traceback.  Set NTKFAST_DEBUG=1 to get a
traceback for the one-line errors too."""


class CommandError(NtkfastError):
    """An error the user can fix (a file, a column, a shape); reported as one line without a traceback."""


class Terminated(KeyboardInterrupt):
    """Raised by the CLI's SIGTERM handler, so that ``finally`` blocks (partial-file cleanup) run.

    A ``KeyboardInterrupt`` subclass: whatever stops promptly on Ctrl-C stops on SIGTERM too.
    """
