"""The CLI's figures (matplotlib, headless Agg backend), saved atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import CommandError
from .files import atomic_output

__all__ = ["pyplot", "plot_spectrum", "plot_demo"]


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed); CommandError if it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CommandError("matplotlib is not installed (pip install matplotlib); no figure saved") from None
    return plt


def _save(fig, plt, path) -> str:
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        with atomic_output(path) as partial:
            fig.savefig(partial, dpi=110, format=fmt)
    except ValueError as exc:  # an unknown image format
        raise CommandError(f"{path}: cannot save a figure in this format ({exc})") from None
    finally:
        plt.close(fig)
    return str(path)


def _loss_panel(ax, res) -> None:
    """The predicted training loss of gradient flow (discrete GD at a stable lr is the same curve)."""
    finite = [res.time_to_loss(f * float(res.loss(0.0))) for f in (1e-3, 1e-2)]
    horizon = next((v for v in finite if math.isfinite(v) and v > 0), 1e4)
    t = np.unique(np.concatenate([[0.0], np.geomspace(1e-2, 3 * horizon, 200)]))
    ax.semilogy(t, res.loss(t))
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel(f"t (steps at lr = {res.lr:.3g})")
    ax.set_ylabel("predicted training loss")
    ax.set_title("predicted convergence")


def plot_spectrum(res, path: str, title: str) -> str:
    """Save the spectrum (and, with targets, the target energy by mode and the loss curve)."""
    plt = pyplot()
    panels = 3 if res.y_projection is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.8), squeeze=False)
    axes = axes[0]
    res.plot_spectrum(axes[0])
    axes[0].set_title("NTK eigenvalues")
    if panels == 3:
        res.plot_alignment(axes[1])
        axes[1].set_title("target energy by mode")
        _loss_panel(axes[2], res)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_demo(results, res, path: str, title: str) -> str:
    """The demo's figure: cross-validated accuracy of each model (mean and fold spread, every
    fold shown) next to the NTK's eigenvalue spectrum on the same data.

    ``results``: list of (label, fold scores).
    """
    plt = pyplot()
    fig, (ax, ax_spec) = plt.subplots(1, 2, figsize=(10.5, 4.2), gridspec_kw={"width_ratios": [1.1, 1]})
    labels = [name for name, _ in results]
    means = np.array([np.mean(s) for _, s in results])
    stds = np.array([np.std(s) for _, s in results])
    x = np.arange(len(results))
    colors = ["C0"] + ["C7"] * (len(results) - 1)
    ax.bar(x, means, yerr=stds, capsize=6, color=colors, alpha=0.85)
    for k, (_, scores) in enumerate(results):
        ax.plot(np.full(len(scores), x[k]) + np.linspace(-0.15, 0.15, len(scores)), scores, "k.", ms=4)
    low = max(0.0, float(min(np.min(s) for _, s in results)) - 0.03)
    high = max(float(max(np.max(s) for _, s in results)), float((means + stds).max()))
    ax.set_ylim(low, min(1.0, high) + 0.01)
    for k in range(len(results)):  # the mean, written inside the bar's foot
        ax.text(x[k], low + 0.004, f"{means[k]:.3f}", ha="center", va="bottom", color="white", fontsize=10,
                fontweight="bold")  # fmt: skip
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("5-fold cross-validated accuracy")
    ax.set_title("accuracy (bars: mean +- std over folds; dots: folds)")
    res.plot_spectrum(ax_spec)
    ax_spec.set_title(f"NTK eigenvalues ({res.n} images)")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, path)
