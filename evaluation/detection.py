"""COCO detection and instance-segmentation metrics: the 12 COCO stats, AP/AP50 per class,
precision-recall curves and a confusion matrix with a background row and column.

The stats come from faster-coco-eval (default; C++ evaluate/accumulate, bit-identical to
pycocotools) or pycocotools itself; per-class numbers and curves are read from the same
accumulated ``precision[T, R, K, A, M]`` array the stats come from, so they can never disagree.
Masks stay COCO RLE throughout: IoUs are computed on the run-length encodings.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from defectkit.evaluation.bootstrap import (
    CocoMatches,
    bootstrap_info,
    coco_ap_resampled,
    percentile_interval,
    resample_weights,
)
from defectkit.evaluation.charts import confusion_matrix_png, pr_curves_png
from defectkit.evaluation.coco_io import (
    IOU_TYPES,
    category_names,
    class_agnostic_ground_truth,
    class_agnostic_predictions,
    load_ground_truth,
    load_predictions,
    segmentation_to_rle,
)
from defectkit.evaluation.report import Report, add_intervals
from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster
from faster_coco_eval.core import mask as fce_mask

from defectkit.core.errors import DefectkitError

BACKENDS = ("faster-coco-eval", "pycocotools")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
STAT_MEANINGS = (
    "AP @ IoU 0.50:0.95, all areas, 100 dets",
    "AP @ IoU 0.50",
    "AP @ IoU 0.75",
    "AP, small (area < 32²)",
    "AP, medium (32² ≤ area < 96²)",
    "AP, large (area ≥ 96²)",
    "AR, 1 det per image",
    "AR, 10 dets per image",
    "AR, 100 dets per image",
    "AR, small",
    "AR, medium",
    "AR, large",
)
QUIRKS = (
    "Scores follow pycocotools exactly, quirks included:",
    "- at most 100 detections per image and class count (the highest-scoring ones; ties keep file order);",
    (
        "- a segm result that carries a `bbox` takes its area (for small/medium/large) from the box, "
        "not the mask (pycocotools' `loadRes` reads every result the way it reads the first one);"
    ),
    "- ground-truth `area` is used as given for the area ranges; `iscrowd` objects are ignore regions;",
    (
        "- a stat is -1 when no ground truth falls in its range (for example APs without small objects), "
        "and a class's AP is -1 when the class has no ground truth."
    ),
)


@dataclass
class CocoResult:
    """What one backend run yields: the 12 stats and the accumulated arrays."""

    stats: np.ndarray  # (12,)
    precision: np.ndarray  # [T, R, K, A, M], -1 = no ground truth
    recall: np.ndarray  # [T, K, A, M]
    cat_ids: list[int]
    rec_thrs: np.ndarray
    iou_thrs: np.ndarray
    extra: dict = field(default_factory=dict)
    matches: CocoMatches | None = None  # per-image match results, when asked for (the bootstrap)


def _empty_results(coco_cls, gt: dict):
    """A results COCO object with no detections (pycocotools' ``loadRes([])`` raises IndexError)."""
    res = coco_cls()
    res.dataset = {"images": list(gt["images"]), "categories": list(gt["categories"]), "annotations": []}
    res.createIndex()
    return res


class ImageIoUs:
    """Mask IoUs of every result of an image against every object of it (crowd objects with COCO's crowd
    IoU), computed once per image on first use and shared: COCO evaluation reads its per-class
    blocks, the confusion matrix its cross-class pairs. One faster-coco-eval call per image instead
    of one per (image, class) plus one per image for the confusion matrix. Rows and columns are the
    image's results and objects in file order.
    """

    def __init__(self, gt: dict, predictions: list[dict]):
        self.sizes = {img["id"]: (img.get("height"), img.get("width")) for img in gt["images"]}
        self.gts: dict[int, list] = defaultdict(list)
        self.dts: dict[int, list] = defaultdict(list)
        for ann in gt["annotations"]:
            self.gts[ann["image_id"]].append(ann)
        for det in predictions:
            self.dts[det["image_id"]].append(det)
        self._cache: dict[int, np.ndarray] = {}

    def _regions(self, anns: list[dict]) -> list:
        # faster-coco-eval's IoU reads compressed RLEs with str counts as they are; anything else
        # (polygons, uncompressed counts) is converted here.
        return [
            a["segmentation"]
            if type(a["segmentation"]) is dict and type(a["segmentation"].get("counts")) is str
            else segmentation_to_rle(a["segmentation"], *self.sizes[a["image_id"]])
            for a in anns
        ]

    def ious(self, image_id: int) -> np.ndarray:
        """IoUs [results, objects] of one image, in file order (computed on first use)."""
        ious = self._cache.get(image_id)
        if ious is None:
            dts, gts = self.dts.get(image_id, []), self.gts.get(image_id, [])
            if dts and gts:
                crowd = [int(a.get("iscrowd", 0)) for a in gts]
                ious = fce_mask.iou(self._regions(dts), self._regions(gts), crowd)
                ious = np.asarray(ious, dtype=np.float64).reshape(len(dts), len(gts))
            else:
                ious = np.zeros((len(dts), len(gts)))
            self._cache[image_id] = ious
        return ious


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct keys, start, count) of the runs of equal values in sorted ``keys``."""
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if keys.size else np.zeros(0, np.int64)
    return keys[first], first, np.diff(np.r_[first, keys.size])


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``starts[i], starts[i] + 1, ..., starts[i] + counts[i] - 1`` for every i, concatenated.

    >>> _ranges(np.array([5, 0]), np.array([2, 3])).tolist()
    [5, 6, 0, 1, 2]
    """
    return np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())


