"""The stages' matplotlib figures (training curves, the leaderboard's ROC curves), drawn on plain
``matplotlib.figure.Figure`` objects with the Agg canvas: no pyplot state, no display needed, only
the DejaVu fonts that ship with matplotlib.

The evaluator's own report figures are drawn with Pillow (charts.py), so that `evaluate` and
``import defectkit.evaluation`` never pay matplotlib's import (about 1 s)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float = 6.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def roc_figure(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    fpr_limit: float | None = None,
    ylabel: str = "true positive rate",
) -> Figure:
    """ROC-style curves: ``curves`` maps a label to (x, y) arrays (FPR vs TPR, or FPR vs PRO);
    ``ylabel`` names the y axis (say "per-region overlap" too when a PRO curve is drawn)."""
    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for label, (x, y) in curves.items():
        ax.plot(x, y, linewidth=1.5, label=label)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    if fpr_limit is not None:
        ax.axvline(fpr_limit, linestyle="--", color="grey", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
