"""``ntkfast bench``: the ratio benchmarks of :mod:`ntkfast.bench`; every option is passed to
``ntkfast.bench.main`` by its dest name."""

from __future__ import annotations

from ..errors import EXIT_OK

# where a command's arguments end and the CLI's bookkeeping begins
INTERNAL = ("command", "parser")


def run(args) -> int:
    from ... import bench

    bench.main(**{k: v for k, v in vars(args).items() if k not in INTERNAL})
    return EXIT_OK
