"""The network of the parsed command line: built once, by ``MLP.from_params``."""

from __future__ import annotations

from ..spec import MLP

__all__ = ["network", "ARCH_OPTIONS"]

# the parsed arguments that are MLP fields (their dest names); input_map is not a CLI option
ARCH_OPTIONS = ("depth", "activation", "W_std", "b_std", "parameterization", "width", "residual")


def network(args) -> MLP:
    """``MLP.from_params(args)``; an invalid combination is a usage error (exit 2)."""
    try:
        return MLP.from_params(args)
    except (ValueError, TypeError) as exc:
        args.parser.error(str(exc))
