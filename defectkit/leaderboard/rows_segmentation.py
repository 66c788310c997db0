"""Segmentation rows: SAM prompted by the true boxes (base and fine-tuned: ``segment val``), SAM
prompted by the fine-tuned YOLO-World's boxes (``segment predict --detector``), and a YOLO-seg model
(``detect predict``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from defectkit.core.errors import DefectkitError
from defectkit.core.results import write_coco_results
from defectkit.evaluation import evaluate_masks
from defectkit.leaderboard.context import BenchmarkConfig, RunContext
from defectkit.leaderboard.rows import (
    DETECTOR_CONF,
    PIXEL_METRICS,
    SEGMENTATION,
    SPLITS,
    Command,
    arg,
    checkpoint_entry,
    coco_row,
    evaluate_mask_union,
    register,
    reproduce,
    with_interval,
)
from defectkit.leaderboard.rows_detection import detect_train_command, honesty_notes, predict_split_files, train_yolo
from defectkit.segment.data import read_sam_jsonl, split_jsonl
from defectkit.segment.models import MODEL_REGISTRY, build_sam
from defectkit.segment.predict import RESULTS_FILE, Segmenter, load_segmenter, segment_images
from defectkit.segment.train import TrainConfig, train
from defectkit.segment.val import (
    BASE,
    FINETUNED,
    SplitPredictions,
    category_ids,
    predict_split,
    val_split,
    write_val,
)

SAM_TOP_BOXES = 20  # detector boxes per image handed to SAM (segment predict --max-det)
SAM_ROWS = ("sam-gt-base", "sam-gt-random", "sam-gt-ft", "sam-det")
RANDOM_SAM_NOTE = "random weights, not SAM as released"


def sam_is_random(cfg: BenchmarkConfig) -> bool:
    """True when the run's SAM has random weights: ``vit_tiny`` (no released weights exist) or
    ``--sam-random-weights`` without a checkpoint. Then no row may call it "base SAM".

    >>> from pathlib import Path
    >>> cfg = BenchmarkConfig(Path("."), "wood", Path("o"), [], sam_model="vit_tiny")
    >>> sam_is_random(cfg), sam_is_random(BenchmarkConfig(Path("."), "wood", Path("o"), [], sam_model="vit_b"))
    (True, False)
    """
    spec = MODEL_REGISTRY.get(cfg.sam_model)
    official = spec is None or spec[0].official  # an unknown name fails in check_sam, with the known ones
    return cfg.sam_checkpoint is None and (cfg.sam_random_weights or not official)


def _sam_weights(cfg: BenchmarkConfig) -> str:
    """The run's SAM weights in words, for titles and notes."""
    if sam_is_random(cfg):
        return f"{cfg.sam_model} with {RANDOM_SAM_NOTE}"
    return f"{cfg.sam_model} " + (f"from {Path(cfg.sam_checkpoint).name}" if cfg.sam_checkpoint else "as released")


def check_sam(cfg: BenchmarkConfig) -> None:
    """Build the run's SAM once, on the CPU, before any row runs: a bad --sam-checkpoint (or an official
    model offline) fails while a fresh run can still remove its folder, so a plain rerun works."""
    build_sam(cfg.sam_model, cfg.sam_checkpoint, random_weights=cfg.sam_random_weights, seed=cfg.seed)


def _sam_args(ctx: RunContext, finetuned: Path | None = None) -> list[str]:
    """The options that name the run's SAM (and its embedding cache) to ``segment``."""
    cfg = ctx.config
    weights = ["--checkpoint", str(cfg.sam_checkpoint)] if cfg.sam_checkpoint else []
    if not cfg.sam_checkpoint and cfg.sam_random_weights:
        weights = ["--random-weights"]
    return [
        "--model", cfg.sam_model, *weights, "--seed", str(cfg.seed), "--device", cfg.torch_device,
        "--cache-dir", arg(ctx, ctx.cache_dir / "sam_embeddings"),
        *(["--finetuned", arg(ctx, finetuned)] if finetuned else []),
    ]  # fmt: skip


def _segmenter(ctx: RunContext, finetuned: Path | None = None) -> tuple[Segmenter, dict | None]:
    """SAM as ``segment`` loads it for :func:`_sam_args` (same seed, base weights and cache)."""
    cfg = ctx.config
    return load_segmenter(
        cfg.sam_model, checkpoint=cfg.sam_checkpoint, random_weights=cfg.sam_random_weights, seed=cfg.seed,
        device=cfg.torch_device, finetuned=finetuned, cache_dir=ctx.cache_dir / "sam_embeddings",
    )  # fmt: skip


