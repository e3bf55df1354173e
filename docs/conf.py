"""Sphinx configuration of the ntkfast documentation (built offline: ``sphinx-build -W -b html docs docs/_build/html``).

The API reference is generated from the public modules' ``__all__`` when the build starts (``api.rst``),
so a name added to or moved between modules appears without editing this file; the notebooks are
copied from ``notebooks/`` and rendered from their stored outputs (myst-nb, execution off).
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import ntkfast  # noqa: E402

project = "ntkfast"
author = "the ntkfast developers"
copyright = "the ntkfast developers, Apache-2.0"  # noqa: A001
release = version = ntkfast.__version__

templates_path = ["_templates"]
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "demo.png"]
html_theme = "alabaster"
html_static_path: list[str] = []

# numpydoc: the docstrings follow it; no per-method autosummary tables (they duplicate the class page)
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"

# myst / myst-nb: notebooks are shown with their stored outputs, never executed by the build
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"
nb_merge_streams = True
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]

# ------------------------------------------------------------------------------------ notebooks
NOTEBOOKS = HERE / "notebooks"
if NOTEBOOKS.exists():
    shutil.rmtree(NOTEBOOKS)
NOTEBOOKS.mkdir()
_sources = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "gallery").glob("*.ipynb"))
for nb in _sources:
    shutil.copy2(nb, NOTEBOOKS / nb.name)

# ------------------------------------------------------------------------------- API reference
PUBLIC_MODULES = {
    "ntkfast": "Kernels, architectures, finite networks",
    "ntkfast.predict": "Training dynamics and GP inference",
    "ntkfast.spectrum": "Spectra and convergence rates",
    "ntkfast.solvers": "Kernel regression at scale",
    "ntkfast.sklearn": "scikit-learn estimators and Gaussian-process kernels",
    "ntkfast.distributed": "Dask",
    "ntkfast.config": "Settings",
    "ntkfast.errors": "Errors",
}


def _api_page() -> str:
    import importlib

    lines = [
        "API reference",
        "=============",
        "",
        "Generated from each public module's ``__all__``.",
        "",
    ]
    for name, title in PUBLIC_MODULES.items():
        module = importlib.import_module(name)
        public = getattr(module, "__all__", None)
        if public is None:  # no __all__: what the module itself defines
            public = [
                n for n, v in vars(module).items() if not n.startswith("_") and getattr(v, "__module__", "") == name
            ]
        items = [
            n
            for n in public
            if (inspect.isclass(getattr(module, n, None)) or inspect.isfunction(getattr(module, n, None)))
        ]
        lines += [
            title,
            "-" * len(title),
            "",
            f".. currentmodule:: {name}",
            "",
            ".. autosummary::",
            "   :toctree: generated",
            "",
        ]
        lines += [f"   {n}" for n in items] + [""]
    return "\n".join(lines)


shutil.rmtree(HERE / "generated", ignore_errors=True)  # autosummary rewrites it; no stale pages
(HERE / "api.rst").write_text(_api_page())
