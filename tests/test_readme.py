"""Every Python snippet of README.md and of the user guide (docs/guide.md) runs as written.

The snippets of one file are a tutorial: they run in order, as one script, in a fresh interpreter
and an empty working directory (they may write files such as ``K.npy``).  A snippet with its own
``if __name__ == "__main__":`` guard (the Dask example) is a complete script and runs on its own.
The GPU snippet runs only where CuPy finds a device.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/guide.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets(document: str) -> list[str]:
    return FENCE.findall((ROOT / document).read_text())


def _is_script(code: str) -> bool:
    return any(
        isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'" for node in ast.parse(code).body
    )


def _needs_gpu(code: str) -> bool:
    return 'backend="gpu"' in code


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _run(code: str, cwd: Path, timeout: int = 900) -> None:
    script = cwd / "snippet.py"
    script.write_text(code)
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"snippet failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_snippets_are_python(document):
    blocks = snippets(document)
    assert blocks, f"{document} has no python snippets"
    for code in blocks:
        ast.parse(code)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_tutorial_snippets_run_in_order(document, tmp_path):
    blocks = [b for b in snippets(document) if not _is_script(b)]
    if not _gpu_available():
        blocks = [b for b in blocks if not _needs_gpu(b)]
    _run("\n".join(blocks), tmp_path)


def _scripts():
    return [(doc, i) for doc in DOCUMENTS for i, b in enumerate(snippets(doc)) if _is_script(b)]


@pytest.mark.parametrize("document, index", _scripts())
def test_script_snippets_run(document, index, tmp_path):
    code = snippets(document)[index]
    if "dask" in code:
        pytest.importorskip("dask.distributed")
    _run(code, tmp_path)
