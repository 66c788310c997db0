"""Rank-based curve metrics in numpy: AUROC (ties count one half), ROC curves, average precision and
F1-max, all from one descending sort of the scores (``ranked_counts``).

Written by hand because scikit-learn is not a dependency; checked against hand-computed cases in
tests/test_evaluation_metrics.py and against scikit-learn (a dev dependency) in
tests/test_pixel_metrics.py.
"""

from __future__ import annotations

import numpy as np


def descending_runs(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, run_ends): an order that sorts ``scores`` highest first, and the positions (in that
    order) of the last entry of each run of equal scores. The one sort every curve here is read
    from; callers that need several curves of the same scores sort once and pass these on. Ties
    may come in any order: every curve is read at run ends, where sums over a run are complete.
    (An unstable sort: twice as fast as a stable one on millions of pixels.)

    >>> order, ends = descending_runs(np.array([0.2, 0.9, 0.5, 0.1]))
    >>> order.tolist(), ends.tolist()
    ([1, 2, 0, 3], [0, 1, 2, 3])
    >>> descending_runs(np.array([0.2, 0.9, 0.2]))[1].tolist()
    [0, 2]
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-scores)
    sorted_scores = scores[order]
    return order, np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True] if scores.size else [])


def cumulative_at_runs(values: np.ndarray, order: np.ndarray, run_ends: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over the entries scored at or above each distinct score (``descending_runs``).

    >>> order, ends = descending_runs(np.array([0.2, 0.9, 0.2, 0.1]))
    >>> cumulative_at_runs(np.array([0, 1, 1, 0]), order, ends).tolist()  # at 0.9, 0.2, 0.1
    [1, 2, 2]
    """
    values = np.asarray(values).ravel()
    dtype = np.int64 if values.dtype.kind in "biu" else np.float64  # exact integer counts stay integers
    return np.cumsum(values[order], dtype=dtype)[run_ends]


def weighted_ranked_counts(
    scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ranked_counts`` for entries that each stand for several items with one score: entry i
    holds ``positives[i]`` positive and ``negatives[i]`` negative items scored ``scores[i]`` (a
    pixel histogram, or the pixels one predicted instance wins). Scores may repeat.

    >>> t, tps, fps = weighted_ranked_counts(np.array([0.5, 0.9, 0.5]), np.array([3, 1, 0]), np.array([1, 0, 4]))
    >>> t.tolist(), tps.tolist(), fps.tolist()
    ([0.9, 0.5], [1, 4], [0, 5])
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not (scores.size == np.size(positives) == np.size(negatives)):
        raise ValueError(
            f"scores ({scores.size}), positives ({np.size(positives)}) and negatives ({np.size(negatives)}) differ in length"
        )
    order, run_ends = descending_runs(scores)
    tps = cumulative_at_runs(positives, order, run_ends)
    fps = cumulative_at_runs(negatives, order, run_ends)
    return scores[order][run_ends], tps, fps


def ranked_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, tps, fps): every distinct score, highest first, and the cumulative counts of
    positives and negatives scored at or above it (the predictions of the rule ``score >= t``).
    One sort; the other functions here read their curves from these three arrays.

    >>> t, tps, fps = ranked_counts(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.2, 0.1]))
    >>> t.tolist(), tps.tolist(), fps.tolist()
    ([0.9, 0.2, 0.1], [1, 2, 2], [0, 1, 2])
    """
    labels = np.asarray(labels).ravel().astype(bool)
    if labels.size != np.size(scores):
        raise ValueError(f"labels ({labels.size}) and scores ({np.size(scores)}) differ in length")
    return weighted_ranked_counts(scores, labels, ~labels)


def auroc_from_counts(tps: np.ndarray, fps: np.ndarray) -> float | None:
    """AUROC from ``ranked_counts``' cumulative counts: the trapezoids under the ROC steps, summed in
    exact integer arithmetic (a tie run's trapezoid is the one-half the Mann-Whitney statistic
    gives ties). None when a class is absent.

    >>> auroc_from_counts(np.array([1, 1, 2]), np.array([0, 1, 2]))
    0.625
    """
    tps = np.asarray(tps, dtype=np.int64)
    fps = np.asarray(fps, dtype=np.int64)
    if tps.size == 0 or tps[-1] == 0 or fps[-1] == 0:
        return None
    tp_prev = np.r_[0, tps[:-1]]
    twice_area = int(np.sum(np.diff(fps, prepend=0) * (tps + tp_prev)))
    return twice_area / (2.0 * float(tps[-1]) * float(fps[-1]))


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counting one half (the Mann-Whitney U statistic). None when a class is absent.

    >>> auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    >>> auroc(np.array([0, 1]), np.array([0.5, 0.5]))
    0.5
    """
    _, tps, fps = ranked_counts(labels, scores)
    return auroc_from_counts(tps, fps)


def roc_from_counts(
    thresholds: np.ndarray, tps: np.ndarray, fps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) from ``ranked_counts``, starting at (0, 0) with threshold inf."""
    n_pos = max(int(tps[-1]), 1) if tps.size else 1
    n_neg = max(int(fps[-1]), 1) if fps.size else 1
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, thresholds]


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest first, starting at (0, 0).

    >>> fpr, tpr, _ = roc_curve(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.2]))
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 1.0], [0.0, 0.5, 1.0])
    """
    return roc_from_counts(*ranked_counts(labels, scores))


def average_precision_from_counts(tps: np.ndarray, fps: np.ndarray) -> float | None:
    """Average precision from ``ranked_counts``: sum over thresholds of (recall gain) x precision,
    the step-wise sum scikit-learn's ``average_precision_score`` computes (no interpolation).
    None when there is no positive.

    >>> average_precision_from_counts(np.array([1, 1, 2]), np.array([0, 1, 2]))
    0.75
    """
    tps = np.asarray(tps, dtype=np.float64)
    fps = np.asarray(fps, dtype=np.float64)
    if tps.size == 0 or tps[-1] == 0:
        return None
    recall_gain = np.diff(tps, prepend=0.0) / tps[-1]
    return float(np.sum(recall_gain * tps / (tps + fps)))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision of ``scores`` for ``labels`` (1 = positive), as scikit-learn's
    ``average_precision_score``; None when there is no positive.

    >>> average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.8333333333333333
    """
    _, tps, fps = ranked_counts(labels, scores)
    return average_precision_from_counts(tps, fps)


