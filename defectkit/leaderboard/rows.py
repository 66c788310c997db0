"""The approaches a benchmark puts side by side: a registry of rows, like segment-anything's
``sam_model_registry``: a name maps to a builder that trains (when the approach trains), predicts
the val and test splits through the stage's own Python API, scores the test split with the shared
evaluator and returns a plain dict (stored as ``rows/<name>/result.json``).

Each result holds the task metrics, the per-class table, the cost (training seconds, inference
seconds per image, device) and, when the approach can give one, an image-level "defective" score
per val and test image (max box score, max mask score, 1 - p(good)): the common column.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectkit.atomic import atomic_write_json
from defectkit.errors import DefectkitError
from defectkit.leaderboard.context import RunContext, SplitTruth
from defectkit.leaderboard.scoring import max_score_per_image

DETECTION, SEGMENTATION, CLASSIFICATION = "detection", "segmentation", "classification"
DETECTOR_CONF = 0.001  # keep low-score boxes: COCO AP and the image AUROC need the whole ranking
SAM_TOP_BOXES = 20  # detector boxes per image handed to SAM (the highest-scoring ones)


@dataclass(frozen=True)
class RowSpec:
    name: str
    title: str
    task: str
    run: Callable[[RunContext, Path], dict]
    about: str
    needs: tuple[str, ...] = ()  # rows whose results this one reads (run first)


ROWS: dict[str, RowSpec] = {}


def register(name: str, title: str, task: str, about: str, needs: tuple[str, ...] = ()):
    def wrap(fn: Callable[[RunContext, Path], dict]) -> Callable[[RunContext, Path], dict]:
        ROWS[name] = RowSpec(name, title, task, fn, about, needs)
        return fn

    return wrap


# ---------------------------------------------------------------- shared pieces


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_entry(ctx: RunContext, path: Path) -> dict:
    return {"path": ctx.rel(path), "sha256": sha256_of(path)}


def command_line(*parts) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")


def _ids(truth: SplitTruth) -> dict[str, int]:
    return {str(p): i for p, i in zip(truth.paths, truth.image_ids)}


def write_predictions(ctx: RunContext, row_dir: Path, split: str, results: list) -> str:
    path = atomic_write_json(row_dir / f"{split}_predictions.json", results, indent=None)
    return ctx.rel(path)


def evaluator_plots(ctx: RunContext, eval_dir: Path) -> dict[str, str]:
    return {p.stem: ctx.rel(p) for p in sorted(eval_dir.glob("*.png"))}


def coco_row(
    ctx: RunContext,
    row_dir: Path,
    iou_type: str,
    preds: dict[str, list[dict]],
    infer_s: float,
    title: str,
    image_scores: bool = True,
) -> dict:
    """Score COCO results of the test split with the shared evaluator (report with PR curves and
    confusion matrix in ``row_dir/eval``) and package what every box/mask row returns."""
    from evaluation import evaluate_detection

    test = ctx.truth["test"]
    out = evaluate_detection(
        str(test.coco_path), preds["test"], iou_type, out_dir=row_dir / "eval", title=title
    )
    m = out[iou_type]
    prefix = "box" if iou_type == "bbox" else "segm"
    return {
        "metrics": {
            f"{prefix}_AP": m["AP"],
            f"{prefix}_AP50": m["AP50"],
            f"{prefix}_AP75": m["AP75"],
            f"{prefix}_AR100": m["AR100"],
        },
        "per_class": {name: v["AP"] if v["AP"] != -1 else None for name, v in m["per_class"].items()},
        "per_class_metric": f"{prefix} AP",
        "scores": {s: max_score_per_image(ctx.truth[s].image_ids, preds[s]) for s in ("val", "test")}
        if image_scores
        else None,
        "infer_s_per_image": infer_s / max(1, len(test.image_ids)),
        "predictions": {s: write_predictions(ctx, row_dir, s, preds[s]) for s in ("val", "test")},
        "prediction_kind": "masks" if iou_type == "segm" else "boxes",
        "plots": evaluator_plots(ctx, row_dir / "eval"),
    }


def _extra_train_args(ctx: RunContext) -> dict:
    # No worker processes on a CPU run (they cost more than they save on a few small images); our
    # own report draws the plots.
    return {"plots": False, **({"workers": 0} if ctx.config.ultralytics_device == "cpu" else {})}


# ---------------------------------------------------------------- detection rows


def _predict_boxes(ctx: RunContext, yolo) -> tuple[dict[str, list[dict]], float]:
    """COCO results for val and test (ids of coco/<split>.json); returns them and the test seconds."""
    from detect.predict import predict_images

    cfg = ctx.config
    preds, infer_s = {}, 0.0
    for split in ("val", "test"):
        truth = ctx.truth[split]
        t0 = time.perf_counter()
        preds[split] = predict_images(
            yolo, truth.paths, conf=DETECTOR_CONF, imgsz=cfg.imgsz, device=cfg.ultralytics_device,
            image_ids=_ids(truth), progress=cfg.progress,
        )  # fmt: skip
        infer_s = time.perf_counter() - t0
    return preds, infer_s


def _train_yolo(ctx: RunContext, row_dir: Path, data: Path, model: str, world: bool) -> tuple[Path, float]:
    """Train with ``detect``; with --resume, an earlier attempt's ``last.pt`` is continued instead."""
    from detect.train import train

    cfg = ctx.config
    run_dir = row_dir / "train"
    last = run_dir / "weights" / "last.pt"
    t0 = time.perf_counter()
    if cfg.resume and last.is_file():
        if world:
            _keep_text_embeddings(ctx, data, run_dir)
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
            **_extra_train_args(ctx),
        )  # fmt: skip
    return run_dir / "weights" / "best.pt", time.perf_counter() - t0


