"""Score a SAM on a split: each ground-truth instance is prompted with its own box, and the masks
are scored by the shared evaluator (mask IoU / Dice via ``evaluate_masks``, COCO segm AP via
``evaluate_detection(iou_type="segm")`` on COCO results whose ids match ``coco/<split>.json``).

Also the mean ratio of predicted to true mask area: the number that shows a fine-tuned decoder
collapsing toward empty masks on thin defects long before IoU says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from defectkit.core.errors import DefectkitError
from defectkit.segment.data import SamImage
from defectkit.segment.predict import Segmenter


def category_ids(coco_json: str | Path) -> dict[str, int]:
    coco = json.loads(Path(coco_json).read_text())
    return {c["name"]: int(c["id"]) for c in coco["categories"]}


class SplitPredictions(NamedTuple):
    """One entry per ground-truth instance, same order: its mask, the predicted mask, and the COCO
    result (RLE, box, SAM's predicted IoU as score) of the prediction."""

    gt_masks: list[np.ndarray]
    pred_masks: list[np.ndarray]
    results: list[dict]


def predict_split(
    segmenter: Segmenter, records: list[SamImage], cat_ids: dict[str, int], progress: bool = False
) -> SplitPredictions:
    """Prompt every ground-truth instance of ``records`` with its exact box (one decoder call per image)."""
    from tqdm import tqdm

    from defectkit.core.rle import mask_to_bbox_xywh, mask_to_rle

    out = SplitPredictions([], [], [])
    for rec in tqdm(records, desc="validate", unit="img", disable=not progress):
        if not rec.instances:
            continue
        emb, original_size, input_size = segmenter.encoder.embed(rec.image)
        boxes = np.array([i.box_xyxy for i in rec.instances], np.float64)
        masks, scores = segmenter.masks_for(emb, original_size, input_size, boxes=boxes)
        for inst, mask, score in zip(rec.instances, masks, scores):
            if inst.category not in cat_ids:
                raise DefectkitError(f"{rec.image}: class {inst.category!r} is not in the COCO categories")
            out.gt_masks.append(inst.mask())
            out.pred_masks.append(mask)
            out.results.append({
                "image_id": rec.image_id,
                "category_id": cat_ids[inst.category],
                "score": float(score),
                "bbox": [float(v) for v in mask_to_bbox_xywh(mask)],
                "segmentation": mask_to_rle(mask),
            })
    return out


def score_predictions(predictions: SplitPredictions, coco_json: str | Path) -> dict[str, float]:
    """Score ``predict_split``'s output with the shared evaluator: mean_iou / mean_dice (per-class
    pooled, averaged over classes: mIoU), instance_iou (mean per instance), segm_AP / segm_AP50,
    area_ratio (predicted / true pixels, mean per instance), empty_frac, n_instances, per_class_iou."""
    from defectkit.evaluation import evaluate_detection, evaluate_masks

    gts, preds, results = predictions
    if not gts:
        raise DefectkitError(f"{coco_json}: the split has no defect instances to score")
    # Label maps (class id inside the instance) give the evaluator's per-class IoU; each instance
    # is its own "image", so mean_image_iou is the mean IoU per instance.
    names = [n for n, _ in sorted(category_ids(coco_json).items(), key=lambda kv: kv[1])]
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


def score_split(
    segmenter: Segmenter, records: list[SamImage], coco_json: str | Path, progress: bool = False
) -> dict[str, float]:
    """Predict a split (``predict_split``) and score it (``score_predictions``). To keep the
    predictions too (COCO results for a report), call the two yourself: a split is predicted once."""
    return score_predictions(predict_split(segmenter, records, category_ids(coco_json), progress), coco_json)


def comparison_report(split: str, base: dict, tuned: dict | None, title: str):
    """A Report with base SAM and the fine-tuned one side by side (and per class)."""
    from defectkit.evaluation.report import Report

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