def _file_positions(image_of: np.ndarray) -> np.ndarray:
    """Each entry's position among the entries of its image, in file order (:class:`ImageIoUs`' rows
    and columns)."""
    order = np.argsort(image_of, kind="stable")
    ranks = np.arange(image_of.size) - np.searchsorted(image_of[order], image_of[order])
    positions = np.empty(image_of.size, np.int64)
    positions[order] = ranks
    return positions


def coco_iou_blocks(
    gts: list[dict], dts: list[dict], iou_type: str, max_dets: int, image_ious: ImageIoUs | None = None
) -> dict[tuple[int, int], np.ndarray]:
    """COCO evaluation's IoU block of every (image id, category id) that has both objects and results,
    for all images at once: rows are that class's results in the image by descending score (stable:
    ties keep file order), at most ``max_dets``; columns its objects in file order; crowd objects
    with COCO's crowd IoU. What faster-coco-eval's ``computeIoU`` returns pair by pair.

    Boxes: one numpy pass over every (result, object) pair, pycocotools' ``bbIou`` operation for
    operation. Masks: taken from ``image_ious``' per-image tables (one IoU call per image, shared with
    the confusion matrix). Written here because faster-coco-eval makes a Python call per pair
    (a sort, two lookups, an IoU call): most of its evaluation time on thousands of images.

    >>> gts = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0}]
    >>> dts = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 5], "score": 0.5},
    ...        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]
    >>> coco_iou_blocks(gts, dts, "bbox", 100)[1, 1].tolist()
    [[1.0], [0.5]]
    """
    g_img = np.fromiter((a["image_id"] for a in gts), np.int64, len(gts))
    d_img = np.fromiter((d["image_id"] for d in dts), np.int64, len(dts))
    images, inverse = np.unique(np.r_[g_img, d_img], return_inverse=True)
    cats = sorted({a["category_id"] for a in gts} | {d["category_id"] for d in dts})
    cat_index = {c: k for k, c in enumerate(cats)}
    g_key = inverse[: len(gts)] * len(cats) + np.fromiter((cat_index[a["category_id"]] for a in gts), np.int64, len(gts))
    d_key = inverse[len(gts) :] * len(cats) + np.fromiter((cat_index[d["category_id"]] for d in dts), np.int64, len(dts))
    d_score = np.fromiter((d["score"] for d in dts), np.float64, len(dts))
    g_order = np.argsort(g_key, kind="stable")  # by image and class, file order within
    d_order = np.lexsort((-d_score, d_key))  # then descending score, ties in file order
    d_sorted = d_key[d_order]
    keep = np.arange(len(dts)) - np.searchsorted(d_sorted, d_sorted) < max_dets
    d_order, d_sorted = d_order[keep], d_sorted[keep]
    g_keys, g_start, g_count = _groups(g_key[g_order])
    d_keys, d_start, d_count = _groups(d_sorted)
    both, gi, di = np.intersect1d(g_keys, d_keys, assume_unique=True, return_indices=True)
    g_start, g_count, d_start, d_count = g_start[gi], g_count[gi], d_start[di], d_count[di]
    pair_keys = zip(images[both // len(cats)].tolist(), [cats[k] for k in (both % len(cats)).tolist()])
    if iou_type == "segm":
        assert image_ious is not None
        g_pos, d_pos = _file_positions(g_img)[g_order], _file_positions(d_img)[d_order]
        blocks = {}
        for key, g0, ng, d0, nd in zip(pair_keys, g_start.tolist(), g_count.tolist(), d_start.tolist(), d_count.tolist()):
            table = image_ious.ious(key[0])
            blocks[key] = table.take(d_pos[d0 : d0 + nd], axis=0).take(g_pos[g0 : g0 + ng], axis=1)
        return blocks
    # Boxes: every pair of a block, result-major, then pycocotools' bbIou on all of them at once.
    objects_per_result = np.repeat(g_count, d_count)
    pair_d = np.repeat(_ranges(d_start, d_count), objects_per_result)
    pair_g = _ranges(np.repeat(g_start, d_count), objects_per_result)
    d_box = np.asarray([dts[i]["bbox"] for i in d_order.tolist()], dtype=np.float64).reshape(-1, 4)[pair_d]
    g_sorted = [gts[i] for i in g_order.tolist()]
    g_box = np.asarray([a["bbox"] for a in g_sorted], dtype=np.float64).reshape(-1, 4)[pair_g]
    crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in g_sorted), bool, len(g_sorted))[pair_g]
    ious = box_ious(d_box, g_box, crowd)
    sizes = (d_count * g_count).tolist()
    ends = np.cumsum(sizes).tolist()
    return {
        key: ious[end - size : end].reshape(nd, ng)
        for key, end, size, nd, ng in zip(pair_keys, ends, sizes, d_count.tolist(), g_count.tolist())
    }


