"""The CLI's CSV reading (pandas) and the preprocessing saved with a model.

Truth: ``ntkfast fit`` + ``ntkfast predict`` on a CSV with a categorical column, a missing value
and an ID column give the predictions of a scikit-learn Pipeline built here by hand
(ColumnTransformer of SimpleImputer + StandardScaler / SimpleImputer + OneHotEncoder, then
NTKRegressor) on the same file read with ``pandas.read_csv``.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from cli_helpers import assert_error, call

pd = pytest.importorskip("pandas")


@pytest.fixture
def mixed(tmp_path):
    """A regression CSV: an ID column, a categorical column, numeric columns with missing cells."""
    rng = np.random.default_rng(1)
    n = 80
    colour = rng.choice(["red", "green", "blue"], n)
    x1, x2 = rng.standard_normal(n), rng.standard_normal(n)
    y = x1 + 0.5 * (colour == "red") - 0.3 * x2**2
    rows = []
    for i in range(n):
        a = "" if i % 17 == 3 else repr(float(x1[i]))  # missing values
        c = "NA" if i == 5 else colour[i]
        rows.append([f"id{i:03d}", a, c, repr(float(x2[i])), repr(float(y[i]))])
    path = tmp_path / "mixed.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=";")  # a ';' file: the delimiter is sniffed
        w.writerow(["id", "x1", "colour", "x2", "y"])
        w.writerows(rows)
    return path


def hand_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from ntkfast.sklearn import NTKRegressor

    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["x1", "x2"]),
            (
                "cat",
                make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
                ["colour"],
            ),
        ],
        sparse_threshold=0.0,
    )
    return Pipeline([("pre", pre), ("model", NTKRegressor(depth=2))])


def test_categorical_missing_and_id_match_a_hand_built_pipeline(capsys, mixed, tmp_path):
    model, preds = tmp_path / "m.joblib", tmp_path / "p.csv"
    code, out, err = call(capsys, "fit", mixed, "--target", "y", "--id", "id", "-o", model, "--depth", 2)
    assert code == 0, err
    assert "80 rows, 3 features (1 categorical, one-hot encoded)" in out
    code, out, err = call(capsys, "predict", model, mixed, "-o", preds)
    assert code == 0, err
    got = pd.read_csv(preds)
    assert list(got.columns) == ["id", "y_pred"]
    df = pd.read_csv(mixed, sep=";")
    assert list(got["id"]) == list(df["id"])
    X = df[["x1", "colour", "x2"]].astype({"colour": object})
    X["colour"] = X["colour"].where(X["colour"].notna(), np.nan)
    expected = hand_pipeline().fit(X, df["y"]).predict(X)
    np.testing.assert_allclose(got["y_pred"].to_numpy(), expected, rtol=1e-10, atol=1e-12)
    # a category never seen in training, and a missing cell, at predict time
    new = tmp_path / "new.csv"
    new.write_text("id;x1;colour;x2\nq1;0.5;purple;1.0\nq2;;red;-1.0\n")
    code, out, err = call(capsys, "predict", model, new)
    assert code == 0, err
    rows = list(csv.reader(out.splitlines()))
    assert rows[0] == ["id", "y_pred"] and [r[0] for r in rows[1:]] == ["q1", "q2"]
    Xn = pd.DataFrame({"x1": [0.5, np.nan], "colour": np.array(["purple", "red"], dtype=object), "x2": [1.0, -1.0]})
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], hand_pipeline().fit(X, df["y"]).predict(Xn),
                               rtol=1e-10)  # fmt: skip


def test_features_and_drop_options(capsys, mixed, tmp_path):
    model = tmp_path / "m.joblib"
    code, out, err = call(capsys, "fit", mixed, "--target", "y", "--features", "x1,x2", "-o", model)
    assert code == 0 and "2 features" in out, err
    code, out, err = call(capsys, "predict", model, mixed)  # id and colour are ignored: not features
    assert code == 0, err
    code, out, err = call(capsys, "fit", mixed, "--target", "y", "--drop", "id,colour", "-o", model)
    assert code == 0 and "2 features" in out, err
    assert_error(call(capsys, "fit", mixed, "--target", "y", "--drop", "id", "--features", "x1", "-o", model), 2)
    assert_error(call(capsys, "fit", mixed, "--target", "y", "--features", "y", "-o", model), 1, "target")
    assert_error(call(capsys, "fit", mixed, "--target", "y", "--features", "nope", "-o", model), 1, "'nope'")


def test_delimiters_encodings_and_na_markers(capsys, tmp_path):
    X = np.arange(12.0).reshape(4, 3) / 7
    for name, sep in (("comma.csv", ","), ("semi.csv", ";"), ("tab.txt", "\t"), ("pipe.csv", "|")):
        path = tmp_path / name
        path.write_text(f"a{sep}b{sep}c\n" + "".join(sep.join(repr(float(v)) for v in r) + "\n" for r in X))
        code, _, err = call(capsys, "kernel", path, "-o", tmp_path / "K.npy", "--no-progress")
        assert code == 0, (name, err)
        import ntkfast as nf

        np.testing.assert_allclose(np.load(tmp_path / "K.npy"), nf.kernel(nf.MLP(3, "relu", 1.4, 0.1), X), rtol=1e-12)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("caf\xe9,y\n1,2\n3,4\n".encode("latin-1"))
    assert_error(call(capsys, "kernel", latin, "-o", tmp_path / "K.npy"), 1, "--encoding")
    code, _, err = call(capsys, "kernel", latin, "-o", tmp_path / "K.npy", "--encoding", "latin-1", "--no-progress")
    assert code == 0, err
    marked = tmp_path / "marked.csv"
    marked.write_text("a,b\n1,2\n-999,3\n")
    assert_error(call(capsys, "kernel", marked, "-o", tmp_path / "K.npy", "--na-values", "-999"), 1,
                 "column 'a' has a missing, NaN or infinite value on line 3")  # fmt: skip


def test_header_detection_never_eats_a_data_row(capsys, tmp_path):
    out = tmp_path / "K.npy"
    # a first row with one odd cell: a header or a data row with a typo? refused, not guessed
    odd = tmp_path / "odd.csv"
    odd.write_text("1,x,3\n4,5,6\n7,8,9\n")
    assert_error(call(capsys, "kernel", odd, "-o", out), 1, "cannot tell whether line 1 is a header", "--no-header")
    code, _, err = call(capsys, "kernel", odd, "-o", out, "--header", "--no-progress")
    assert code == 0, err
    assert np.load(out).shape == (2, 2)
    assert_error(call(capsys, "kernel", odd, "-o", out, "--no-header"), 1, "'x', not a number on line 1")
    # numbers only: data; distinct names: a header; text in a text column: data
    nums = tmp_path / "nums.csv"
    nums.write_text("1,2\n3,4\n")
    assert call(capsys, "kernel", nums, "-o", out, "--no-progress")[0] == 0 and np.load(out).shape == (2, 2)
    cats = tmp_path / "cats.csv"
    cats.write_text("1.5,red,0\n2.5,blue,1\n0.5,red,1\n")
    model = tmp_path / "m.joblib"
    code, outp, err = call(capsys, "fit", cats, "--target", "2", "--task", "regression", "-o", model)
    assert code == 0 and "3 rows" in outp, err
    # a ragged short line is refused (pandas would pad it with NaN)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b,c\n1,2,3\n4,5\n")
    assert_error(call(capsys, "fit", ragged, "--target", "c", "-o", model), 1, "line 3 has 2 fields, expected 3")


def test_missing_target_and_infinite_feature_are_refused(capsys, tmp_path):
    model = tmp_path / "m.joblib"
    f = tmp_path / "t.csv"
    f.write_text("a,y\n1,2\n2,\n3,4\n")
    fit = call(capsys, "fit", f, "--target", "y", "-o", model)
    assert_error(fit, 1, "target column 'y' has a missing value on line 3")
    g = tmp_path / "g.csv"
    g.write_text("a,y\n1,2\ninf,3\n3,4\n")
    assert_error(call(capsys, "fit", g, "--target", "y", "-o", model), 1, "column 'a' has an infinite value on line 3")
    assert not model.exists()


def test_decimal_comma(capsys, tmp_path):
    import ntkfast as nf

    X = np.array([[1.5, -2.25], [0.5, 3.0], [2.0, 1.25]])
    path = tmp_path / "eu.csv"
    path.write_text("a;b;y\n" + "".join(f"{a};{b};{a + b}\n".replace(".", ",") for a, b in X))
    out, model = tmp_path / "K.npy", tmp_path / "m.joblib"
    # without --decimal: a clear error with the hint, never one-hot encoded numbers
    assert_error(call(capsys, "fit", path, "--target", "y", "-o", model), 1, "decimal comma", "--decimal ,")
    code, _, err = call(capsys, "kernel", path, "-o", out, "--decimal", ",", "--no-progress")
    assert code == 0, err
    K = np.load(out)
    np.testing.assert_allclose(K, nf.kernel(nf.MLP(3, "relu", 1.4, 0.1), np.c_[X, X.sum(1)]), rtol=1e-12)
    code, outp, err = call(capsys, "fit", path, "--target", "y", "-o", model, "--decimal", ",")
    assert code == 0 and "2 features" in outp and "categorical" not in outp, err
