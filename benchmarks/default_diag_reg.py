"""The figures behind ``NTKRegressor(diag_reg="auto")``, the plain estimators' default.

5-fold cross-validated R^2 on the standardised diabetes data (noisy targets) and accuracy on the
standardised digits (clean labels), for the old default 1e-4, a larger fixed ridge 0.1, and "auto"
(exact leave-one-out over ``ntkfast.sklearn.DIAG_REGS`` at each fit).  Same shuffled folds for all.

    python benchmarks/default_diag_reg.py
"""

from __future__ import annotations

from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ntkfast.sklearn import NTKClassifier, NTKRegressor


def main() -> None:
    X, y = load_diabetes(return_X_y=True)
    Xd, yd = load_digits(return_X_y=True)
    reg_folds = KFold(5, shuffle=True, random_state=0)
    clf_folds = StratifiedKFold(5, shuffle=True, random_state=0)
    print(f"{'diag_reg':>10}  {'diabetes R^2':>12}  {'digits accuracy':>15}")
    for diag_reg in (1e-4, 0.1, "auto"):
        r2 = cross_val_score(make_pipeline(StandardScaler(), NTKRegressor(diag_reg=diag_reg)), X, y, cv=reg_folds)
        acc = cross_val_score(make_pipeline(StandardScaler(), NTKClassifier(diag_reg=diag_reg)), Xd, yd, cv=clf_folds)
        print(f"{diag_reg!s:>10}  {r2.mean():12.4f}  {acc.mean():15.4f}", flush=True)


if __name__ == "__main__":
    main()