def f1_max_from_counts(
    thresholds: np.ndarray, tps: np.ndarray, fps: np.ndarray
) -> tuple[float | None, float | None]:
    """``f1_max`` from ``ranked_counts``' arrays (no second sort)."""
    tps = np.asarray(tps, dtype=np.float64)
    fps = np.asarray(fps, dtype=np.float64)
    if tps.size == 0 or tps[-1] == 0:
        return None, None
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted positives + actual positives).
    f1 = 2.0 * tps / (tps + fps + tps[-1])
    best = int(np.argmax(f1))  # the first maximum in descending order: the highest such threshold
    return float(f1[best]), float(thresholds[best])


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float | None, float | None]:
    """(best F1, its threshold) over the rules ``score >= t`` for every score ``t`` in the data.

    The threshold is a score value from the data; when several thresholds reach the same best F1,
    the highest one is returned (the fewest positive predictions). ``(None, None)`` when there is
    no positive (F1 is undefined). One sort and cumulative sums.

    >>> f1_max(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.6, 0.1]))
    (1.0, 0.6)
    >>> f1_max(np.array([1, 0, 1]), np.array([0.5, 0.5, 0.5]))  # one threshold: all predicted positive
    (0.8, 0.5)
    >>> f1_max(np.array([0, 0]), np.array([0.3, 0.7]))
    (None, None)
    """
    return f1_max_from_counts(*ranked_counts(labels, scores))


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
