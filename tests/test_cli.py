"""The ``ntkfast`` command, run as a user runs it (``python -m ntkfast ...`` in a subprocess) for
every subcommand, and in-process through ``ntkfast.cli.main`` for the many bad-input cases (the
same code; a subprocess costs seconds of imports and Numba cache loading each).

Truths: the Gram written by ``ntkfast kernel`` equals ``ntkfast.kernel`` on the same numbers; the
predictions of ``fit`` + ``predict`` equal a scikit-learn Pipeline fitted in this process; the
spectrum equals ``numpy.linalg.eigvalsh`` of the same matrix.
"""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import assert_error, call

import ntkfast as nf
from ntkfast import cli

PNG = b"\x89PNG\r\n\x1a\n"


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ntkfast", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


def cell(v):
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


@pytest.fixture(scope="module")
def data():
    """A small 3-class problem with text labels and a regression target."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 4))
    labels = np.array(["cat", "dog", "emu"])[(X[:, 0] > 0.3).astype(int) + (X[:, 1] > 0.5).astype(int)]
    y_reg = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2
    return X, labels, y_reg


@pytest.fixture
def files(tmp_path, data):
    X, labels, y_reg = data
    names = ["f0", "f1", "f2", "f3"]
    feats = [[cell(v) for v in x] for x in X]
    return {
        "train": write_csv(
            tmp_path / "train.csv", [*names, "label"], [[*f, lab] for f, lab in zip(feats[:120], labels)]
        ),
        # the test file has its columns in another order and keeps the label
        "test": write_csv(
            tmp_path / "test.csv",
            ["label", "f3", "f1", "f0", "f2"],
            [[lab, f[3], f[1], f[0], f[2]] for f, lab in zip(feats[120:], labels[120:])],
        ),
        "reg": write_csv(tmp_path / "reg.csv", [*names, "y"], [[*f, cell(r)] for f, r in zip(feats, y_reg)]),
        "X": write_csv(tmp_path / "X.csv", names, feats),
        "X_noheader": write_csv(tmp_path / "Xn.csv", None, feats[:30]),
        "tmp": tmp_path,
    }


# ------------------------------------------------------------------------------ subprocess runs
def test_demo_quick_runs_and_saves_figure(tmp_path):
    fig = tmp_path / "demo.png"
    res = run("demo", "--quick", "--figure", fig)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for label in ("NTKClassifier", "RBF SVC", "random forest", "condition number", "2N/lambda_max", "alpha ="):
        assert label in out, out
    ntk_acc = float(out.split("NTKClassifier (StandardScaler + NTK)")[1].split()[0])
    assert ntk_acc > 0.9
    assert fig.read_bytes()[:8] == PNG


def test_kernel_command_writes_the_gram(files):
    out = files["tmp"] / "K.npy"
    res = run("kernel", files["X"], "-o", out, "--depth", 2, "--activation", "erf", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and "150 x 150" in res.stdout
    X = np.loadtxt(files["X"], delimiter=",", skiprows=1)
    K = np.load(out)
    np.testing.assert_allclose(K, nf.kernel(nf.MLP(depth=2, activation="erf", W_std=1.4, b_std=0.1), X), rtol=1e-12)
    assert not list(files["tmp"].glob("*.partial"))


def test_fit_then_predict(files, data):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ntkfast.sklearn import NTKClassifier

    model, preds = files["tmp"] / "model.joblib", files["tmp"] / "preds.csv"
    res = run("fit", files["train"], "--target", "label", "-o", model, "--depth", 2)
    assert res.returncode == 0, res.stderr
    assert "120 rows, 4 features" in res.stdout and "classification" in res.stdout
    res = run("predict", model, files["test"], "-o", preds)
    assert res.returncode == 0, res.stderr

    X, labels, _ = data
    expected = make_pipeline(StandardScaler(), NTKClassifier(depth=2)).fit(X[:120], labels[:120]).predict(X[120:])
    with open(preds) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["label_pred"]  # <target>_pred (issue 18): not the ground truth's name
    assert [r[0] for r in rows[1:]] == list(expected)
    accuracy = np.mean(expected == labels[120:])
    assert f"wrote 30 predictions to {preds}" in res.stdout
    assert f"accuracy on {files['test']}: {accuracy:.4f} (30 rows)" in res.stdout


def test_spectrum_command_with_targets_and_plot(files):
    fig = files["tmp"] / "spec.png"
    res = run("spectrum", files["reg"], "--y", "y", "--plot", fig, "--depth", 2)
    assert res.returncode == 0, res.stderr
    for label in ("eigenvalues (150 of 150", "condition number", "2N/lambda_max", "share of ||y||^2", "predicted time"):
        assert label in res.stdout, res.stdout
    assert fig.read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    "args",
    [
        ("kernel", "missing.csv", "-o", "K.npy"),
        ("fit", "missing.csv", "--target", "y", "-o", "m.joblib"),
        ("predict", "missing.joblib", "missing.csv"),
        ("spectrum", "missing.csv"),
    ],
    ids=lambda a: a[0],
)
def test_missing_file_exits_1_without_traceback(tmp_path, args):
    res = run(*args, cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith(f"ntkfast {args[0]}: error: missing.") and "no such file" in res.stderr
    assert "Traceback" not in res.stderr


def test_usage_errors_exit_2():
    res = run("fit", "train.csv", "-o", "m.joblib")  # --target is required
    assert res.returncode == 2
    assert "ntkfast fit: error:" in res.stderr and "--target" in res.stderr


@pytest.mark.slow
def test_bench_quick():
    res = run("bench", "--quick")
    assert res.returncode == 0, res.stderr
    assert "ratio" in res.stdout and "float32" in res.stdout


# ----------------------------------------------------------------------- in-process: main(argv)
def test_no_arguments_runs_the_demo_with_its_defaults(monkeypatch):
    import ntkfast.cli.commands.demo

    seen = {}
    monkeypatch.setattr(ntkfast.cli.commands.demo, "run", lambda args: seen.update(vars(args)) or 0)
    assert cli.main([]) == 0
    assert seen["command"] == "demo" and seen["figure"] == "ntkfast_demo.png" and not seen["quick"]


def test_bench_forwards_every_option_to_bench_main(monkeypatch):
    import inspect

    import ntkfast.bench

    accepted = set(inspect.signature(ntkfast.bench.main).parameters)
    seen = {}
    monkeypatch.setattr(ntkfast.bench, "main", lambda **kw: seen.update(kw))
    assert cli.main(["bench", "--quick", "--fit"]) == 0
    assert set(seen) <= accepted
    assert seen.pop("quick") is True and seen.pop("fit") is True
    assert not any(seen.values()), seen  # every other flag off


def test_console_script_points_at_the_entry_point():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from pathlib import Path

    import ntkfast.__main__ as entry

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    module, _, name = pyproject["project"]["scripts"]["ntkfast"].partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is entry.run
    assert (entry._INTERRUPTED, entry._TERMINATED) == (cli.EXIT_INTERRUPTED, cli.EXIT_TERMINATED)


@pytest.mark.parametrize("code", [0, 1, 2, 130, 143])
def test_entry_point_exits_with_the_code_main_returns(code):
    """130/143 leave through ``os._exit`` (so CPython cannot turn a KeyboardInterrupt that landed in an
    import into death by SIGINT); the others through ``sys.exit``; all with exactly main's code."""
    import subprocess
    import sys

    script = f"import ntkfast.cli as c; c.main = lambda: {code}; from ntkfast.__main__ import run; run()"
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == code


