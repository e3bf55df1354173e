"""Every network option of the command line reaches the network (issue 12 item 7: ``ntkfast fit
--residual --width 7`` used to save a plain width-512 network), and progress output.

The network is built once by ``MLP.from_params(args)``; ``fit`` passes each field to the
estimator by name and refuses an option the estimator cannot take (an estimator without
``width``/``residual`` parameters) instead of dropping it.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import ntkfast as nf
from ntkfast import cli
from ntkfast.cli import console
from ntkfast.cli.network import ARCH_OPTIONS

# option -> (command-line words, the MLP field and the value it must have)
OPTIONS = {
    "depth": (["--depth", "2"], 2),
    "activation": (["--activation", "erf"], "erf"),
    "W_std": (["--W-std", "1.9"], 1.9),
    "b_std": (["--b-std", "none"], None),
    "parameterization": (["--parameterization", "standard"], "standard"),
    "width": (["--width", "7", "--parameterization", "standard"], 7),
    "residual": (["--residual", "--width", "7"], True),
}


def test_every_mlp_field_of_the_parser_is_covered():
    import dataclasses

    args = vars(cli.build_parser().parse_args(["fit", "train.csv", "--target", "y", "-o", "m.joblib"]))
    fields = {f.name for f in dataclasses.fields(nf.MLP)} - {"input_map"}  # input_map: not a CLI option
    assert set(ARCH_OPTIONS) == fields and set(ARCH_OPTIONS) <= set(args) and set(OPTIONS) == set(ARCH_OPTIONS)


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    path = tmp_path_factory.mktemp("opts") / "train.csv"
    X = np.random.default_rng(0).standard_normal((30, 3))
    path.write_text("a,b,c,y\n" + "".join(f"{a!r},{b!r},{c!r},{a + b!r}\n" for a, b, c in X.tolist()))
    return path


@pytest.mark.parametrize("option", list(OPTIONS))
def test_fit_option_reaches_the_fitted_model(capsys, train, tmp_path, option):
    import joblib

    from ntkfast.sklearn import NTKRegressor

    words, value = OPTIONS[option]
    model = tmp_path / "m.joblib"
    code = cli.main(["fit", str(train), "--target", "y", "-o", str(model), *words])
    out, err = capsys.readouterr()
    if option not in NTKRegressor().get_params():
        # an estimator without the parameter: refused, never silently dropped
        assert code == 1 and "cannot reach the model" in err and not model.exists(), err
        pytest.skip(f"NTKRegressor has no {option!r} parameter in this tree (the refusal was checked)")
    assert code == 0, err
    est = joblib.load(model)["model"][-1]
    est = getattr(est, "best_estimator_", est)  # without --depth, fit selects: the refitted plain estimator
    expected = value if option != "activation" else nf.MLP(activation="erf").activation
    assert getattr(est, option) == expected
    arch = est.arch_  # the network the fit used
    assert getattr(arch, option) == expected
    assert arch == nf.MLP.from_params(est)


def test_kernel_and_spectrum_use_the_same_network(capsys, tmp_path, monkeypatch):
    import ntkfast.gram

    seen = []
    real = ntkfast.gram.kernel
    monkeypatch.setattr(ntkfast.gram, "kernel", lambda arch, *a, **k: seen.append(arch) or real(arch, *a, **k))
    np.save(tmp_path / "X.npy", np.random.default_rng(0).standard_normal((10, 3)))
    words = ["--depth", "2", "--activation", "erf", "--W-std", "1.9", "--b-std", "none", "--residual", "--width", "7"]
    assert cli.main(["kernel", str(tmp_path / "X.npy"), "-o", str(tmp_path / "K.npy"), *words]) == 0
    assert cli.main(["spectrum", str(tmp_path / "X.npy"), *words]) == 0
    capsys.readouterr()
    expected = nf.MLP(depth=2, activation="erf", W_std=1.9, b_std=None, width=7, residual=True)
    assert seen and all(a == expected for a in seen)


def test_progress_lines_without_a_terminal():
    """tqdm's redrawn status becomes a plain line every `every` seconds, plus the final state."""
    from tqdm import tqdm

    clock = iter(np.arange(0.0, 1000.0, 1.0))  # one second per clock reading
    stream = io.StringIO()
    lines = console.LogLines(stream, every=5.0, clock=lambda: float(next(clock)))
    bar = tqdm(total=40, desc="kernel", file=lines, mininterval=0, miniters=1)
    for _ in range(40):
        bar.update()
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text
    rows = text.splitlines()
    assert 2 <= len(rows) <= 40 // 2 and all("kernel:" in r for r in rows), text
    assert "40/40" in rows[-1] and "<" in rows[0]  # done/total and the ETA
    # other text passes through; a bar too short to log stays quiet
    stream = io.StringIO()
    lines = console.LogLines(stream, every=1e9)
    lines.write("a warning\n")
    print("a plan line", file=lines)  # print writes the text and its newline separately
    bar = tqdm(total=3, file=lines)
    bar.update(3)
    bar.close()
    print("after", file=lines)
    assert stream.getvalue() == "a warning\na plan line\nafter\n"


def test_kernel_logs_progress_lines_when_not_a_terminal(capsys, tmp_path):
    np.save(tmp_path / "X.npy", np.random.default_rng(0).standard_normal((600, 3)))
    code = cli.main(["kernel", str(tmp_path / "X.npy"), "-o", str(tmp_path / "K.npy"), "--log-every", "1e-9"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "\r" not in err and "tile" in err and "100%" in err.splitlines()[-1], err


def test_the_selection_gets_every_option_but_the_depth(capsys, train, tmp_path):
    """Without --depth, fit selects: NTKRegressorCV with the command line's options and --depths."""
    import joblib

    model = tmp_path / "m.joblib"
    words = ["--depths", "1,2", "--W-std", "1.9", "--activation", "erf", "--kernel", "nngp"]
    code = cli.main(["fit", str(train), "--target", "y", "-o", str(model), *words])
    out, err = capsys.readouterr()
    assert code == 0, err
    est = joblib.load(model)["model"][-1]
    assert type(est).__name__ == "NTKRegressorCV" and tuple(est.depths) == (1, 2) and est.W_std == 1.9
    expected = nf.MLP(depth=est.depth_, activation="erf", W_std=1.9, b_std=0.5)  # NTKRegressorCV's b_std
    assert est.kernel == "nngp" and est.best_estimator_.arch_ == expected
    assert f"depth {est.depth_}" in out