def _keep_text_embeddings(ctx: RunContext, data: Path, run_dir: Path) -> None:
    """Put the run's text embeddings where ``detect``'s resume reads them: detect moves the file into
    the run folder only when training ends, so an interrupted YOLO-World run has none yet."""
    from detect import embeddings as emb
    from detect.data import load_data

    target = run_dir / "text_embeddings.pt"
    if not target.is_file():
        cfg = ctx.config
        ds = load_data(data, splits=())
        table = emb.resolve(
            cfg.text_embeddings, ds.names, ds.yaml_path.parent, prompts_spec=cfg.prompts, seed=cfg.seed
        )
        table.save(target)


def _detect_train_command(ctx: RunContext, data: Path, model: str, world: bool) -> str:
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
    )


@register(
    "yolo-world-ft",
    "YOLO-World, fine-tuned",
    DETECTION,
    "YOLO-World trained on the train split (detect train); boxes scored by COCO mAP",
)
def yolo_world_finetuned(ctx: RunContext, row_dir: Path) -> dict:
    from detect.data import load_data
    from detect.val import prepare_model

    weights, train_s = _train_yolo(ctx, row_dir, ctx.yolo_yaml, ctx.config.detector, world=True)
    yolo = prepare_model(
        weights, load_data(ctx.yolo_yaml, splits=()), zero_shot=False, text_embeddings=None, prompts=None
    )
    preds, infer_s = _predict_boxes(ctx, yolo)
    return {
        **coco_row(ctx, row_dir, "bbox", preds, infer_s, "YOLO-World fine-tuned: test boxes"),
        "train_s": train_s,
        "checkpoint": checkpoint_entry(ctx, weights),
        "command": _detect_train_command(ctx, ctx.yolo_yaml, ctx.config.detector, world=True),
    }


