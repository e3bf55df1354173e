"""``python -m ntkfast``: the ``ntkfast`` command (see :mod:`ntkfast.cli`); no arguments runs the demo."""

import sys

from ntkfast.cli import main

if __name__ == "__main__":
    sys.exit(main())
