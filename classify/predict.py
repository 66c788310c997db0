"""``classify predict`` (an image or a folder): per-image records, scored by the shared evaluator when
the folder is laid out by class (``classify val`` in classify/val.py writes the same records).

Each record carries the predicted class, every class probability and the image-level
``defective`` score ``1 - p(good)``, the score on which anomaly-style rankings compare approaches.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import torch

from defectkit.classify.checkpoint import load_classifier
from defectkit.classify.data import ImageCache
from defectkit.classify.engine import predict_logits
from defectkit.classify.longtail import posthoc_adjust
from defectkit.classify.metrics import defective_scores, score
from defectkit.core.atomic import atomic_write_json, atomic_write_text
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import list_images
from defectkit.core.torchio import resolve_device


def predict_probs(
    model: torch.nn.Module,
    ckpt: dict,
    paths: Sequence[Path],
    device: torch.device,
    *,
    posthoc_tau: float = 0.0,
    batch: int = 64,
    cache: ImageCache | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Class probabilities (N, C) for ``paths`` from a loaded classifier (see ``load_classifier``).

    ``posthoc_tau`` > 0 applies Menon et al.'s post-hoc logit adjustment with the training class
    counts stored in the checkpoint.
    """
    if cache is None or cache.size != ckpt["image_size"]:
        cache = ImageCache(ckpt["image_size"], workers=4)
    images = cache.load(list(paths), progress=progress, desc="decode")
    logits = predict_logits(model, images, device, ckpt["mean"], ckpt["std"], batch=batch, progress=progress)
    return posthoc_adjust(logits, ckpt["class_counts"], posthoc_tau).softmax(1)


def make_records(
    paths: Sequence[Path], probs: torch.Tensor, classes: Sequence[str], labels=None
) -> list[dict]:
    """One JSON-ready dict per image: file, class, score (its probability), defective, probs, label."""
    records = []
    defective = defective_scores(probs, classes)
    for i, path in enumerate(paths):
        p = probs[i].tolist()
        top = int(probs[i].argmax())
        rec = {"file": str(path), "class": classes[top], "score": p[top], "defective": defective[i],
               "probs": dict(zip(classes, p))}  # fmt: skip
        if labels is not None:
            rec["label"] = classes[labels[i]]
        records.append(rec)
    return records


def records_to_csv(records: list[dict], classes: Sequence[str]) -> str:
    """CSV with one row per image: file, class, score, defective, label (when known), p_<class>..."""
    has_label = bool(records) and "label" in records[0]
    header = (
        ["file", "class", "score", "defective"]
        + (["label"] if has_label else [])
        + [f"p_{c}" for c in classes]
    )
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for rec in records:
        row = [
            rec["file"],
            rec["class"],
            f"{rec['score']:.6f}",
            "" if rec["defective"] is None else f"{rec['defective']:.6f}",
        ]
        row += [rec["label"]] if has_label else []
        row += [f"{rec['probs'][c]:.6f}" for c in classes]
        writer.writerow(row)
    return buf.getvalue()


def check_records_path(path: str | Path) -> None:
    """Predictions are written as .json or .csv: say so before any work is done."""
    if Path(path).suffix.lower() not in (".json", ".csv"):
        raise DefectkitError(f"{path}: output must end in .json or .csv")


def write_records(path: str | Path, records: list[dict], classes: Sequence[str]) -> Path:
    """JSON (a list of records) or CSV, chosen by the suffix of ``path``."""
    check_records_path(path)
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return atomic_write_text(path, records_to_csv(records, classes))
    return atomic_write_json(path, records)


def labels_from_layout(source: Path, paths: Sequence[Path], classes: Sequence[str]) -> list[int] | None:
    """Labels when ``source`` is laid out as ``<source>/<class>/<image>`` with the model's classes."""
    if not source.is_dir():
        return None
    labels = []
    for p in paths:
        rel = p.relative_to(source).parts
        if len(rel) != 2 or rel[0] not in classes:
            return None
        labels.append(list(classes).index(rel[0]))
    return labels


def predict_source(
    ckpt_path: str | Path,
    source: str | Path,
    *,
    out: str | Path | None = None,
    report: str | Path | None = None,
    device: str = "auto",
    posthoc_tau: float = 0.0,
    batch: int = 64,
    progress: bool = False,
) -> tuple[list[dict], dict | None]:
    """``classify predict``: records for an image or every image under a folder; written to ``out``
    (.json/.csv) when given. When the folder is laid out as ``<class>/<image>`` with the model's
    classes and ``report`` is given, the predictions are also scored there by the shared evaluator."""
    source = Path(source)
    if out is not None:
        check_records_path(out)
    paths = list_images(source)
    dev = resolve_device(device)
    model, ckpt = load_classifier(ckpt_path, dev)
    classes = ckpt["classes"]
    labels = labels_from_layout(source, paths, classes)
    if report is not None and labels is None:
        raise DefectkitError(
            f"{source}: --report needs a folder laid out as <class>/<image> with the model's classes "
            f"({', '.join(classes)})"
        )
    probs = predict_probs(model, ckpt, paths, dev, posthoc_tau=posthoc_tau, batch=batch, progress=progress)
    records = make_records(paths, probs, classes, labels)
    if out is not None:
        write_records(out, records, classes)
    metrics = score(probs, labels, classes, report) if report is not None else None
    return records, metrics
