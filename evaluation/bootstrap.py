"""Bootstrap confidence intervals over test images: every metric recomputed on resamples of the images.

A resample draws N of the N test images with replacement; it is held as a row of multiplicity
weights (how many times each image was drawn), so every metric here is recomputed for all resamples
at once from per-image pieces weighted by those rows, never by copying data:

- per-image labels and scores (image AUROC), per-image values (accuracy, mean per-image IoU),
  pooled per-image counts (dataset IoU/Dice per class): ``weighted_auroc``, ``weighted_mean``,
  ``weighted_ratio``;
- pixel metrics (pixel AUROC, AUPRO, pixel AP, F1-max): the images are resampled, not the pixels
  (pixels of one image are not independent draws); ``pixel_metrics_resampled``;
- COCO AP / AP50 / AP75: the per-image match results of the COCO evaluation (which detection
  matched which object at each IoU threshold) are kept, and COCO's accumulation is redone with
  each image's detections and objects counted as often as the image was drawn;
  ``coco_ap_resampled``.

The interval is the percentile interval (2.5th and 97.5th percentile of the resampled values for
95%), reported as ``{"value", "ci_low", "ci_high"}`` with ``value`` the metric on the real test set.
Resamples on which a metric is undefined (for AUROC: one class only drawn) are left out.

scikit-learn's and scipy's bootstrap functions resample by copying the data and rerunning a
metric per resample; COCO evaluation per resample would take minutes. The weighted recomputation
here is written by hand for that reason; tests/test_bootstrap.py checks it against rerunning the
evaluator on image sets with the drawn images duplicated. COCO AP's accumulation is one loop over
detections x IoU thresholds x resamples, compiled by numba (``_precision_sums``): as numpy array
passes it cost 5x as much, and no COCO library accumulates with weights.
"""

from __future__ import annotations

import functools
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from defectkit.core.parallel import usable_cores
from defectkit.evaluation.pixels import PixelEntries
from defectkit.evaluation.ranking import cumulative_at_runs, descending_runs

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
# Threshold bins of resampled pixel curves (exact below this many distinct scores): the per-image
# histograms cost resamples x images x bins in a matrix product, 0.25 s at 1,000 x 1,000 x 256.
MAX_PIXEL_BINS = 256
_CHUNK_CELLS = 1 << 21  # resamples x entries processed at once: a few MB per temporary
_KERNEL_ROWS = 128  # resamples per task of the compiled COCO AP: its state (IoU thresholds x rows) stays in cache
_PAIR_CELLS = 1 << 22  # positive x negative image pairs up to which image AUROC is one matrix product


