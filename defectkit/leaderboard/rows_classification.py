"""The classification row: a torchvision ResNet (``classify``'s API); defective = 1 - p(good)."""

from __future__ import annotations

import time
from pathlib import Path

from defectkit.core.errors import DefectkitError
from defectkit.leaderboard.context import RunContext
from defectkit.leaderboard.rows import (
    CLASSIFICATION,
    checkpoint_entry,
    command_line,
    evaluator_plots,
    register,
    write_predictions,
)


@register(
    "classifier",
    "ResNet classifier",
    CLASSIFICATION,
    "a torchvision ResNet trained on classify/ (good + each defect type); defective = 1 - p(good)",
)
def resnet_classifier(ctx: RunContext, row_dir: Path) -> dict:
    from defectkit.classify.checkpoint import read_checkpoint
    from defectkit.classify.data import scan_split
    from defectkit.classify.predict import defective_scores, run_model, score
    from defectkit.classify.train import TrainConfig, train
    from defectkit.core.layout import Manifest

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
