"""TEMPORARY SHIM (gpu branch only): the engine contract the GPU backend is written against.

The "engine" engineer builds the real ``ntkfast/engine.py`` in parallel; at merge the lead
replaces this file with it.  Everything here re-exports ``gram``'s privates under the contract
names, and gives ``GramOperator`` the four read-only properties the GPU backend reads, and
``FiniteMLP`` the public ``check_input`` / ``fill_ntk`` the "finite" engineer adds.
"""

from __future__ import annotations

from .finite import FiniteMLP
from .gram import GramOperator
from .gram import _Coefficients as Coefficients  # noqa: F401
from .gram import _coefficients as coefficients  # noqa: F401
from .gram import _prepare as prepare_rows  # noqa: F401
from .gram import _Rows as Rows  # noqa: F401

for _name, _attr in (("rows_x", "_rows_x"), ("rows_y", "_rows_y"), ("coefficients", "_coef"), ("plan", "_plan")):
    if not hasattr(GramOperator, _name):
        setattr(GramOperator, _name, property(lambda self, a=_attr: getattr(self, a)))
if not hasattr(FiniteMLP, "check_input"):
    FiniteMLP.check_input = FiniteMLP._check_X
if not hasattr(FiniteMLP, "fill_ntk"):
    FiniteMLP.fill_ntk = FiniteMLP._fill_ntk
