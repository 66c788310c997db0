"""Segmentation rows: SAM prompted by the true boxes (base and fine-tuned, ``segment``'s API), SAM
prompted by the fine-tuned YOLO-World's boxes, and a YOLO-seg model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from defectkit.leaderboard.context import RunContext
from defectkit.leaderboard.rows import (
    DETECTOR_CONF,
    SEGMENTATION,
    checkpoint_entry,
    coco_row,
    command_line,
    register,
)
from defectkit.leaderboard.rows_detection import detect_train_command, train_yolo

SAM_TOP_BOXES = 20  # detector boxes per image handed to SAM (the highest-scoring ones)


def _segmenter(ctx: RunContext, finetuned: Path | None = None):
    """SAM as ``segment`` builds it (same seed, same base weights), with the run's embedding cache."""
    from defectkit.segment.embeddings import EmbeddingCache, ImageEncoder
    from defectkit.segment.models import apply_finetuned, build_sam, load_finetuned
    from defectkit.segment.predict import Segmenter

    cfg = ctx.config
    model = build_sam(
        cfg.sam_model,
        cfg.sam_checkpoint,
        random_weights=cfg.sam_random_weights,
        seed=cfg.seed,
        device=cfg.torch_device,
    )
    if finetuned is not None:
        apply_finetuned(model, load_finetuned(finetuned), finetuned)
    cache = EmbeddingCache(ctx.cache_dir / "sam_embeddings", model.identity, model.spec.img_size)
    return Segmenter(ImageEncoder(model, cache))


def _sam_gt_boxes(ctx: RunContext, row_dir: Path, segmenter, title: str) -> dict:
    """SAM prompted by every ground-truth instance's box (the segment stage's protocol: `segment val`)."""
    from defectkit.segment.data import read_sam_jsonl, split_jsonl
    from defectkit.segment.val import category_ids, predict_split, score_predictions

    test = ctx.truth["test"]
    cat_ids = category_ids(test.coco_path)
    records = {s: read_sam_jsonl(split_jsonl(ctx.sam_dir, s)) for s in ("val", "test")}
    predicted, infer_s = {}, 0.0
    for split in ("val", "test"):
        t0 = time.perf_counter()
        predicted[split] = predict_split(segmenter, records[split], cat_ids, ctx.config.progress)
        infer_s = time.perf_counter() - t0
    preds = {split: p.results for split, p in predicted.items()}
    scored = score_predictions(predicted["test"], test.coco_path)  # the test masks, not predicted again
    row = coco_row(ctx, row_dir, "segm", preds, infer_s, title, image_scores=False)
    n_prompted = sum(1 for r in records["test"] if r.instances)
    row["infer_s_per_image"] = infer_s / max(1, n_prompted)
    row["metrics"] = {
        "mask_mIoU": scored["mean_iou"],
        "mask_mDice": scored["mean_dice"],
        "instance_IoU": scored["instance_iou"],
        **row["metrics"],
        "area_ratio": scored["area_ratio"],
    }
    row["per_class"] = scored["per_class_iou"]
    row["per_class_metric"] = "mask IoU"
    row["prompt"] = "ground-truth boxes"
    row["notes"] = [
        (
            "prompted by the ground-truth boxes: no image-level score (the prompt already says where "
            "the defect is); segm AP is optimistic (one mask per true object)"
        )
    ]
    return row


def _mask_union_row(
    ctx: RunContext, row_dir: Path, preds: dict[str, list[dict]], infer_s: float, title: str
) -> dict:
    """A predicted-mask row (no true prompts): COCO segm AP via :func:`coco_row`, plus mask IoU/Dice
    and pixel precision/recall of the union of the masks scored >= ``mask_score_threshold`` per image
    and class (``evaluate_masks``)."""
    from defectkit.evaluation import evaluate_masks

    threshold = ctx.config.mask_score_threshold
    row = coco_row(ctx, row_dir, "segm", preds, infer_s, title)
    union = evaluate_masks(str(ctx.truth["test"].coco_path), preds["test"], score_threshold=threshold)
    row["metrics"] = {
        "mask_mIoU": union["mean_iou"],
        "mask_mDice": union["mean_dice"],
        **row["metrics"],
        "pixel_precision": union["pixel_precision"],
        "pixel_recall": union["pixel_recall"],
    }
    row["per_class"] = {c: v["iou"] for c, v in union["per_class"].items()}
    row["per_class_metric"] = "mask IoU"
    row["notes"] = [f"mask IoU/Dice: union of the masks scored >= {threshold} per image and class"]
    return row


