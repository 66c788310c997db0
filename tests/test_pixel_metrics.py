"""Average precision and F1-max (image level, and pixel level through evaluate_anomaly), checked against
scikit-learn's average_precision_score / precision_recall_curve, an independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
from defectkit.evaluation.ranking import auroc, average_precision, f1_max, ranked_counts

metrics = pytest.importorskip("sklearn.metrics")  # the dev extra has it; the package does not need it


def sklearn_f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 and its threshold from sklearn's PR curve (the highest threshold among equal F1)."""
    precision, recall, thresholds = metrics.precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]  # last point has no threshold
    best = f1.max()
    return float(best), float(thresholds[np.flatnonzero(f1 == best)].max())


@pytest.mark.parametrize("seed", range(6))
def test_ranking_metrics_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    labels = rng.random(n) < rng.uniform(0.05, 0.6)
    labels[0] = True  # at least one positive
    levels = int(rng.integers(2, 12))  # few distinct scores: many ties
    scores = np.round(rng.random(n) * levels) / levels + labels * rng.uniform(0, 0.3)
    assert average_precision(labels, scores) == pytest.approx(metrics.average_precision_score(labels, scores), abs=1e-12)
    f1, threshold = f1_max(labels, scores)
    ref_f1, ref_threshold = sklearn_f1_max(labels, scores)
    assert f1 == pytest.approx(ref_f1, abs=1e-12)
    assert threshold == ref_threshold
    predicted = scores >= threshold
    tp = int((predicted & labels).sum())
    assert f1 == pytest.approx(2 * tp / (predicted.sum() + labels.sum()), abs=1e-12)  # the threshold reaches it
    if not labels.all():
        assert auroc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_f1_max_threshold_is_a_score_from_the_data_and_the_highest_of_equal_f1():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # t=0.9: F1 = 2/3; t=0.7: 2*2/(3+2) = 0.8; t=0.1: 2*2/(4+2) = 2/3.
    assert f1_max(labels, scores) == (pytest.approx(0.8), 0.7)
    # One positive: F1 1.0 at t=0.9, 2/3 at t=0.5.
    assert f1_max(np.array([1, 0, 0]), np.array([0.9, 0.5, 0.5])) == (1.0, 0.9)
    # Two thresholds with the same F1 (2/3): one TP alone (t=0.9) or both TP with 2 FP (t=0.2) -> the highest.
    tied = f1_max(np.array([1, 0, 0, 1]), np.array([0.9, 0.5, 0.5, 0.2]))
    assert tied == (pytest.approx(2 / 3), 0.9)


def test_undefined_without_positives():
    assert f1_max(np.zeros(3, bool), np.array([0.1, 0.2, 0.3])) == (None, None)
    assert average_precision(np.zeros(3, bool), np.array([0.1, 0.2, 0.3])) is None
    assert f1_max(np.zeros(0, bool), np.zeros(0)) == (None, None)


def test_ranked_counts_are_the_predictions_at_each_distinct_threshold():
    rng = np.random.default_rng(3)
    labels = rng.random(200) < 0.3
    scores = rng.integers(0, 7, 200).astype(float)
    thresholds, tps, fps = ranked_counts(labels, scores)
    assert np.all(np.diff(thresholds) < 0)
    for t, tp, fp in zip(thresholds, tps, fps):
        predicted = scores >= t
        assert (tp, fp) == ((predicted & labels).sum(), (predicted & ~labels).sum())
