"""Pixel-level ranking metrics of score maps: pixel AUROC, AUPRO, pixel AP and pixel F1-max, from one sort.

Pixels are held as *entries*: each entry stands for some defect pixels (``positives``) and some
anomaly-free pixels (``negatives``) of one image that share one score, plus their ``region_mass``:
the sum over the entry's defect pixels of 1 / (area of the ground-truth region holding the pixel),
which is what the per-region overlap (PRO) adds up. A dense score map gives one entry per pixel
(``dense_pixel_entries``); a map made of predicted instance masks gives one entry per instance
(``defectkit.evaluation.masks``), so its metrics cost nothing per pixel. Entries are stored image
after image (``entries_per_image``), which is what the bootstrap resamples.

AUPRO follows the MVTec AD evaluation code (Bergmann et al., "The MVTec Anomaly Detection
Dataset", IJCV 2021): every ground-truth connected component (8-connectivity) is a region; at a
threshold, PRO is the mean over all regions of the fraction of the region's pixels scored at or
above it, and FPR is the fraction of anomaly-free pixels (of every image) scored at or above it.
The exact PRO(FPR) curve is integrated from 0 to ``fpr_limit`` (trapezoids, the end point
interpolated) and divided by ``fpr_limit``, so a perfect model scores 1.

Written by hand because scikit-learn is not a dependency (and sorting the pixels once for all four
metrics matters at 1024x1024); AP and F1-max are checked against scikit-learn's
``average_precision_score`` / ``precision_recall_curve`` in tests/test_pixel_metrics.py.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from defectkit.evaluation.ranking import (
    auroc_from_counts,
    average_precision_from_counts,
    cumulative_at_runs,
    descending_runs,
    f1_max_from_counts,
    roc_from_counts,
    trapezoid_up_to,
)

PIXEL_METRICS = ("pixel_auroc", "aupro", "pixel_ap", "pixel_f1_max")


@dataclass
class PixelEntries:
    """Pixels grouped into entries of one score (see the module docstring), image after image."""

    scores: np.ndarray  # (E,) float64
    positives: np.ndarray  # (E,) defect pixels of the entry
    negatives: np.ndarray  # (E,) anomaly-free pixels of the entry
    region_mass: np.ndarray  # (E,) sum of 1/region area over the entry's defect pixels
    entries_per_image: np.ndarray  # (N,) how many consecutive entries belong to each image
    regions_per_image: np.ndarray  # (N,) ground-truth connected components per image
    _runs: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _sums: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # the exact metrics and the bootstrap may ask for the sort at once, from two threads: one sorts
    _sorting: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        """``descending_runs`` of the scores, sorted once and kept (metrics and bootstrap share it)."""
        with self._sorting:
            if self._runs is None:
                self._runs = descending_runs(self.scores)
        return self._runs

    def cumulative(self, name: str) -> np.ndarray:
        """``cumulative_at_runs`` of the field ``name`` (positives, negatives, region_mass), kept."""
        if name not in self._sums:
            self._sums[name] = cumulative_at_runs(getattr(self, name), *self.runs())
        return self._sums[name]

    @classmethod
    def from_images(cls, parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]) -> PixelEntries:
        """Entries of several images from each image's (scores, positives, negatives, region_mass,
        n_regions), in image order.

        >>> one = (np.array([0.9, 0.0]), np.array([2, 0]), np.array([1, 5]), np.array([1.0, 0.0]), 1)
        >>> PixelEntries.from_images([one, one]).entries_per_image.tolist()
        [2, 2]
        """

        def joined(k: int, dtype) -> np.ndarray:
            return np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, dtype)

        return cls(
            scores=joined(0, np.float64).astype(np.float64, copy=False),
            positives=joined(1, np.int64),
            negatives=joined(2, np.int64),
            region_mass=joined(3, np.float64),
            entries_per_image=np.asarray([len(p[0]) for p in parts], dtype=np.int64),
            regions_per_image=np.asarray([p[4] for p in parts], dtype=np.int64),
        )

    @property
    def image_of_entry(self) -> np.ndarray:
        """(E,) the image index of every entry."""
        return np.repeat(np.arange(self.entries_per_image.size), self.entries_per_image)


def region_labels(gt: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(number of regions, label map, 1/area per label with 0 for the background) of a bool mask,
    regions being 8-connected components.

    >>> n, labels, inv_area = region_labels(np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]], bool))
    >>> n, labels.tolist(), inv_area.tolist()
    (2, [[1, 0, 0], [0, 0, 2], [0, 0, 2]], [0.0, 1.0, 0.5])
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(np.asarray(gt).astype(np.uint8), connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    inv_area = np.where(np.arange(n) > 0, 1.0 / np.maximum(area, 1.0), 0.0)
    return n - 1, labels, inv_area


def dense_pixel_entries(gt_masks: Sequence[np.ndarray], score_maps: Sequence[np.ndarray]) -> PixelEntries:
    """One entry per pixel of HxW ``gt_masks`` (bool) and ``score_maps`` (same order and sizes).

    >>> e = dense_pixel_entries([np.array([[0, 1, 1, 0]], bool)], [np.array([[0.1, 0.9, 0.2, 0.3]])])
    >>> e.positives.tolist(), e.region_mass.tolist(), e.regions_per_image.tolist()
    ([False, True, True, False], [0.0, 0.5, 0.5, 0.0], [1])
    """
    parts = []
    for gt, smap in zip(gt_masks, score_maps):
        gt = np.asarray(gt, dtype=bool)
        n_regions, labels, inv_area = region_labels(gt)
        positives = gt.ravel()
        parts.append((np.asarray(smap, dtype=np.float64).ravel(), positives, ~positives, inv_area[labels].ravel(), n_regions))
    return PixelEntries.from_images(parts)


def pro_from_counts(
    fps: np.ndarray, region_mass: np.ndarray, n_ok: float, n_regions: float
) -> tuple[np.ndarray, np.ndarray]:
    """The (fpr, pro) curve from cumulative anomaly-free counts and region masses at each distinct
    threshold (highest first), from (0, 0) to (1, 1).

    >>> fpr, pro = pro_from_counts(np.array([0, 1, 2]), np.array([0.5, 1.0, 1.0]), 2, 1)
    >>> fpr.tolist(), pro.tolist()
    ([0.0, 0.0, 0.5, 1.0, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0])
    """
    fpr = np.clip(np.asarray(fps, dtype=np.float64) / n_ok, 0.0, 1.0)
    pro = np.clip(np.asarray(region_mass, dtype=np.float64) / n_regions, 0.0, 1.0)
    return np.r_[0.0, fpr, 1.0], np.r_[0.0, pro, 1.0]


def pixel_metrics(
    entries: PixelEntries, fpr_limit: float = 0.3, curves: bool = False
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(metrics, curves): ``pixel_auroc``, ``aupro``, ``pixel_ap``, ``pixel_f1_max`` and
    ``pixel_f1_threshold`` (the score reaching it: a pixel is predicted a defect when its score is
    >= it), all from one sort of the entries; None where undefined (no defect pixel, or no
    anomaly-free pixel for AUROC/AUPRO). With ``curves``, the pixel ROC and the PRO curve keyed
    ``"roc"`` and ``"pro"`` (for the report).

    >>> e = dense_pixel_entries([np.array([[0, 1, 1, 0]], bool)], [np.array([[0.1, 0.9, 0.8, 0.3]])])
    >>> m, _ = pixel_metrics(e)
    >>> m["pixel_auroc"], m["aupro"], m["pixel_ap"], m["pixel_f1_max"], m["pixel_f1_threshold"]
    (1.0, 1.0, 1.0, 1.0, 0.8)
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    order, run_ends = entries.runs()
    tps, fps = entries.cumulative("positives"), entries.cumulative("negatives")
    thresholds = entries.scores[order][run_ends]
    f1, f1_threshold = f1_max_from_counts(thresholds, tps, fps)
    out: dict[str, Any] = {
        "pixel_auroc": auroc_from_counts(tps, fps),
        "aupro": None,
        "pixel_ap": average_precision_from_counts(tps, fps),
        "pixel_f1_max": f1,
        "pixel_f1_threshold": f1_threshold,
    }
    drawn: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    n_regions = int(entries.regions_per_image.sum())
    n_ok = float(fps[-1]) if fps.size else 0.0
    if n_regions and n_ok:
        pro_points = pro_from_counts(fps, entries.cumulative("region_mass"), n_ok, n_regions)
        out["aupro"] = trapezoid_up_to(*pro_points, fpr_limit) / fpr_limit
        if curves:
            drawn["pro"] = pro_points
    if curves and out["pixel_auroc"] is not None:
        fpr, tpr, _ = roc_from_counts(thresholds, tps, fps)
        drawn["roc"] = (fpr, tpr)
    return out, drawn
