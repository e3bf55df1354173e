"""The package's import graph keeps the architecture of docs/design.md (section "Architecture").

Read statically from the sources (nothing is imported), so the test is fast and sees every import:

* no import cycle among ntkfast modules at module level (imports inside functions are lazy and
  may break a cycle on purpose; the package root ``ntkfast/__init__.py``, which re-exports, is left
  out, since every ``import ntkfast.x`` runs it first anyway);
* no ``from ntkfast.x import _private`` and no ``x._private`` attribute access on an ntkfast module
  across modules (dunders such as ``__version__`` are public);
* floors import downward only (or within their floor); the side modules (config, errors,
  _validation) may be imported from anywhere and import only each other and ``spec``; an upward
  import is allowed only inside a function and only where ``LAZY_UPWARD`` says why;
* ``ls ntkfast/`` reads as the architecture: every module and package in it has a floor here and a
  row in docs/design.md's layout table, and a docstring saying its job.

``KNOWN_VIOLATIONS`` lists what today's code still breaks while the redesign is merged; each entry
must really occur (a stale entry fails), and the lead empties the list at merge.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ntkfast"
DESIGN = ROOT / "docs" / "design.md"

SIDE = {"ntkfast.config", "ntkfast.errors", "ntkfast._validation"}

# Floors, bottom up (docs/design.md): a module may import its own floor or lower ones at module level.
# The longest matching prefix decides, so a package's submodules share its floor unless listed.
FLOORS = {
    "ntkfast.spec": 1,
    "ntkfast._jit": 1,
    "ntkfast.recursion": 2,
    "ntkfast.bivariate": 2,  # bivariate normal orthant terms, ELU's closed-form dual kernel (issue 14, elu)
    "ntkfast.series": 2,  # Hermite-series dual kernels: per-row coefficients (the non-closed-form math)
    "ntkfast.backends": 3,  # the package itself (empty __init__)
    "ntkfast.backends.cpu": 3,  # Numba inner kernels: prepared rows in, tiles out
    "ntkfast.backends.cpu_series": 3,  # the series activations' tile kernel
    "ntkfast.tiling": 3,
    "ntkfast.engine": 4,
    "ntkfast.backends.gpu": 5,  # CuPy inner kernels: receive rows prepared by the engine
    "ntkfast.gram": 6,
    "ntkfast.gram_operator": 6,  # GramOperator, apart so that kernel() does not import SciPy (issue 17 item 6)
    "ntkfast.kernel_grad": 6,
    "ntkfast.finite": 7,
    "ntkfast.predict": 7,
    "ntkfast.spectrum": 7,
    "ntkfast.solvers": 7,
    "ntkfast.experiments": 8,
    "ntkfast.sklearn": 8,
    "ntkfast.distributed": 9,
    "ntkfast.bench": 10,
    "ntkfast.cli": 10,
    "ntkfast.__main__": 10,
}

# Lazy (function-level) imports that go up a floor on purpose: (importer prefix, imported prefix): why.
LAZY_UPWARD = {
    ("ntkfast.solvers", "ntkfast.distributed"): "solvers.nystrom(client=...) runs its K_nm products on Dask",
    ("ntkfast.spectrum", "ntkfast.experiments"): "deprecated alias spectrum.fourier_feature_spectra (moved)",
}

# What the code on this branch still breaks (rule, importer, imported or name). The lead empties this at
# merge, when the engine layer (ntkfast/engine.py) and the GPU package stop reaching into gram's privates,
# and the dense helpers get their one home (solvers/dense.py).
KNOWN_VIOLATIONS: set[tuple[str, str, str]] = set()


# ------------------------------------------------------------------------------------------- the graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class _Imports(ast.NodeVisitor):
    """Every ntkfast import of one module: (imported module, names, lazy?), plus x._private accesses."""

    def __init__(self, module: str, is_package: bool, modules: set[str]):
        self.module, self.modules = module, modules
        self.package = module if is_package else module.rpartition(".")[0]
        self.edges: list[tuple[str, bool]] = []
        self.private: list[str] = []
        self.bound: dict[str, str] = {}  # local name -> ntkfast module it refers to
        self.depth = 0

    def _resolve(self, node: ast.ImportFrom) -> str | None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - node.level + 1]
            return ".".join(base + ([node.module] if node.module else []))
        return node.module

    def _edge(self, target: str):
        if target.split(".")[0] == "ntkfast":
            self.edges.append((target, self.depth > 0))

    def visit_FunctionDef(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def visit_If(self, node):
        test = ast.unparse(node.test)
        if test in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):  # never executed
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name.startswith("ntkfast"):
                self._edge(alias.name)
                if alias.asname:
                    self.bound[alias.asname] = alias.name

    def visit_ImportFrom(self, node):
        base = self._resolve(node)
        if not base or base.split(".")[0] != "ntkfast":
            return
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if full in self.modules:  # from . import gram: a module
                self._edge(full)
                self.bound[alias.asname or alias.name] = full
            else:
                self._edge(base)
                if _is_private(alias.name) and base != self.module:
                    self.private.append(full)

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in self.bound and _is_private(node.attr):
            target = self.bound[node.value.id]
            if f"{target}.{node.attr}" not in self.modules:  # gram._x, not backends._private_module
                self.private.append(f"{target}.{node.attr}")
        self.generic_visit(node)


def _scan():
    files = sorted(PKG.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph = {}
    for path in files:
        name = _module_name(path)
        visitor = _Imports(name, path.name == "__init__.py", modules)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        graph[name] = visitor
    return modules, graph


MODULES, GRAPH = _scan()


def _floor(module: str) -> int | None:
    best = None
    for prefix, floor in FLOORS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, floor)
    return None if best is None else best[1]


def _nearest_module(target: str) -> str:
    """``ntkfast.gram.kernel`` -> ``ntkfast.gram`` (the longest prefix that is a module)."""
    while target not in MODULES and "." in target:
        target = target.rpartition(".")[0]
    return target


def _violations():
    found = set()
    for module, v in GRAPH.items():
        for name in v.private:
            found.add(("private", module, name))
        if module in SIDE:
            for target, _lazy in v.edges:
                target = _nearest_module(target)
                if target not in SIDE | {"ntkfast.spec", module} and target != "ntkfast":
                    found.add(("side", module, target))
            continue
        mine = _floor(module)
        for target, lazy in v.edges:
            target = _nearest_module(target)
            if target in SIDE or target == "ntkfast" or target == module or mine is None:
                continue
            theirs = _floor(target)
            if theirs is None or theirs <= mine:
                continue
            allowed = any(module.startswith(a) and target.startswith(b) for a, b in LAZY_UPWARD)
            if not (lazy and allowed):
                found.add(("upward", module, target))
    return found


# ------------------------------------------------------------------------------------------------ tests
def test_every_module_has_a_floor():
    missing = sorted(m for m in MODULES if m != "ntkfast" and m not in SIDE and _floor(m) is None)
    assert not missing, f"place these in FLOORS (tests/test_architecture.py) and in docs/design.md: {missing}"


def test_no_import_cycles_at_module_level():
    graph = {
        m: {_nearest_module(t) for t, lazy in v.edges if not lazy} - {"ntkfast", m}
        for m, v in GRAPH.items()
        if m != "ntkfast"
    }
    # importing ntkfast.a.b runs ntkfast.a first: a submodule depends on its parent package's __init__
    for m in list(graph):
        parent = m.rpartition(".")[0]
        if parent != "ntkfast" and parent in graph:
            graph[m].add(parent)
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # A cycle that runs through a package's __init__ and stays inside that package is how a package
    # re-exports its submodules (the half-initialised package is already in sys.modules): not a cycle
    # to report.  A cycle among siblings alone, or one that leaves the package, is.
    real = [c for c in cycles if not any(all(n == p or n.startswith(p + ".") for n in c) for p in c)]
    assert not real, "module-level import cycles: " + "; ".join(" -> ".join(c) for c in real)


def test_layers_and_privates():
    found = _violations()
    new = sorted(found - KNOWN_VIOLATIONS)
    assert not new, "architecture violations (docs/design.md, section Architecture):\n" + "\n".join(map(str, new))


def test_known_violations_are_not_stale():
    """Each KNOWN_VIOLATIONS entry still occurs: once fixed, delete it so it cannot come back unnoticed."""
    stale = sorted(KNOWN_VIOLATIONS - _violations())
    assert not stale, f"fixed: remove from KNOWN_VIOLATIONS in tests/test_architecture.py: {stale}"


def _layout_table_names() -> set[str]:
    text = DESIGN.read_text()
    return set(re.findall(r"^\|\s*`ntkfast/([A-Za-z0-9_/]+?)(?:\.py|/)?`", text, re.M))


def test_ls_ntkfast_reads_as_the_architecture():
    """Every entry of ntkfast/ and ntkfast/backends/ has a row in docs/design.md, and each module says its job."""
    listed = _layout_table_names()
    entries = []
    for folder in (PKG, PKG / "backends"):
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or p.name == "__pycache__" or p.name == "__init__.py":
                continue
            if p.is_dir() or p.suffix == ".py":
                entries.append(p.relative_to(PKG).with_suffix("").as_posix())
    missing = [e for e in entries if e not in listed]
    assert not missing, f"docs/design.md's layout table has no row for: {missing}"
    assert len([e for e in entries if "/" not in e]) <= 30, "ntkfast/ has grown past 30 entries: group them"
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if path.name == "__init__.py" and path.parent != PKG and not path.read_text().strip():
            continue  # an empty namespace-like package file
        assert doc, f"{path.relative_to(ROOT)}: no module docstring saying its job"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from .gram import _prepare\n", {("private", "ntkfast.fake", "ntkfast.gram._prepare")}),
        (
            "from . import gram\ndef f():\n    return gram._validate\n",
            {("private", "ntkfast.fake", "ntkfast.gram._validate")},
        ),
        ("from .cli import main\n", {("upward", "ntkfast.fake", "ntkfast.cli")}),
        ("def f():\n    from .cli import main\n", {("upward", "ntkfast.fake", "ntkfast.cli")}),
        ("from .spec import MLP\nfrom . import config\n", set()),
    ],
)
def test_the_checker_itself(source, expected, monkeypatch):
    """The rules fire on planted imports (a module "ntkfast.fake" on the distributed floor)."""
    visitor = _Imports("ntkfast.fake", False, MODULES)
    visitor.visit(ast.parse(source))
    monkeypatch.setitem(GRAPH, "ntkfast.fake", visitor)
    monkeypatch.setitem(FLOORS, "ntkfast.fake", 9)
    assert {v for v in _violations() if v[1] == "ntkfast.fake"} == expected
