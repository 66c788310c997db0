"""The evaluator's fast paths give what their plain versions give: the batch RLE and box checks accept
exactly what the per-item checks accept, the all-images-at-once confusion matrix equals the
image-by-image greedy matching, and `evaluate` never imports matplotlib (its charts are Pillow's)."""

from __future__ import annotations

import io
import random
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
from defectkit.evaluation.charts import confusion_matrix_png, histogram_png, pr_curves_png, roc_curves_png
from defectkit.evaluation.coco_io import box_problem, boxes_ok, rles_ok, segmentation_to_rle
from defectkit.evaluation.detection import detection_confusion_matrix
from defectkit.evaluation.synthetic import make_coco_case
from PIL import Image
from pycocotools import mask as mask_utils

from defectkit.core.rle import rle_problem


def test_batch_rle_check_accepts_exactly_what_the_per_mask_check_accepts():
    _, preds = make_coco_case(12, seed=4, size=(48, 64))
    masks = [p["segmentation"] for p in preds]
    assert rles_ok(masks) and all(rle_problem(m) is None for m in masks)
    rng = random.Random(0)
    alphabet = "".join(chr(c) for c in range(40, 115))  # COCO's '0'..'o' and a few outside it
    rejected = 0
    for _ in range(600):
        sample = [dict(m) for m in rng.sample(masks, 4)]
        k = rng.randrange(4)
        counts = sample[k]["counts"]
        op = rng.randrange(5)
        if op == 0:
            i = rng.randrange(len(counts))
            counts = counts[:i] + rng.choice(alphabet) + counts[i + 1 :]
        elif op == 1:
            counts = counts[: rng.randrange(len(counts) + 1)]
        elif op == 2:
            counts += rng.choice(alphabet)
        elif op == 3:
            sample[k]["size"] = [sample[k]["size"][0], sample[k]["size"][1] + rng.choice([-1, 1])]
        else:
            counts = ""
        sample[k]["counts"] = counts
        expected = all(rle_problem(m) is None for m in sample)
        rejected += not expected
        assert rles_ok(sample) == expected, sample[k]
    assert rejected > 400  # the mutations mostly break the masks: both sides of the check are exercised
    # Uncompressed counts are checked one by one; empty masks and empty lists are fine.
    assert rles_ok([{"size": [2, 2], "counts": [0, 4]}, {"size": [2, 2], "counts": "04"}])
    assert not rles_ok([{"size": [2, 2], "counts": [3, -1, 2]}])
    assert rles_ok([{"size": [0, 0], "counts": ""}]) and rles_ok([])


def test_batch_box_check_accepts_exactly_what_box_problem_accepts():
    boxes = [[1, 2, 3, 4], [0.5, 0, 0, 1.5], [1, 2, -3, 4], [1, 2, True, 4], [1, "2", 3, 4],
             [1, 2, float("nan"), 4], [1, 2, 3], [1, 2, float("inf"), 1]]  # fmt: skip
    for box in boxes:
        assert boxes_ok([[0, 0, 1, 1], box]) == (box_problem(box) is None), box
    assert boxes_ok([])


def _reference_confusion_matrix(gt, predictions, iou_type, iou_threshold, conf_threshold):
    """Image by image, detection by detection: the plain greedy matching the fast path must equal."""
    cat_ids = sorted(c["id"] for c in gt["categories"])
    index = {c: i for i, c in enumerate(cat_ids)}
    bg = len(cat_ids)
    matrix = np.zeros((bg + 1, bg + 1), dtype=np.int64)
    gts, dts = defaultdict(list), defaultdict(list)
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            gts[a["image_id"]].append(a)
    for d in predictions:
        if d["score"] >= conf_threshold:
            dts[d["image_id"]].append(d)
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    for image_id in set(gts) | set(dts):
        g_list = gts.get(image_id, [])
        d_list = sorted(dts.get(image_id, []), key=lambda d: -d["score"])  # stable
        free = [True] * len(g_list)
        if iou_type == "bbox":
            ious = mask_utils.iou([d["bbox"] for d in d_list], [a["bbox"] for a in g_list], [0] * len(g_list))
        else:
            h, w = sizes[image_id]
            ious = mask_utils.iou(
                [segmentation_to_rle(d["segmentation"], h, w) for d in d_list],
                [segmentation_to_rle(a["segmentation"], h, w) for a in g_list],
                [0] * len(g_list),
            )
        for i, d in enumerate(d_list):
            best, best_iou = None, -1.0
            for j in range(len(g_list)):
                if free[j] and ious[i][j] >= iou_threshold and ious[i][j] > best_iou:
                    best, best_iou = j, ious[i][j]
            if best is None:
                matrix[bg, index[d["category_id"]]] += 1
            else:
                free[best] = False
                matrix[index[g_list[best]["category_id"]], index[d["category_id"]]] += 1
        for j, a in enumerate(g_list):
            if free[j]:
                matrix[index[a["category_id"]], bg] += 1
    return matrix


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("iou_threshold, conf_threshold", [(0.5, 0.25), (0.0, 0.0), (0.75, 0.6)])
def test_confusion_matrix_of_all_images_at_once_equals_image_by_image(
    iou_type, iou_threshold, conf_threshold
):
    gt, preds = make_coco_case(40, seed=7, size=(64, 80))
    for d in preds[::3]:
        d["score"] = 0.5  # ties: file order decides
    for d in preds[1::5]:  # exact duplicates of an object: equal IoUs, the object listed first wins
        same_image = [a for a in gt["annotations"] if a["image_id"] == d["image_id"]]
        if same_image:
            d["bbox"], d["segmentation"] = list(same_image[0]["bbox"]), dict(same_image[0]["segmentation"])
    fast, _ = detection_confusion_matrix(gt, preds, iou_type, iou_threshold, conf_threshold)
    slow = _reference_confusion_matrix(gt, preds, iou_type, iou_threshold, conf_threshold)
    assert fast.tolist() == slow.tolist()
    assert fast.sum() > 50


def test_charts_are_pngs_of_the_expected_size():
    recall = np.linspace(0, 1, 101)
    for png, size in [
        (pr_curves_png(recall, {"a (AP50 0.5)": 1 - recall, "b (AP50 0.2)": recall}, "PR"), (650, 480)),
        (pr_curves_png(recall, {}, "PR"), (650, 480)),
        (roc_curves_png({"image": (recall, recall**0.5)}, "ROC", 0.3), (550, 450)),
        (histogram_png([0.1, 0.5, 0.5, 0.9], 20, (0.0, 1.0), "IoU", "images", "hist"), (600, 360)),
    ]:
        assert png[:4] == b"\x89PNG"
        assert Image.open(io.BytesIO(png)).size == size
    cm = confusion_matrix_png(np.array([[3, 1], [0, 0]]), ["hole", "background"], "cm")
    assert Image.open(io.BytesIO(cm)).size[0] > 200


def test_evaluate_never_imports_matplotlib():
    """The command's figures are Pillow's: matplotlib's ~1 s import would outweigh scoring
    thousands of images (benchmarks/eval_bench.py)."""
    code = "import sys, defectkit.evaluation.cli; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