@register(
    "yolo-world-zs",
    "YOLO-World, zero-shot",
    DETECTION,
    "the same YOLO-World, not trained: classes set from the prompts' text embeddings",
)
def yolo_world_zero_shot(ctx: RunContext, row_dir: Path) -> dict:
    from detect.data import load_data
    from detect.val import prepare_model

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
    weights, train_s = _train_yolo(ctx, row_dir, ctx.yolo_yaml, ctx.config.closed_detector, world=False)
    from detect.models import open_model

    preds, infer_s = _predict_boxes(ctx, open_model(weights))
    return {
        **coco_row(ctx, row_dir, "bbox", preds, infer_s, "closed-set YOLO: test boxes"),
        "train_s": train_s,
        "checkpoint": checkpoint_entry(ctx, weights),
        "command": _detect_train_command(ctx, ctx.yolo_yaml, ctx.config.closed_detector, world=False),
    }


# ---------------------------------------------------------------- segmentation rows


def _segmenter(ctx: RunContext, finetuned: Path | None = None):
    """SAM as ``segment`` builds it (same seed, same base weights), with the run's embedding cache."""
    from segment.embeddings import EmbeddingCache, ImageEncoder
    from segment.models import apply_finetuned, build_sam, load_finetuned
    from segment.predict import Segmenter

    cfg = ctx.config
    model = build_sam(cfg.sam_model, cfg.sam_checkpoint, seed=cfg.seed, device=cfg.torch_device)
    if finetuned is not None:
        apply_finetuned(model, load_finetuned(finetuned), finetuned)
    cache = EmbeddingCache(ctx.cache_dir / "sam_embeddings", model.identity, model.spec.img_size)
    return Segmenter(ImageEncoder(model, cache))


def _sam_gt_boxes(ctx: RunContext, row_dir: Path, segmenter, title: str) -> dict:
    """SAM prompted by every ground-truth instance's box (the segment stage's protocol: `segment val`)."""
    from segment.data import read_sam_jsonl, split_jsonl
    from segment.validate import category_ids, predict_split, score_split

    test = ctx.truth["test"]
    cat_ids = category_ids(test.coco_path)
    records = {s: read_sam_jsonl(split_jsonl(ctx.sam_dir, s)) for s in ("val", "test")}
    preds, infer_s = {}, 0.0
    for split in ("val", "test"):
        t0 = time.perf_counter()
        preds[split] = predict_split(segmenter, records[split], cat_ids, ctx.config.progress)[2]
        infer_s = time.perf_counter() - t0
    scored = score_split(segmenter, records["test"], test.coco_path)
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


def _sam_command(ctx: RunContext, verb: str, *extra) -> str:
    cfg = ctx.config
    ck = ["--checkpoint", cfg.sam_checkpoint] if cfg.sam_checkpoint else []
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
    from segment.train import TrainConfig, train

    cfg = ctx.config
    tc = TrainConfig(
        data=ctx.sam_dir, out=row_dir / "train", model=cfg.sam_model,
        checkpoint=Path(cfg.sam_checkpoint) if cfg.sam_checkpoint else None, seed=cfg.seed, epochs=cfg.epochs,
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
        "command": _sam_command(ctx, "train", "--epochs", cfg.epochs, "--out", tc.out),
    }


@register(
    "sam-det",
    "SAM + YOLO-World boxes",
    SEGMENTATION,
    "detect then segment: the fine-tuned YOLO-World's boxes prompt SAM (fine-tuned when that row ran)",
    needs=("yolo-world-ft",),
)
def sam_detector_boxes(ctx: RunContext, row_dir: Path) -> dict:
    import json

    from defectkit.rle import mask_to_rle
    from evaluation import evaluate_masks

    detector = ctx.results["yolo-world-ft"]
    tuned = ctx.results.get("sam-gt-ft", {}).get("checkpoint")
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
    row = coco_row(ctx, row_dir, "segm", preds, infer_s, "SAM prompted by YOLO-World boxes: test masks")
    union = evaluate_masks(
        str(ctx.truth["test"].coco_path), preds["test"], score_threshold=ctx.config.mask_score_threshold
    )
    row["metrics"] = {
        "mask_mIoU": union["mean_iou"],
        "mask_mDice": union["mean_dice"],
        **row["metrics"],
        "pixel_precision": union["pixel_precision"],
        "pixel_recall": union["pixel_recall"],
    }
    row["per_class"] = {c: v["iou"] for c, v in union["per_class"].items()}
    row["per_class_metric"] = "mask IoU"
    row["prompt"] = "detector boxes"
    row["notes"] = [
        (
            f"mask IoU/Dice: union of the masks scored >= {ctx.config.mask_score_threshold} per image and "
            "class; inference time includes the detector's"
        ),
        "SAM: fine-tuned decoder" if tuned else "SAM: base weights (sam-gt-ft did not run)",
    ]
    return {
        **row,
        "train_s": detector["train_s"] + ctx.results.get("sam-gt-ft", {}).get("train_s", 0.0),
        "checkpoint": tuned,
        "command": _sam_predict_command(ctx, detector, tuned),
    }


def _sam_predict_command(ctx: RunContext, detector: dict, tuned: dict | None) -> str:
    cfg = ctx.config
    return command_line(
        "segment", "predict", "--image", ctx.data / "yolo" / "images" / "test", "--detector",
        ctx.out / detector["checkpoint"]["path"], "--conf", DETECTOR_CONF, "--model", cfg.sam_model,
        *(["--checkpoint", cfg.sam_checkpoint] if cfg.sam_checkpoint else []),
        *(["--finetuned", ctx.out / tuned["path"]] if tuned else []), "--seed", cfg.seed, "--device", cfg.torch_device,
    )  # fmt: skip


@register(
    "yolo-seg",
    "YOLO-seg, fine-tuned",
    SEGMENTATION,
    "a YOLOv8/YOLO11 instance-segmentation model trained on yolo-seg/ (polygons)",
)
def yolo_seg(ctx: RunContext, row_dir: Path) -> dict:
    from defectkit.rle import mask_to_rle
    from detect.models import open_model
    from detect.predict import iter_results
    from evaluation import evaluate_masks

    cfg = ctx.config
    weights, train_s = _train_yolo(ctx, row_dir, ctx.yolo_seg_yaml, cfg.seg_detector, world=False)
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
    row = coco_row(ctx, row_dir, "segm", preds, infer_s, "YOLO-seg: test masks")
    union = evaluate_masks(
        str(ctx.truth["test"].coco_path), preds["test"], score_threshold=cfg.mask_score_threshold
    )
    row["metrics"] = {
        "mask_mIoU": union["mean_iou"],
        "mask_mDice": union["mean_dice"],
        **row["metrics"],
        "pixel_precision": union["pixel_precision"],
        "pixel_recall": union["pixel_recall"],
    }
    row["per_class"] = {c: v["iou"] for c, v in union["per_class"].items()}
    row["per_class_metric"] = "mask IoU"
    row["prompt"] = "none"
    row["notes"] = [
        f"mask IoU/Dice: union of the masks scored >= {cfg.mask_score_threshold} per image and class"
    ]
    return {
        **row,
        "train_s": train_s,
        "checkpoint": checkpoint_entry(ctx, weights),
        "command": _detect_train_command(ctx, ctx.yolo_seg_yaml, cfg.seg_detector, world=False),
    }


# ---------------------------------------------------------------- classification row


@register(
    "classifier",
    "ResNet classifier",
    CLASSIFICATION,
    "a torchvision ResNet trained on classify/ (good + each defect type); defective = 1 - p(good)",
)
def resnet_classifier(ctx: RunContext, row_dir: Path) -> dict:
    from classify.checkpoint import read_checkpoint
    from classify.data import scan_split
    from classify.predict import defective_scores, run_model, score
    from classify.training import TrainConfig, train
    from convert.layout import Manifest

    cfg = ctx.config
    size = min(cfg.imgsz, 224)  # ResNets see 224 px in the course's setup; smaller for tiny demo runs
    tc = TrainConfig(
        data=str(ctx.classify_dir), out=str(row_dir / "train"), arch=cfg.classifier_arch,
        weights=cfg.classifier_weights, freeze="none" if cfg.classifier_weights == "none" else "layer4",
        epochs=cfg.epochs, batch=cfg.batch, image_size=size, seed=cfg.seed, device=cfg.torch_device,
        decode_workers=2,
    )  # fmt: skip
    last = row_dir / "train" / "last.pt"
    t0 = time.perf_counter()
    train(tc, resume=last if cfg.resume and last.is_file() else None, overwrite=True, progress=cfg.progress)
    train_s = time.perf_counter() - t0
    best = row_dir / "train" / "best.pt"
    classes = read_checkpoint(best)["classes"]
    manifest = Manifest.load(ctx.data)
    scores, records, infer_s, test_metrics = {}, {}, 0.0, None
    for split in ("val", "test"):
        found = scan_split(ctx.classify_dir, split, classes)
        t0 = time.perf_counter()
        probs, _ = run_model(best, found.paths, device=cfg.torch_device, progress=cfg.progress)
        infer_s = time.perf_counter() - t0
        defective = defective_scores(probs, classes)
        if not defective or defective[0] is None:
            raise DefectkitError(f"{ctx.classify_dir}: no 'good' class, so no image-level defective score")
        by_name = {}
        for path, p, d in zip(found.paths, probs, defective):
            top = int(p.argmax())
            by_name[manifest.from_flat(split, path.name)] = {
                "class": classes[top],
                "score": float(p[top]),
                "defective": float(d),
            }
        truth = ctx.truth[split]
        missing = [n for n in truth.file_names if n not in by_name]
        if missing:
            raise DefectkitError(
                f"{ctx.classify_dir / split}: no image for {missing[0]} of coco/{split}.json"
            )
        records[split] = [{"file_name": n, **by_name[n]} for n in truth.file_names]
        scores[split] = [by_name[n]["defective"] for n in truth.file_names]
        if split == "test":
            test_metrics = score(probs, found.labels, classes, row_dir / "eval")
    return {
        "metrics": {
            "accuracy": test_metrics["accuracy"],
            "balanced_accuracy": test_metrics["balanced_accuracy"],
        },
        "per_class": {c: v["recall"] for c, v in test_metrics["per_class"].items()},
        "per_class_metric": "recall",
        "scores": scores,
        "train_s": train_s,
        "infer_s_per_image": infer_s / max(1, len(scores["test"])),
        "predictions": {s: write_predictions(ctx, row_dir, s, records[s]) for s in ("val", "test")},
        "prediction_kind": "labels",
        "plots": evaluator_plots(ctx, row_dir / "eval"),
        "checkpoint": checkpoint_entry(ctx, best),
        "command": command_line(
            "classify",
            "train",
            "--data",
            ctx.classify_dir,
            "--arch",
            cfg.classifier_arch,
            "--weights",
            cfg.classifier_weights,
            "--freeze",
            tc.freeze,
            "--epochs",
            cfg.epochs,
            "--batch",
            cfg.batch,
            "--image-size",
            size,
            "--device",
            cfg.torch_device,
            "--seed",
            cfg.seed,
        ),
    }


DEMO_ROWS = ("yolo-world-ft", "sam-gt-base", "sam-gt-ft", "sam-det", "classifier")
ALL_ROWS = tuple(ROWS)


def resolve_rows(names: list[str] | tuple[str, ...]) -> list[str]:
    """The rows to run, in registry order, with the rows they need added.

    >>> resolve_rows(["sam-det"])
    ['yolo-world-ft', 'sam-det']
    """
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise DefectkitError(f"--rows {','.join(unknown)}: unknown row; known: {', '.join(ROWS)}, all, demo")
    wanted = set(names)
    for name in list(names):
        wanted.update(ROWS[name].needs)
    return [n for n in ROWS if n in wanted]
