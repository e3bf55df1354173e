"""Text reports: what :func:`ntkfast.spectrum.analyze` found, one quantity per line."""

from __future__ import annotations

import math

import numpy as np

from .console import say

__all__ = ["spectrum_report", "encode_targets"]


def encode_targets(y: np.ndarray, one_hot: bool) -> tuple[np.ndarray, str]:
    if y.ndim == 1 and (one_hot or y.dtype.kind not in "if"):
        classes, idx = np.unique(y, return_inverse=True)
        Y = np.eye(len(classes))[idx] - 1.0 / len(classes)  # centred one-hot, as NTKClassifier fits
        return Y, f"{len(classes)} classes, centred one-hot"
    return np.asarray(y, dtype=np.float64), "as given"


def spectrum_report(res, say=say) -> None:
    """Print what :func:`ntkfast.spectrum.analyze` found, one quantity per line."""
    lam = res.eigenvalues
    complete = len(lam) == res.n
    top = ", ".join(f"{v:.4g}" for v in lam[:6]) + (", ..." if len(lam) > 6 else "")
    say(f"  eigenvalues ({len(lam)} of {res.n}, {res.method}): {top}")
    line = f"  lambda_max {lam[0]:.6g}, lambda_min {lam[-1]:.4g}" if complete else f"  lambda_max {lam[0]:.6g}"
    if complete:
        line += (
            f", condition number {res.condition_number:.4g}, top-10 share of the trace {lam[:10].sum() / lam.sum():.3f}"
        )
    say(line)
    alpha = res.power_law_exponent() if len(lam) >= 20 else math.nan  # a fit needs a stretch of the spectrum
    if math.isfinite(alpha):
        say(f"  power-law decay lambda_i ~ i^-alpha: alpha = {alpha:.3f}")
    say(f"  largest stable gradient-descent learning rate 2N/lambda_max = {res.max_lr:.6g} (N = n x outputs = {res.N})")
    rates = [f"mode {i}: {res.flow_rates[i - 1]:.3g}" for i in (1, 10, 100, 1000) if i <= len(lam)]
    say(f"  decay rates lr*lambda_i/N at lr = {res.lr:.6g}: {', '.join(rates)}")
    if res.y_projection is None:
        return
    share = np.cumsum(res.alignment)
    parts = [f"top {i}: {share[i - 1]:.3f}" for i in (1, 10, 100) if i <= len(share)]
    say(f"  share of ||y||^2 along the top eigenvectors: {', '.join(parts)}")
    loss0 = float(res.loss(0.0))
    times = []
    for frac in (1e-1, 1e-2, 1e-3):
        t = res.time_to_loss(frac * loss0)
        times.append(f"{frac:g} x: {t:.4g}" if math.isfinite(t) else f"{frac:g} x: never")
    say(f"  predicted time (steps at lr) to bring the loss {loss0:.4g} down to {', '.join(times)}")
    if not complete:
        say("  ('never': part of the target lies outside the computed eigenvectors)")
