"""Detection rows: YOLO-World fine-tuned and zero-shot, a closed-set YOLO (``detect``'s Python API)."""

from __future__ import annotations

import time
from pathlib import Path

from defectkit.core.errors import DefectkitError
from defectkit.leaderboard.context import RunContext
from defectkit.leaderboard.rows import (
    DETECTION,
    DETECTOR_CONF,
    checkpoint_entry,
    coco_row,
    command_line,
    extra_train_args,
    image_ids_by_path,
    register,
)

WORLD_ROWS = ("yolo-world-ft", "yolo-world-zs")


def ensure_text_embeddings(ctx: RunContext) -> None:
    """YOLO-World rows read the class prompts' text embeddings from the converted data set's default
    file (``--text-embeddings`` unset): make it once, as ``detect embed`` does (CLIP; needs the
    ``clip`` package and, the first time, internet; offline it stops with what to pass instead)."""
    from defectkit.detect import embeddings as emb
    from defectkit.detect.data import load_data

    cfg = ctx.config
    if cfg.text_embeddings is not None or emb.default_path(ctx.yolo_yaml.parent).is_file():
        return
    ds = load_data(ctx.yolo_yaml, splits=(), check_labels=False)
    prompts = emb.parse_prompts(cfg.prompts, ds.names)
    emb.clip_embeddings(ds.names, prompts, device=cfg.torch_device).save(
        emb.default_path(ctx.yolo_yaml.parent)
    )


def _predict_boxes(ctx: RunContext, yolo) -> tuple[dict[str, list[dict]], float]:
    """COCO results for val and test (ids of coco/<split>.json); returns them and the test seconds."""
    from defectkit.detect.predict import predict_images

    cfg = ctx.config
    preds, infer_s = {}, 0.0
    for split in ("val", "test"):
        truth = ctx.truth[split]
        t0 = time.perf_counter()
        preds[split] = predict_images(
            yolo, truth.paths, conf=DETECTOR_CONF, imgsz=cfg.imgsz, device=cfg.ultralytics_device,
            image_ids=image_ids_by_path(truth), progress=cfg.progress,
        )  # fmt: skip
        infer_s = time.perf_counter() - t0
    return preds, infer_s


def train_yolo(ctx: RunContext, row_dir: Path, data: Path, model: str, world: bool) -> tuple[Path, float]:
    """Train with ``detect``; with --resume, an earlier attempt's ``last.pt`` is continued instead."""
    from defectkit.detect.train import parse_extra_args, train

    cfg = ctx.config
    run_dir = row_dir / "train"
    last = run_dir / "weights" / "last.pt"
    t0 = time.perf_counter()
    if cfg.resume and last.is_file():
        # a YOLO-World run folder holds its text_embeddings.pt from the start: resume reads it there
        try:
            train(data, model, resume=last, device=cfg.ultralytics_device)
        except DefectkitError as exc:
            if "nothing to resume" not in str(exc):
                raise  # else training had ended before the interruption; only scoring is left
    else:
        train(
            data, model, epochs=cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch, device=cfg.ultralytics_device,
            seed=cfg.seed, project=row_dir, name="train", exist_ok=True,
            **({"text_embeddings": cfg.text_embeddings, "prompts": cfg.prompts} if world else {}),
            **{**extra_train_args(ctx), **parse_extra_args(cfg.yolo_args)},
        )  # fmt: skip
    return run_dir / "weights" / "best.pt", time.perf_counter() - t0


def detect_train_command(ctx: RunContext, data: Path, model: str, world: bool) -> str:
    cfg = ctx.config
    emb = ["--text-embeddings", cfg.text_embeddings] if world and cfg.text_embeddings else []
    return command_line(
        "detect",
        "train",
        "--data",
        data,
        "--model",
        model,
        "--epochs",
        cfg.epochs,
        "--imgsz",
        cfg.imgsz,
        "--batch",
        cfg.batch,
        "--device",
        cfg.ultralytics_device,
        "--seed",
        cfg.seed,
        *emb,
        *cfg.yolo_args,
    )


@register(
    "yolo-world-ft",
    "YOLO-World, fine-tuned",
    DETECTION,
    "YOLO-World trained on the train split (detect train); boxes scored by COCO mAP",
)
def yolo_world_finetuned(ctx: RunContext, row_dir: Path) -> dict:
    from defectkit.detect.data import load_data
    from defectkit.detect.val import prepare_model

    weights, train_s = train_yolo(ctx, row_dir, ctx.yolo_yaml, ctx.config.detector, world=True)
    yolo = prepare_model(
        weights, load_data(ctx.yolo_yaml, splits=()), zero_shot=False, text_embeddings=None, prompts=None
    )
    preds, infer_s = _predict_boxes(ctx, yolo)
    return {
        **coco_row(ctx, row_dir, "bbox", preds, infer_s, "YOLO-World fine-tuned: test boxes"),
        "train_s": train_s,
        "checkpoint": checkpoint_entry(ctx, weights),
        "command": detect_train_command(ctx, ctx.yolo_yaml, ctx.config.detector, world=True),
    }


@register(
    "yolo-world-zs",
    "YOLO-World, zero-shot",
    DETECTION,
    "the same YOLO-World, not trained: classes set from the prompts' text embeddings",
)
def yolo_world_zero_shot(ctx: RunContext, row_dir: Path) -> dict:
    from defectkit.detect.data import load_data
    from defectkit.detect.val import prepare_model

    cfg = ctx.config
    yolo = prepare_model(
        cfg.detector,
        load_data(ctx.yolo_yaml, splits=()),
        zero_shot=True,
        text_embeddings=cfg.text_embeddings,
        prompts=cfg.prompts,
        seed=cfg.seed,
    )
    preds, infer_s = _predict_boxes(ctx, yolo)
    notes = []
    if str(cfg.detector).endswith(".yaml") or cfg.text_embeddings == "random":
        notes.append("random weights or random text embeddings: zero-shot numbers only exercise the pipeline")
    return {
        **coco_row(ctx, row_dir, "bbox", preds, infer_s, "YOLO-World zero-shot: test boxes"),
        "train_s": 0.0,
        "checkpoint": None,
        "command": command_line(
            "detect",
            "val",
            "--model",
            cfg.detector,
            "--data",
            ctx.yolo_yaml,
            "--split",
            "test",
            "--zero-shot",
            *(["--text-embeddings", cfg.text_embeddings] if cfg.text_embeddings else []),
        ),
        "notes": notes,
    }


@register(
    "yolo-closed",
    "closed-set YOLO, fine-tuned",
    DETECTION,
    "a closed-set YOLOv8/YOLO11 detector trained on the same split",
)
def yolo_closed_set(ctx: RunContext, row_dir: Path) -> dict:
    weights, train_s = train_yolo(ctx, row_dir, ctx.yolo_yaml, ctx.config.closed_detector, world=False)
    from defectkit.detect.models import open_model

    preds, infer_s = _predict_boxes(ctx, open_model(weights))
    return {
        **coco_row(ctx, row_dir, "bbox", preds, infer_s, "closed-set YOLO: test boxes"),
        "train_s": train_s,
        "checkpoint": checkpoint_entry(ctx, weights),
        "command": detect_train_command(ctx, ctx.yolo_yaml, ctx.config.closed_detector, world=False),
    }
