"""The result model: predictions in memory are supervision's ``sv.Detections``; on disk they are a
COCO results list. This module is the one writer and the one reader between the two.

In memory, one image's predictions: ``xyxy`` (N, 4) pixel-edge boxes, ``confidence`` (N,),
``class_id`` (N,) the 0-based class index and, for instance masks, ``mask`` (N, H, W) bool at the
image's own size. On disk, one COCO results entry per detection::

    {"image_id", "category_id", "bbox": [x, y, w, h], "score"[, "segmentation": RLE, "area"]}

The rules, the same for every stage:

- ``category_id = class_id + 1``: defectkit's COCO categories are numbered 1..N in class order.
- Every float is written at full precision, scores above all: rounded, the weak, tiny scores of a
  barely trained model tie and scramble the PR curve (and a rebuilt result would not match).
- A detection with a mask gets the mask's exact pixel box as ``bbox`` (so box and mask never
  disagree), plus the mask as compressed RLE (``defectkit.core.rle``) and its pixel ``area``.
  Without a mask, ``bbox`` is ``xyxy`` as ``[x1, y1, x2 - x1, y2 - y1]``.
- A detection without a confidence (``confidence`` None) is written with score 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import supervision as sv

from defectkit.core.atomic import atomic_write_json
from defectkit.core.errors import DefectkitError
from defectkit.core.rle import mask_to_bbox_xywh, mask_to_rle, rle_to_mask


def detections_to_coco(detections: sv.Detections, image_id: int) -> list[dict]:
    """COCO results entries for one image's detections.

    >>> d = sv.Detections(xyxy=np.array([[10.0, 20.0, 30.0, 60.0]]), confidence=np.array([1.2e-6]),
    ...                   class_id=np.array([2]))
    >>> detections_to_coco(d, image_id=7)
    [{'image_id': 7, 'category_id': 3, 'bbox': [10.0, 20.0, 20.0, 40.0], 'score': 1.2e-06}]
    >>> m = np.zeros((1, 4, 5), bool); m[0, 1:3, 2:4] = True
    >>> d = sv.Detections(xyxy=np.array([[0.0, 0.0, 5.0, 4.0]]), mask=m, confidence=np.array([0.5]),
    ...                   class_id=np.array([0]))
    >>> r = detections_to_coco(d, image_id=1)[0]
    >>> r["bbox"], r["area"], r["segmentation"]["size"], r["score"]
    ([2.0, 1.0, 2.0, 2.0], 4, [4, 5], 0.5)
    """
    n = len(detections)
    scores = np.ones(n) if detections.confidence is None else detections.confidence
    classes = np.zeros(n, int) if detections.class_id is None else detections.class_id
    out = []
    for i in range(n):
        entry = {"image_id": int(image_id), "category_id": int(classes[i]) + 1}
        if detections.mask is not None:
            mask = detections.mask[i]
            entry["bbox"] = [float(v) for v in mask_to_bbox_xywh(mask)]
            entry["score"] = float(scores[i])
            entry["segmentation"] = mask_to_rle(mask)
            entry["area"] = int(mask.sum())
        else:
            x1, y1, x2, y2 = (float(v) for v in detections.xyxy[i])
            entry["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            entry["score"] = float(scores[i])
        out.append(entry)
    return out


def coco_to_detections(
    results: list[dict], image_ids: Iterable[int] | None = None, *, masks: bool = True
) -> dict[int, sv.Detections]:
    """Group COCO results by image into ``sv.Detections`` (the inverse of :func:`detections_to_coco`,
    entries kept in file order). ``image_ids``: the images to return, each present (empty when it
    has no result); None: the images that have results. ``masks``: decode ``segmentation`` RLE into
    ``mask`` (every entry of an image must have one); False skips the decoding.

    >>> r = [{"image_id": 3, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.25}]
    >>> d = coco_to_detections(r, [3, 4])
    >>> d[3].xyxy.tolist(), d[3].confidence.tolist(), d[3].class_id.tolist(), len(d[4])
    ([[1.0, 2.0, 4.0, 6.0]], [0.25], [1], 0)
    >>> detections_to_coco(d[3], 3) == r
    True
    """
    grouped: dict[int, list[dict]] = {int(i): [] for i in image_ids} if image_ids is not None else {}
    keep_all = image_ids is None
    for r in results:
        key = int(r["image_id"])
        if key in grouped:
            grouped[key].append(r)
        elif keep_all:
            grouped[key] = [r]
    return {key: results_to_detections(entries, masks=masks) for key, entries in grouped.items()}


def results_to_detections(entries: list[dict], *, masks: bool = True) -> sv.Detections:
    """The COCO results entries of one image as one ``sv.Detections`` (``image_id`` not needed).

    >>> results_to_detections([{"bbox": [4, 4, 10, 10], "category_id": 1}]).confidence.tolist()
    [1.0]
    """
    if not entries:
        return sv.Detections.empty()
    boxes = np.array([r["bbox"] for r in entries], np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    mask = None
    with_segm = ["segmentation" in r for r in entries]
    if masks and any(with_segm):
        if not all(with_segm):
            raise DefectkitError(f"image {entries[0].get('image_id', '?')}: some results have a segmentation, some not")
        mask = np.stack([rle_to_mask(r["segmentation"]) for r in entries])
    return sv.Detections(
        xyxy=boxes,
        mask=mask,
        confidence=np.array([float(r.get("score", 1.0)) for r in entries], np.float64),
        class_id=np.array([int(r.get("category_id", 1)) - 1 for r in entries], int),
    )


def write_coco_results(path: str | Path, results: list[dict]) -> Path:
    """Write a COCO results list atomically, compact (one line; full float precision)."""
    return atomic_write_json(path, results, indent=None)


def read_coco_results(path: str | Path) -> list[dict]:
    """A COCO results list, checked: a list of objects each with ``image_id`` and a 4-number
    ``bbox`` (``score`` and ``category_id`` optional). Problems are one-line ``DefectkitError``s
    that name the file.

    >>> read_coco_results("missing.json")
    Traceback (most recent call last):
    defectkit.core.errors.DefectkitError: missing.json: no such file
    """
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise DefectkitError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise DefectkitError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(results, list):
        raise DefectkitError(f"{path}: not a COCO results list (a JSON list of detections)")
    for i, r in enumerate(results):
        if not isinstance(r, dict) or "image_id" not in r or "bbox" not in r:
            raise DefectkitError(f"{path}: entry {i} is not a COCO result (needs image_id and bbox)")
        box = r["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise DefectkitError(f"{path}: entry {i}: bbox {box!r} is not [x, y, w, h]")
    return results