def test_unknown_command_is_a_usage_error(capsys):
    code, _, err = call(capsys, "nope")
    assert code == 2 and "invalid choice: 'nope'" in err


def test_help_documents_exit_codes(capsys):
    for command in ([], ["kernel"], ["fit"], ["predict"], ["spectrum"], ["demo"], ["bench"]):
        code, out, _ = call(capsys, *command, "--help")
        assert code == 0 and "exit codes:" in out and "1    the command failed" in out
    code, out, _ = call(capsys, "--version")
    assert code == 0 and nf.__version__ in out


def test_kernel_variants(capsys, files, data):
    X = data[0]
    tmp = files["tmp"]
    arch = nf.MLP(depth=3, activation="relu", W_std=1.4, b_std=0.1)
    # float32 .npy in, float32 out; K(X, Y) from a headerless CSV
    np.save(tmp / "X32.npy", X[:40].astype(np.float32))
    code, _, err = call(capsys, "kernel", tmp / "X32.npy", "-o", tmp / "K32.npy", "--Y", files["X_noheader"])
    assert code == 0, err
    K32 = np.load(tmp / "K32.npy")
    assert K32.dtype == np.float64  # the CSV side is float64, so the pair is
    np.testing.assert_allclose(K32, nf.kernel(arch, X[:40].astype(np.float32), X[:30]), rtol=1e-12)
    code, _, err = call(capsys, "kernel", tmp / "X32.npy", "-o", tmp / "K32.npy", "--get", "nngp")
    assert code == 0, err
    K = np.load(tmp / "K32.npy")
    assert K.dtype == np.float32 and K.shape == (40, 40)
    np.testing.assert_allclose(K, nf.kernel(arch, X[:40].astype(np.float32), get="nngp"), rtol=1e-6)
    # an activation with parameters
    code, _, err = call(capsys, "kernel", files["X_noheader"], "-o", tmp / "Kl.npy", "--activation", "leaky_relu:0.2")
    assert code == 0, err
    leaky = nf.MLP(depth=3, activation=nf.LeakyReLU(0.2), W_std=1.4, b_std=0.1)
    np.testing.assert_allclose(np.load(tmp / "Kl.npy"), nf.kernel(leaky, X[:30]), rtol=1e-12)
    # --standardize, no bias
    code, _, err = call(capsys, "kernel", files["X"], "-o", tmp / "Ks.npy", "--standardize", "--b-std", "none")
    assert code == 0, err
    Z = (X - X.mean(0)) / X.std(0)
    np.testing.assert_allclose(np.load(tmp / "Ks.npy"), nf.kernel(arch.__class__(3, "relu", 1.4, None), Z), rtol=1e-10)


