"""The documentation site builds offline with no warnings (``sphinx-build -W``), as CI builds it.

The notebooks are rendered from their stored outputs (myst-nb, execution off), the API reference is
generated from the public modules' ``__all__``, and every docstring and Markdown warning is an
error.  Skipped, saying why, only where Sphinx and its extensions are not installed (they are in
the ``test`` extra, so CI has them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_sphinx_build_has_no_warnings(tmp_path):
    for module in ("sphinx", "myst_nb", "numpydoc"):
        pytest.importorskip(module, reason=f"{module} is not installed: pip install -e '.[docs]'")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    html = tmp_path / "html"
    for page in ("index.html", "guide.html", "design.html", "api.html", "readme.html"):
        assert (html / page).is_file(), page
    notebooks = sorted(p.stem for p in (html / "notebooks").glob("*.html"))
    assert notebooks == sorted(
        p.stem for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in str(p)
    )
    assert (html / "generated" / "ntkfast.kernel.html").is_file()


NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT / "notebooks").as_posix())
def test_notebooks_are_stored_executed(path):
    """The site shows stored outputs, so each notebook is stored executed, top to bottom, without errors;
    every gallery example shows a figure."""
    import json

    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code" and "".join(c["source"])]
    counts = [c.get("execution_count") for c in cells]
    assert all(isinstance(n, int) for n in counts), f"{path.name}: not executed (jupyter nbconvert --execute --inplace)"
    assert counts == sorted(counts), f"{path.name}: cells were executed out of order; re-execute top to bottom"
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"], f"{path.name}: stored an error"
    if path.parent.name == "gallery":
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no figure"
