"""Anomaly rows: anomalib's unsupervised models through the ``anomaly`` stage (``anomaly train`` on
the train split's good images only, thresholds chosen on val, ``anomaly val`` on val and test), so
the answer to "does a supervised model beat the unsupervised state of the art?" is on the same
split and the same leaderboard. The image-level score is the model's raw anomaly score; the maps
give the pixel metrics the papers report and, thresholded into components, class-agnostic COCO
boxes and masks. Without the ``anomaly`` extra the rows are skipped with one line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from defectkit.anomaly import MISSING_MESSAGE, MODEL_REGISTRY, AnomalyTrainConfig, anomalib_available
from defectkit.anomaly.checkpoint import model_file
from defectkit.anomaly.train import train
from defectkit.anomaly.val import validate
from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError
from defectkit.core.layout import GOOD, class_of
from defectkit.leaderboard.context import RunContext
from defectkit.leaderboard.rows import (
    AGNOSTIC,
    ANOMALY,
    PIXEL_METRICS,
    SPLITS,
    arg,
    bootstrap_args,
    checkpoint_entry,
    command_line,
    evaluator_plots,
    register,
    reproduce,
    with_interval,
)

# anomalib's default input size: the benchmark's 640 px would cost PatchCore's memory bank 6x more
# features for no published gain.
MAX_IMGSZ = 256
ANOMALY_ROWS = ("padim", "patchcore", "draem")


def unavailable() -> str | None:
    """Why the anomaly rows cannot run here (the extra is missing), else None."""
    return None if anomalib_available() else MISSING_MESSAGE


def train_config(ctx: RunContext, row_dir: Path, model: str) -> AnomalyTrainConfig:
    """``anomaly train``'s settings for ``model`` in a benchmark run: the run's device, seed and size
    (at most ``MAX_IMGSZ``), its backbone weights and DRAEM's anomaly source and epochs."""
    cfg = ctx.config
    spec = MODEL_REGISTRY[model]
    return AnomalyTrainConfig(
        data=str(ctx.data), out=str(row_dir / "train"), model=model,
        backbone_weights=cfg.anomaly_backbone_weights if spec.backbone else "imagenet",
        imgsz=min(cfg.imgsz, MAX_IMGSZ), epochs=0 if spec.one_pass else cfg.epochs_for("anomaly"),
        anomaly_source=cfg.anomaly_source if model == "draem" else "", seed=cfg.seed, device=cfg.torch_device,
    )  # fmt: skip


def train_command(tc: AnomalyTrainConfig) -> str:
    spec = MODEL_REGISTRY[tc.model]
    return command_line(
        "anomaly", "train", "--data", tc.data, "--model", tc.model, "--imgsz", tc.imgsz, "--seed", tc.seed,
        "--device", tc.device, *(("--backbone-weights", tc.backbone_weights) if spec.backbone else ()),
        *(() if spec.one_pass else ("--epochs", tc.epochs)),
        *(("--anomaly-source", tc.anomaly_source) if tc.anomaly_source else ()), "--out", tc.out,
    )  # fmt: skip


def per_type_hits(file_names: list[str], scores: list[float], threshold: float) -> dict[str, float]:
    """Per class folder, the share of test images the val-chosen image threshold calls right:
    defect types called defective (recall), good images called good (specificity).

    >>> per_type_hits(["test/good/0.png", "test/hole/0.png", "test/hole/1.png"], [0.1, 0.9, 0.2], 0.5)
    {'good': 1.0, 'hole': 0.5}
    """
    calls: dict[str, list[bool]] = {}
    for name, score in zip(file_names, scores):
        kind = class_of(name)
        calls.setdefault(kind, []).append((score >= threshold) != (kind == GOOD))
    return {kind: sum(hits) / len(hits) for kind, hits in sorted(calls.items())}


