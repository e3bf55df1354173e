"""Text reports: what :func:`ntkfast.spectrum.analyze` found, one quantity per line, and what
``ntkfast fit`` selected (the chosen depth and diag_reg, the score table of every candidate)."""

from __future__ import annotations

import math

import numpy as np

from .console import describe, say

__all__ = ["spectrum_report", "encode_targets", "describe_without_depth", "selection_lines", "selection_table",
           "selection_table_text"]  # fmt: skip


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


def describe_without_depth(arch) -> str:
    """:func:`describe` for a network whose depth the selection chooses."""
    return "depth selected below, " + describe(arch).split(" ", 1)[1]


def selection_lines(record: dict, what: str, table: bool = False) -> list[str]:
    """What ``ntkfast fit`` chose, from the record it saves with the model (``fit.selection_record``);
    ``table``: the score table follows."""
    depth, reg = record["depth"], record["diag_reg"]
    if record["method"] != "fixed":
        how = "exact leave-one-out" if record["method"] == "loo" else f"{record['method']} cross-validation"
        score = "leave-one-out" if record["method"] == "loo" else record["method"]
        fixed = f", diag_reg fixed by {record['fixed']}" if record.get("fixed") else ""
        return [
            f"selected by {how} among {record['candidates']} candidates{fixed}: depth {depth}, diag_reg {reg:.3g} "
            f"({score} {what} {record['score']:.4f}{'' if table else '; --cv prints every candidate'})"
        ]
    fixed = record["fixed"]
    why_depth = f"fixed by {fixed}" if fixed.startswith("--depth") else f"the default: {fixed} fits one network"
    why_reg = "chosen by leave-one-out: diag_reg auto" if record.get("diag_reg_auto") else "fixed by --diag-reg"
    return [f"depth {depth} ({why_depth}), diag_reg {reg:.3g} ({why_reg})"]


def selection_table(est, what: str):
    """Every candidate of a fitted NTKRegressorCV / NTKClassifierCV as a pandas DataFrame, in the order
    of ``cv_results_``: depth, diag_reg (and W_std / b_std where they were a grid), the score, the
    log-loss (classifiers), the rank, and ``chosen`` (``*`` on the refitted candidate)."""
    import pandas as pd

    res = est.cv_results_
    name = ("leave-one-out " if est.cv_method_ == "loo" else f"{est.cv_method_} ") + what
    frame = {"depth": res["param_depth"], "diag_reg": res["param_diag_reg"]}
    for key in ("W_std", "b_std"):
        values = list(res[f"param_{key}"])
        if len(set(values)) > 1:
            frame[key] = values
    frame[name] = res["mean_test_score"]
    if "mean_test_log_loss" in res:
        frame["log_loss"] = res["mean_test_log_loss"]
    frame["rank"] = res["rank_test_score"]
    frame["chosen"] = ["*" if p == est.best_params_ else "" for p in res["params"]]
    return pd.DataFrame(frame)


def selection_table_text(table) -> str:
    """:func:`selection_table` as aligned text (ridges to 3 digits, scores to 4 decimals)."""
    formats = {"diag_reg": "{:.3g}".format, "log_loss": "{:.4f}".format}
    score = [c for c in table.columns if c not in ("depth", "diag_reg", "W_std", "b_std", "log_loss", "rank", "chosen")]
    formats.update({c: "{:.4f}".format for c in score})
    return table.to_string(index=False, formatters=formats)