def _sam_gt_boxes(ctx: RunContext, row_dir: Path, finetuned: Path | None, title: str) -> dict:
    """``segment val`` on the test split (every ground-truth instance prompted by its box; with a
    fine-tuned decoder, base SAM is scored beside it), then ``evaluate detection`` of its masks.
    The val split's masks are predicted the same way for the report's gallery."""
    segmenter, base_state = _segmenter(ctx, finetuned)
    test = ctx.truth["test"]
    records = {s: read_sam_jsonl(split_jsonl(ctx.sam_dir, s)) for s in SPLITS}
    val_file = write_coco_results(
        row_dir / "val_predictions.json",
        predict_split(segmenter, records["val"], category_ids(test.coco_path), ctx.config.progress).results,
    )
    t0 = time.perf_counter()
    scored = val_split(segmenter, records["test"], test.coco_path, base_state, ctx.config.progress)
    infer_s = (time.perf_counter() - t0) / len(scored)
    val_dir = row_dir / "segment_val"
    write_val(val_dir, "test", title, scored)
    key = FINETUNED if finetuned else BASE
    files = {"val": val_file, "test": val_dir / f"{key}_predictions.json"}
    row, evaluate_commands, metrics_files = coco_row(ctx, row_dir, "segm", files, infer_s, title, image_scores=False)
    metrics = scored[key][1]
    n_prompted = sum(1 for r in records["test"] if r.instances)
    row["infer_s_per_image"] = infer_s / max(1, n_prompted)
    intervals = _instance_mask_intervals(ctx, scored[key][0], test.coco_path)
    row["metrics"] = {
        "mask_mIoU": intervals.get("mean_iou", metrics["mean_iou"]),
        "mask_mDice": intervals.get("mean_dice", metrics["mean_dice"]),
        "instance_IoU": intervals.get("mean_image_iou", metrics["instance_iou"]),
        **row["metrics"],
        "area_ratio": metrics["area_ratio"],
    }
    row["per_class"] = metrics["per_class_iou"]
    row["per_class_metric"] = "mask IoU"
    row["prompt"] = "ground-truth boxes"
    row["notes"] = [
        (
            "prompted by the ground-truth boxes: no image-level score (the prompt already says where "
            "the defect is); segm AP is optimistic (one mask per true object)"
        )
    ]
    val_command = ["segment", "val", "--data", arg(ctx, ctx.sam_dir), "--split", "test", *_sam_args(ctx, finetuned),
                   "--out", arg(ctx, val_dir), "--overwrite"]  # fmt: skip
    row["reproduce"] = reproduce(
        ctx, [val_command, *evaluate_commands], [val_dir / "metrics.json", *metrics_files],
        [finetuned] if finetuned else [],
    )  # fmt: skip
    return row


def _instance_mask_intervals(ctx: RunContext, predicted: SplitPredictions, coco_json: Path) -> dict[str, dict]:
    """Bootstrap intervals of ``segment val``'s mask IoU/Dice: the evaluator's call of
    ``segment.val.score_predictions`` (each instance its own image, its pixels labelled by its
    class), with the run's ``--bootstrap``, so the values are segment val's and the resampled unit
    is the prompted instance. Empty for ``--bootstrap 0``."""
    cfg = ctx.config
    if cfg.bootstrap <= 0 or not predicted.gt_masks:
        return {}
    names = [n for n, _ in sorted(category_ids(coco_json).items(), key=lambda kv: kv[1])]
    classes = [r["category_id"] for r in predicted.results]
    out = evaluate_masks(
        [g.astype(np.uint8) * c for g, c in zip(predicted.gt_masks, classes)],
        [m.astype(np.uint8) * c for m, c in zip(predicted.pred_masks, classes)],
        class_names=names, bootstrap=cfg.bootstrap, seed=cfg.seed,
    )  # fmt: skip
    return out["ci"]


