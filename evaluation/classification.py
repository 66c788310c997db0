"""Image classification metrics: accuracy, balanced accuracy, per-class precision/recall/F1 with
support, the confusion matrix (rows = true, columns = predicted) and, given probabilities,
one-vs-rest AUROC per class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from defectkit.evaluation.bootstrap import (
    bootstrap_info,
    percentile_interval,
    resample_weights,
    weighted_mean,
    weighted_ratio,
)
from defectkit.evaluation.charts import confusion_matrix_png
from defectkit.evaluation.ranking import auroc
from defectkit.evaluation.report import Report, add_intervals

from defectkit.core.errors import DefectkitError


def _to_indices(labels: Sequence[Any], class_names: list[str], what: str) -> np.ndarray:
    """Class names or integer indices -> int indices into ``class_names``."""
    index = {name: i for i, name in enumerate(class_names)}
    out = np.empty(len(labels), dtype=np.int64)
    for i, label in enumerate(labels):
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            if not 0 <= int(label) < len(class_names):
                raise DefectkitError(
                    f"{what}[{i}] = {int(label)} is not a class index (0..{len(class_names) - 1})"
                )
            out[i] = int(label)
        elif str(label) in index:
            out[i] = index[str(label)]
        else:
            raise DefectkitError(
                f"{what}[{i}] = {label!r} is not one of the classes {', '.join(class_names)}"
            )
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class.

    >>> confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 2).tolist()
    [[1, 1], [0, 1]]
    """
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def evaluate_classification(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    class_names: Sequence[str],
    *,
    probs: Any = None,
    out_dir: str | Path | None = None,
    overwrite: bool = True,
    title: str | None = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    """Score predicted labels (names or indices into ``class_names``) against the true ones.

    Returns ``{"accuracy", "balanced_accuracy", "per_class": {name: {"precision", "recall", "f1",
    "support", "auroc"?}}, "confusion_matrix": [[...]], "class_names", "n_images"}``. Precision of a
    never-predicted class and recall of an absent class are None (not 0), and balanced accuracy
    averages recall over the classes that occur. ``probs`` (N x K) adds one-vs-rest AUROC per class.
    ``bootstrap`` (resamples, 0 = off) adds ``ci``: 95% percentile intervals of accuracy and
    balanced accuracy over resamples of the images (seeded by ``seed``).

    >>> m = evaluate_classification(["good", "hole", "hole"], ["good", "good", "hole"], ["good", "hole"])
    >>> m["accuracy"], m["balanced_accuracy"], m["per_class"]["good"]["precision"]
    (0.6666666666666666, 0.75, 0.5)
    """
    class_names = [str(c) for c in class_names]
    if not class_names:
        raise DefectkitError("class_names is empty")
    if len(set(class_names)) != len(class_names):
        raise DefectkitError(f"class_names has duplicates: {class_names}")
    if len(y_true) != len(y_pred):
        raise DefectkitError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    t = _to_indices(list(y_true), class_names, "y_true")
    p = _to_indices(list(y_pred), class_names, "y_pred")
    k = len(class_names)
    matrix = confusion_matrix(t, p, k)
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    per_class: dict[str, dict] = {}
    recalls = []
    for i, name in enumerate(class_names):
        precision = float(tp[i] / predicted[i]) if predicted[i] else None
        recall = float(tp[i] / support[i]) if support[i] else None
        if recall is not None:
            recalls.append(recall)
        if precision is None or recall is None:
            # Only one side is undefined, so tp is 0: a present class never predicted, or a
            # predicted class that never occurs. Either way F1 is 0; both undefined: no F1.
            f1 = None if (precision is None and recall is None) else 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support[i])}
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(t), k):
            raise DefectkitError(f"probs must have shape ({len(t)}, {k}), got {probs.shape}")
        for i, name in enumerate(class_names):
            per_class[name]["auroc"] = auroc(t == i, probs[:, i])
    n = len(t)
    out = {
        "accuracy": float(tp.sum() / n) if n else None,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "class_names": class_names,
        "n_images": n,
    }
    if bootstrap > 0:
        weights = resample_weights(n, bootstrap, seed)
        correct = (t == p).astype(np.float64)
        one_hot = np.eye(k)[t]  # (N, K): the true class of each image
        per_class_recall = weighted_ratio(one_hot * correct[:, None], one_hot, weights)  # (B, K)
        with np.errstate(invalid="ignore"):
            present = np.isfinite(per_class_recall)
            balanced = np.where(
                present.any(axis=1), np.nansum(per_class_recall, axis=1) / np.maximum(present.sum(axis=1), 1), np.nan
            )
        out["ci"] = {
            "accuracy": percentile_interval(out["accuracy"], weighted_mean(correct, weights)),
            "balanced_accuracy": percentile_interval(out["balanced_accuracy"], balanced),
        }
        out["bootstrap"] = bootstrap_info(bootstrap, seed)
    if out_dir is not None:
        classification_report(out, title).write(out_dir, overwrite=overwrite)
    return out


def classification_report(metrics: dict, title: str | None = None):
    report = Report(title or "Classification evaluation")
    report.add_text(f"{metrics['n_images']} images, {len(metrics['class_names'])} classes.")
    report.add_table(
        ["metric", "value"],
        [["accuracy", metrics["accuracy"]], ["balanced accuracy", metrics["balanced_accuracy"]]],
    )
    if "ci" in metrics:
        add_intervals(report, metrics["ci"], metrics["bootstrap"])
    has_auroc = any("auroc" in v for v in metrics["per_class"].values())
    headers = ["class", "precision", "recall", "F1", "support"] + (
        ["AUROC (one-vs-rest)"] if has_auroc else []
    )
    rows = [
        [name, v["precision"], v["recall"], v["f1"], v["support"]] + ([v.get("auroc")] if has_auroc else [])
        for name, v in metrics["per_class"].items()
    ]
    report.add_table(headers, rows)
    report.add_image(
        "confusion_matrix.png",
        confusion_matrix_png(
            np.asarray(metrics["confusion_matrix"]), metrics["class_names"], "Confusion matrix"
        ),
        "rows: true class, columns: predicted class; colour = fraction of the row",
    )
    report.add_metrics("classification", metrics)
    return report
