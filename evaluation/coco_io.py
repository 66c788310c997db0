"""Load COCO ground truth and COCO results, and catch the known traps of COCO evaluation before
scoring, each with a one-line message that names the file.

pycocotools and faster-coco-eval fail late and cryptically (``KeyError: 'area'``, an assertion
"Results do not correspond to current coco set") or, worse, silently: an annotation id of 0 is
read as "unmatched", category ids off by one score zero. Everything here runs in one pass over
the lists, so it costs little next to the evaluation itself.
"""

from __future__ import annotations

import itertools
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
    if not (
        isinstance(bbox, (list, tuple, np.ndarray)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)
    ):
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
        and a.get("image_id") in images
        and a.get("category_id") in cat_ids
        for a in anns
    ):
        return False
    if len({a["id"] for a in anns}) != len(anns):
        return False
    if not boxes_ok([a["bbox"] for a in anns if "bbox" in a]):
        return False
    if iou_type == "bbox":
        return all(type(b := a.get("bbox")) in (list, tuple) and len(b) == 4 for a in anns)
    sizes = {i: [img.get("height"), img.get("width")] for i, img in images.items()}
    if not all(
        type(sg := a.get("segmentation")) is list
        or (type(sg) is dict and "counts" in sg and sg.get("size") == sizes[a["image_id"]])
        for a in anns
    ):
        return False
    return rles_ok([sg for a in anns if type(sg := a["segmentation"]) is dict])


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
        if iou_type == "bbox":
            if "bbox" not in ann:
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
    all_boxed = all(type(b := d.get("bbox")) in (list, tuple) and len(b) == 4 for d in data)
    if all_boxed and not boxes_ok([d["bbox"] for d in data]):
        return False
    if iou_type == "bbox":
        return all_boxed
    if not all_boxed and any("bbox" in d for d in data):
        return False
    sizes = {i: [img.get("height"), img.get("width")] for i, img in images.items()}
    return all(
        type(sg := d.get("segmentation")) is dict
        and "counts" in sg
        and sg.get("size") == sizes[d["image_id"]]
        for d in data
    ) and rles_ok([d["segmentation"] for d in data])


def boxes_ok(boxes: list) -> bool:
    """True when every box is four plain finite numbers with w, h >= 0 (what :func:`box_problem`
    accepts), checked for all boxes at once; False sends the caller to the per-box explanation.

    >>> boxes_ok([[1, 2, 3, 4], [0.5, 0, 0, 1]]), boxes_ok([[1, 2, -3, 4]]), boxes_ok([[1, 2, True, 4]])
    (True, False, False)
    """
    if not boxes:
        return True
    if not all(type(b) in (list, tuple) and len(b) == 4 for b in boxes):
        return False
    # Types first (a bool or a numeric string would pass numpy's float conversion), in C loops.
    if not set(map(type, itertools.chain.from_iterable(boxes))) <= {int, float}:
        return False
    xywh = np.asarray(boxes, dtype=np.float64)
    return bool(np.isfinite(xywh).all() and (xywh[:, 2:] >= 0).all())


def rles_ok(segms: list) -> bool:
    """True when every compressed RLE's run lengths are valid and cover exactly its ``size``: the
    check of :func:`defectkit.core.rle.rle_problem`, done for all masks in one vectorised pass
    over their concatenated ``counts`` (a per-mask call costs ~60 µs, seconds at 100k masks).

    False sends the caller to the per-mask explanation. ``size`` is assumed checked (a list of two
    ints); masks with list counts (uncompressed RLE) or bytes are checked one by one.

    >>> rles_ok([{"size": [2, 2], "counts": "04"}, {"size": [1, 3], "counts": "012"}])
    True
    >>> rles_ok([{"size": [2, 2], "counts": "04"}, {"size": [2, 3], "counts": "04"}])
    False
    """
    strings = [sg for sg in segms if type(sg["counts"]) is str]
    if len(strings) < len(segms) and not all(
        rle_problem(sg) is None for sg in segms if type(sg["counts"]) is not str
    ):
        return False
    # Chunks of 1,024 masks: temporaries of ~1 MB stay in cache (3-4x faster than 4,096 here).
    return all(_compressed_rles_ok(strings[i : i + 1024]) for i in range(0, len(strings), 1024))


def _compressed_rles_ok(strings: list[dict]) -> bool:
    """:func:`rles_ok` for RLEs whose ``counts`` are str, all at once."""
    parsed = compressed_run_lengths(strings)
    if parsed is None:
        return False
    runs, run_end = parsed
    expected = np.fromiter((sg["size"][0] * sg["size"][1] for sg in strings), np.int64, len(strings))
    if runs.size and (runs.min() < 0 or runs.max() > expected.max()):  # also keeps the sums below from overflowing
        return False
    totals = np.diff(np.concatenate(([0], np.cumsum(runs)))[np.concatenate(([0], run_end))])
    return bool((totals == expected).all())