def _mask_union_row(
    ctx: RunContext,
    row_dir: Path,
    files: dict[str, Path],
    infer_s: float,
    title: str,
    commands: list[Command],
    checkpoints: list[Path],
) -> dict:
    """A predicted-mask row (no true prompts): COCO segm AP via :func:`coco_row`, plus mask IoU/Dice
    and pixel precision/recall of the union of the masks scored >= ``mask_score_threshold`` per image
    and class (``evaluate masks``). ``commands``: those that wrote ``files["test"]`` from
    ``checkpoints``."""
    threshold = ctx.config.mask_score_threshold
    row, evaluate_commands, metrics_files = coco_row(ctx, row_dir, "segm", files, infer_s, title)
    union, union_command = evaluate_mask_union(ctx, files["test"], row_dir / "eval_masks")
    row["metrics"] = {
        "mask_mIoU": with_interval(union, "mean_iou"),
        "mask_mDice": with_interval(union, "mean_dice"),
        **row["metrics"],
        "pixel_precision": union["pixel_precision"],
        "pixel_recall": union["pixel_recall"],
        **{m: with_interval(union, m) for m in PIXEL_METRICS},
    }
    row["per_class"] = {c: v["iou"] for c, v in union["per_class"].items()}
    row["per_class_metric"] = "mask IoU"
    row["notes"] = [f"mask IoU/Dice: union of the masks scored >= {threshold} per image and class"]
    row["reproduce"] = reproduce(
        ctx, [*commands, *evaluate_commands, union_command],
        [*metrics_files, row_dir / "eval_masks" / "metrics.json"], checkpoints,
    )  # fmt: skip
    return row


def _lr_args(cfg) -> list:
    return ["--lr", cfg.sam_lr] if cfg.sam_lr is not None else []  # else segment train's own default


@register(
    "sam-gt-base",
    "SAM (base, released weights), ground-truth boxes",
    SEGMENTATION,
    "SAM as released (an official checkpoint), each true defect prompted by its box: the bar a fine-tune "
    "must clear",
)
def sam_gt_base(ctx: RunContext, row_dir: Path) -> dict:
    if sam_is_random(ctx.config):  # resolve_rows names this row sam-gt-random; never call random weights "base"
        raise DefectkitError(f"--sam-model {ctx.config.sam_model}: {RANDOM_SAM_NOTE}; the row is sam-gt-random")
    return _untuned_sam_row(ctx, row_dir, "SAM base, ground-truth box prompts: test masks")


@register(
    "sam-gt-random",
    "SAM (random weights), ground-truth boxes",
    SEGMENTATION,
    f"SAM's architecture with {RANDOM_SAM_NOTE} (vit_tiny, or --sam-random-weights), each true defect "
    "prompted by its box: only the bar a fine-tune from the same random start must clear",
)
def sam_gt_random(ctx: RunContext, row_dir: Path) -> dict:
    if not sam_is_random(ctx.config):
        raise DefectkitError(f"--sam-model {ctx.config.sam_model}: released weights; the row is sam-gt-base")
    row = _untuned_sam_row(ctx, row_dir, f"SAM with {RANDOM_SAM_NOTE}, ground-truth box prompts: test masks")
    row["notes"].append(f"{_sam_weights(ctx.config)}: its masks show the pipeline, not what SAM can do")
    return row


def _untuned_sam_row(ctx: RunContext, row_dir: Path, title: str) -> dict:
    row = _sam_gt_boxes(ctx, row_dir, None, title)
    command = " ".join(row["reproduce"]["commands"][0])
    return {**row, "train_s": 0.0, "checkpoint": None, "command": command}


@register(
    "sam-gt-ft",
    "SAM (fine-tuned), ground-truth boxes",
    SEGMENTATION,
    "SAM's mask decoder fine-tuned on the train split (segment train), prompted by the true boxes",
)
def sam_gt_finetuned(ctx: RunContext, row_dir: Path) -> dict:
    cfg = ctx.config
    tc = TrainConfig(
        data=ctx.sam_dir, out=row_dir / "train", model=cfg.sam_model,
        checkpoint=Path(cfg.sam_checkpoint) if cfg.sam_checkpoint else None, random_weights=cfg.sam_random_weights,
        seed=cfg.seed, epochs=cfg.epochs_for("sam"), **({"lr": cfg.sam_lr} if cfg.sam_lr is not None else {}),
        device=cfg.torch_device, overwrite=True, cache_dir=ctx.cache_dir / "sam_embeddings", progress=cfg.progress,
    )  # fmt: skip
    tc.resume = cfg.resume and (tc.out / "last.pt").is_file()  # continue an interrupted attempt
    t0 = time.perf_counter()
    summary = train(tc)
    train_s = time.perf_counter() - t0
    best, last = tc.out / "best.pt", tc.out / "last.pt"
    weights = best if best.is_file() else last
    row = _sam_gt_boxes(ctx, row_dir, weights, "SAM fine-tuned, ground-truth box prompts: test masks")
    base = "the random-weight SAM" if sam_is_random(cfg) else "base SAM"
    if sam_is_random(cfg):
        row["title"] = "SAM (fine-tuned from random weights), ground-truth boxes"
        row["notes"].append(
            f"fine-tuned from {_sam_weights(cfg)}: 'beat base' means it beat that random decoder, not SAM"
        )
    if not summary.get("beat_base"):
        row["notes"].append(f"the fine-tuned decoder never beat {base} on val (no best.pt): scored last.pt")
    train_command = ["segment", "train", "--data", arg(ctx, ctx.sam_dir), *_sam_args(ctx), "--epochs", cfg.epochs_for("sam"),
                     *_lr_args(cfg), "--out", arg(ctx, tc.out)]  # fmt: skip
    return {
        **row,
        "train_s": train_s,
        "checkpoint": checkpoint_entry(ctx, weights),
        "beat_base": best.is_file(),
        "command": " ".join(str(a) for a in train_command),
    }


