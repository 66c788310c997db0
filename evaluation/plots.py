"""The evaluator's plots, drawn on plain ``matplotlib.figure.Figure`` objects with the Agg canvas:
no pyplot state, no display needed, only the DejaVu fonts that ship with matplotlib."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float = 6.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def confusion_matrix_figure(
    matrix: np.ndarray, labels: Sequence[str], title: str = "Confusion matrix", normalize: bool = True
) -> Figure:
    """Heat map of a confusion matrix with rows = true class, columns = predicted class.

    With ``normalize`` the colours show each row's fractions (recall per true class) and each cell
    prints its count, so rare classes stay readable.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(labels)
    size = max(4.0, 0.6 * n + 2.0)
    fig = new_figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    rows = matrix.sum(axis=1, keepdims=True)
    shown = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0) if normalize else matrix
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, shown.max()))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of row" if normalize else "count")
    ax.set_xticks(range(n), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    dark = shown[i, j] > 0.5 * (1.0 if normalize else shown.max())
                    ax.text(
                        j,
                        i,
                        f"{int(matrix[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "black",
                    )
    fig.tight_layout()
    return fig


def pr_curves_figure(
    recall: np.ndarray, curves: dict[str, np.ndarray], title: str, mean_label: str = "all classes"
) -> Figure:
    """Precision-recall curves, one line per class plus their mean (bold).

    ``curves`` maps a label (already carrying its AP, e.g. ``"hole (AP50 0.812)"``) to precision
    values at the points ``recall``.
    """
    fig = new_figure(6.5, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    for label, precision in curves.items():
        ax.plot(recall, precision, linewidth=1.2, label=label)
    if len(curves) > 1:
        mean = np.mean(np.stack(list(curves.values())), axis=0)
        ax.plot(recall, mean, linewidth=2.6, color="black", label=mean_label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower left", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no class has ground truth", ha="center", va="center")
    fig.tight_layout()
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
