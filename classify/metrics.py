"""What the classifier's predictions score: the ``defective`` score (1 - p(good)) and the shared
evaluator's classification and good-vs-defect ranking metrics. ``predict``, ``val`` and ``train``
all score through these, so a number means the same wherever it is reported."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from defectkit.core.layout import GOOD
from defectkit.evaluation import evaluate_anomaly, evaluate_classification


def defective_scores(probs: torch.Tensor, classes: Sequence[str]) -> list[float | None]:
    """``1 - p(good)`` per image (None for every image when the model has no ``good`` class).

    >>> [round(s, 3) for s in defective_scores(torch.tensor([[0.2, 0.8], [0.9, 0.1]]), ["good", "hole"])]
    [0.8, 0.1]
    """
    if GOOD not in classes:
        return [None] * len(probs)
    return (1.0 - probs[:, list(classes).index(GOOD)]).tolist()


def classification_metrics(labels, preds, classes, probs=None, out_dir=None, title=None) -> dict:
    """Accuracy, balanced accuracy and per-class figures from the shared evaluator (recall is None
    for a class absent from ``labels``); with ``out_dir`` its report is written there."""
    return evaluate_classification(
        [int(v) for v in labels], [int(v) for v in preds], list(classes),
        probs=None if probs is None else probs.tolist(), out_dir=out_dir, title=title,
    )  # fmt: skip


def score(
    probs: torch.Tensor, labels: Sequence[int], classes: Sequence[str], out_dir: str | Path | None
) -> dict:
    """The shared evaluator on predictions (arg-max of ``probs``) against ``labels``."""
    return classification_metrics(labels, probs.argmax(1), classes, probs=probs, out_dir=out_dir)


def defective_ranking(labels: Sequence[int], probs: torch.Tensor, classes: Sequence[str]) -> dict:
    """Image AUROC of the ``defective`` score (1 - p(good)) for good-vs-defect, by the shared
    evaluator: how well the classifier ranks as an anomaly detector."""
    good = list(classes).index(GOOD)
    return evaluate_anomaly([int(label != good) for label in labels], defective_scores(probs, classes))
