"""Load COCO ground truth and COCO results, and catch the known traps of COCO evaluation before
scoring, each with a one-line message that names the file.

pycocotools and faster-coco-eval fail late and cryptically (``KeyError: 'area'``, an assertion
"Results do not correspond to current coco set") or, worse, silently: an annotation id of 0 is
read as "unmatched", category ids off by one score zero. Everything here runs in one pass over
the lists, so it costs little next to the evaluation itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from defectkit.core.errors import DefectkitError
from defectkit.core.rle import rle_problem

IOU_TYPES = ("bbox", "segm")


def describe(source: Any, default: str) -> str:
    """The name used in messages: the file path, or ``default`` for in-memory objects."""
    return str(source) if isinstance(source, (str, Path)) else default


def load_json(source: Any, what: str) -> Any:
    """Read a JSON file (path) or pass an in-memory object through; errors name the file."""
    if not isinstance(source, (str, Path)):
        return source
    path = Path(source)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise DefectkitError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise DefectkitError(f"{path}: is a folder, expected a {what} JSON file") from None
    except json.JSONDecodeError as exc:
        raise DefectkitError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DefectkitError(f"{path}: cannot read {what} ({exc})") from None


def _few(values, n: int = 5) -> str:
    values = sorted(values, key=lambda v: (str(type(v)), v))
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f" ... ({len(values)} in all)" if len(values) > n else "")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _rle_size_problem(segm: Any, height: int | None, width: int | None) -> str | None:
    """None when ``segm`` is a usable RLE of the image's size (or a polygon), else the problem.

    The run lengths are checked too (:func:`defectkit.core.rle.rle_problem`): garbage counts would
    otherwise make pycocotools loop for minutes or score a mask that covers no real pixels.
    """
    if isinstance(segm, list):
        return None  # polygons: pycocotools rasterises them at the image size
    return rle_problem(segm, height, width)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def box_problem(bbox: Any) -> str | None:
    """None for a usable COCO ``[x, y, w, h]``: four finite numbers with w, h >= 0.

    A negative width is not a box: pycocotools would compute a negative IoU and a perfect
    prediction would score AP 0 for its class, so it is refused instead.

    >>> box_problem([1, 2, 3, 4]) is None
    True
    >>> box_problem([10, 10, -4, 5])
    "'bbox' [10, 10, -4, 5] has a negative width or height"
    """
    if not (isinstance(bbox, (list, tuple, np.ndarray)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return "'bbox' must be [x, y, w, h]"
    if not all(math.isfinite(v) for v in bbox):
        return f"'bbox' {list(bbox)} is not finite"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"'bbox' {list(bbox)} has a negative width or height"
    return None


def segmentation_to_rle(segm: Any, height: int, width: int) -> dict:
    """A pycocotools RLE (bytes counts) for a COCO segmentation: compressed RLE with str or bytes
    counts, uncompressed RLE (list counts) or polygons (merged into one mask).

    >>> segmentation_to_rle({"size": [2, 2], "counts": "04"}, 2, 2)["counts"]
    b'04'
    """
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm.get("counts"), list):
        return mask_utils.frPyObjects(segm, height, width)
    if isinstance(segm.get("counts"), str):
        return {"size": segm["size"], "counts": segm["counts"].encode("ascii")}
    return segm


def load_ground_truth(gt: Any, iou_type: str) -> tuple[dict, str]:
    """Load and check COCO ground truth; return (a private copy, its name for messages).

    The copy shares no annotation dict with the caller, because both COCO libraries write into
    them (``ignore``, cached RLEs). A missing ``info`` is fine.
    """
    name = describe(gt, "ground truth")
    data = load_json(gt, "ground truth")
    if not isinstance(data, dict):
        raise DefectkitError(
            f"{name}: COCO ground truth must be a JSON object with images, annotations, categories"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DefectkitError(f"{name}: COCO ground truth has no '{key}' list")
    if not data["categories"]:
        raise DefectkitError(f"{name}: 'categories' is empty; the evaluator needs the class list")

    images: dict[int, dict] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise DefectkitError(f"{name}: every image needs an integer 'id' (found {str(img)[:80]})")
        if img["id"] in images:
            raise DefectkitError(f"{name}: duplicate image id {img['id']}")
        if iou_type == "segm" and not (_is_int(img.get("height")) and _is_int(img.get("width"))):
            raise DefectkitError(
                f"{name}: image {img['id']} has no integer 'height'/'width' (needed for segm)"
            )
        images[img["id"]] = img
    cat_ids: set[int] = set()
    for cat in data["categories"]:
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise DefectkitError(f"{name}: every category needs an integer 'id' (found {str(cat)[:80]})")
        if cat["id"] in cat_ids:
            raise DefectkitError(f"{name}: duplicate category id {cat['id']}")
        cat_ids.add(cat["id"])

    anns = data["annotations"]
    if not _gt_annotations_ok(anns, images, cat_ids, iou_type):
        _explain_bad_gt_annotation(anns, images, cat_ids, iou_type, name)
    # Both COCO libraries write into the annotation dicts: copy what the caller still holds.
    annotations = anns if isinstance(gt, (str, Path)) else [ann.copy() for ann in anns]
    copy = {k: v for k, v in data.items() if k != "annotations"}
    copy["annotations"] = annotations
    return copy, name


def _gt_annotations_ok(anns: list, images: dict, cat_ids: set, iou_type: str) -> bool:
    """Fast check that every annotation is fine (one generator pass); the slow path explains."""
    if not all(
        type(a) is dict
        and type(a.get("id")) is int
        and a["id"] != 0
        and _is_number(ar := a.get("area"))
        and math.isfinite(ar)
        and ar >= 0
        and "iscrowd" in a
        and ("bbox" not in a or box_problem(a["bbox"]) is None)
        and a.get("image_id") in images
        and a.get("category_id") in cat_ids
        for a in anns
    ):
        return False
    if len({a["id"] for a in anns}) != len(anns):
        return False
    if iou_type == "bbox":
        return all(type(b := a.get("bbox")) in (list, tuple) and len(b) == 4 for a in anns)
    sizes = {i: [img.get("height"), img.get("width")] for i, img in images.items()}
    return all(
        type(sg := a.get("segmentation")) is list
        or (type(sg) is dict and "counts" in sg and sg.get("size") == sizes[a["image_id"]] and rle_problem(sg) is None)
        for a in anns
    )


def _explain_bad_gt_annotation(anns: list, images: dict, cat_ids: set, iou_type: str, name: str) -> None:
    """Find the first bad annotation and raise a one-line DefectkitError about it (returns when
    the fast check was only too strict, e.g. an RLE size given as a tuple)."""
    ann_ids: set[int] = set()
    for ann in anns:
        if not isinstance(ann, dict):
            raise DefectkitError(f"{name}: annotations must be objects (found {str(ann)[:80]})")
        aid = ann.get("id")
        if not _is_int(aid):
            raise DefectkitError(f"{name}: an annotation has no integer 'id' ({str(ann)[:80]})")
        if aid == 0:
            raise DefectkitError(
                f"{name}: annotation id 0 found; COCO evaluation uses id 0 to mean 'unmatched', "
                "so that annotation would never count as found. Number annotation ids from 1"
            )
        if aid in ann_ids:
            raise DefectkitError(f"{name}: duplicate annotation id {aid} (pycocotools would keep only one)")
        ann_ids.add(aid)
        img = images.get(ann.get("image_id"))
        if img is None:
            raise DefectkitError(
                f"{name}: annotation {aid} names image_id {ann.get('image_id')!r}, not in 'images'"
            )
        if ann.get("category_id") not in cat_ids:
            raise DefectkitError(
                f"{name}: annotation {aid} names category_id {ann.get('category_id')!r}, not in 'categories'"
            )
        for key in ("area", "iscrowd"):
            if key not in ann:
                raise DefectkitError(
                    f"{name}: annotation {aid} has no '{key}' (COCO evaluation needs 'area' and 'iscrowd' "
                    "on every ground-truth annotation)"
                )
        area = ann["area"]
        if not (_is_number(area) and math.isfinite(area) and area >= 0):
            raise DefectkitError(f"{name}: annotation {aid}: 'area' {area!r} is not a finite number >= 0")
        if "bbox" in ann and (problem := box_problem(ann["bbox"])):
            raise DefectkitError(f"{name}: annotation {aid}: {problem}")
        if iou_type == "bbox" and "bbox" not in ann:
            raise DefectkitError(f"{name}: annotation {aid} has no [x, y, w, h] 'bbox'")
        else:
            if "segmentation" not in ann:
                raise DefectkitError(f"{name}: annotation {aid} has no 'segmentation' (needed for segm)")
            problem = _rle_size_problem(ann["segmentation"], img.get("height"), img.get("width"))
            if problem:
                raise DefectkitError(f"{name}: annotation {aid} (image {img['id']}): {problem}")


def _predictions_ok(data: list, images: dict, cat_ids: set, iou_type: str) -> bool:
    """Fast check that every result is fine (generator passes); load_predictions explains failures."""
    if not all(
        type(d) is dict
        and d.get("image_id") in images
        and d.get("category_id") in cat_ids
        and type(sc := d.get("score")) in (float, int)
        and math.isfinite(sc)
        for d in data
    ):
        return False
    boxes_ok = all(type(b := d.get("bbox")) in (list, tuple) and box_problem(b) is None for d in data)
    if iou_type == "bbox":
        return boxes_ok
    sizes = {i: [img.get("height"), img.get("width")] for i, img in images.items()}
    return (boxes_ok or not any("bbox" in d for d in data)) and all(
        type(sg := d.get("segmentation")) is dict
        and "counts" in sg
        and sg.get("size") == sizes[d["image_id"]]
        and rle_problem(sg) is None
        for d in data
    )


def load_predictions(
    predictions: Any, gt: dict, iou_type: str, gt_name: str = "ground truth"
) -> tuple[list, str]:
    """Load and check a COCO results list against the ground truth; return (private copies, name).

    Catches: unknown image ids, unknown category ids (and says so when they look shifted by one,
    the classic 0-based YOLO index vs 1-based COCO id slip), missing score/bbox/segmentation, masks
    whose RLE size differs from the image, and segm results that mix entries with and without a
    ``bbox`` (pycocotools decides from the first entry how to read them all).
    """
    name = describe(predictions, "predictions")
    data = load_json(predictions, "predictions")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        raise DefectkitError(
            f"{name}: this is a COCO dataset, not a COCO results list; pass the list of "
            "{image_id, category_id, score, bbox[, segmentation]} the predictor wrote"
        )
    if not isinstance(data, list):
        raise DefectkitError(f"{name}: COCO results must be a JSON list of detections")
    images = {img["id"]: img for img in gt["images"]}
    cat_ids = {cat["id"] for cat in gt["categories"]}
    if _predictions_ok(data, images, cat_ids, iou_type):
        return (data if isinstance(predictions, (str, Path)) else [det.copy() for det in data]), name

    # Something is off (or only unusual, like numpy scores): look at each entry to explain.
    unknown_images: set = set()
    pred_cats: set = set()
    out = []
    with_bbox = 0
    for i, det in enumerate(data):
        if not isinstance(det, dict):
            raise DefectkitError(f"{name}: entry {i} is not an object")
        image_id = det.get("image_id")
        img = images.get(image_id)
        if img is None:
            unknown_images.add(image_id)
            continue
        pred_cats.add(det.get("category_id"))
        score = det.get("score")
        if (
            not isinstance(score, (int, float, np.integer, np.floating))
            or isinstance(score, bool)
            or not math.isfinite(score)
        ):
            raise DefectkitError(f"{name}: entry {i} (image {image_id}) has no finite numeric 'score'")
        bbox = det.get("bbox")
        if bbox is not None:
            with_bbox += 1
            problem = box_problem(bbox)
            if problem:
                raise DefectkitError(f"{name}: entry {i} (image {image_id}): {problem}")
        if iou_type == "bbox":
            if bbox is None:
                raise DefectkitError(f"{name}: entry {i} (image {image_id}) has no 'bbox' (needed for bbox)")
        else:
            segm = det.get("segmentation")
            if segm is None:
                raise DefectkitError(
                    f"{name}: entry {i} (image {image_id}) has no 'segmentation' (needed for segm)"
                )
            if not isinstance(segm, dict):
                raise DefectkitError(
                    f"{name}: entry {i} (image {image_id}): result masks must be COCO RLE dicts, not polygons"
                )
            problem = _rle_size_problem(segm, img.get("height"), img.get("width"))
            if problem:
                raise DefectkitError(f"{name}: entry {i} (image {image_id}): {problem}")
        # Plain Python numbers and lists: the COCO libraries compare and index with them.
        det = dict(det, image_id=int(image_id), score=float(score))
        if isinstance(det.get("category_id"), np.integer):
            det["category_id"] = int(det["category_id"])
        if bbox is not None:
            det["bbox"] = [float(v) for v in bbox]
        out.append(det)
    if unknown_images:
        raise DefectkitError(
            f"{name}: predictions name image ids not in {gt_name}: {_few(unknown_images)} "
            "(were they made on another split?)"
        )
    unknown_cats = pred_cats - cat_ids
    if unknown_cats:
        int_cats = {c for c in pred_cats if _is_int(c)}
        hint = ""
        if int_cats == pred_cats:
            if all(c + 1 in cat_ids for c in pred_cats):
                hint = (
                    "; they look shifted by one: every predicted id + 1 is a ground-truth id "
                    "(0-based class indices? COCO category_id = YOLO class index + 1)"
                )
            elif all(c - 1 in cat_ids for c in pred_cats):
                hint = "; they look shifted by one: every predicted id - 1 is a ground-truth id"
        raise DefectkitError(
            f"{name}: predictions name category ids not in {gt_name}: {_few(unknown_cats)} "
            f"(ground truth has {_few(cat_ids)}){hint}"
        )
    if iou_type == "segm" and 0 < with_bbox < len(out):
        raise DefectkitError(
            f"{name}: {with_bbox} of {len(out)} segm results carry a 'bbox' and the rest do not; "
            "pycocotools reads all of them the way it reads the first, so give all or none a 'bbox'"
        )
    return out, name


def category_names(gt: dict) -> dict[int, str]:
    """Category id -> display name (the id itself when unnamed; duplicates get their id appended)."""
    names: dict[int, str] = {}
    seen: set[str] = set()
    for cat in sorted(gt["categories"], key=lambda c: c["id"]):
        name = str(cat.get("name", cat["id"]))
        if name in seen:
            name = f"{name}#{cat['id']}"
        seen.add(name)
        names[cat["id"]] = name
    return names
