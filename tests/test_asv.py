"""The asv suite in ``asv_bench/`` stays runnable: ``asv check`` imports every benchmark and checks
its signature, and a quick run of a small benchmark works in this environment.

Both use ``--python=same`` (asv's "existing" environment: the interpreter running the tests, with
ntkfast as installed), so nothing is built or downloaded.  The configuration is copied with its
output folders moved into a temporary directory, and HOME points there too (asv keeps machine
information in ``~/.asv-machine.json``), so the test leaves no files behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("asv")

ROOT = Path(__file__).resolve().parents[1]
ASV_DIR = ROOT / "asv_bench"
MACHINE = "ntkfast-test"
# a fast benchmark, so the run checks the machinery (discovery, setup, timing, reporting), not speed
QUICK_BENCH = r"^bench_gram\.TimeKernelDiag\."


@pytest.fixture(scope="module")
def asv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("asv")
    conf = json.loads((ASV_DIR / "asv.conf.json").read_text())
    conf.update(
        repo=str(ROOT),
        benchmark_dir=str(ASV_DIR / conf.get("benchmark_dir", "benchmarks")),
        env_dir=str(tmp / "env"),
        results_dir=str(tmp / "results"),
        html_dir=str(tmp / "html"),
    )
    config = tmp / "asv.conf.json"
    config.write_text(json.dumps(conf))
    env = dict(os.environ, HOME=str(tmp))

    def run(*args):
        res = subprocess.run(
            [sys.executable, "-m", "asv", *args, "--config", str(config)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return res.returncode, res.stdout + res.stderr

    code, out = run("machine", "--yes", "--machine", MACHINE)
    assert code == 0, out
    return run


def test_asv_check(asv):
    code, out = asv("check", "--python=same")
    assert code == 0, out
    assert "No problems found" in out, out


def test_asv_quick_run(asv):
    code, out = asv(
        "run", "--python=same", "--quick", "--dry-run", "--show-stderr", "--machine", MACHINE, "--bench", QUICK_BENCH
    )
    assert code == 0, out
    assert "failed" not in out.lower(), out
    assert "TimeKernelDiag.time_kernel_diag" in out, out
