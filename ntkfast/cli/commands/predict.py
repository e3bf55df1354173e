"""``ntkfast predict``: predictions of a model saved by ``ntkfast fit`` for the rows of a file.

The output CSV has the ID column (when the model was fitted with ``--id`` or ``--id`` is given
here), the predictions in ``<target>_pred`` and, with ``--proba``, one ``proba_<class>`` column
per class.  A file output is written atomically (temporary file + rename).
"""

from __future__ import annotations

import csv
import io
import sys

import numpy as np

from ..console import say
from ..errors import EXIT_OK, CommandError
from ..files import atomic_output, input_file, output_file
from ..preprocess import model_frame
from ..tables import read_table

MODEL_FORMATS = ("ntkfast-model/1", "ntkfast-model/2")


def load_model(path: str) -> dict:
    """The bundle written by ``ntkfast fit`` (or a fitted estimator saved with joblib by hand)."""
    import pickle

    import joblib

    p = input_file(path)
    try:
        obj = joblib.load(p)
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, AttributeError, ImportError) as exc:
        raise CommandError(f"{path}: not a model file written by `ntkfast fit` ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and obj.get("format") in MODEL_FORMATS:
        return obj
    if hasattr(obj, "predict") and hasattr(obj, "n_features_in_"):  # a fitted estimator saved by hand
        names = [str(i) for i in range(obj.n_features_in_)]
        task = "classification" if hasattr(obj, "classes_") else "regression"
        return {"model": obj, "features": names, "has_header": False, "target": None, "task": task}
    raise CommandError(f"{path}: not a model file written by `ntkfast fit`")


def feature_columns(table, bundle: dict, target: str | None, id_spec: str | None):
    """(feature columns, target column or None, ID column or None) of the test table."""
    features = bundle["features"]
    by_name = table.has_header and bundle["has_header"]
    if id_spec is not None:
        i = table.column(id_spec)
    elif by_name and bundle.get("id") in table.names:
        i = table.names.index(bundle["id"])
    else:
        i = None
    if target is not None:
        t = table.column(target)
    elif by_name and bundle["target"] in table.names:
        t = table.names.index(bundle["target"])
    else:
        t = None
    if by_name:
        missing = [f for f in features if f not in table.names]
        if missing:
            raise CommandError(
                f"{table.path}: missing feature column(s) {', '.join(map(repr, missing))} the model was fitted on"
            )
        cols = [table.names.index(f) for f in features]
        ignored = set(bundle.get("dropped", ()))
        extra = [n for c, n in enumerate(table.names) if c not in cols and c not in (t, i) and n not in ignored]
        if extra:
            raise CommandError(
                f"{table.path}: column(s) {', '.join(map(repr, extra))} are not features of the model; "
                "remove them, or name the target with --target (an ID column with --id)"
            )
        return cols, t, i
    if not bundle["has_header"] and bundle.get("positions") is not None and table.n_cols == bundle["n_columns"] \
            and target is None:
        # fitted on a headerless file of this layout: its positions of the features, target and ID
        t = bundle["target_position"]
        i = bundle["id_position"] if i is None else i
        return list(bundle["positions"]), t, i
    cols = [c for c in range(table.n_cols) if c not in (t, i)]
    if len(cols) != len(features):
        where = f" besides the target column {table.names[t]!r}" if t is not None else ""
        hint = "; name the target column with --target" if t is None and len(cols) == len(features) + 1 else ""
        raise CommandError(
            f"{table.path}: has {len(cols)} feature columns{where}, the model expects {len(features)}{hint}"
        )
    return cols, t, i


def _format(v) -> str:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, float) and np.isnan(v):
        return ""
    return str(v)


def run(args) -> int:
    bundle = load_model(args.model)
    model = bundle["model"]
    if args.proba and not hasattr(model, "predict_proba"):
        args.parser.error("--proba: the model is a regressor; class probabilities need a classifier")
    out_path = None if args.output == "-" else output_file(args.output, inputs=(args.test, args.model))
    table = read_table(args.test, args)
    cols, t, i = feature_columns(table, bundle, args.target, args.id)
    if bundle.get("format") == "ntkfast-model/2":
        X = model_frame(table, cols, bundle["kinds"], bundle["features"])
    else:
        X = table.numeric(cols)
    pred = model.predict(X)
    header, columns = [], []
    if i is not None:
        header.append(table.names[i])
        ids = table.text(i)
        columns.append(["" if not isinstance(v, str) else v for v in ids])
    header.append(f"{bundle['target']}_pred" if bundle["target"] is not None else "prediction")
    columns.append(pred)
    if args.proba:
        P = model.predict_proba(X)
        header += [f"proba_{c}" for c in model.classes_]
        columns += list(P.T)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in zip(*columns):
        writer.writerow([_format(v) for v in row])
    if out_path is None:
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
        log = sys.stderr
    else:
        with atomic_output(out_path) as partial:
            partial.write_text(buf.getvalue())
        log = sys.stdout
        say(f"wrote {len(pred)} predictions to {args.output}", file=log)
    if t is not None:
        y = table.labels(t)
        if bundle["task"] == "classification":
            y = y.astype(str) if np.asarray(pred).dtype.kind in "OUS" else y
            say(f"accuracy on {args.test}: {np.mean(pred == y):.4f} ({len(y)} rows)", file=log)
        elif y.dtype.kind in "if":
            from sklearn.metrics import r2_score

            say(f"R^2 on {args.test}: {r2_score(y, pred):.4f} ({len(y)} rows)", file=log)
    return EXIT_OK