def box_ious(db: np.ndarray, gb: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of each pair of COCO ``[x, y, w, h]`` boxes (rows of ``db`` against the same rows of
    ``gb``), pycocotools' ``bbIou`` operation for operation so thresholds meet the same values;
    ``crowd``: COCO's crowd IoU (intersection over the result's area) where true.

    >>> box_ious(np.array([[0., 0, 10, 5]]), np.array([[0., 0, 10, 10]])).tolist()
    [0.5]
    """
    w = np.minimum(db[:, 0] + db[:, 2], gb[:, 0] + gb[:, 2]) - np.maximum(db[:, 0], gb[:, 0])
    h = np.minimum(db[:, 1] + db[:, 3], gb[:, 1] + gb[:, 3]) - np.maximum(db[:, 1], gb[:, 1])
    inter = w * h
    d_area = db[:, 2] * db[:, 3]
    union = d_area + gb[:, 2] * gb[:, 3] - inter
    if crowd is not None:
        union = np.where(crowd, d_area, union)
    overlap = (w > 0) & (h > 0)
    return np.divide(inter, union, out=np.zeros_like(inter), where=overlap)


class _BatchedEval(COCOeval_faster):
    """faster-coco-eval's evaluator with its preparation done for all images at once: the IoU blocks
    of every (image, class) from :func:`coco_iou_blocks`, read back by ``computeIoU``; the per-class
    instance lists filled in file order, as its own ``_prepare`` does. Its conversion of every mask
    to an internal RLE is skipped (only its own IoU code reads that). The same IoUs in the same
    order, so the same numbers (the tests compare the stats with pycocotools)."""

    image_ious: ImageIoUs | None = None

    def _prepare(self):
        p = self.params
        self.gt_dataset.clean()
        self.dt_dataset.clean()
        gts, dts = self.cocoGt.dataset["annotations"], self.cocoDt.dataset["annotations"]
        for gt in gts:
            gt["ignore"] = int(gt.get("iscrowd", 0))  # pycocotools: iscrowd objects are ignored
            self.gt_dataset.append_ref(gt["image_id"], gt["category_id"], gt)
        for dt in dts:
            self.dt_dataset.append_ref(dt["image_id"], dt["category_id"], dt)
        self._blocks = coco_iou_blocks(gts, dts, p.iouType, p.maxDets[-1], self.image_ious)
        self._nonempty_iou_pairs = self._blocks.keys()

    def computeIoU(self, imgId: int, catId: int):
        # [] where an image lacks objects or results of the class, as faster-coco-eval returns (it
        # asks only for the pairs in _nonempty_iou_pairs, but may ask for all)
        return self._blocks.get((imgId, catId), [])


def run_coco_eval(
    gt: dict,
    predictions: list[dict],
    iou_type: str,
    backend: str = "faster-coco-eval",
    image_ious: ImageIoUs | None = None,
    keep_matches: bool = False,
) -> CocoResult:
    """Run COCO evaluation with ``backend`` on already-checked, private copies of the data.

    ``image_ious`` (faster-coco-eval, segm): share the per-image mask IoUs with the caller, who
    reads the confusion matrix's pairs from the same table afterwards (made here when not given). ``keep_matches``: also keep
    the per-image match results (``bootstrap.CocoMatches``, what the bootstrap resamples).

    >>> run_coco_eval(gt, preds, "bbox").stats[0]  # doctest: +SKIP
    0.3512...
    """
    if backend == "faster-coco-eval":
        coco_gt = FasterCOCO(gt)
        coco_dt = coco_gt.loadRes(predictions) if predictions else _empty_results(FasterCOCO, gt)
        # separate_eval (evaluate and accumulate as two C++ calls, the same arrays) only where the
        # per-image evaluations are kept: the fused call never hands its 4 x images x classes
        # evaluation objects to Python, 0.5 s less at 20,000 images (and their 0.2 s to free).
        # rle_iou_max_workers=1: its mask IoU threads hold the GIL, so on few cores they only add
        # hand-over waits (measured 0.41 s vs 0.50 s median at 1,500 images on 2 cores).
        evaluator = _BatchedEval(
            coco_gt,
            coco_dt,
            iou_type,
            print_function=lambda *a, **k: None,
            separate_eval=keep_matches,
            rle_iou_max_workers=1,
        )
        if iou_type == "segm" and image_ious is None:
            image_ious = ImageIoUs(gt, predictions)
        evaluator.image_ious = image_ious
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    elif backend == "pycocotools":
        # Imported here: the reference backend is a cross-check, and pycocotools.coco brings
        # urllib.request, http, ssl and email (about 25 ms of every `evaluate detection` start).
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(predictions) if predictions else _empty_results(COCO, gt)
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
    else:
        raise DefectkitError(f"unknown COCO backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    p = evaluator.params
    matches = None
    if keep_matches:
        per_image = evaluator._evalImgs_cpp if backend == "faster-coco-eval" else evaluator.evalImgs
        matches = CocoMatches.from_image_evaluations(
            per_image, len(p.catIds), len(p.imgIds), len(p.areaRng), p.recThrs, p.iouThrs, p.maxDets[-1]
        )
    return CocoResult(
        stats=np.asarray(evaluator.stats[:12], dtype=np.float64),
        precision=np.asarray(evaluator.eval["precision"]),
        recall=np.asarray(evaluator.eval["recall"]),
        cat_ids=[int(c) for c in p.catIds],
        rec_thrs=np.asarray(p.recThrs),
        iou_thrs=np.asarray(p.iouThrs),
        matches=matches,
    )


def _mean_valid(values: np.ndarray) -> float:
    """pycocotools' summary of a slice: the mean of entries > -1, or -1 when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def per_class_metrics(result: CocoResult, names: dict[int, str], n_gt: dict, n_pred: dict) -> dict[str, dict]:
    """AP (IoU .50:.95), AP50, AP75 and AR100 for each class, area 'all', 100 detections: the same
    slices of the accumulated arrays pycocotools' summarize() averages over every class."""
    out = {}
    t50 = int(np.argmin(np.abs(result.iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(result.iou_thrs - 0.75)))
    for k, cat_id in enumerate(result.cat_ids):
        prec = result.precision[:, :, k, 0, -1]
        out[names[cat_id]] = {
            "category_id": cat_id,
            "AP": _mean_valid(prec),
            "AP50": _mean_valid(prec[t50]),
            "AP75": _mean_valid(prec[t75]),
            "AR100": _mean_valid(result.recall[:, k, 0, -1]),
            "n_gt": int(n_gt.get(cat_id, 0)),
            "n_pred": int(n_pred.get(cat_id, 0)),
        }
    return out


def detection_confusion_matrix(
    gt: dict,
    predictions: list[dict],
    iou_type: str,
    iou_threshold: float = 0.5,
    conf_threshold: float = 0.25,
    image_ious: ImageIoUs | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Confusion matrix over classes + background, rows = true, columns = predicted.

    Per image, detections with score >= ``conf_threshold`` are taken in descending score order
    (stable, like COCO) and each is matched to the still-unmatched ground-truth object of any
    class with the highest IoU >= ``iou_threshold`` (class-agnostic, as in ultralytics'
    ConfusionMatrix, so class confusions show; equal IoUs go to the object listed first).
    Unmatched detections count in the background row, missed objects in the background column.
    Crowd objects are skipped. Box IoUs are pycocotools' formula in numpy, mask IoUs come from
    pycocotools on the RLEs, so no mask is decoded.

    Every image is matched at once: round r takes the r-th detection of every image (images never
    compete for objects), so the Python loop runs over detection ranks, not over images.

    ``image_ious``: mask IoUs already computed for COCO evaluation (segm), read instead of computed.

    Returns (matrix of shape (K+1, K+1), category ids in row order; the last row/column is background).
    """
    cat_ids = sorted(c["id"] for c in gt["categories"])
    index = {c: i for i, c in enumerate(cat_ids)}
    bg = len(cat_ids)
    matrix = np.zeros((bg + 1, bg + 1), dtype=np.int64)
    anns = gt["annotations"]
    # Indices into the files: the mask IoU tables (ImageIoUs) hold every entry of an image in file order.
    g_src = np.flatnonzero(np.fromiter((not a.get("iscrowd", 0) for a in anns), bool, len(anns)))
    d_src = np.flatnonzero(np.fromiter((d["score"] >= conf_threshold for d in predictions), bool, len(predictions)))
    # Objects grouped by image in file order; detections by image, then descending score (stable).
    g_img = np.fromiter((anns[i]["image_id"] for i in g_src.tolist()), np.int64, g_src.size)
    g_order = np.argsort(g_img, kind="stable")
    g_src, g_img = g_src[g_order], g_img[g_order]
    gts = [anns[i] for i in g_src.tolist()]
    d_img = np.fromiter((predictions[i]["image_id"] for i in d_src.tolist()), np.int64, d_src.size)
    d_score = np.fromiter((predictions[i]["score"] for i in d_src.tolist()), np.float64, d_src.size)
    d_order = np.lexsort((-d_score, d_img))  # stable: ties keep file order
    d_src, d_img = d_src[d_order], d_img[d_order]
    dts = [predictions[i] for i in d_src.tolist()]
    g_cls = np.fromiter((index[a["category_id"]] for a in gts), np.int64, len(gts))
    d_cls = np.fromiter((index[d["category_id"]] for d in dts), np.int64, len(dts))

    # Every (detection, object) pair of an image, detection-major: pair p = (pair_d[p], pair_g[p]).
    g_start = np.searchsorted(g_img, d_img, side="left")
    g_count = np.searchsorted(g_img, d_img, side="right") - g_start
    pair_d = np.repeat(np.arange(len(dts)), g_count)
    first_pair = np.cumsum(g_count) - g_count
    pair_g = np.repeat(g_start - first_pair, g_count) + np.arange(pair_d.size)
    if iou_type == "bbox":
        ious = _pair_box_ious(gts, dts, pair_d, pair_g)
    else:
        ious = _pair_mask_ious(gt, predictions, g_src, d_src, d_img, pair_d, pair_g, g_count, image_ious)

    # Greedy matching, all images at once: round r holds each image's r-th detection.
    d_rank = np.arange(len(dts)) - np.searchsorted(d_img, d_img, side="left")
    keep = ious >= iou_threshold
    pair_d, pair_g, ious = pair_d[keep], pair_g[keep], ious[keep]
    by_round = np.argsort(d_rank[pair_d], kind="stable")  # within a round: detection, then object order
    pair_d, pair_g, ious = pair_d[by_round], pair_g[by_round], ious[by_round]
    bounds = np.searchsorted(d_rank[pair_d], np.arange(d_rank.max(initial=-1) + 2))
    free = np.ones(len(gts), dtype=bool)
    matched = np.zeros(len(dts), dtype=bool)
    for lo, hi in itertools.pairwise(bounds.tolist()):
        if lo == hi:
            continue
        d, g, iou = pair_d[lo:hi], pair_g[lo:hi], ious[lo:hi]
        open_ = free[g]
        d, g, iou = d[open_], g[open_], iou[open_]
        if d.size == 0:
            continue
        best = np.lexsort((g, -iou, d))  # per detection: highest IoU, then the object listed first
        d, g = d[best], g[best]
        first = np.r_[True, d[1:] != d[:-1]]
        d, g = d[first], g[first]
        free[g] = False
        matched[d] = True
        np.add.at(matrix, (g_cls[g], d_cls[d]), 1)
    np.add.at(matrix, (bg, d_cls[~matched]), 1)
    np.add.at(matrix, (g_cls[free], bg), 1)
    return matrix, cat_ids


def _pair_box_ious(gts: list, dts: list, pair_d: np.ndarray, pair_g: np.ndarray) -> np.ndarray:
    """IoU of every (detection, object) pair of boxes, in pair order (objects not crowd): :func:`box_ious`."""
    g_box = np.asarray([a["bbox"] for a in gts], dtype=np.float64).reshape(-1, 4)
    d_box = np.asarray([d["bbox"] for d in dts], dtype=np.float64).reshape(-1, 4)
    return box_ious(d_box[pair_d], g_box[pair_g])


def _pair_mask_ious(
    gt: dict, predictions: list, g_src: np.ndarray, d_src: np.ndarray, d_img: np.ndarray,
    pair_d: np.ndarray, pair_g: np.ndarray, g_count: np.ndarray, image_ious: ImageIoUs | None,
) -> np.ndarray:  # fmt: skip
    """IoU of every (detection, object) pair of masks, in pair order, read from the per-image IoU
    tables (faster-coco-eval's port of pycocotools' RLE IoU, shared with COCO evaluation).

    ``g_src``/``d_src``: each object's/detection's index in the files; ``d_img`` the detections'
    image ids (sorted); ``g_count`` the objects of each detection's image. The tables of the
    images with pairs are laid end to end, and every pair is one index into that: row (the
    detection's place among its image's results in file order) x columns + column."""
    if image_ious is None:
        image_ious = ImageIoUs(gt, predictions)
    if pair_d.size == 0:
        return np.zeros(0, np.float64)
    d_row = _file_positions(np.fromiter((d["image_id"] for d in predictions), np.int64, len(predictions)))[d_src]
    anns = gt["annotations"]
    g_col = _file_positions(np.fromiter((a["image_id"] for a in anns), np.int64, len(anns)))[g_src]
    images, d_first, _ = _groups(d_img)
    with_objects = g_count[d_first] > 0
    tables = [image_ious.ious(i) if has else None for i, has in zip(images.tolist(), with_objects.tolist())]
    columns = np.array([t.shape[1] if t is not None else 0 for t in tables], np.int64)
    sizes = np.array([t.size if t is not None else 0 for t in tables], np.int64)
    flat = np.concatenate([t.ravel() for t in tables if t is not None])
    block = np.searchsorted(d_first, pair_d, side="right") - 1  # the image of each pair's detection
    return flat[(np.cumsum(sizes) - sizes)[block] + d_row[pair_d] * columns[block] + g_col[pair_g]]


def evaluate_detection(
    gt: Any,
    predictions: Any,
    iou_type: str = "bbox",
    *,
    backend: str = "faster-coco-eval",
    out_dir: str | Path | None = None,
    overwrite: bool = True,
    confusion_matrix: bool | None = None,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.5,
    title: str | None = None,
    extend_report: Callable[[Report], Any] | None = None,
    class_agnostic: bool = False,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    """COCO mAP of ``predictions`` (COCO results: path or list) against ``gt`` (COCO json: path or dict).

    Returns ``{iou_type: {AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl,
    "per_class": {name: {AP, AP50, AP75, AR100, n_gt, n_pred, category_id}},
    "confusion_matrix": {...}}, "info": {...}}`` (schema: evaluation/README.md). Stats are
    pycocotools' own numbers; -1 means no ground truth in that range. No predictions at all gives
    zeros, not an error. The confusion matrix (IoU >= ``iou_threshold``, score >= ``conf_threshold``)
    is computed when ``confusion_matrix`` is true, by default only when ``out_dir`` is given.
    With ``out_dir``: writes metrics.json, report.md, pr_curves.png, confusion_matrix.png atomically.
    ``extend_report`` (with ``out_dir``) is called with the :class:`Report` before it is written, to add
    a stage's own sections (``add_heading``, ``add_table``) and metrics (``add_metrics``).
    ``class_agnostic``: after the checks, every ground-truth category is collapsed into one (id 1,
    ``defect``) and every prediction's ``category_id`` set to 1 (``coco_io.class_agnostic_ground_truth``),
    so class-unaware models (anomaly detectors) and detectors are scored alike; ``info`` records it.
    ``bootstrap`` (resamples, 0 = off) adds ``ci``: 95% percentile intervals of AP, AP50 and AP75
    over resamples of the test images (seeded by ``seed``; ``defectkit.evaluation.bootstrap``).

    >>> m = evaluate_detection("coco/test.json", "runs/detect/predictions.json")  # doctest: +SKIP
    >>> m["bbox"]["AP50"], m["bbox"]["per_class"]["hole"]["AP"]  # doctest: +SKIP
    (0.71, 0.42)
    """
    if iou_type not in IOU_TYPES:
        raise DefectkitError(f"iou_type must be one of {', '.join(IOU_TYPES)}, not {iou_type!r}")
    if backend not in BACKENDS:
        raise DefectkitError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    with _gc_paused():  # the whole run: the report's steps walk the same hundreds of thousands of dicts
        return _evaluate_detection(
            gt, predictions, iou_type, backend, out_dir, overwrite, confusion_matrix,
            conf_threshold, iou_threshold, title, extend_report, class_agnostic, bootstrap, seed,
        )  # fmt: skip


def _evaluate_detection(
    gt, predictions, iou_type, backend, out_dir, overwrite, confusion_matrix, conf_threshold, iou_threshold,
    title, extend_report, class_agnostic, bootstrap, seed,
) -> dict:  # fmt: skip
    gt_data, gt_name = load_ground_truth(gt, iou_type)
    preds, pred_name = load_predictions(predictions, gt_data, iou_type, gt_name)
    if class_agnostic:  # after the checks, so unknown or shifted category ids are still caught
        gt_data, preds = class_agnostic_ground_truth(gt_data), class_agnostic_predictions(preds)
    # Masks: one IoU table for COCO evaluation and the confusion matrix (boxes are cheap to redo).
    image_ious = (
        ImageIoUs(gt_data, preds)
        if iou_type == "segm" and backend == "faster-coco-eval" and preds
        else None
    )
    result = run_coco_eval(gt_data, preds, iou_type, backend, image_ious, keep_matches=bootstrap > 0)

    names = category_names(gt_data)
    n_gt = Counter(ann["category_id"] for ann in gt_data["annotations"] if not ann.get("iscrowd", 0))
    n_pred = Counter(det["category_id"] for det in preds)

    metrics: dict[str, Any] = {name: float(v) for name, v in zip(STAT_NAMES, result.stats)}
    metrics["per_class"] = per_class_metrics(result, names, n_gt, n_pred)
    finish_intervals = None
    if bootstrap > 0:
        # On a thread of its own (its compiled kernel releases the GIL) while this one draws the
        # confusion matrix and the figures; finish_intervals() waits for it.
        weights = resample_weights(len(gt_data["images"]), bootstrap, seed)
        pool = ThreadPoolExecutor(1)
        resampling = pool.submit(coco_ap_resampled, result.matches, weights)
        pool.shutdown(wait=False)  # its thread ends with the task

        def finish_intervals() -> None:
            resampled = resampling.result()
            metrics["ci"] = {
                name: percentile_interval(_na(metrics[name]), values) for name, values in resampled.items()
            }
            metrics["bootstrap"] = bootstrap_info(bootstrap, seed)

    want_cm = confusion_matrix if confusion_matrix is not None else out_dir is not None
    if want_cm:
        matrix, cat_ids = detection_confusion_matrix(
            gt_data, preds, iou_type, iou_threshold, conf_threshold, image_ious
        )
        metrics["confusion_matrix"] = {
            "labels": [names[c] for c in cat_ids] + ["background"],
            "matrix": matrix.tolist(),
            "iou_threshold": iou_threshold,
            "conf_threshold": conf_threshold,
            "rows": "true",
            "columns": "predicted",
        }
    info = {
        "task": "detection",
        "iou_type": iou_type,
        "backend": backend,
        "ground_truth": gt_name,
        "predictions": pred_name,
        "n_images": len(gt_data["images"]),
        "n_gt": int(sum(n_gt.values())),
        "n_pred": len(preds),
        "class_agnostic": class_agnostic,
        "quirks": list(QUIRKS[1:]),
    }
    out = {iou_type: metrics, "info": info}
    if out_dir is None and finish_intervals is not None:
        finish_intervals()
    if out_dir is not None:
        report = detection_report(out, result, names, title=title, before_tables=finish_intervals)
        if extend_report is not None:  # a stage's own sections and metrics, written in the same report
            extend_report(report)
        report.write(out_dir, overwrite=overwrite)
    return out


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: loading and indexing COCO creates hundreds of thousands
    of small containers and no cycles, and collection passes over them are pure overhead."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def detection_report(
    out: dict,
    result: CocoResult,
    names: dict[int, str],
    title: str | None = None,
    before_tables: Callable[[], None] | None = None,
):
    """The Markdown report of :func:`evaluate_detection` (tables, PR curves, confusion matrix).
    The figures are drawn first; ``before_tables`` is called after them, before anything reads the
    metrics (``evaluate_detection`` waits there for intervals computed meanwhile on another thread)."""
    info = out["info"]
    iou_type = info["iou_type"]
    metrics = out[iou_type]
    t50 = int(np.argmin(np.abs(result.iou_thrs - 0.5)))
    curves = {}
    for k, cat_id in enumerate(result.cat_ids):
        prec = result.precision[t50, :, k, 0, -1]
        if (prec > -1).any():
            curves[f"{names[cat_id]} (AP50 {_mean_valid(prec):.3f})"] = np.clip(prec, 0, None)
    pr_png = pr_curves_png(result.rec_thrs, curves, f"{iou_type}: precision-recall at IoU 0.50 (interpolated)")
    cm = metrics.get("confusion_matrix")
    cm_png = (
        confusion_matrix_png(
            np.asarray(cm["matrix"]),
            cm["labels"],
            f"{iou_type}: IoU ≥ {cm['iou_threshold']}, score ≥ {cm['conf_threshold']}",
        )
        if cm is not None
        else None
    )
    if before_tables is not None:
        before_tables()
    report = Report(title or f"COCO {iou_type} evaluation")
    report.add_text(
        f"Ground truth `{info['ground_truth']}` ({info['n_images']} images, {info['n_gt']} objects); "
        f"predictions `{info['predictions']}` ({info['n_pred']} results); backend {info['backend']}."
        + (
            " Class-agnostic: every category collapsed into one ('defect') and every prediction "
            "counted as it, so only localisation is scored."
            if info.get("class_agnostic")
            else ""
        )
    )
    report.add_heading("COCO stats")
    report.add_table(
        ["stat", "value", "meaning"], [[n, metrics[n], m] for n, m in zip(STAT_NAMES, STAT_MEANINGS)]
    )
    if "ci" in metrics:
        add_intervals(report, metrics["ci"], metrics["bootstrap"])
    report.add_heading("Per class (IoU 0.50:0.95 unless named, area all, 100 dets)")
    report.add_table(
        ["class", "AP", "AP50", "AP75", "AR100", "objects", "predictions"],
        [
            [n, _na(v["AP"]), _na(v["AP50"]), _na(v["AP75"]), _na(v["AR100"]), v["n_gt"], v["n_pred"]]
            for n, v in metrics["per_class"].items()
        ],
    )
    report.add_heading("Precision-recall curves")
    report.add_image(
        "pr_curves.png", pr_png, "COCO's interpolated precision at 101 recall points, IoU 0.50, per class"
    )
    if cm_png is not None:
        report.add_heading("Confusion matrix")
        report.add_image(
            "confusion_matrix.png",
            cm_png,
            "rows: true class (the background row counts false detections); columns: predicted class "
            "(the background column counts missed objects); detections matched greedily by score, "
            "class-agnostic",
        )
    report.add_heading("How these numbers are computed")
    report.add_text("\n".join(QUIRKS))
    report.add_metrics(iou_type, metrics)
    report.add_metrics("info", info)
    return report


def _na(value: float) -> float | None:
    return None if value == -1 else value
