"""The stages' matplotlib figures (training curves), drawn on plain
``matplotlib.figure.Figure`` objects with the Agg canvas: no pyplot state, no display needed, only
the DejaVu fonts that ship with matplotlib.

The evaluator's report figures and the leaderboard's ROC curves are drawn with Pillow (charts.py),
so that `evaluate` and ``import defectkit.evaluation`` never pay matplotlib's import (about 1 s)."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float = 6.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig
