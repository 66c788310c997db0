"""Generated COCO ground truth + results with the hard cases of COCO evaluation, for the tests
that compare us with pycocotools and for benchmarks/eval_bench.py.

The cases: images without ground truth, a class that is never detected, a class that never
occurs (but is predicted), crowd regions, score ties (scores rounded to 2 decimals), an image
with more than 100 detections, objects in all three COCO area ranges, and wrong-class detections.
Masks are encoded to RLE one at a time, so a large set never holds dense masks.
"""

from __future__ import annotations

import cv2
import numpy as np

from defectkit.core.rle import mask_to_bbox_xywh, mask_to_rle


def _random_mask(rng: np.random.Generator, h: int, w: int, size_class: int) -> np.ndarray:
    """A filled ellipse or rectangle whose area falls in COCO's small (0), medium (1) or large (2) range."""
    lo, hi = [(3, 20), (36, 80), (110, min(h, w) * 0.6)][size_class]
    hi = min(hi, min(h, w) * 0.9)  # small images cannot hold every size
    lo = min(lo, hi)
    a, b = rng.uniform(lo, hi) / 2, rng.uniform(lo, hi) / 2
    cx, cy = rng.uniform(a, w - a), rng.uniform(b, h - b)
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        cv2.ellipse(
            mask,
            (int(cx), int(cy)),
            (max(1, int(a)), max(1, int(b))),
            float(rng.uniform(0, 180)),
            0,
            360,
            1,
            -1,
        )
    else:
        cv2.rectangle(mask, (int(cx - a), int(cy - b)), (int(cx + a), int(cy + b)), 1, -1)
    return mask.astype(bool)


def _jitter(rng: np.random.Generator, mask: np.ndarray, amount: float) -> np.ndarray:
    """The mask shifted by a random offset of up to ``amount`` of its size (an imperfect prediction)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return mask
    span = max(np.ptp(ys) + 1, np.ptp(xs) + 1)
    dy, dx = (rng.uniform(-amount, amount, 2) * span).astype(int)
    m = np.roll(mask, (dy, dx), axis=(0, 1))
    if rng.random() < 0.3:  # grow or shrink a little too
        k = np.ones((3, 3), np.uint8)
        op = cv2.dilate if rng.random() < 0.5 else cv2.erode
        m = op(m.astype(np.uint8), k).astype(bool)
    return m


def make_coco_case(
    n_images: int = 40,
    *,
    size: tuple[int, int] = (256, 320),
    n_classes: int = 4,
    seed: int = 0,
    masks: bool = True,
    result_bbox: bool = True,
    crowd: bool = True,
    many_dets_image: bool = True,
    max_objects: int = 6,
) -> tuple[dict, list[dict]]:
    """(COCO ground truth dict, COCO results list) with the hard cases described above.

    Category ``2`` is never detected, category ``n_classes`` never occurs in the ground truth.
    With ``masks`` every annotation and result carries an RLE ``segmentation``; ``result_bbox``
    says whether segm results also carry a ``bbox`` (pycocotools then takes their area from it).

    >>> gt, preds = make_coco_case(5, seed=1)
    >>> sorted(gt), sorted(preds[0])
    (['annotations', 'categories', 'images'], ['bbox', 'category_id', 'image_id', 'score', 'segmentation'])
    """
    rng = np.random.default_rng(seed)
    h, w = size
    categories = [{"id": k, "name": f"class{k}", "supercategory": "defect"} for k in range(1, n_classes + 1)]
    never_detected, never_occurs = 2, n_classes
    gt_classes = [k for k in range(1, n_classes + 1) if k != never_occurs]
    images, annotations, results = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"img_{image_id:05d}.png", "height": h, "width": w})
        n_obj = 0 if rng.random() < 0.15 else int(rng.integers(1, max_objects + 1))
        for _ in range(n_obj):
            cat = int(rng.choice(gt_classes))
            mask = _random_mask(rng, h, w, int(rng.integers(0, 3)))
            is_crowd = int(crowd and rng.random() < 0.04)
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": mask_to_bbox_xywh(mask),
                "area": int(mask.sum()),
                "iscrowd": is_crowd,
            }
            if masks:
                ann["segmentation"] = mask_to_rle(mask)
            annotations.append(ann)
            if cat == never_detected or rng.random() < 0.15:
                continue
            for _ in range(1 if rng.random() < 0.8 else 2):  # sometimes a duplicate detection
                pred_mask = _jitter(rng, mask, 0.12)
                pred_cat = (
                    cat
                    if rng.random() < 0.85
                    else int(rng.choice([k for k in gt_classes if k != never_detected]))
                )
                results.append(_result(rng, image_id, pred_cat, pred_mask, masks, result_bbox))
        n_fp = int(rng.integers(0, 4))
        if many_dets_image and image_id == 1:
            n_fp = 130  # more than maxDets=100 on one image
        for _ in range(n_fp):
            cat = int(rng.choice([k for k in range(1, n_classes + 1) if k != never_detected]))
            pred_mask = _random_mask(rng, h, w, int(rng.integers(0, 3)))
            results.append(_result(rng, image_id, cat, pred_mask, masks, result_bbox, low=True))
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _result(
    rng, image_id: int, cat: int, mask: np.ndarray, masks: bool, result_bbox: bool, low: bool = False
) -> dict:
    if not mask.any():
        mask = mask.copy()
        mask[0, 0] = True
    # Two decimals: many exact score ties, which COCO breaks by keeping file order.
    score = round(float(rng.uniform(0.05, 0.7) if low else rng.uniform(0.3, 1.0)), 2)
    det = {"image_id": image_id, "category_id": cat, "score": score}
    if masks:
        det["segmentation"] = mask_to_rle(mask)
    if result_bbox or not masks:
        x, y, bw, bh = mask_to_bbox_xywh(mask)
        det["bbox"] = [float(x) + round(float(rng.uniform(-1, 1)), 2), float(y), float(bw), float(bh)]
    return det
