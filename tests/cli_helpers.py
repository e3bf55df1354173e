"""Helpers shared by the CLI tests (in-process calls and the one-line error contract)."""

from __future__ import annotations

from ntkfast import cli


def call(capsys, *args):
    """In-process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(result, code, *fragments):
    """Exit code, the `ntkfast <cmd>: error:` line, each fragment, and no traceback."""
    rc, _, err = result
    assert rc == code, err
    assert "error:" in err and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
