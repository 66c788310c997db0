"""MVTec AD anomaly metrics: image AUROC, pixel AUROC and AUPRO up to a false-positive rate limit.

AUPRO follows the MVTec AD evaluation code (Bergmann et al., "The MVTec Anomaly Detection
Dataset", IJCV 2021): every ground-truth connected component (8-connectivity) is a region; at a
threshold, PRO is the mean over all regions of the fraction of the region's pixels scored at or
above it, and FPR is the fraction of anomaly-free pixels (of every image) scored at or above it.
The exact PRO(FPR) curve is integrated from 0 to ``fpr_limit`` (trapezoids, the end point
interpolated) and divided by ``fpr_limit``, so a perfect model scores 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from defectkit.evaluation.charts import roc_curves_png
from defectkit.evaluation.ranking import auroc, roc_curve, trapezoid_up_to
from defectkit.evaluation.report import Report

from defectkit.core.errors import DefectkitError


def pro_curve(
    gt_masks: Sequence[np.ndarray], score_maps: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The exact (fpr, pro) curve over all distinct scores, from (0, 0) to (1, 1).

    Each pixel adds 1/num_ok_pixels to the FPR when it is anomaly-free, or
    1/(region_area * num_regions) to the PRO when it lies in a region, once the threshold drops
    to its score; cumulative sums in descending score order, one point per distinct score.

    >>> gt = [np.array([[0, 1, 1, 0]], bool)]
    >>> fpr, pro = pro_curve(gt, [np.array([[0.1, 0.9, 0.2, 0.3]])])
    >>> fpr.round(2).tolist(), pro.round(2).tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0, 1.0])
    """
    n_ok = 0
    n_regions = 0
    fp_changes, pro_changes, scores = [], [], []
    for gt, smap in zip(gt_masks, score_maps):
        gt = np.asarray(gt).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(gt, connectivity=8)
        ok = labels == 0
        n_ok += int(ok.sum())
        n_regions += n - 1
        area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
        inv_area = np.where(np.arange(n) > 0, 1.0 / np.maximum(area, 1.0), 0.0)
        pro_changes.append(inv_area[labels].ravel())
        fp_changes.append(ok.ravel())
        scores.append(np.asarray(smap, dtype=np.float64).ravel())
    if n_ok == 0 or n_regions == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]) if n_regions else np.array([0.0, 0.0])
    scores_flat = np.concatenate(scores)
    order = np.argsort(-scores_flat, kind="mergesort")
    scores_sorted = scores_flat[order]
    fpr = np.cumsum(np.concatenate(fp_changes)[order], dtype=np.float64) / n_ok
    pro = np.cumsum(np.concatenate(pro_changes)[order]) / n_regions
    keep = np.r_[scores_sorted[1:] != scores_sorted[:-1], True]  # last pixel of each score
    fpr = np.clip(fpr[keep], 0.0, 1.0)
    pro = np.clip(pro[keep], 0.0, 1.0)
    return np.r_[0.0, fpr, 1.0], np.r_[0.0, pro, 1.0]


def aupro(
    gt_masks: Sequence[np.ndarray], score_maps: Sequence[np.ndarray], fpr_limit: float = 0.3
) -> float | None:
    """Area under the PRO curve for FPR in [0, fpr_limit], normalised by ``fpr_limit`` (1 = perfect).
    None when there is no defect region or no anomaly-free pixel.

    >>> gt = [np.array([[0, 1, 1, 0]], bool)]
    >>> aupro(gt, [np.array([[0.1, 0.9, 0.8, 0.3]])])
    1.0
    """
    return aupro_and_curve(gt_masks, score_maps, fpr_limit)[0]


def aupro_and_curve(
    gt_masks: Sequence[np.ndarray], score_maps: Sequence[np.ndarray], fpr_limit: float = 0.3
) -> tuple[float | None, tuple[np.ndarray, np.ndarray] | None]:
    """``aupro`` and the (fpr, pro) curve it integrates (None, None when undefined), so a report
    draws the curve without sorting every pixel a second time."""
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    has_region = any(np.asarray(g).any() for g in gt_masks)
    has_ok = any((~np.asarray(g).astype(bool)).any() for g in gt_masks)
    if not (has_region and has_ok):
        return None, None
    fpr, pro = pro_curve(gt_masks, score_maps)
    return trapezoid_up_to(fpr, pro, fpr_limit) / fpr_limit, (fpr, pro)


def _stack(items: Any, name: str, dtype) -> list[np.ndarray]:
    arrays = [np.asarray(a) for a in items]
    for i, a in enumerate(arrays):
        if a.ndim != 2:
            raise DefectkitError(f"{name}[{i}]: expected a HxW array, got shape {a.shape}")
    return [a.astype(dtype, copy=False) for a in arrays]