def test_kernel_bad_inputs(capsys, files, tmp_path):
    X = files["X"]
    out = tmp_path / "K.npy"
    bad = write_csv(tmp_path / "bad.csv", ["a", "b"], [["1", "2"], ["3", "x"]])
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,3\n4,5\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    nan = write_csv(tmp_path / "nan.csv", None, [["1", "2"], ["nan", "3"]])
    two = write_csv(tmp_path / "two.csv", None, [["1", "2"], ["3", "4"]])
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    assert_error(call(capsys, "kernel", bad, "-o", out), 1, "bad.csv: column 'b' has 'x', not a number on line 3")
    assert_error(call(capsys, "kernel", ragged, "-o", out), 1, "line 2 has 2 fields, expected 3")
    assert_error(call(capsys, "kernel", empty, "-o", out), 1, "empty")
    assert_error(call(capsys, "kernel", nan, "-o", out), 1, "NaN or infinite value on line 2")
    assert_error(call(capsys, "kernel", tmp_path / "cube.npy", "-o", out), 1, "shape (2, 2, 2)")
    assert_error(call(capsys, "kernel", tmp_path / "text.npy", "-o", out), 1, "real numeric array")
    assert_error(call(capsys, "kernel", tmp_path / "junk.npy", "-o", out), 1, "not a readable .npy")
    assert_error(call(capsys, "kernel", X, "-o", out, "--Y", two), 1, "has 2 columns", "has 4")
    assert_error(call(capsys, "kernel", X, "-o", tmp_path / "nodir" / "K.npy"), 1, "does not exist")
    assert_error(call(capsys, "kernel", X, "-o", tmp_path), 1, "is a directory")
    assert_error(call(capsys, "kernel", X, "-o", X), 1)
    # option values: argparse's usage errors, exit 2
    assert_error(call(capsys, "kernel", X, "-o", tmp_path / "K.txt"), 2, "expected a .npy file name")
    assert_error(call(capsys, "kernel", X, "-o", out, "--depth", "-1"), 2, "--depth")
    assert_error(call(capsys, "kernel", X, "-o", out, "--activation", "softsign"), 2, "unknown activation 'softsign'")
    assert_error(call(capsys, "kernel", X, "-o", out, "--activation", "gelu:1"), 2, "takes at most 0")
    assert_error(call(capsys, "kernel", X, "-o", out, "--W-std", "big"), 2, "--W-std")
    assert_error(call(capsys, "kernel", X, "-o", out, "--n-jobs", "0"), 2, "positive integer")
    assert_error(call(capsys, "kernel", X), 2, "-o/--output")
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_fit_regression_predict_to_stdout_and_probabilities(capsys, files, data):
    from sklearn.metrics import r2_score

    X, labels, y_reg = data
    tmp = files["tmp"]
    code, out, err = call(capsys, "fit", files["reg"], "--target", "-1", "-o", tmp / "reg.joblib", "--kfold", "3")
    assert code == 0, err
    assert "regression" in out and "3-fold cross-validated R^2" in out
    # headerless test file with the 4 features only: columns by position, predictions on stdout
    code, out, err = call(capsys, "predict", tmp / "reg.joblib", files["X_noheader"])
    assert code == 0, err
    rows = list(csv.reader(out.splitlines()))
    assert rows[0] == ["y_pred"] and len(rows) == 31
    pred = np.array([float(r[0]) for r in rows[1:]])
    assert r2_score(y_reg[:30], pred) > 0.9  # training rows: kernel regression nearly interpolates
    # the regression file carries the target: R^2 reported (stderr, since stdout holds the data)
    code, out, err = call(capsys, "predict", tmp / "reg.joblib", files["reg"])
    assert code == 0 and "R^2 on" in err
    # classifier: --proba columns that sum to one and agree with the predicted class
    code, _, err = call(capsys, "fit", files["train"], "--target", "label", "-o", tmp / "cls.joblib")
    assert code == 0, err
    code, out, err = call(capsys, "predict", tmp / "cls.joblib", files["test"], "--proba")
    assert code == 0, err
    rows = list(csv.reader(out.splitlines()))
    assert rows[0] == ["label_pred", "proba_cat", "proba_dog", "proba_emu"]
    P = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
    assert [r[0] for r in rows[1:]] == list(np.array(["cat", "dog", "emu"])[P.argmax(1)])
    # integer class labels stay integers, and --task forces regression on them
    ints = write_csv(tmp / "ints.csv", ["a", "b", "k"], [[cell(x[0]), cell(x[1]), str(i % 2)] for i, x in enumerate(X)])
    code, out, err = call(capsys, "fit", ints, "--target", "k", "-o", tmp / "ints.joblib")
    assert code == 0 and "classification" in out
    code, out, err = call(capsys, "predict", tmp / "ints.joblib", ints)
    assert code == 0 and set(out.split()[1:]) <= {"0", "1"}
    code, out, err = call(capsys, "fit", ints, "--target", "k", "--task", "regression", "-o", tmp / "ints.joblib")
    assert code == 0 and "(regression;" in out


