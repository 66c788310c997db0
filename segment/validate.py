"""Score a SAM on a split: each ground-truth instance is prompted with its own box, and the masks
are scored by the shared evaluator (mask IoU / Dice via ``evaluate_masks``, COCO segm AP via
``evaluate_detection(iou_type="segm")`` on COCO results whose ids match ``coco/<split>.json``).

Also the mean ratio of predicted to true mask area: the number that shows a fine-tuned decoder
collapsing toward empty masks on thin defects long before IoU says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from defectkit.errors import DefectkitError
from segment.data import SamImage
from segment.predict import Segmenter


def category_ids(coco_json: str | Path) -> dict[str, int]:
    coco = json.loads(Path(coco_json).read_text())
    return {c["name"]: int(c["id"]) for c in coco["categories"]}


def predict_split(
    segmenter: Segmenter, records: list[SamImage], cat_ids: dict[str, int], progress: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    """(ground-truth masks, predicted masks, COCO results), one entry per instance, same order."""
    from tqdm import tqdm

    from defectkit.rle import mask_to_bbox_xywh, mask_to_rle

    gts, preds, results = [], [], []
    for rec in tqdm(records, desc="validate", unit="img", disable=not progress):
        if not rec.instances:
            continue
        emb, original_size, input_size = segmenter.encoder.embed(rec.image)
        boxes = np.array([i.box_xyxy for i in rec.instances], np.float64)
        masks, scores = segmenter.masks_for(emb, original_size, input_size, boxes=boxes)
        for inst, mask, score in zip(rec.instances, masks, scores):
            if inst.category not in cat_ids:
                raise DefectkitError(f"{rec.image}: class {inst.category!r} is not in the COCO categories")
            gts.append(inst.mask())
            preds.append(mask)
            results.append({
                "image_id": rec.image_id,
                "category_id": cat_ids[inst.category],
                "score": float(score),
                "bbox": [float(v) for v in mask_to_bbox_xywh(mask)],
                "segmentation": mask_to_rle(mask),
            })
    return gts, preds, results


def score_split(
    segmenter: Segmenter, records: list[SamImage], coco_json: str | Path, progress: bool = False
) -> dict[str, float]:
    """mean_iou / mean_dice (per-class pooled, averaged over classes: mIoU), instance_iou (mean per
    instance), segm_AP / segm_AP50, area_ratio (predicted / true pixels, mean per instance),
    empty_frac, n_instances, per_class_iou."""
    from evaluation import evaluate_detection, evaluate_masks

    cat_ids = category_ids(coco_json)
    gts, preds, results = predict_split(segmenter, records, cat_ids, progress)
    if not gts:
        raise DefectkitError(f"{coco_json}: the split has no defect instances to score")
    # Label maps (class id inside the instance) give the evaluator's per-class IoU; each instance
    # is its own "image", so mean_image_iou is the mean IoU per instance.
    names = [n for n, _ in sorted(cat_ids.items(), key=lambda kv: kv[1])]
    classes = [r["category_id"] for r in results]
    label_gt = [g.astype(np.uint8) * c for g, c in zip(gts, classes)]
    label_pred = [p.astype(np.uint8) * c for p, c in zip(preds, classes)]
    masks = evaluate_masks(label_gt, label_pred, class_names=names)
    segm = evaluate_detection(str(coco_json), results, iou_type="segm")["segm"]
    true_area = np.array([g.sum() for g in gts], np.float64)
    pred_area = np.array([p.sum() for p in preds], np.float64)
    return {
        "mean_iou": float(masks["mean_iou"]),
        "mean_dice": float(masks["mean_dice"]),
        "instance_iou": float(masks["mean_image_iou"]),
        "segm_AP": float(segm["AP"]),
        "segm_AP50": float(segm["AP50"]),
        "area_ratio": float(np.mean(pred_area / np.maximum(true_area, 1))),
        "empty_frac": float(np.mean(pred_area == 0)),
        "n_instances": len(gts),
        "per_class_iou": {k: v["iou"] for k, v in masks["per_class"].items()},
    }


def comparison_report(split: str, base: dict, tuned: dict | None, title: str):
    """A Report with base SAM and the fine-tuned one side by side (and per class)."""
    from evaluation.report import Report

    report = Report(title)
    report.add_text(
        f"Split `{split}`: every ground-truth instance prompted with its own box. mIoU/mDice pool pixels per "
        "class and average the classes; instance IoU averages per instance; segm AP is COCO's, "
        "scored on `coco/" + split + ".json`. Area ratio = predicted / true mask pixels (near 0: collapse to empty masks)."
    )
    keys = ["mean_iou", "mean_dice", "instance_iou", "segm_AP", "segm_AP50", "area_ratio", "empty_frac", "n_instances"]
    if tuned is None:
        report.add_table(["metric", "base SAM"], [[k, base[k]] for k in keys])
    else:
        report.add_table(
            ["metric", "base SAM", "fine-tuned", "change"],
            [[k, base[k], tuned[k], tuned[k] - base[k]] for k in keys],
        )
        classes = sorted(base["per_class_iou"])
        report.add_table(
            ["class", "IoU base", "IoU fine-tuned"],
            [[c, base["per_class_iou"][c], tuned["per_class_iou"].get(c)] for c in classes],
        )
        better = tuned["mean_iou"] > base["mean_iou"]
        report.add_text(
            "The fine-tuned decoder " + ("beats" if better else "does **not** beat")
            + f" base SAM on mIoU ({tuned['mean_iou']:.4f} vs {base['mean_iou']:.4f})."
        )
    report.add_metrics("base", base)
    if tuned is not None:
        report.add_metrics("finetuned", tuned)
    return report