def evaluate_anomaly(
    image_labels: Sequence[int] | np.ndarray,
    image_scores: Sequence[float] | np.ndarray,
    gt_masks: Sequence[np.ndarray] | None = None,
    score_maps: Sequence[np.ndarray] | None = None,
    *,
    fpr_limit: float = 0.3,
    out_dir: str | Path | None = None,
    overwrite: bool = True,
    title: str | None = None,
) -> dict:
    """Image AUROC from per-image labels (1 = defect) and scores; with per-pixel ``gt_masks`` and
    ``score_maps`` (same order and size, an all-false mask for good images) also pixel AUROC and
    AUPRO up to ``fpr_limit``.

    Returns ``{"image_auroc", "pixel_auroc", "aupro", "fpr_limit", "n_images", "n_anomalous",
    "n_regions"}``; a metric that cannot be defined (one class only) is None.

    >>> evaluate_anomaly([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])["image_auroc"]
    0.75
    """
    labels = np.asarray(image_labels).ravel()
    scores = np.asarray(image_scores, dtype=np.float64).ravel()
    if labels.size != scores.size:
        raise DefectkitError(
            f"image_labels ({labels.size}) and image_scores ({scores.size}) differ in length"
        )
    if labels.size and not np.isin(labels, [0, 1]).all():
        raise DefectkitError(
            f"image_labels must be 0 (good) or 1 (defect); found {sorted(set(labels.tolist()))[:5]}"
        )
    if not np.isfinite(scores).all():
        raise DefectkitError("image_scores contain NaN or inf")
    out: dict[str, Any] = {
        "image_auroc": auroc(labels, scores),
        "pixel_auroc": None,
        "aupro": None,
        "fpr_limit": fpr_limit,
        "n_images": int(labels.size),
        "n_anomalous": int(labels.sum()),
        "n_regions": None,
    }
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if labels.size and out["image_auroc"] is not None:
        fpr, tpr, _ = roc_curve(labels, scores)
        curves[f"image ROC (AUROC {out['image_auroc']:.3f})"] = (fpr, tpr)
    if (gt_masks is None) != (score_maps is None):
        raise DefectkitError("pass both gt_masks and score_maps for pixel metrics, or neither")
    if gt_masks is not None:
        masks = _stack(gt_masks, "gt_masks", bool)
        maps = _stack(score_maps, "score_maps", np.float64)
        if len(masks) != len(maps):
            raise DefectkitError(f"{len(masks)} gt_masks but {len(maps)} score_maps")
        for i, (m, s) in enumerate(zip(masks, maps)):
            if m.shape != s.shape:
                raise DefectkitError(
                    f"image {i}: mask is {m.shape[0]}x{m.shape[1]} but score map is {s.shape[0]}x{s.shape[1]}"
                )
            if not np.isfinite(s).all():
                raise DefectkitError(f"score_maps[{i}] contains NaN or inf")
        flat_gt = np.concatenate([m.ravel() for m in masks]) if masks else np.zeros(0, bool)
        flat_scores = np.concatenate([s.ravel() for s in maps]) if maps else np.zeros(0)
        out["pixel_auroc"] = auroc(flat_gt, flat_scores)
        out["aupro"], pro_points = aupro_and_curve(masks, maps, fpr_limit)
        out["n_regions"] = int(
            sum(cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] - 1 for m in masks)
        )
        if out_dir is not None and out["pixel_auroc"] is not None:
            fpr, tpr, _ = roc_curve(flat_gt, flat_scores)
            curves[f"pixel ROC (AUROC {out['pixel_auroc']:.3f})"] = (fpr, tpr)
            if pro_points is not None:
                curves[f"PRO (AUPRO@{fpr_limit:g} {out['aupro']:.3f})"] = pro_points
    if out_dir is not None:
        anomaly_report(out, curves, title).write(out_dir, overwrite=overwrite)
    return out


def anomaly_report(metrics: dict, curves: dict, title: str | None = None):
    report = Report(title or "Anomaly detection evaluation")
    report.add_text(
        f"{metrics['n_images']} images, {metrics['n_anomalous']} with a defect"
        + (f", {metrics['n_regions']} defect regions." if metrics["n_regions"] is not None else ".")
    )
    report.add_table(
        ["metric", "value"],
        [
            ["image AUROC", metrics["image_auroc"]],
            ["pixel AUROC", metrics["pixel_auroc"]],
            [f"AUPRO (FPR ≤ {metrics['fpr_limit']:g}, normalised)", metrics["aupro"]],
        ],
    )
    if curves:
        report.add_image(
            "roc_curves.png",
            roc_curves_png(
                curves,
                "ROC and PRO curves",
                metrics["fpr_limit"],
                ylabel="TPR (ROC) / per-region overlap (PRO)"
                if any(label.startswith("PRO") for label in curves)
                else "true positive rate",
            ),
            "image/pixel ROC and the per-region-overlap curve; dashed: the AUPRO FPR limit",
        )
    report.add_text(
        "AUROC is rank-based (ties count one half). AUPRO: mean overlap with each ground-truth "
        "connected component (8-connectivity) against the false-positive rate of anomaly-free "
        "pixels, integrated up to the limit and divided by it (MVTec AD definition)."
    )
    report.add_metrics("anomaly", metrics)
    return report