def _sam_weights_args(cfg) -> list:
    if cfg.sam_checkpoint:
        return ["--checkpoint", cfg.sam_checkpoint]
    return ["--random-weights"] if cfg.sam_random_weights else []


def _lr_args(cfg) -> list:
    return ["--lr", cfg.sam_lr] if cfg.sam_lr is not None else []  # else segment train's own default


def _sam_command(ctx: RunContext, verb: str, *extra) -> str:
    cfg = ctx.config
    ck = _sam_weights_args(cfg)
    return command_line(
        "segment",
        verb,
        "--data",
        ctx.sam_dir,
        "--model",
        cfg.sam_model,
        *ck,
        "--seed",
        cfg.seed,
        "--device",
        cfg.torch_device,
        *extra,
    )


@register(
    "sam-gt-base",
    "SAM (base), ground-truth boxes",
    SEGMENTATION,
    "SAM as released, each true defect prompted by its box: the bar a fine-tune must clear",
)
def sam_gt_base(ctx: RunContext, row_dir: Path) -> dict:
    row = _sam_gt_boxes(ctx, row_dir, _segmenter(ctx), "SAM base, ground-truth box prompts: test masks")
    return {**row, "train_s": 0.0, "checkpoint": None, "command": _sam_command(ctx, "val", "--split", "test")}


@register(
    "sam-gt-ft",
    "SAM (fine-tuned), ground-truth boxes",
    SEGMENTATION,
    "SAM's mask decoder fine-tuned on the train split (segment train), prompted by the true boxes",
)
def sam_gt_finetuned(ctx: RunContext, row_dir: Path) -> dict:
    from defectkit.segment.train import TrainConfig, train

    cfg = ctx.config
    tc = TrainConfig(
        data=ctx.sam_dir, out=row_dir / "train", model=cfg.sam_model,
        checkpoint=Path(cfg.sam_checkpoint) if cfg.sam_checkpoint else None, random_weights=cfg.sam_random_weights,
        seed=cfg.seed, epochs=cfg.epochs, **({"lr": cfg.sam_lr} if cfg.sam_lr is not None else {}),
        device=cfg.torch_device, overwrite=True, cache_dir=ctx.cache_dir / "sam_embeddings", progress=cfg.progress,
    )  # fmt: skip
    tc.resume = cfg.resume and (tc.out / "last.pt").is_file()  # continue an interrupted attempt
    t0 = time.perf_counter()
    summary = train(tc)
    train_s = time.perf_counter() - t0
    best, last = tc.out / "best.pt", tc.out / "last.pt"
    weights = best if best.is_file() else last
    row = _sam_gt_boxes(
        ctx, row_dir, _segmenter(ctx, weights), "SAM fine-tuned, ground-truth box prompts: test masks"
    )
    if not summary.get("beat_base"):
        row["notes"].append("the fine-tuned decoder never beat base SAM on val (no best.pt): scored last.pt")
    return {
        **row,
        "train_s": train_s,
        "checkpoint": checkpoint_entry(ctx, weights),
        "beat_base": best.is_file(),
        "command": _sam_command(ctx, "train", "--epochs", cfg.epochs, *_lr_args(cfg), "--out", tc.out),
    }