def anomaly_row(ctx: RunContext, row_dir: Path, model: str) -> dict:
    cfg = ctx.config
    tc = train_config(ctx, row_dir, model)
    t0 = time.perf_counter()
    run = train(tc, resume=cfg.resume, overwrite=not cfg.resume, progress=cfg.progress)
    train_s = time.perf_counter() - t0
    out_dirs = {"val": row_dir / "eval_val", "test": row_dir / "eval"}
    metrics, scores, infer_s = {}, {}, 0.0
    for split in SPLITS:
        t0 = time.perf_counter()
        with atomic_dir(out_dirs[split], overwrite=True) as tmp:
            metrics[split] = validate(
                run, ctx.data, split, tmp, device=cfg.torch_device, progress=cfg.progress,
                bootstrap=cfg.bootstrap if split == "test" else 0, seed=cfg.seed,
            )  # fmt: skip
        infer_s = time.perf_counter() - t0
        by_name = {r["file_name"]: r["score"] for r in json.loads((out_dirs[split] / "scores.json").read_text())}
        missing = [n for n in ctx.truth[split].file_names if n not in by_name]
        if missing:
            raise DefectkitError(f"{out_dirs[split] / 'scores.json'}: no score for {missing[0]} of coco/{split}.json")
        scores[split] = [by_name[n] for n in ctx.truth[split].file_names]
    test = metrics["test"]
    row_metrics = {m: with_interval(test["anomaly"], m) for m in PIXEL_METRICS}
    for block, kind in (("detection", "box"), ("segm", "segm")):
        row_metrics.update({f"agnostic_{kind}_{k}": with_interval(test[block], k) for k in AGNOSTIC})
    thresholds = test["thresholds"]
    notes = [
        "trained on the train split's good images only; image and pixel "
        f"thresholds chosen on val by F1-max ({thresholds['image']:.4g}, {thresholds['pixel']:.4g}); boxes and "
        "masks are the map's components at the pixel threshold, class `defect`"
    ]
    if tc.backbone_weights == "none" and MODEL_REGISTRY[model].backbone:
        notes.append("random-init backbone (--anomaly-backbone-weights none), not the published ImageNet features")
    best = model_file(run)
    val_command = ["anomaly", "val", "--model", arg(ctx, best), "--data", arg(ctx, ctx.data), "--split", "test",
                   "--device", cfg.torch_device, *bootstrap_args(ctx), "--out", arg(ctx, out_dirs["test"]),
                   "--overwrite", "--quiet"]  # fmt: skip
    return {
        "metrics": row_metrics,
        "per_class": per_type_hits(ctx.truth["test"].file_names, scores["test"], thresholds["image"]),
        "per_class_metric": "called right at the val image threshold (defects: recall; good: specificity)",
        "scores": scores,
        "train_s": train_s,
        "infer_s_per_image": infer_s / max(1, len(scores["test"])),
        "predictions": {s: ctx.rel(out_dirs[s] / "predictions.json") for s in SPLITS},
        "prediction_kind": "masks",
        "plots": evaluator_plots(ctx, out_dirs["test"]),
        "checkpoint": checkpoint_entry(ctx, best),
        "notes": notes,
        "reproduce": reproduce(ctx, [val_command], [out_dirs["test"] / "metrics.json"], [best]),
        "command": train_command(tc),
    }


ABOUT = {
    "padim": "anomalib's PaDiM: a Gaussian per patch position of CNN features of the good training images",
    "patchcore": "anomalib's PatchCore: nearest-neighbour distance to a coreset memory bank of good patch features",
    "draem": "anomalib's DRAEM: a reconstruction + discrimination network trained from scratch on good images "
    "with synthetic anomalies (--anomaly-source)",
}

for _name in ANOMALY_ROWS:
    register(
        _name, f"{MODEL_REGISTRY[_name].title} (unsupervised)", ANOMALY, ABOUT[_name], unavailable=unavailable
    )(lambda ctx, row_dir, model=_name: anomaly_row(ctx, row_dir, model))