def compressed_run_lengths(strings: list[dict]) -> tuple[np.ndarray, np.ndarray] | None:
    """(run lengths of all masks concatenated, end index of each mask's runs) of RLEs whose
    ``counts`` are COCO's compressed str, decoded for all masks at once in numpy (pycocotools
    decodes one mask per call); None when a string is not valid COCO RLE text. Runs alternate
    background, foreground, ... from each mask's first pixel (column-major).

    >>> runs, run_end = compressed_run_lengths([{"size": [2, 2], "counts": "04"}, {"size": [1, 3], "counts": "012"}])
    >>> runs.tolist(), run_end.tolist()
    ([0, 4, 0, 1, 2], [2, 5])
    """
    try:
        buffer = "".join(sg["counts"] for sg in strings).encode("ascii")
    except UnicodeEncodeError:
        return None
    lengths = np.fromiter((len(sg["counts"]) for sg in strings), np.int64, len(strings))
    chars = np.frombuffer(buffer, np.uint8)
    if chars.size == 0:
        return np.zeros(0, np.int64), np.zeros(len(strings), np.int64)
    if chars.min() < 48 or chars.max() > 111:  # COCO's alphabet is '0'..'o'
        return None
    codes = chars - 48  # uint8: one byte per character keeps this pass light at millions of characters
    ends = (codes & 0x20) == 0  # a character without the "more follows" bit ends a run length
    char_end = np.cumsum(lengths)
    nonempty = lengths > 0
    if not ends[char_end[nonempty] - 1].all():  # a mask's string ends in the middle of a run length
        return None
    # Run lengths: 5-bit groups, least significant first, sign bit 0x10 in the last group. Read
    # from the last (most significant) group down, Horner's way: (g ^ 0x10) - 16 is that group
    # as a signed 5-bit number, and shifting left then OR-ing in each lower group keeps the
    # two's-complement value, so the sign costs no pass of its own. Most runs take one character.
    last = np.flatnonzero(ends)
    n_groups = np.diff(last, prepend=-1)
    if n_groups.max() > 7:  # 7 groups of 5 bits cover any uint32 run length
        return None
    low = codes & 0x1F
    values = (low[last] ^ 0x10).astype(np.int64) - 16
    longer = np.flatnonzero(n_groups > 1)
    for k in range(1, int(n_groups.max())):
        if k > 1:
            longer = longer[n_groups[longer] > k]
        values[longer] = (values[longer] << 5) | low[last[longer] - k]
    # From a mask's 4th run on, a value is the difference to the run two places back: run m of a
    # mask is the sum of its values m, m-2, ... down to 1 or 2 (run 0 stands alone). A stride-2
    # cumulative sum over everything, minus its value just before the mask, gives that at once.
    run_end = np.searchsorted(last, char_end)  # runs ending before each mask's end
    run_start = np.concatenate(([0], run_end[:-1]))
    mask_first_runs = run_start[run_end > run_start]
    stride2 = values.copy()
    stride2[mask_first_runs] = 0
    stride2[0::2] = np.cumsum(stride2[0::2])
    stride2[1::2] = np.cumsum(stride2[1::2])
    start_of_run = np.repeat(run_start, run_end - run_start)
    # The same-parity index just before the mask: start - 1 or start - 2 (shifted by 2 for the padding).
    before = start_of_run + ((np.arange(values.size) - start_of_run) & 1)
    runs = stride2 - np.concatenate(([0, 0], stride2))[before]
    runs[mask_first_runs] = values[mask_first_runs]
    return runs, run_end


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


AGNOSTIC_CATEGORY = {"id": 1, "name": "defect", "supercategory": "defect"}


def class_agnostic_ground_truth(gt: dict) -> dict:
    """A copy of COCO ground truth with every category collapsed into one, id 1 named ``defect``
    (images, info and the rest kept; the annotations copied with ``category_id`` 1). For scoring
    class-unaware models (anomaly detectors) and detectors on the same footing; the caller's dict is
    not changed.

    >>> gt = {"images": [{"id": 1}], "categories": [{"id": 3, "name": "hole"}, {"id": 5, "name": "scratch"}],
    ...       "annotations": [{"id": 1, "image_id": 1, "category_id": 5}]}
    >>> agnostic = class_agnostic_ground_truth(gt)
    >>> agnostic["categories"], agnostic["annotations"][0]["category_id"], gt["annotations"][0]["category_id"]
    ([{'id': 1, 'name': 'defect', 'supercategory': 'defect'}], 1, 5)
    """
    out = {k: v for k, v in gt.items() if k not in ("annotations", "categories")}
    out["categories"] = [dict(AGNOSTIC_CATEGORY)]
    out["annotations"] = [dict(ann, category_id=AGNOSTIC_CATEGORY["id"]) for ann in gt["annotations"]]
    return out


def class_agnostic_predictions(predictions: list[dict]) -> list[dict]:
    """Copies of COCO results with every ``category_id`` set to 1 (see ``class_agnostic_ground_truth``).

    >>> class_agnostic_predictions([{"image_id": 1, "category_id": 4, "score": 0.9}])
    [{'image_id': 1, 'category_id': 1, 'score': 0.9}]
    """
    return [dict(det, category_id=AGNOSTIC_CATEGORY["id"]) for det in predictions]
