"""The README's main job and the bench command run as a user would run them."""

import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "ntkfast", *args], capture_output=True, text=True, timeout=600)


def test_main_job_reports_kernel_and_accuracy():
    res = run()
    assert res.returncode == 0, res.stderr
    assert "diag exact: True, symmetric: True" in res.stdout
    acc = float(res.stdout.split("test accuracy:")[1].split()[0])
    assert acc > 0.95


def test_bench_quick():
    res = run("bench", "--quick")
    assert res.returncode == 0, res.stderr
    assert "ratio" in res.stdout and "float32" in res.stdout


def test_bad_command():
    res = run("nope")
    assert res.returncode == 2
    assert "invalid choice" in res.stderr
