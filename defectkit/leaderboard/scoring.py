"""The common column: one image-level "defective" score per test image from every approach, ranked
by image AUROC (the shared evaluator's) and by the accuracy at a threshold chosen on validation.

Small typed numpy functions; the per-approach scores come from the rows (max box score, max mask
score, 1 - p(good)).
"""

from __future__ import annotations

import numpy as np

from defectkit.evaluation import evaluate_anomaly
from defectkit.evaluation.bootstrap import percentile_interval, resample_weights, weighted_mean


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (``score >= t`` means defective) with the best accuracy on ``labels``.

    Candidates are the midpoints between consecutive distinct scores, the lowest score (every
    image called defective) and one step above the highest (every image called good), so the
    threshold stays on the scores' own scale (never below the lowest score); ties go to the
    midpoint of the best run (the widest margin on both sides). With no images it returns 0.5.

    >>> choose_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.6, 0.9]))
    0.4
    >>> choose_threshold(np.array([1, 1]), np.array([0.3, 0.5]))  # all defective: the lowest score
    0.3
    >>> choose_threshold(np.array([0, 1, 1]), np.array([0.0, 0.0, 0.0]))  # no spread: all defective
    0.0
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        return 0.5
    distinct = np.unique(scores)
    step = max(float(np.ptp(distinct)), 1.0) * 0.1 if distinct.size > 1 else 0.1
    candidates = np.r_[distinct[0], (distinct[1:] + distinct[:-1]) / 2, distinct[-1] + step]
    accuracies = np.array([accuracy_at(labels, scores, t) for t in candidates])
    best = np.flatnonzero(accuracies == accuracies.max())
    # The middle of the best candidates: on a tie the threshold sits in the widest gap between classes.
    return float(candidates[best[len(best) // 2]])  # not rounded: the lowest score must stay >= itself


def accuracy_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float | None:
    """Fraction of images whose ``score >= threshold`` decision matches ``labels`` (1 = defective).

    >>> accuracy_at(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.3]), 0.5)
    0.6666666666666666
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.size == 0:
        return None
    return float(np.mean((scores >= threshold) == labels))


def image_level(
    val_labels: np.ndarray, val_scores: np.ndarray, test_labels: np.ndarray, test_scores: np.ndarray
) -> dict:
    """The common column of one approach: test image AUROC (``evaluation.evaluate_anomaly``), the
    threshold chosen on val, and the val / test accuracy at it.

    >>> m = image_level([0, 1], [0.1, 0.8], [0, 0, 1], [0.2, 0.5, 0.9])
    >>> m["test_auroc"], m["threshold"], round(m["test_accuracy"], 3)
    (1.0, 0.45, 0.667)
    """
    threshold = choose_threshold(np.asarray(val_labels), np.asarray(val_scores))
    anomaly = evaluate_anomaly(np.asarray(test_labels, int), np.asarray(test_scores, np.float64))
    return {
        "test_auroc": anomaly["image_auroc"],
        "threshold": threshold,
        "val_call": val_call(val_scores, threshold),
        "val_accuracy": accuracy_at(val_labels, val_scores, threshold),
        "test_accuracy": accuracy_at(test_labels, test_scores, threshold),
        "n_test": int(np.size(test_labels)),
        "n_test_defective": int(np.sum(test_labels)),
    }


def image_level_intervals(
    test_labels: np.ndarray, test_scores: np.ndarray, threshold: float, bootstrap: int, seed: int = 0
) -> dict[str, dict]:
    """95% bootstrap intervals of the common column on the test split, from the evaluator's
    bootstrap: image AUROC (``evaluate_anomaly``'s) and the accuracy at the val ``threshold``, both on
    the same ``bootstrap`` resamples of the test images (seeded by ``seed``).

    >>> ci = image_level_intervals([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.3, bootstrap=200)
    >>> ci["test_auroc"]["value"], ci["test_auroc"]["ci_low"] <= 0.75 <= ci["test_auroc"]["ci_high"]
    (0.75, True)
    >>> ci["test_accuracy"]["value"]
    0.75
    """
    labels = np.asarray(test_labels, int).ravel()
    scores = np.asarray(test_scores, np.float64).ravel()
    auroc = evaluate_anomaly(labels, scores, bootstrap=bootstrap, seed=seed)["ci"]["image_auroc"]
    correct = ((scores >= threshold) == labels.astype(bool)).astype(np.float64)
    weights = resample_weights(labels.size, bootstrap, seed)
    accuracy = percentile_interval(accuracy_at(labels, scores, threshold), weighted_mean(correct, weights))
    return {"test_auroc": auroc, "test_accuracy": accuracy}


def val_call(scores: np.ndarray, threshold: float) -> str:
    """What the threshold does on the images it was chosen on: ``"split"`` when it puts some on each
    side, else ``"all defective"`` or ``"all good"`` (no useful threshold: the scores did not
    separate the classes, so the call is the majority class).

    >>> val_call([0.1, 0.9], 0.5), val_call([0.0, 0.0], 0.0), val_call([0.2, 0.3], 0.4)
    ('split', 'all defective', 'all good')
    """
    called = np.asarray(scores, dtype=np.float64).ravel() >= threshold
    if called.size and called.all():
        return "all defective"
    return "split" if called.any() else "all good"


def majority_accuracy(labels: np.ndarray) -> float | None:
    """The accuracy of calling every image by the larger class: the bar an image-level call must beat.

    >>> majority_accuracy([1, 1, 0, 1])
    0.75
    """
    labels = np.asarray(labels).astype(bool).ravel()
    if labels.size == 0:
        return None
    return float(max(labels.mean(), 1 - labels.mean()))


def max_score_per_image(image_ids: list[int], results: list[dict]) -> list[float]:
    """The image-level score of a box or mask predictor: its highest result score per image (0 when
    it found nothing).

    >>> max_score_per_image([1, 2, 3], [{"image_id": 1, "score": 0.2}, {"image_id": 1, "score": 0.7},
    ...                                 {"image_id": 3, "score": 0.1}])
    [0.7, 0.0, 0.1]
    """
    best: dict[int, float] = {}
    for r in results:
        i = int(r["image_id"])
        best[i] = max(best.get(i, 0.0), float(r["score"]))
    return [best.get(int(i), 0.0) for i in image_ids]


def rank_errors(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """How wrong each image's score is, comparable across approaches whose scores are not: the
    fraction of the other class ranked on the wrong side of it (0 = perfectly separated).

    >>> rank_errors(np.array([0, 0, 1]), np.array([0.1, 0.9, 0.5])).tolist()
    [0.0, 1.0, 0.5]
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos, neg = scores[labels], scores[~labels]
    out = np.zeros(scores.size)
    for i, (y, s) in enumerate(zip(labels, scores)):
        # A defective image is wrong against good ones scored above it; a good one against defective
        # ones scored below it; ties count one half (as in AUROC).
        other = neg if y else pos
        if other.size:
            beyond = (other > s) if y else (other < s)
            out[i] = (beyond.sum() + 0.5 * (other == s).sum()) / other.size
    return out