@register(
    "sam-det",
    "SAM + YOLO-World boxes",
    SEGMENTATION,
    "detect then segment (segment predict --detector): the fine-tuned YOLO-World's top boxes prompt SAM "
    "(its fine-tuned decoder when that beat base SAM); mask score = box score x SAM's predicted IoU",
    needs=("yolo-world-ft",),
    reads=("sam-gt-ft",),
)
def sam_detector_boxes(ctx: RunContext, row_dir: Path) -> dict:
    cfg = ctx.config
    detector = ctx.results["yolo-world-ft"]
    detector_weights = ctx.out / detector["checkpoint"]["path"]
    # The fine-tuned decoder only when it beat base SAM on val (segment's own advice otherwise: use base).
    finetuned = ctx.results.get("sam-gt-ft", {})
    tuned = finetuned["checkpoint"] if finetuned.get("beat_base") else None
    tuned_path = ctx.out / tuned["path"] if tuned else None
    segmenter, _ = _segmenter(ctx, tuned_path)
    files, infer_s, command = {}, 0.0, []
    for split in SPLITS:
        images, coco, out = ctx.data / "yolo" / "images" / split, ctx.truth[split].coco_path, row_dir / f"predict_{split}"
        t0 = time.perf_counter()
        segment_images(
            segmenter, images, out, detector=detector_weights, coco=coco, conf=DETECTOR_CONF,
            max_det=SAM_TOP_BOXES, imgsz=cfg.imgsz, device=cfg.torch_device, overwrite=True, progress=cfg.progress,
        )  # fmt: skip
        infer_s = time.perf_counter() - t0
        files[split] = out / RESULTS_FILE
        command = ["segment", "predict", "--image", arg(ctx, images), "--detector", arg(ctx, detector_weights),
                   "--coco", arg(ctx, coco), "--conf", repr(DETECTOR_CONF), "--max-det", str(SAM_TOP_BOXES),
                   "--imgsz", str(cfg.imgsz), *_sam_args(ctx, tuned_path), "--out", arg(ctx, out), "--overwrite",
                   "--quiet"]  # fmt: skip
    row = _mask_union_row(
        ctx, row_dir, files, infer_s, "SAM prompted by YOLO-World boxes: test masks", [command],
        [detector_weights, *([tuned_path] if tuned_path else [])],
    )  # fmt: skip
    row["prompt"] = "detector boxes"
    row["notes"] += [
        "inference time includes the detector's",
        "SAM: the fine-tuned decoder (best.pt)"
        if tuned
        else f"SAM: {_sam_weights(cfg)}, not fine-tuned ("
        + ("the fine-tune did not beat them on val)" if finetuned else "sam-gt-ft did not run)"),
    ]
    return {
        **row,
        "train_s": detector["train_s"] + (finetuned["train_s"] if tuned else 0.0),
        "checkpoint": tuned,
        "command": " ".join(command),
    }


@register(
    "yolo-seg",
    "YOLO-seg, fine-tuned",
    SEGMENTATION,
    "a YOLOv8/YOLO11 instance-segmentation model trained on yolo-seg/ (polygons)",
)
def yolo_seg(ctx: RunContext, row_dir: Path) -> dict:
    cfg = ctx.config
    weights, train_s = train_yolo(ctx, row_dir, ctx.yolo_seg_yaml, cfg.seg_detector, world=False)
    # detect predict gives a segmentation model's masks at the image's own size; at most COCO's 100 per image.
    files, infer_s, command = predict_split_files(ctx, row_dir, weights, max_det=100)
    row = _mask_union_row(ctx, row_dir, files, infer_s, "YOLO-seg: test masks", [command], [weights])
    row["prompt"] = "none"
    row["notes"] += honesty_notes(ctx, cfg.seg_detector, world=False, trained=True)
    return {
        **row,
        "train_s": train_s,
        "checkpoint": checkpoint_entry(ctx, weights),
        "command": detect_train_command(ctx, ctx.yolo_seg_yaml, cfg.seg_detector, world=False),
    }
