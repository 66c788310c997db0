"""Rank-based curve metrics in numpy: AUROC (ties count one half) and ROC curves.

Written by hand because scikit-learn is not a dependency; checked against hand-computed cases in
tests/test_evaluation_metrics.py.
"""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with tied values sharing the mean of their ranks.

    >>> average_ranks(np.array([0.1, 0.5, 0.5, 0.9])).tolist()
    [1.0, 2.5, 2.5, 4.0]
    """
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run lengths.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    lengths = np.diff(np.r_[starts, values.size])
    run_ranks = starts + (lengths + 1) / 2.0  # mean of ranks starts+1 .. starts+lengths
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_ranks, lengths)
    return ranks


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counting one half (the Mann-Whitney U statistic). None when a class is absent.

    >>> auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    >>> auroc(np.array([0, 1]), np.array([0.5, 0.5]))
    0.5
    """
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels ({labels.size}) and scores ({scores.size}) differ in length")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = average_ranks(scores)[labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest first, starting at (0, 0).

    >>> fpr, tpr, _ = roc_curve(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.2]))
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 1.0], [0.0, 0.5, 1.0])
    """
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_run = np.r_[scores[1:] != scores[:-1], True]
    tps = np.cumsum(labels)[last_of_run]
    fps = np.cumsum(~labels)[last_of_run]
    n_pos, n_neg = max(int(labels.sum()), 1), max(int((~labels).sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, scores[last_of_run]]


def trapezoid_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [x[0], x_max], the value at ``x_max`` linearly
    interpolated (x ascending), as in the MVTec AD evaluation code.

    >>> trapezoid_up_to(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 0.5)
    0.125
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs.size == 0:
        return 0.0
    if xs[-1] < x_max and inside.sum() < x.size:
        i = int(inside.sum())  # first point beyond x_max
        x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0) if x1 > x0 else y1
        xs, ys = np.r_[xs, x_max], np.r_[ys, y_at]
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