def test_predict_accepts_a_fitted_estimator_saved_with_joblib(capsys, files, data, tmp_path):
    import joblib

    from ntkfast.sklearn import NTKRegressor

    X, _, y_reg = data
    reg = NTKRegressor(depth=2).fit(X[:100], y_reg[:100])
    joblib.dump(reg, tmp_path / "plain.joblib")
    code, out, err = call(capsys, "predict", tmp_path / "plain.joblib", files["X_noheader"])
    assert code == 0, err
    rows = out.split()
    assert rows[0] == "prediction"
    np.testing.assert_allclose([float(v) for v in rows[1:]], reg.predict(X[:30]), rtol=1e-15)


def test_debug_env_keeps_the_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("NTKFAST_DEBUG", "1")
    with pytest.raises(cli.CommandError, match="no such file"):
        cli.main(["spectrum", tmp_path / "missing.csv"])


def test_fit_and_predict_bad_inputs(capsys, files, tmp_path):
    train, test = files["train"], files["test"]
    model = tmp_path / "m.joblib"
    assert_error(call(capsys, "fit", train, "--target", "species", "-o", model), 1, "no column named 'species'", "'f0'")
    assert_error(call(capsys, "fit", train, "--target", "9", "-o", model), 1, "index 9 is out of range for 5")
    # a text column is categorical now (one-hot encoded); a typo in a column of numbers is refused
    rows = [[str(i), "x" if i == 3 else str(i / 2), str(i % 2)] for i in range(8)]
    text = write_csv(tmp_path / "text.csv", ["a", "b", "y"], rows)
    assert_error(call(capsys, "fit", text, "--target", "y", "-o", model), 1, "column 'b' holds numbers but has 'x'",
                 "on line 5", "--na-values x")  # fmt: skip
    assert_error(call(capsys, "fit", train, "--target", "label", "--task", "regression", "-o", model), 1, "not numeric")
    one = write_csv(tmp_path / "one.csv", ["a", "y"], [["1", "x"], ["2", "x"]])
    assert_error(call(capsys, "fit", one, "--target", "y", "--task", "classification", "-o", model), 1, "single class")
    assert_error(call(capsys, "fit", train, "--target", "label", "-o", model, "--task", "ranking"), 2, "--task")
    assert_error(call(capsys, "fit", train, "--target", "label", "-o", model, "--kfold", "1"), 2, "--kfold")
    assert_error(call(capsys, "fit", train, "--target", "label", "-o", model, "--diag-reg", "-1"), 2, "--diag-reg")
    assert not model.exists()

    assert call(capsys, "fit", train, "--target", "label", "-o", model)[0] == 0
    renamed = write_csv(tmp_path / "renamed.csv", ["g0", "f1", "f2", "f3"], [["1", "2", "3", "4"]])
    assert_error(call(capsys, "predict", model, renamed), 1, "missing feature column(s) 'f0'")
    extra = write_csv(tmp_path / "extra.csv", ["f0", "f1", "f2", "f3", "id"], [["1", "2", "3", "4", "7"]])
    assert_error(call(capsys, "predict", model, extra), 1, "'id' are not features of the model")
    five = write_csv(tmp_path / "five.csv", None, [["1", "2", "3", "4", "5"]])
    assert_error(call(capsys, "predict", model, five), 1, "has 5 feature columns", "expects 4", "--target")
    three = write_csv(tmp_path / "three.csv", None, [["1", "2", "3"]])
    assert_error(call(capsys, "predict", model, three), 1, "has 3 feature columns, the model expects 4")
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"\x00garbage")
    assert_error(call(capsys, "predict", junk, test), 1, "not a model file written by `ntkfast fit`")
    np.save(tmp_path / "arr.npy", np.zeros(3))
    assert_error(call(capsys, "predict", tmp_path / "arr.npy", test), 1, "not a model file")
    assert_error(call(capsys, "predict", model, test, "-o", tmp_path / "no" / "p.csv"), 1, "does not exist")
    assert call(capsys, "fit", files["reg"], "--target", "y", "-o", tmp_path / "r.joblib")[0] == 0
    assert_error(call(capsys, "predict", tmp_path / "r.joblib", files["X"], "--proba"), 2, "regressor")


def test_spectrum_matches_eigvalsh(capsys, files, data, tmp_path):
    X = data[0]
    K = nf.kernel(nf.MLP(depth=3, activation="relu", W_std=1.4, b_std=0.1), X[:60])
    np.save(tmp_path / "K.npy", K)
    np.save(tmp_path / "y.npy", X[:60, 0])
    code, out, err = call(capsys, "spectrum", tmp_path / "K.npy", "--precomputed", "--y", tmp_path / "y.npy")
    assert code == 0, err
    lam = np.linalg.eigvalsh(K)[::-1]
    reported = [float(v) for v in out.split("(60 of 60, dense): ")[1].split(", ...")[0].split(", ")]
    np.testing.assert_allclose(reported, lam[:6], rtol=1e-3)  # printed to 4 significant digits
    assert f"condition number {lam[0] / lam[-1]:.4g}" in out
    assert f"2N/lambda_max = {2 * 60 / lam[0]:.6g}" in out
    # top k only, text labels one-hot encoded, and targets from a column of a header-less file
    code, out, err = call(capsys, "spectrum", files["train"], "--y", "label", "-k", "5")
    assert code == 0, err
    assert "(5 of 120" in out and "3 classes, centred one-hot" in out and "condition number" not in out
    code, out, err = call(capsys, "spectrum", files["X_noheader"], "--y", "0", "--one-hot", "--standardize")
    assert code == 0 and "30 classes" in out and "(30 x 3)" in out


def test_spectrum_bad_inputs(capsys, files, tmp_path, monkeypatch):
    X = files["X"]
    np.save(tmp_path / "rect.npy", np.ones((3, 4)))
    np.save(tmp_path / "y5.npy", np.ones(5))
    assert_error(call(capsys, "spectrum", tmp_path / "rect.npy", "--precomputed"), 1, "square kernel matrix")
    assert_error(call(capsys, "spectrum", X, "--y", tmp_path / "y5.npy"), 1, "has 5 rows", "has 150")
    assert_error(call(capsys, "spectrum", X, "--y", "target"), 1, "--y target: not a file", "no column named")
    assert_error(call(capsys, "spectrum", files["X_noheader"], "-k", "31"), 2, "at most the number of points 30")
    assert_error(call(capsys, "spectrum", X, "-k", "0"), 2, "positive integer")
    assert_error(call(capsys, "spectrum", X, "--lr", "-1"), 2, "--lr")
    # without matplotlib the report still comes, then an error for the figure that was asked for
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = call(capsys, "spectrum", files["X_noheader"], "--plot", tmp_path / "s.png")
    assert code == 1 and "condition number" in out and "matplotlib is not installed" in err
    assert not (tmp_path / "s.png").exists()
