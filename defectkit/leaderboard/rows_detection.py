"""Detection rows: YOLO-World fine-tuned and zero-shot, a closed-set YOLO (``detect``'s Python API)."""

from __future__ import annotations

import time
from pathlib import Path

from defectkit.core.errors import DefectkitError
from defectkit.detect import embeddings as emb
from defectkit.detect.data import load_data
from defectkit.detect.predict import predict_to_files
from defectkit.detect import train as detect_train  # a module attribute: tests interrupt its train()
from defectkit.detect.val import prepare_model
from defectkit.leaderboard.context import RunContext
from defectkit.leaderboard.rows import (
    DETECTION,
    DETECTOR_CONF,
    SPLITS,
    Command,
    arg,
    checkpoint_entry,
    coco_row,
    command_line,
    extra_train_args,
    register,
    reproduce,
)

WORLD_ROWS = ("yolo-world-ft", "yolo-world-zs")
RANDOM_TEXT_NOTE = "random text embeddings, not CLIP's: the class prompts carry no meaning"


def random_start(model: str) -> bool:
    """A YOLO given as a ``.yaml`` starts from random weights, not from released ones.

    >>> random_start("yolov8s-worldv2.yaml"), random_start("yolov8s-worldv2.pt")
    (True, False)
    """
    return str(model).endswith((".yaml", ".yml"))


def text_embeddings_are_random(ctx: RunContext) -> bool:
    """True when the YOLO-World rows read random text embeddings: ``--text-embeddings random``, or a
    file made that way (``detect embed`` records the model that made it)."""
    spec = ctx.config.text_embeddings
    if spec == "random":
        return True
    path = Path(spec) if spec else emb.default_path(ctx.yolo_yaml.parent)
    return path.is_file() and emb.load(path).model == "random"


def honesty_notes(ctx: RunContext, model: str, *, world: bool, trained: bool) -> list[str]:
    """What a YOLO row's numbers stand for when it did not start from what was released: random
    weights (a ``.yaml``) and, for YOLO-World, random text embeddings."""
    notes = []
    if random_start(model):
        notes.append(
            f"{Path(model).name}: random weights, not the released model"
            + (": trained from scratch" if trained else ": a zero-shot score of random weights is noise")
        )
    if world and text_embeddings_are_random(ctx):
        notes.append(
            RANDOM_TEXT_NOTE
            + (" (trained as a closed-set detector with fixed random class vectors)" if trained
               else "; zero-shot numbers only exercise the pipeline")
        )  # fmt: skip
    return notes


def ensure_text_embeddings(ctx: RunContext) -> None:
    """YOLO-World rows read the class prompts' text embeddings from the converted data set's default
    file (``--text-embeddings`` unset): make it once, as ``detect embed`` does (CLIP; needs the
    ``clip`` package and, the first time, internet; offline it stops with what to pass instead)."""
    cfg = ctx.config
    if cfg.text_embeddings is not None or emb.default_path(ctx.yolo_yaml.parent).is_file():
        return
    ds = load_data(ctx.yolo_yaml, splits=(), check_labels=False)
    prompts = emb.parse_prompts(cfg.prompts, ds.names)
    emb.clip_embeddings(ds.names, prompts, device=cfg.torch_device).save(
        emb.default_path(ctx.yolo_yaml.parent)
    )


def predict_split_files(
    ctx: RunContext, row_dir: Path, weights: Path, max_det: int = 300
) -> tuple[dict[str, Path], float, Command]:
    """``detect predict`` on the val and test images (convert-mvtec's ``yolo/images/<split>``, ids of
    ``coco/<split>.json``) into ``row_dir/<split>_predictions.json``: COCO results (masks too for a
    segmentation model). Returns the files, the test seconds and the test split's command."""
    cfg = ctx.config
    files, infer_s, command = {}, 0.0, []
    for split in SPLITS:
        images = ctx.data / "yolo" / "images" / split
        coco, files[split] = ctx.truth[split].coco_path, row_dir / f"{split}_predictions.json"
        t0 = time.perf_counter()
        predict_to_files(
            weights, images, save_coco=files[split], coco=coco, conf=DETECTOR_CONF, imgsz=cfg.imgsz,
            device=cfg.ultralytics_device, overwrite=True, progress=cfg.progress, max_det=max_det,
        )  # fmt: skip
        infer_s = time.perf_counter() - t0
        command = ["detect", "predict", "--model", arg(ctx, weights), "--source", arg(ctx, images),
                   "--coco", arg(ctx, coco), "--save-coco", arg(ctx, files[split]), "--conf", repr(DETECTOR_CONF),
                   "--imgsz", str(cfg.imgsz), "--device", cfg.ultralytics_device, "--max-det", str(max_det),
                   "--overwrite"]  # fmt: skip
    return files, infer_s, command


