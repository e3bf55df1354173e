"""The preprocessing saved with a model: one scikit-learn ColumnTransformer, fitted by
``ntkfast fit`` inside the Pipeline, so ``ntkfast predict`` applies exactly the same
transformation.

Numeric columns: median imputation of missing cells, then StandardScaler.  Text (categorical)
columns: most-frequent imputation, then one-hot encoding (a category first seen at predict time
encodes as all zeros).  A text column whose cells are mostly numbers is refused (a typo in a
numeric column, or a missing-value marker to declare with ``--na-values``), not one-hot encoded.
"""

from __future__ import annotations

import numpy as np

from .errors import CommandError
from .tables import decimal_comma_hint

__all__ = ["NUMERIC", "CATEGORICAL", "feature_kinds", "model_frame", "make_preprocessor"]

NUMERIC, CATEGORICAL = "numeric", "categorical"


def feature_kinds(table, cols) -> list[str]:
    """NUMERIC or CATEGORICAL for each column index of ``table`` in ``cols``."""
    kinds = []
    for c in cols:
        if table.is_numeric(c):
            kinds.append(NUMERIC)
            continue
        share, row = table.text_share(c)
        if share > 0.5:
            value = table.frame.iloc[row, c]
            raise CommandError(
                f"{table.path}: column {table.names[c]!r} holds numbers but has {value!r}, not a number on "
                f"{table.unit} {table.line(row)}; fix the cell, or mark it missing with --na-values {value}"
            )
        present = table.frame.iloc[:, c].dropna()
        if len(present) and all(decimal_comma_hint(v) for v in present):
            raise CommandError(
                f"{table.path}: column {table.names[c]!r} holds numbers with a decimal comma (e.g. "
                f"{present.iloc[0]!r}); pass --decimal , (else they would be one-hot encoded as text)"
            )
        kinds.append(CATEGORICAL)
    return kinds


def model_frame(table, cols, kinds, names):
    """The DataFrame the saved pipeline receives: columns ``names`` from the table's ``cols``;
    numeric as float64 (missing -> NaN, infinite refused), categorical as text (missing -> NaN)."""
    import pandas as pd

    data = {}
    for c, kind, name in zip(cols, kinds, names):
        if kind == NUMERIC:
            data[name] = table.numeric([c], allow_missing=True)[:, 0]
        else:
            data[name] = table.text(c)
    return pd.DataFrame(data, columns=list(names))


def make_preprocessor(names, kinds):
    """The (unfitted) ColumnTransformer for feature columns ``names`` of the given kinds."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [n for n, k in zip(names, kinds) if k == NUMERIC]
    categorical = [n for n, k in zip(names, kinds) if k == CATEGORICAL]
    parts = []
    if numeric:
        parts.append(("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric))
    if categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)
        parts.append(("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"), encoder), categorical))
    return ColumnTransformer(parts, sparse_threshold=0.0, verbose_feature_names_out=False)
