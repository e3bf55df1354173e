"""What the estimators share: the default ridge grid, the ``diag_reg="auto"`` rule and ``verbose`` output."""

from __future__ import annotations

import sys
import time

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from ._loo import EigenLOO, best_index, classification_score, regression_score

__all__ = ["DIAG_REGS", "Progress", "check_verbose", "select_diag_reg"]

# ridges relative to mean(diag K): 1e-5 (noiseless data) to 100 (mostly noise), half a decade apart
DIAG_REGS = tuple(float(r) for r in np.logspace(-5, 2, 15))


def check_verbose(verbose) -> int:
    if isinstance(verbose, bool):
        return int(verbose)
    if not isinstance(verbose, (int, np.integer)):
        raise ArgumentTypeError(f"verbose: expected an integer >= 0, got {verbose!r}")
    if verbose < 0:
        raise ArgumentError(f"verbose: expected an integer >= 0, got {verbose!r}")
    return int(verbose)


class Progress:
    """``verbose`` the scikit-learn way: 0 silent; >= 1 the plan and one line per step on stdout,
    and the kernel's tqdm bar when stderr is a terminal."""

    def __init__(self, verbose: int, who: str):
        self.level = verbose
        self.who = who
        self.t0 = time.perf_counter()

    @property
    def bar(self) -> bool:
        return self.level >= 1 and sys.stderr.isatty()

    def say(self, message: str, level: int = 1) -> None:
        if self.level >= level:
            print(f"[{self.who}] {message} ({time.perf_counter() - self.t0:.1f} s)", flush=True)


def select_diag_reg(K: np.ndarray, Y: np.ndarray, labels=None, diag_regs=DIAG_REGS) -> tuple[float, list[dict]]:
    """The ridge of ``diag_regs`` with the best exact leave-one-out score on (K, Y): squared error
    (as R^2, per output) for regression, accuracy then log-loss for classification (``labels`` given)."""
    loo = EigenLOO(np.asarray(K, dtype=np.float64), Y)
    results = []
    for r in diag_regs:
        pred = loo.predictions(r)
        results.append(regression_score(Y, pred) if labels is None else classification_score(pred, labels))
    return float(diag_regs[best_index(results)]), results
