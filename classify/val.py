"""``classify val``: score a checkpoint on a labelled split with the shared evaluator."""

from __future__ import annotations

from pathlib import Path

from defectkit.classify.checkpoint import load_classifier
from defectkit.classify.data import ImageCache, list_class_folders, scan_split
from defectkit.classify.metrics import defective_ranking, score
from defectkit.classify.models import check_classes
from defectkit.classify.predict import make_records, predict_probs, write_records
from defectkit.core.atomic import atomic_write_json
from defectkit.core.layout import GOOD
from defectkit.core.torchio import resolve_device


def validate(
    ckpt_path: str | Path,
    data: str | Path,
    split: str,
    out_dir: str | Path,
    *,
    device: str = "auto",
    posthoc_tau: float = 0.0,
    batch: int = 64,
    cache: ImageCache | None = None,
    progress: bool = False,
) -> dict:
    """Score ``<data>/<split>/<class>/*`` and write the evaluator's report (report.md,
    metrics.json, confusion matrix) plus predictions.json / .csv into ``out_dir``; with a ``good``
    class also defective.json (the good-vs-defect ranking). Returns the metrics."""
    dev = resolve_device(device)
    model, ckpt = load_classifier(ckpt_path, dev)
    classes = ckpt["classes"]
    split_dir = Path(data) / split
    folders = list_class_folders(split_dir)
    if any(name not in classes for name in folders):
        check_classes(str(ckpt_path), classes, folders, str(split_dir))
    found = scan_split(data, split, classes)
    probs = predict_probs(
        model, ckpt, found.paths, dev, posthoc_tau=posthoc_tau, batch=batch, cache=cache, progress=progress
    )
    metrics = score(probs, found.labels, classes, out_dir)
    records = make_records(found.paths, probs, classes, found.labels)
    write_records(Path(out_dir) / "predictions.json", records, classes)
    write_records(Path(out_dir) / "predictions.csv", records, classes)
    if GOOD in classes:
        metrics["defective"] = defective_ranking(found.labels, probs, classes)
        atomic_write_json(Path(out_dir) / "defective.json", metrics["defective"])
    return metrics
