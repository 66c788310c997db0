"""The classification row: a torchvision ResNet (``classify train``, scored by ``classify val``);
defective = 1 - p(good)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from defectkit.classify.train import TrainConfig, train
from defectkit.classify.val import validate
from defectkit.core.atomic import atomic_dir, atomic_write_json
from defectkit.core.errors import DefectkitError
from defectkit.core.layout import GOOD, Manifest
from defectkit.evaluation import evaluate_classification
from defectkit.leaderboard.context import RunContext
from defectkit.leaderboard.rows import (
    CLASSIFICATION,
    SPLITS,
    arg,
    checkpoint_entry,
    command_line,
    evaluator_plots,
    register,
    reproduce,
    with_interval,
)


DEFECTIVE = "defective"  # the one defect class of the binary view


def types_without_training_images(classify_dir: Path) -> list[str]:
    """The class folders of ``classify/train`` with no image: a ``fewshot:K`` split leaves most defect
    types out of train, and a classifier cannot learn a class it never sees."""
    train = classify_dir / "train"
    return sorted(d.name for d in train.iterdir() if d.is_dir() and not any(d.iterdir()))


def binary_view(classify_dir: Path, out: Path) -> Path:
    """``classify/`` with every defect type in one ``defective`` folder beside ``good`` (hard links, else
    symlinks; same file names, so predictions map back through the manifest): DevNet's and DRA's
    good-vs-anomalous task, which K labelled defect images of any type can train."""
    with atomic_dir(out, overwrite=True) as tmp:
        for split_dir in sorted(p for p in classify_dir.iterdir() if p.is_dir()):
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                target = tmp / split_dir.name / (GOOD if class_dir.name == GOOD else DEFECTIVE)
                target.mkdir(parents=True, exist_ok=True)
                for image in sorted(class_dir.iterdir()):
                    try:
                        os.link(image, target / image.name)
                    except OSError:
                        os.symlink(image.resolve(), target / image.name)
    return out


@register(
    "classifier",
    "ResNet classifier",
    CLASSIFICATION,
    "a torchvision ResNet trained on classify/ (good + each defect type); defective = 1 - p(good)",
)
def resnet_classifier(ctx: RunContext, row_dir: Path) -> dict:
    cfg = ctx.config
    size = min(cfg.imgsz, 224)  # ResNets see 224 px in the course's setup; smaller for tiny demo runs
    unseen = types_without_training_images(ctx.classify_dir)
    # No training image for some defect types (fewshot:K): learn good vs defective instead. Under
    # cache/ (which a replay links), so the recorded commands find it.
    data = binary_view(ctx.classify_dir, ctx.cache_dir / "classify_binary") if unseen else ctx.classify_dir
    tc = TrainConfig(
        data=str(data), out=str(row_dir / "train"), arch=cfg.classifier_arch,
        weights=cfg.classifier_weights, freeze="none" if cfg.classifier_weights == "none" else "layer4",
        epochs=cfg.epochs_for("classifier"), batch=cfg.batch, image_size=size, seed=cfg.seed, device=cfg.torch_device,
        decode_workers=2,
    )  # fmt: skip
    last = row_dir / "train" / "last.pt"
    t0 = time.perf_counter()
    train(tc, resume=last if cfg.resume and last.is_file() else None, overwrite=True, progress=cfg.progress)
    train_s = time.perf_counter() - t0
    best = row_dir / "train" / "best.pt"
    manifest = Manifest.load(ctx.data)
    # ``classify val`` on each split: the test split's report is the row's (eval/), val's picks the
    # image-level threshold (eval_val/); both write per-image records with the defective score.
    out_dirs = {"val": row_dir / "eval_val", "test": row_dir / "eval"}
    scores, records, metrics, infer_s = {}, {}, {}, 0.0
    for split in SPLITS:
        t0 = time.perf_counter()
        with atomic_dir(out_dirs[split], overwrite=True) as tmp:
            metrics[split] = validate(best, data, split, tmp, device=cfg.torch_device, progress=cfg.progress)
        infer_s = time.perf_counter() - t0
        by_name = {}
        for rec in json.loads((out_dirs[split] / "predictions.json").read_text()):
            if rec["defective"] is None:
                raise DefectkitError(f"{data}: no 'good' class, so no image-level defective score")
            name = manifest.from_flat(split, Path(rec["file"]).name)
            by_name[name] = {"class": rec["class"], "score": rec["score"], "defective": rec["defective"]}
        truth = ctx.truth[split]
        missing = [n for n in truth.file_names if n not in by_name]
        if missing:
            raise DefectkitError(f"{data / split}: no image for {missing[0]} of coco/{split}.json")
        records[split] = [{"file_name": n, **by_name[n]} for n in truth.file_names]
        scores[split] = [by_name[n]["defective"] for n in truth.file_names]
    test_metrics = metrics["test"]
    if cfg.bootstrap > 0:  # the evaluator's intervals of classify val's accuracies, from its per-image calls
        test_records = json.loads((out_dirs["test"] / "predictions.json").read_text())
        test_metrics = evaluate_classification(
            [r["label"] for r in test_records], [r["class"] for r in test_records], list(test_records[0]["probs"]),
            bootstrap=cfg.bootstrap, seed=cfg.seed,
        )  # fmt: skip
    val_command = ["classify", "val", "--model", arg(ctx, best), "--data", arg(ctx, data), "--split",
                   "test", "--device", cfg.torch_device, "--out", arg(ctx, out_dirs["test"]), "--overwrite",
                   "--quiet"]  # fmt: skip
    notes = [
        f"no training image of {', '.join(unseen)} (split {cfg.protocol}): trained good vs {DEFECTIVE}, every "
        "defect type in one class, so its accuracies are binary"
    ] if unseen else []  # fmt: skip
    return {
        "notes": notes,
        "metrics": {m: with_interval(test_metrics, m) for m in ("balanced_accuracy", "accuracy")},
        "per_class": {c: v["recall"] for c, v in test_metrics["per_class"].items()},
        "per_class_metric": "recall",
        "scores": scores,
        "train_s": train_s,
        "infer_s_per_image": infer_s / max(1, len(scores["test"])),
        "predictions": {
            s: ctx.rel(atomic_write_json(row_dir / f"{s}_predictions.json", records[s])) for s in SPLITS
        },
        "prediction_kind": "labels",
        "plots": evaluator_plots(ctx, out_dirs["test"]),
        "checkpoint": checkpoint_entry(ctx, best),
        "reproduce": reproduce(ctx, [val_command], [out_dirs["test"] / "metrics.json"], [best]),
        "command": command_line(
            "classify", "train", "--data", data, "--arch", cfg.classifier_arch,
            "--weights", cfg.classifier_weights, "--freeze", tc.freeze, "--epochs", cfg.epochs_for("classifier"), "--batch", cfg.batch,
            "--image-size", size, "--device", cfg.torch_device, "--seed", cfg.seed,
        ),  # fmt: skip
    }
