"""MVTec AD anomaly metrics: image AUROC; pixel AUROC, AUPRO up to a false-positive rate limit,
pixel AP and pixel F1-max (``defectkit.evaluation.pixels``, where AUPRO's definition is written out).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from defectkit.evaluation.bootstrap import (
    bootstrap_info,
    percentile_interval,
    pixel_metrics_resampled,
    resample_weights,
    weighted_auroc,
)
from defectkit.evaluation.charts import roc_curves_png
from defectkit.evaluation.pixels import dense_pixel_entries, pixel_metrics
from defectkit.evaluation.ranking import auroc, roc_curve
from defectkit.evaluation.report import Report, add_intervals

from defectkit.core.errors import DefectkitError


def pro_curve(
    gt_masks: Sequence[np.ndarray], score_maps: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The exact (fpr, pro) curve over all distinct scores, from (0, 0) to (1, 1) (at least one
    defect region and one anomaly-free pixel needed).

    Each pixel adds 1/num_ok_pixels to the FPR when it is anomaly-free, or
    1/(region_area * num_regions) to the PRO when it lies in a region, once the threshold drops
    to its score; cumulative sums in descending score order, one point per distinct score.

    >>> gt = [np.array([[0, 1, 1, 0]], bool)]
    >>> fpr, pro = pro_curve(gt, [np.array([[0.1, 0.9, 0.2, 0.3]])])
    >>> fpr.round(2).tolist(), pro.round(2).tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0, 1.0])
    """
    _, curves = pixel_metrics(dense_pixel_entries(gt_masks, score_maps), curves=True)
    if "pro" not in curves:
        raise ValueError("the PRO curve needs at least one defect region and one anomaly-free pixel")
    return curves["pro"]


def aupro(
    gt_masks: Sequence[np.ndarray], score_maps: Sequence[np.ndarray], fpr_limit: float = 0.3
) -> float | None:
    """Area under the PRO curve for FPR in [0, fpr_limit], normalised by ``fpr_limit`` (1 = perfect).
    None when there is no defect region or no anomaly-free pixel.

    >>> gt = [np.array([[0, 1, 1, 0]], bool)]
    >>> aupro(gt, [np.array([[0.1, 0.9, 0.8, 0.3]])])
    1.0
    """
    return pixel_metrics(dense_pixel_entries(gt_masks, score_maps), fpr_limit)[0]["aupro"]


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
    bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    """Image AUROC from per-image labels (1 = defect) and scores; with per-pixel ``gt_masks`` and
    ``score_maps`` (same order and size, an all-false mask for good images) also pixel AUROC,
    AUPRO up to ``fpr_limit``, pixel AP and pixel F1-max over all pixels of all images
    (``defectkit.evaluation.pixels``: one sort of the pixels for the four).

    Returns ``{"image_auroc", "pixel_auroc", "aupro", "pixel_ap", "pixel_f1_max",
    "pixel_f1_threshold", "fpr_limit", "n_images", "n_anomalous", "n_regions"}``; a metric that
    cannot be defined (one class only) is None. ``bootstrap`` (resamples, 0 = off) adds ``ci``:
    95% percentile intervals of each metric over resamples of the images (pixel metrics too: the
    images are resampled, not the pixels; seeded by ``seed``).

    >>> evaluate_anomaly([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])["image_auroc"]
    0.75
    """
    if not 0 < fpr_limit <= 1:
        raise DefectkitError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
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
        "pixel_ap": None,
        "pixel_f1_max": None,
        "pixel_f1_threshold": None,
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
    weights = resample_weights(labels.size, bootstrap, seed) if bootstrap > 0 else None
    if weights is not None:
        out["ci"] = {"image_auroc": percentile_interval(out["image_auroc"], weighted_auroc(labels, scores, weights))}
        out["bootstrap"] = bootstrap_info(bootstrap, seed)
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
        entries = dense_pixel_entries(masks, maps)
        if weights is None:
            pixel, pixel_curves = pixel_metrics(entries, fpr_limit, curves=out_dir is not None)
        else:
            # The exact metrics on a second thread while this one resamples: both are numpy work
            # that releases the GIL (the exact sort, the resampled histograms), and the resampled
            # values need the exact ones only at the end.
            with ThreadPoolExecutor(1) as pool:
                exact = pool.submit(pixel_metrics, entries, fpr_limit, curves=out_dir is not None)
                resampled = pixel_metrics_resampled(entries, weights, fpr_limit, values=lambda: exact.result()[0])
                pixel, pixel_curves = exact.result()
        out.update(pixel)
        out["n_regions"] = int(entries.regions_per_image.sum())
        if weights is not None:
            out["ci"].update({name: percentile_interval(out[name], values) for name, values in resampled.items()})
        if "roc" in pixel_curves:
            curves[f"pixel ROC (AUROC {out['pixel_auroc']:.3f})"] = pixel_curves["roc"]
        if "pro" in pixel_curves:
            curves[f"PRO (AUPRO@{fpr_limit:g} {out['aupro']:.3f})"] = pixel_curves["pro"]
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
            ["pixel AP", metrics["pixel_ap"]],
            ["pixel F1-max", metrics["pixel_f1_max"]],
            ["pixel F1-max threshold (score >=)", metrics["pixel_f1_threshold"]],
        ],
    )
    if "ci" in metrics:
        add_intervals(report, metrics["ci"], metrics["bootstrap"])
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
        "pixels, integrated up to the limit and divided by it (MVTec AD definition). Pixel AP: "
        "step-wise sum of precision x recall gain over all pixels (scikit-learn's "
        "average_precision_score). Pixel F1-max: the best F1 of 'score >= t' over every score t."
    )
    report.add_metrics("anomaly", metrics)
    return report