@register(
    "sam-det",
    "SAM + YOLO-World boxes",
    SEGMENTATION,
    "detect then segment: the fine-tuned YOLO-World's boxes prompt SAM (its fine-tuned decoder when that beat base SAM)",
    needs=("yolo-world-ft",),
)
def sam_detector_boxes(ctx: RunContext, row_dir: Path) -> dict:
    import json

    from defectkit.core.rle import mask_to_rle

    detector = ctx.results["yolo-world-ft"]
    # The fine-tuned decoder only when it beat base SAM on val (segment's own advice otherwise: use base).
    finetuned = ctx.results.get("sam-gt-ft", {})
    tuned = finetuned["checkpoint"] if finetuned.get("beat_base") else None
    segmenter = _segmenter(ctx, ctx.out / tuned["path"] if tuned else None)
    preds, infer_s = {}, 0.0
    for split in ("val", "test"):
        truth = ctx.truth[split]
        boxes = json.loads((ctx.out / detector["predictions"][split]).read_text())
        by_image: dict[int, list[dict]] = {}
        for det in sorted(boxes, key=lambda d: -d["score"]):
            if (
                len(by_image.setdefault(det["image_id"], [])) < SAM_TOP_BOXES
                and det["bbox"][2] > 0
                and det["bbox"][3] > 0
            ):
                by_image[det["image_id"]].append(det)
        t0 = time.perf_counter()
        results = []
        for image_id, path in zip(truth.image_ids, truth.paths):
            dets = by_image.get(image_id, [])
            if not dets:
                continue
            emb, original_size, input_size = segmenter.encoder.embed(path)
            xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)], np.float64)
            masks, ious = segmenter.masks_for(emb, original_size, input_size, boxes=xyxy)
            for det, mask, iou in zip(dets, masks, ious):
                # Detector confidence times SAM's own predicted IoU: a box SAM cannot segment well ranks lower.
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": det["category_id"],
                        "score": round(float(det["score"]) * float(iou), 6),
                        "bbox": det["bbox"],
                        "segmentation": mask_to_rle(mask),
                    }
                )
        infer_s = time.perf_counter() - t0 + detector["infer_s_per_image"] * len(truth.image_ids)
        preds[split] = results
    row = _mask_union_row(ctx, row_dir, preds, infer_s, "SAM prompted by YOLO-World boxes: test masks")
    row["prompt"] = "detector boxes"
    row["notes"] += [
        "inference time includes the detector's",
        "SAM: the fine-tuned decoder (best.pt)"
        if tuned
        else "SAM: base weights ("
        + ("the fine-tune did not beat them on val)" if finetuned else "sam-gt-ft did not run)"),
    ]
    return {
        **row,
        "train_s": detector["train_s"] + (finetuned["train_s"] if tuned else 0.0),
        "checkpoint": tuned,
        "command": _sam_predict_command(ctx, detector, tuned),
    }


def _sam_predict_command(ctx: RunContext, detector: dict, tuned: dict | None) -> str:
    cfg = ctx.config
    return command_line(
        "segment", "predict", "--image", ctx.data / "yolo" / "images" / "test", "--detector",
        ctx.out / detector["checkpoint"]["path"], "--conf", DETECTOR_CONF, "--model", cfg.sam_model,
        *_sam_weights_args(cfg),
        *(["--finetuned", ctx.out / tuned["path"]] if tuned else []), "--seed", cfg.seed, "--device", cfg.torch_device,
    )  # fmt: skip


@register(
    "yolo-seg",
    "YOLO-seg, fine-tuned",
    SEGMENTATION,
    "a YOLOv8/YOLO11 instance-segmentation model trained on yolo-seg/ (polygons)",
)
def yolo_seg(ctx: RunContext, row_dir: Path) -> dict:
    from defectkit.core.rle import mask_to_rle
    from defectkit.detect.models import open_model
    from defectkit.detect.predict import iter_results

    cfg = ctx.config
    weights, train_s = train_yolo(ctx, row_dir, ctx.yolo_seg_yaml, cfg.seg_detector, world=False)
    yolo = open_model(weights)
    # Masks at the image's own resolution (not the letterboxed input), at most COCO's 100 per image.
    yolo.overrides.update(retina_masks=True, max_det=100)
    preds, infer_s = {}, 0.0
    for split in ("val", "test"):
        truth = ctx.truth[split]
        t0 = time.perf_counter()
        results = []
        for image_id, (_, res) in zip(
            truth.image_ids,
            iter_results(
                yolo,
                truth.paths,
                conf=DETECTOR_CONF,
                imgsz=cfg.imgsz,
                device=cfg.ultralytics_device,
                progress=cfg.progress,
            ),
        ):
            if res.masks is None or len(res.boxes) == 0:
                continue
            masks = res.masks.data.cpu().numpy() > 0.5
            for (x1, y1, x2, y2), score, cls, mask in zip(
                res.boxes.xyxy.cpu().numpy().tolist(),
                res.boxes.conf.cpu().numpy().tolist(),
                res.boxes.cls.cpu().numpy().tolist(),
                masks,
            ):
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": int(cls) + 1,
                        "score": round(float(score), 6),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "segmentation": mask_to_rle(mask),
                    }
                )
        infer_s = time.perf_counter() - t0
        preds[split] = results
    row = _mask_union_row(ctx, row_dir, preds, infer_s, "YOLO-seg: test masks")
    row["prompt"] = "none"
    return {
        **row,
        "train_s": train_s,
        "checkpoint": checkpoint_entry(ctx, weights),
        "command": detect_train_command(ctx, ctx.yolo_seg_yaml, cfg.seg_detector, world=False),
    }
