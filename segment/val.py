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
import supervision as sv
from tqdm import tqdm

from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError
from defectkit.core.results import detections_to_coco, write_coco_results
from defectkit.evaluation import evaluate_detection, evaluate_masks
from defectkit.evaluation.report import Report
from defectkit.segment.data import SamImage
from defectkit.segment.models import trainable_state
from defectkit.segment.predict import Segmenter

BASE, FINETUNED = "base", "finetuned"  # the keys of segment val's metrics.json, in this order


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
    """Prompt every ground-truth instance of ``records`` with its exact box (one decoder call per
    image). Results are written through ``defectkit.core.results`` with SAM's predicted IoU as score
    (the prompt is the truth, so its own score is 1: ``segment predict``'s rule)."""
    out = SplitPredictions([], [], [])
    for rec in tqdm(records, desc="validate", unit="img", disable=not progress):
        if not rec.instances:
            continue
        emb, original_size, input_size = segmenter.encoder.embed(rec.image)
        boxes = np.array([i.box_xyxy for i in rec.instances], np.float64)
        masks, ious = segmenter.masks_for(emb, original_size, input_size, boxes=boxes)
        unknown = [i.category for i in rec.instances if i.category not in cat_ids]
        if unknown:
            raise DefectkitError(f"{rec.image}: class {unknown[0]!r} is not in the COCO categories")
        dets = sv.Detections(
            xyxy=boxes,
            mask=masks.astype(bool),
            confidence=np.asarray(ious, np.float64),
            class_id=np.array([cat_ids[i.category] - 1 for i in rec.instances], int),
        )
        out.gt_masks.extend(i.mask() for i in rec.instances)
        out.pred_masks.extend(masks)
        out.results.extend(detections_to_coco(dets, rec.image_id))
    return out


def score_predictions(predictions: SplitPredictions, coco_json: str | Path) -> dict[str, float]:
    """Score ``predict_split``'s output with the shared evaluator: mean_iou / mean_dice (per-class
    pooled, averaged over classes: mIoU), instance_iou (mean per instance), segm_AP / segm_AP50,
    area_ratio (predicted / true pixels, mean per instance), empty_frac, n_instances, per_class_iou."""
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


def val_split(
    segmenter: Segmenter,
    records: list[SamImage],
    coco_json: str | Path,
    base_state: dict | None = None,
    progress: bool = False,
) -> dict[str, tuple[SplitPredictions, dict]]:
    """``segment val`` on one split: ``{"base": (predictions, metrics)[, "finetuned": (...)]}``.

    ``base_state`` (from ``load_segmenter`` with a fine-tuned decoder): the segmenter's fine-tuned
    weights are scored, then base SAM's on the same encoder and cached embeddings, and the
    fine-tuned weights are put back. Without it the segmenter is scored as base SAM.
    """
    cat_ids = category_ids(coco_json)

    def scored() -> tuple[SplitPredictions, dict]:
        predicted = predict_split(segmenter, records, cat_ids, progress)
        return predicted, score_predictions(predicted, coco_json)

    if base_state is None:
        return {BASE: scored()}
    tuned = scored()
    tuned_state = trainable_state(segmenter.sam, train_prompt_encoder=True)
    _load_state(segmenter, base_state)
    try:
        return {BASE: scored(), FINETUNED: tuned}
    finally:
        _load_state(segmenter, tuned_state)


def _load_state(segmenter: Segmenter, state: dict) -> None:
    segmenter.sam.mask_decoder.load_state_dict(state["mask_decoder"])
    segmenter.sam.prompt_encoder.load_state_dict(state["prompt_encoder"])


def write_val(out: str | Path, split: str, title: str, scored: dict[str, tuple[SplitPredictions, dict]]) -> Path:
    """Write ``segment val``'s folder atomically: ``report.md``, ``metrics.json`` (``{"base": {...},
    "finetuned": {...}}``) and the scored masks as COCO results, ``base_predictions.json`` (and
    ``finetuned_predictions.json``), which ``evaluate detection --iou-type segm`` scores again."""
    tuned = scored.get(FINETUNED)
    report = comparison_report(split, scored[BASE][1], tuned[1] if tuned else None, title)
    with atomic_dir(out, overwrite=True) as tmp:
        report.write_files(tmp)
        for name, (predicted, _) in scored.items():
            write_coco_results(tmp / f"{name}_predictions.json", predicted.results)
    return Path(out)


def comparison_report(split: str, base: dict, tuned: dict | None, title: str):
    """A Report with base SAM and the fine-tuned one side by side (and per class)."""
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