def detection_row(ctx: RunContext, row_dir: Path, weights: Path, title: str) -> dict:
    """Predict val and test with ``weights`` and score test boxes: the part every detection row shares."""
    files, infer_s, predict_command = predict_split_files(ctx, row_dir, weights)
    row, evaluate_commands, metrics_files = coco_row(ctx, row_dir, "bbox", files, infer_s, title)
    row["reproduce"] = reproduce(ctx, [predict_command, *evaluate_commands], metrics_files, [weights])
    return row


def train_yolo(ctx: RunContext, row_dir: Path, data: Path, model: str, world: bool) -> tuple[Path, float]:
    """Train with ``detect``; with --resume, an earlier attempt's ``last.pt`` is continued instead."""
    cfg = ctx.config
    run_dir = row_dir / "train"
    last = run_dir / "weights" / "last.pt"
    t0 = time.perf_counter()
    if cfg.resume and last.is_file():
        # a YOLO-World run folder holds its text_embeddings.pt from the start: resume reads it there
        try:
            detect_train.train(data, model, resume=last, device=cfg.ultralytics_device, quiet=not cfg.progress)
        except DefectkitError as exc:
            if "nothing to resume" not in str(exc):
                raise  # else training had ended before the interruption; only scoring is left
    else:
        detect_train.train(
            data, model, epochs=cfg.epochs_for("detector"), imgsz=cfg.imgsz, batch=cfg.batch, device=cfg.ultralytics_device,
            seed=cfg.seed, project=row_dir, name="train", exist_ok=True, quiet=not cfg.progress,
            **({"text_embeddings": cfg.text_embeddings, "prompts": cfg.prompts} if world else {}),
            **{**extra_train_args(ctx), **detect_train.parse_extra_args(cfg.yolo_args)},
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
        cfg.epochs_for("detector"),
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
    row = trained_detector_row(ctx, row_dir, ctx.config.detector, world=True, title="YOLO-World fine-tuned")
    if text_embeddings_are_random(ctx):
        row["title"] = "YOLO-World, fine-tuned (random text embeddings)"
    return row


def trained_detector_row(ctx: RunContext, row_dir: Path, model: str, *, world: bool, title: str) -> dict:
    """Train a detector on the yolo/ data (detect train), then score its test boxes."""
    weights, train_s = train_yolo(ctx, row_dir, ctx.yolo_yaml, model, world=world)
    return {
        **detection_row(ctx, row_dir, weights, f"{title}: test boxes"),
        "notes": honesty_notes(ctx, model, world=world, trained=True),
        "train_s": train_s,
        "checkpoint": checkpoint_entry(ctx, weights),
        "command": detect_train_command(ctx, ctx.yolo_yaml, model, world=world),
    }


@register(
    "yolo-world-zs",
    "YOLO-World, zero-shot",
    DETECTION,
    "the same YOLO-World, not trained: classes set from the prompts' text embeddings",
)
def yolo_world_zero_shot(ctx: RunContext, row_dir: Path) -> dict:
    cfg = ctx.config
    yolo = prepare_model(
        cfg.detector,
        load_data(ctx.yolo_yaml, splits=()),
        zero_shot=True,
        text_embeddings=cfg.text_embeddings,
        prompts=cfg.prompts,
        seed=cfg.seed,
    )
    # The model with its classes set from the embeddings, saved: what is scored, and where the
    # recorded commands start (random .yaml weights could not be rebuilt otherwise).
    weights = row_dir / "zero_shot.pt"
    yolo.save(weights)
    notes = honesty_notes(ctx, cfg.detector, world=True, trained=False)
    return {
        **detection_row(ctx, row_dir, weights, "YOLO-World zero-shot: test boxes"),
        **({"title": "YOLO-World, zero-shot (random text embeddings)"} if text_embeddings_are_random(ctx) else {}),
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
            "--seed",
            cfg.seed,
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
    return trained_detector_row(ctx, row_dir, ctx.config.closed_detector, world=False, title="closed-set YOLO")