@functools.lru_cache(maxsize=8)
def resample_weights(n_items: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(n_resamples, n_items) int32: how many times each item (test image) is drawn in each
    resample of ``n_items`` draws with replacement. Seeded: the same seed gives the same resamples
    (kept, read-only: every metric of a row, and every row of a run, reuses them).

    >>> w = resample_weights(5, 3, seed=0)
    >>> w.shape, w.sum(axis=1).tolist()
    ((3, 5), [5, 5, 5])
    >>> bool((resample_weights(5, 3, seed=0) == w).all())
    True
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if n_items == 0:
        empty = np.zeros((n_resamples, 0), np.int32)
        empty.flags.writeable = False
        return empty
    draws = np.random.default_rng(seed).integers(0, n_items, size=(n_resamples, n_items))
    cells = (draws + np.arange(n_resamples)[:, None] * n_items).ravel()
    weights = np.bincount(cells, minlength=n_resamples * n_items).reshape(n_resamples, n_items).astype(np.int32)
    weights.flags.writeable = False
    return weights


def percentile_interval(
    value: float | None, resampled: np.ndarray, confidence: float = CONFIDENCE
) -> dict[str, float | None]:
    """``{"value", "ci_low", "ci_high"}``: the percentile interval of the finite resampled values
    (None bounds when there are none, or when ``value`` itself is None).

    >>> ci = percentile_interval(0.5, np.array([0.2, 0.4, 0.6, 0.8, np.nan]), confidence=0.5)
    >>> ci["value"], round(ci["ci_low"], 6), round(ci["ci_high"], 6)
    (0.5, 0.35, 0.65)
    """
    finite = np.asarray(resampled, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if value is None or finite.size == 0:
        return {"value": value, "ci_low": None, "ci_high": None}
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return {"value": value, "ci_low": float(low), "ci_high": float(high)}


def intervals_overlap(a: dict, b: dict) -> bool:
    """Whether two intervals ``{"ci_low", "ci_high"}`` share a point: two rows whose intervals
    overlap are not distinguishable at this confidence (the leaderboard marks them tied). An
    interval with unknown bounds overlaps everything.

    >>> intervals_overlap({"ci_low": 0.6, "ci_high": 0.8}, {"ci_low": 0.75, "ci_high": 0.9})
    True
    >>> intervals_overlap({"ci_low": 0.6, "ci_high": 0.7}, {"ci_low": 0.75, "ci_high": 0.9})
    False
    """
    if None in (a.get("ci_low"), a.get("ci_high"), b.get("ci_low"), b.get("ci_high")):
        return True
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]


def contains(interval: dict, point: float) -> bool:
    """Whether ``point`` lies in ``{"ci_low", "ci_high"}`` (bounds included); unknown bounds
    contain everything.

    >>> contains({"ci_low": 0.45, "ci_high": 0.7}, 0.5), contains({"ci_low": 0.55, "ci_high": 0.7}, 0.5)
    (True, False)
    """
    if interval.get("ci_low") is None or interval.get("ci_high") is None:
        return True
    return interval["ci_low"] <= point <= interval["ci_high"]


def indistinguishable_from_chance(auroc_interval: dict, chance: float = 0.5) -> bool:
    """Whether an AUROC interval contains ``chance`` (0.5): the model is not distinguishable from
    random scoring on this test set.

    >>> indistinguishable_from_chance({"value": 0.62, "ci_low": 0.41, "ci_high": 0.8})
    True
    """
    return contains(auroc_interval, chance)


# -- weighted recomputation ---------------------------------------------------------------------------
def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) mean of per-image ``values`` (N,) under each resample's weights (B, N); NaN values
    (undefined for that image) are left out; NaN where nothing is left.

    >>> weighted_mean(np.array([1.0, 0.0, np.nan]), np.array([[2, 1, 0], [0, 0, 3]])).round(3).tolist()
    [0.667, nan]
    """
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values)
    total = weights @ np.where(valid, values, 0.0)
    count = weights @ valid.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def weighted_ratio(numerators: np.ndarray, denominators: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, ...) pooled ratio sum(w * numerator) / sum(w * denominator) over images, per column of
    (N, ...) arrays (e.g. per class); NaN where the pooled denominator is 0.

    >>> weighted_ratio(np.array([1, 2]), np.array([2, 2]), np.array([[1, 1], [2, 0]])).tolist()
    [0.75, 0.5]
    """
    num = np.tensordot(weights, np.asarray(numerators, dtype=np.float64), axes=(1, 0))
    den = np.tensordot(weights, np.asarray(denominators, dtype=np.float64), axes=(1, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _resampled_curves(
    scores: np.ndarray,
    entry_image: np.ndarray | None,
    columns: list[np.ndarray],
    weights: np.ndarray,
    runs: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
    max_bins: int = MAX_PIXEL_BINS,
    entries_per_image: np.ndarray | None = None,
) -> list[np.ndarray]:
    """For each column of per-entry amounts, (B, T) sums over the entries scored at or above each
    of T thresholds (highest first) under each resample's image weights.

    With at most ``max_bins`` distinct scores the thresholds are the distinct scores (exact);
    otherwise the scores are grouped into at most ``max_bins`` bins, each bin one threshold: the
    resampled curves are those of the scores rounded down to their bin (``_score_bins``). The first
    two columns are the positives and the negatives. ``entry_image``: the image of each entry, or
    None with ``entries_per_image`` (entries image after image, this many each). ``runs``: gives
    ``descending_runs(scores)`` (a kept sort); called only where needed, since the binned path of
    many distinct scores needs no sort.
    """
    runs = runs if runs is not None else functools.partial(descending_runs, scores)
    n_images = weights.shape[1]
    if scores.size * weights.shape[0] <= _CHUNK_CELLS:
        order, run_ends = runs()
        if entry_image is None:
            entry_image = np.repeat(np.arange(n_images), entries_per_image)
        # Few entries (one per image, say): each weighted by its image's weight directly, exact.
        # Entries along axis 0: the cumulative sums then add whole rows of resamples (vectorised).
        w = np.ascontiguousarray(weights.T)[entry_image[order]].astype(np.float64)
        return [np.cumsum(w * np.asarray(column, np.float64)[order][:, None], axis=0)[run_ends].T for column in columns]
    # Many entries: per-image histograms over the thresholds, then one matrix product per column.
    # Indices of the columns' non-zero entries where they are few (defect pixels, their region mass)
    nonzero = [np.flatnonzero(c) if np.count_nonzero(c) * 4 < c.size else None for c in columns]
    bin_of_entry = _score_bins(scores, columns[:2], nonzero[:2], max_bins, runs)
    exact = bin_of_entry is None
    if exact:  # at most max_bins distinct scores, each its own bin: bin = rank of the entry's run
        order, run_ends = runs()
        marks = np.bincount(run_ends[:-1] + 1, minlength=scores.size)
        bin_of_entry = np.empty(scores.size, np.int64)
        bin_of_entry[order] = np.cumsum(marks)
    n_bins = int(bin_of_entry.max(initial=0)) + 1
    # cell = image * n_bins + bin, in place (the entries of a huge map set are 11M+); maps of one
    # size (equal entries per image) broadcast the image offsets instead of repeating them
    cell = bin_of_entry
    if entry_image is not None:
        cell += entry_image.astype(np.int64) * n_bins
    elif np.all(entries_per_image == entries_per_image[0]):
        cell.reshape(n_images, -1)[:] += np.arange(n_images, dtype=np.int64)[:, None] * n_bins
    else:
        cell += np.repeat(np.arange(n_images, dtype=np.int64) * n_bins, entries_per_image)
    hists = _cell_histograms(cell, columns, nonzero, n_images * n_bins)
    # Binned, the product runs in float32 (twice as fast; its ~1e-7 relative rounding is nothing next
    # to the binning); exact, in float64.
    dtype = np.float64 if exact else np.float32
    weights_cast = weights.astype(dtype)
    return [
        np.cumsum((weights_cast @ hist.reshape(n_images, n_bins).astype(dtype)).astype(np.float64), axis=1)
        for hist in hists
    ]


def _cell_histograms(
    cell: np.ndarray, columns: list[np.ndarray], nonzero: list[np.ndarray | None], n_cells: int
) -> list[np.ndarray]:
    """Per column, the sum of its amounts in each cell. A column given its few ``nonzero`` entries
    is summed over those only; dense bool columns that are each other's complement (negatives =
    not positives, every dense map) share one count."""
    hists: list[np.ndarray | None] = [None] * len(columns)
    for k, (column, where) in enumerate(zip(columns, nonzero)):
        if where is not None:
            hists[k] = np.bincount(cell[where], weights=np.asarray(column[where], np.float64), minlength=n_cells)
    if (
        hists[0] is not None
        and hists[1] is None
        and columns[0].dtype == bool
        and columns[1].dtype == bool
        and bool(np.all(columns[0] != columns[1]))
    ):
        hists[1] = np.bincount(cell, minlength=n_cells) - hists[0]
    for k, column in enumerate(columns):
        if hists[k] is None:
            hists[k] = np.bincount(cell, weights=np.asarray(column, np.float64), minlength=n_cells)
    return hists


_FINE_BITS = 20  # score keys: the top 20 bits of a float32 (2,048 steps per doubling)
_SAMPLE_STRIDE = 16  # every 16th entry estimates where a dense column's equal-count bins cut


def _score_bins(
    scores: np.ndarray,
    columns: list[np.ndarray],
    nonzero: list[np.ndarray | None],
    max_bins: int,
    runs: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> np.ndarray | None:
    """(E,) bin of every entry, 0 = the highest scores: at most ``max_bins`` bins of consecutive
    scores, cut where the positives' or the negatives' running total (from the top) passes a
    multiple of its total / (bins / 2): about equal-count bins of each, so the few positives get
    as many bins as the many negatives.

    The cuts are placed on a fine monotone key of each score (the top bits of float32(score -
    lowest score), 2,048 steps per doubling) rather than on the sorted scores: a lookup per entry
    instead of a scatter through the sort order (3x faster on 11M pixels, where memory access is
    the cost). Where one fine step holds more than a bin's share and several distinct scores
    (scores packed closer than the key resolves), the bins are cut on the sorted scores instead.
    None where there are at most ``max_bins`` distinct scores (each is then its own bin, exact):
    known without sorting (``runs``) wherever more than ``max_bins`` keys are seen.
    """
    half = max(max_bins // 2, 1)
    shifted = np.empty(scores.size, np.float32)  # >= 0: its bits order like its values
    np.subtract(scores, scores.min(), out=shifted, casting="same_kind")
    keys = shifted.view(np.uint32)
    keys >>= np.uint32(32 - _FINE_BITS)
    n_keys = int(keys.max()) + 1
    fines = []  # per column, its sum per key: over its few non-zero entries, or over a sample
    for column, where in zip(columns, nonzero):
        if where is None:
            where = slice(None, None, _SAMPLE_STRIDE)
        fines.append(np.bincount(keys[where], weights=np.asarray(column[where], np.float64), minlength=n_keys))
    # Distinct keys seen (a subset of the distinct scores' keys) above max_bins: binned for sure.
    if np.count_nonzero(fines[0] + fines[1]) <= max_bins and runs()[1].size <= max_bins:
        return None
    marks = np.zeros(n_keys + 1, np.int64)  # over keys, highest first: a bin starts after each mark
    heavy = []
    for fine in fines:
        through = np.cumsum(fine[::-1])
        if through[-1] <= 0:
            continue
        share = through[-1] / half
        cut = np.searchsorted(through, np.arange(1, half) * share, side="left")
        marks[np.unique(cut) + 1] = 1
        heavy.append(np.flatnonzero(fine > share))
    for key in np.unique(np.concatenate(heavy)) if heavy else ():
        in_key = scores[keys == key]
        if in_key.min() != in_key.max():  # a bin's share of distinct scores in one key: cut on ranks
            return _rank_bins(scores, columns, half, *runs())
    bin_of_key = np.ascontiguousarray(np.cumsum(marks[:n_keys])[::-1])
    return bin_of_key[keys]


def _rank_bins(
    scores: np.ndarray, columns: list[np.ndarray], half: int, order: np.ndarray, run_ends: np.ndarray
) -> np.ndarray:
    """``_score_bins`` cut on the sorted scores themselves (``descending_runs``): a bin starts after
    the distinct score where a column's running total first reaches each multiple (exact ranks, one
    scatter through the sort order)."""
    starts = []
    for column in columns:
        through = cumulative_at_runs(column, order, run_ends)
        if through[-1] <= 0:
            continue
        steps = np.arange(1, half) * (through[-1] / half)
        starts.append(run_ends[np.minimum(np.searchsorted(through, steps, side="left"), run_ends.size - 1)] + 1)
    starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    marks = np.bincount(starts[starts < scores.size], minlength=scores.size)
    bin_of_entry = np.empty(scores.size, np.int64)
    bin_of_entry[order] = np.cumsum(marks)
    return bin_of_entry


def _auroc_rows(tps: np.ndarray, fps: np.ndarray) -> np.ndarray:
    """(B,) AUROC from (B, T) cumulative counts (trapezoids, ties one half); NaN when a class is absent."""
    n_pos, n_neg = tps[:, -1], fps[:, -1]
    tp_prev = np.concatenate([np.zeros((tps.shape[0], 1)), tps[:, :-1]], axis=1)
    area = np.sum(np.diff(fps, axis=1, prepend=0.0) * (tps + tp_prev), axis=1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), area / (n_pos * n_neg), np.nan)


def _ap_f1_rows(tps: np.ndarray, fps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B,) average precision and F1-max from (B, T) cumulative counts; NaN without positives."""
    n_pos = tps[:, -1:]
    predicted = tps + fps
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tps / np.where(predicted > 0, predicted, 1), 0.0)
        ap = np.sum(np.diff(tps, axis=1, prepend=0.0) * precision, axis=1) / n_pos[:, 0]
        f1 = np.max(2.0 * tps / (predicted + n_pos), axis=1)
    defined = n_pos[:, 0] > 0
    return np.where(defined, ap, np.nan), np.where(defined, f1, np.nan)


def _trapezoid_rows(x: np.ndarray, y: np.ndarray, x_max: float) -> np.ndarray:
    """(B,) area under each row's curve y(x) (x ascending) for x in [x[0], x_max], the value at
    ``x_max`` interpolated: ``ranking.trapezoid_up_to`` for every row at once."""
    x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
    xa, xb = np.minimum(x0, x_max), np.minimum(x1, x_max)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(x1 > x0, (y1 - y0) / np.where(x1 > x0, x1 - x0, 1), 0.0)
    ya, yb = y0 + slope * (xa - x0), y0 + slope * (xb - x0)
    return np.sum((xb - xa) * (ya + yb) / 2.0, axis=1)


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) AUROC of per-image ``labels`` (1 = positive) and ``scores`` under each resample.

    >>> weighted_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]), np.ones((1, 4), int)).tolist()
    [0.75]
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos, neg = scores[labels], scores[~labels]
    if 0 < pos.size * neg.size <= _PAIR_CELLS:
        # The Mann-Whitney form, as one matrix product: AUROC = sum over positive-negative pairs of
        # w_pos * w_neg * (1 if the positive scores higher, 1/2 if tied) / (weighted positives x
        # negatives). Exact in float32: every partial sum is a multiple of 1/2 far below 2^23. Four
        # times faster than the cumulative curves at 1,000 images x 1,000 resamples.
        beats = (pos[:, None] > neg[None, :]).astype(np.float32)
        beats += np.float32(0.5) * (pos[:, None] == neg[None, :])
        w_pos, w_neg = weights[:, labels], weights[:, ~labels]
        negatives_below = w_neg.astype(np.float32) @ beats.T  # (B, positives)
        area = np.einsum("bp,bp->b", negatives_below, w_pos, dtype=np.float64)
        n_pos, n_neg = w_pos.sum(axis=1, dtype=np.float64), w_neg.sum(axis=1, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n_pos > 0) & (n_neg > 0), area / (n_pos * n_neg), np.nan)
    tps, fps = _resampled_curves(
        scores, np.arange(labels.size), [labels.astype(np.float64), (~labels).astype(np.float64)], weights
    )
    return _auroc_rows(tps, fps)


def pixel_metrics_resampled(
    entries: PixelEntries,
    weights: np.ndarray,
    fpr_limit: float = 0.3,
    max_bins: int = MAX_PIXEL_BINS,
    values: dict[str, float | None] | Callable[[], dict[str, float | None]] | None = None,
) -> dict[str, np.ndarray]:
    """(B,) pixel AUROC, AUPRO, pixel AP and pixel F1-max under each resample of the images (see
    ``_resampled_curves`` for the bins above ``max_bins`` distinct scores). Given the exact
    ``values`` (``pixels.pixel_metrics``), the resampled values are shifted by what the bins change
    on the whole test set (every image once), so the intervals sit around the exact values: binning
    lowers AP and F1-max by up to 0.007 at 256 bins on 11M pixels, and moves AUROC/AUPRO by 1e-5.
    ``values`` may be a function giving them, called at the end (the exact metrics computed
    meanwhile on another thread: ``evaluate_anomaly``).

    >>> from defectkit.evaluation.pixels import dense_pixel_entries
    >>> e = dense_pixel_entries([np.array([[0, 1, 1, 0]], bool)], [np.array([[0.1, 0.9, 0.2, 0.3]])])
    >>> {k: v.round(3).tolist() for k, v in pixel_metrics_resampled(e, np.ones((1, 1), int), 1.0).items()}
    {'pixel_auroc': [0.75], 'aupro': [0.75], 'pixel_ap': [0.833], 'pixel_f1_max': [0.8]}
    """
    if values is not None:  # one more row, every image once: what the bins do to the whole set
        weights = np.vstack([weights, np.ones((1, weights.shape[1]), weights.dtype)])
    tps, fps, mass = _resampled_curves(
        entries.scores,
        None,
        [entries.positives, entries.negatives, entries.region_mass],
        weights,
        entries.runs,
        max_bins,
        entries.entries_per_image,
    )
    ap, f1 = _ap_f1_rows(tps, fps)
    n_regions = weights @ entries.regions_per_image.astype(np.float64)
    n_ok = fps[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = np.clip(fps / n_ok[:, None], 0.0, 1.0)
        pro = np.clip(mass / n_regions[:, None], 0.0, 1.0)
    ones, zeros = np.ones((fps.shape[0], 1)), np.zeros((fps.shape[0], 1))
    aupro = _trapezoid_rows(np.hstack([zeros, fpr, ones]), np.hstack([zeros, pro, ones]), fpr_limit) / fpr_limit
    out = {
        "pixel_auroc": _auroc_rows(tps, fps),
        "aupro": np.where((n_regions > 0) & (n_ok > 0), aupro, np.nan),
        "pixel_ap": ap,
        "pixel_f1_max": f1,
    }
    if values is None:
        return out
    if callable(values):
        values = values()
    shifted = {}
    for name, rows in out.items():
        exact, whole_set = values.get(name), rows[-1]
        shift = exact - whole_set if exact is not None and np.isfinite(whole_set) else 0.0
        shifted[name] = rows[:-1] + shift
    return shifted


# -- COCO AP --------------------------------------------------------------------------------------
@dataclass
class CocoMatches:
    """Per-image match results of a COCO evaluation (area 'all', at most maxDets detections per
    image and class), the pieces COCO's accumulate step sums: per class, its detections in COCO's
    order (descending score, stable, images in id order) with their image, and whether each is a
    true positive / false positive at each IoU threshold (a detection matched to an ignored object
    is neither); and per class and image the number of objects that count (not crowd, not ignored).
    """

    det_image: list[np.ndarray]  # per class: (D_k,) image index of each detection, in COCO's order
    det_tp: list[np.ndarray]  # per class: (T, D_k) bool
    det_fp: list[np.ndarray]  # per class: (T, D_k) bool
    gt_counts: np.ndarray  # (K, N) objects that count, per class and image
    rec_thrs: np.ndarray  # (R,) COCO's recall thresholds
    iou_thrs: np.ndarray  # (T,)

    @classmethod
    def from_image_evaluations(
        cls,
        evaluations: list,
        n_classes: int,
        n_images: int,
        n_areas: int,
        rec_thrs: np.ndarray,
        iou_thrs: np.ndarray,
        max_dets: int,
    ) -> CocoMatches:
        """From the evaluator's per-(class, area, image) results, in COCO's layout (index
        k * n_areas * n_images + a * n_images + i; area 0 = 'all' is read): pycocotools'
        ``evalImgs`` dicts (None where empty) or faster-coco-eval's ``ImageEvaluation`` objects,
        read through their pickled state (detection matches T x D, object matches, detection
        scores, object ignores, detection ignores T x D, matched pairs)."""
        n_thr = len(iou_thrs)
        det_image, det_tp, det_fp = [], [], []
        gt_counts = np.zeros((n_classes, n_images), np.int64)
        for k in range(n_classes):
            # Per image of this class (area 'all'): detection scores, matched object ids (T x D,
            # threshold-major), detection ignores (T x D), object ignores.
            scores, matches, ignores, gt_ignores = [], [], [], []
            for ev in evaluations[k * n_areas * n_images : k * n_areas * n_images + n_images]:
                if ev is None:
                    scores.append(()), matches.append(()), ignores.append(()), gt_ignores.append(())
                elif isinstance(ev, dict):  # pycocotools
                    scores.append(ev["dtScores"])
                    matches.append(np.asarray(ev["dtMatches"]).ravel())
                    ignores.append(np.asarray(ev["dtIgnore"]).ravel())
                    gt_ignores.append(ev["gtIgnore"])
                else:  # faster-coco-eval: its pickled state, in this order
                    matched, _, det_scores, gt_ignore, det_ignore, _ = ev.__getstate__()
                    scores.append(det_scores), matches.append(matched), ignores.append(det_ignore)
                    gt_ignores.append(gt_ignore)
            n_dets = np.fromiter(map(len, scores), np.int64, n_images)
            n_gts = np.fromiter(map(len, gt_ignores), np.int64, n_images)
            gt_ignored = np.fromiter(itertools.chain.from_iterable(gt_ignores), bool, int(n_gts.sum()))
            gt_counts[k] = n_gts - np.bincount(
                np.repeat(np.arange(n_images), n_gts), weights=gt_ignored, minlength=n_images
            ).astype(np.int64)
            det_scores = np.fromiter(itertools.chain.from_iterable(scores), np.float64, int(n_dets.sum()))
            flat_matched = np.fromiter(itertools.chain.from_iterable(matches), np.int64, n_thr * det_scores.size) > 0
            flat_ignored = np.fromiter(itertools.chain.from_iterable(ignores), bool, n_thr * det_scores.size)
            # Detection j of image i, local index d: entry t sits at block_start[i] + t * D_i + d.
            image = np.repeat(np.arange(n_images), n_dets)
            local = np.arange(det_scores.size) - np.repeat(np.cumsum(n_dets) - n_dets, n_dets)
            block_start = (np.cumsum(n_dets) - n_dets) * n_thr
            at = block_start[image][None, :] + np.arange(n_thr)[:, None] * n_dets[image][None, :] + local[None, :]
            keep = local < max_dets
            order = np.flatnonzero(keep)[np.argsort(-det_scores[keep], kind="mergesort")]  # COCO's stable sort
            matched, ignored = flat_matched[at[:, order]], flat_ignored[at[:, order]]
            det_image.append(image[order])
            det_tp.append(matched & ~ignored)
            det_fp.append(~matched & ~ignored)
        return cls(det_image, det_tp, det_fp, gt_counts, np.asarray(rec_thrs, np.float64), np.asarray(iou_thrs))


def true_positives_needed(n_gt: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """(B, R): for each resample's number of objects ``n_gt`` (B,), the fewest true positives v
    whose recall v / n_gt reaches each recall threshold, in float64 as COCO divides (COCO reads
    threshold r at ``searchsorted(recall, r, "left")``, the first point with recall >= r).

    >>> true_positives_needed(np.array([4]), np.linspace(0, 1, 5)).tolist()
    [[0, 1, 2, 3, 4]]
    >>> int(true_positives_needed(np.array([100]), np.array([0.29]))[0, 0])  # 29 / 100 >= 0.29 in float64
    29
    """
    gt = np.maximum(n_gt, 1).astype(np.float64)[:, None]
    # ceil(t * n), corrected by one where the float division lands the other side
    needed = np.ceil(rec_thrs[None, :] * gt)
    needed = np.where((needed >= 1) & ((needed - 1) / gt >= rec_thrs), needed - 1, needed)
    return np.where(needed / gt < rec_thrs, needed + 1, needed).astype(np.int64)


def _precision_sums(
    weights_by_image: np.ndarray,
    first: int,
    last: int,
    det_image: np.ndarray,
    det_tp: np.ndarray,
    det_fp: np.ndarray,
    needed: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[t, b]`` for resamples ``first <= b < last``: the sum over COCO's recall thresholds of
    its interpolated precision, for one class at each IoU threshold t. Compiled with numba
    (``_compiled_precision_sums``); run as plain Python it gives the same numbers, slowly.

    Inputs: ``weights_by_image`` (N, B) how often each image is drawn; per detection in COCO's
    order its image (D,) and whether it is a true / false positive (T, D; neither: matched to an
    ignored object, not counted); ``needed`` (B, R) the fewest true positives reaching each recall
    threshold, at least 1 (``true_positives_needed``).

    One pass forward sums each resample's true positives and counted detections; one pass
    backward takes them off again and keeps COCO's precision envelope (the highest precision from
    here on). Precision is read only at the last true positive of each run of them (it rises
    along a run and falls along false positives), and a recall threshold first reached inside a
    run reads the envelope there: when the pass reaches the run's first true positive, every
    threshold above the count left gets the envelope. No per-point arrays: numpy's version of
    this (cumulative sums, an envelope and a search per threshold, over true positives x
    resamples) cost 5x as much: 0.11 s against 0.022 s at 1,000 images and resamples on 2 cores.
    """
    n_thr, n_det = det_tp.shape
    n_rows, n_rec = last - first, needed.shape[1]
    tp = np.zeros((n_thr, n_rows), np.int32)
    counted = np.zeros((n_thr, n_rows), np.int32)
    for d in range(n_det):
        w = weights_by_image[det_image[d], first:last]
        for t in range(n_thr):
            if det_tp[t, d]:
                tp_t, counted_t = tp[t], counted[t]
                for b in range(n_rows):
                    tp_t[b] += w[b]
                    counted_t[b] += w[b]
            elif det_fp[t, d]:
                counted_t = counted[t]
                for b in range(n_rows):
                    counted_t[b] += w[b]
    reached = np.zeros((n_thr, n_rows), np.int64)  # thresholds reached by the true positives so far
    for t in range(n_thr):
        for b in range(n_rows):
            j = 0
            while j < n_rec and needed[first + b, j] <= tp[t, b]:
                j += 1
            reached[t, b] = j
    envelope = np.zeros((n_thr, n_rows))
    sums = np.zeros((n_thr, n_rows))
    in_run = np.zeros(n_thr, np.bool_)  # the last counted detection seen (the next one in COCO's order) was a true positive
    for d in range(n_det - 1, -2, -1):  # d = -1: before the first detection, where every run has started
        w = weights_by_image[det_image[d] if d >= 0 else 0, first:last]  # not read at d = -1
        for t in range(n_thr):
            is_tp = d >= 0 and det_tp[t, d]
            if d >= 0 and not is_tp and not det_fp[t, d]:
                continue  # neither: not counted
            tp_t, counted_t, envelope_t = tp[t], counted[t], envelope[t]
            if in_run[t] and not is_tp:  # the run after this point started there: its thresholds read the envelope
                sums_t, reached_t = sums[t], reached[t]
                for b in range(n_rows):
                    j = reached_t[b]
                    while j > 0 and needed[first + b, j - 1] > tp_t[b]:
                        sums_t[b] += envelope_t[b]
                        j -= 1
                    reached_t[b] = j
            if d < 0:
                continue
            if is_tp and not in_run[t]:  # the last true positive of a run: precision peaks here
                for b in range(n_rows):
                    precision = tp_t[b] / counted_t[b]  # float64, as COCO divides
                    if precision > envelope_t[b]:  # 0 / 0 (nothing drawn yet) is NaN: never above
                        envelope_t[b] = precision
            for b in range(n_rows):
                counted_t[b] -= w[b]
            if is_tp:
                for b in range(n_rows):
                    tp_t[b] -= w[b]
            in_run[t] = is_tp
    out[:, first:last] = sums


_COMPILE_LOCK = threading.Lock()


def _compiled_precision_sums() -> Callable[..., None]:
    """``_precision_sums`` compiled by numba: nogil, so resample chunks run on a thread per core.
    Compiled once per machine and cached on disk (about 6 s the first time; a new process then
    loads it in about 0.5 s, and numba itself takes about 0.3 s to import), so numba is imported
    here: an evaluation without intervals never pays for it. ``warm_up_compiled`` does both ahead
    of time on a background thread (``defectkit benchmark`` while its models train)."""
    with _COMPILE_LOCK:
        global _COMPILED
        if _COMPILED is None:
            import numba

            _COMPILED = numba.njit(cache=True, nogil=True, error_model="numpy")(_precision_sums)
        return _COMPILED


_COMPILED: Callable[..., None] | None = None


def warm_up_compiled() -> threading.Thread:
    """Import numba and load (or compile) the resampled-AP kernel on a daemon thread, started now;
    the first ``coco_ap_resampled`` afterwards waits only for what is left of it."""

    def load() -> None:
        kernel = _compiled_precision_sums()
        one = np.ones((1, 1), np.int32)
        kernel(one, 0, 1, np.zeros(1, np.int64), np.ones((1, 1), bool), np.zeros((1, 1), bool), one.astype(np.int64), np.zeros((1, 1)))

    thread = threading.Thread(target=load, name="defectkit-bootstrap-warm-up", daemon=True)
    thread.start()
    return thread


def coco_ap_resampled(matches: CocoMatches, weights: np.ndarray) -> dict[str, np.ndarray]:
    """(B,) COCO AP (IoU .50:.95), AP50 and AP75 (area all, 100 detections) under each resample's
    image weights: COCO's accumulate with every detection and object of an image counted as often
    as the image is drawn (cumulative true/false positives weighted, precision envelope, the 101
    recall thresholds, mean over thresholds and the classes that have objects). With all weights 1
    it is the evaluator's AP (tests: to 1e-9).

    Detections drawn several times keep COCO's order with each detection's copies adjacent; a
    rerun on an image set with duplicated images puts copies of a whole image after each other
    instead, which differs only where one image holds equally scored detections of one class
    with different outcomes (COCO's own tie order decides then).
    """
    n_rows = weights.shape[0]
    n_classes, n_thr = matches.gt_counts.shape[0], len(matches.iou_thrs)
    t50 = int(np.argmin(np.abs(matches.iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(matches.iou_thrs - 0.75)))
    n_gt = weights.astype(np.int64) @ matches.gt_counts.T  # (B, K)
    # Images along axis 0: a detection's weights in every resample are one contiguous row.
    weights_by_image = np.ascontiguousarray(weights.T, dtype=np.int32)
    kernel = _compiled_precision_sums()
    sums = np.zeros((n_classes, n_thr, n_rows))
    tasks = []
    for k in range(n_classes):
        if matches.gt_counts[k].any():  # classes without objects stay NaN
            needed = np.maximum(true_positives_needed(n_gt[:, k], matches.rec_thrs), 1)
            args = (matches.det_image[k], matches.det_tp[k], matches.det_fp[k], needed, sums[k])
            tasks += [(first, min(first + _KERNEL_ROWS, n_rows), args) for first in range(0, n_rows, _KERNEL_ROWS)]

    def run(task: tuple) -> None:
        first, last, (det_image, det_tp, det_fp, needed, out) = task
        kernel(weights_by_image, first, last, det_image, det_tp, det_fp, needed, out)

    # A thread per core: the kernel releases the GIL, and each task writes its own columns.
    workers = min(usable_cores(), len(tasks))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, tasks))
    else:
        for task in tasks:
            run(task)
    with np.errstate(invalid="ignore"):
        per_class = np.where(n_gt.T[:, None, :] > 0, sums / matches.rec_thrs.size, np.nan).transpose(2, 0, 1)
    valid = np.isfinite(per_class[:, :, 0])
    n_valid = valid.sum(axis=1)

    def mean_over_classes(values: np.ndarray) -> np.ndarray:
        return np.where(n_valid > 0, np.nansum(values, axis=1) / np.maximum(n_valid, 1), np.nan)

    return {
        "AP": mean_over_classes(per_class.mean(axis=2)),  # NaN for classes without objects
        "AP50": mean_over_classes(per_class[:, :, t50]),
        "AP75": mean_over_classes(per_class[:, :, t75]),
    }


def bootstrap_info(n_resamples: int, seed: int, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """What the ``ci`` entries of a metrics dict were computed with (written beside them)."""
    return {"resamples": n_resamples, "seed": seed, "confidence": confidence, "unit": "test image"}
