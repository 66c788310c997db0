"""``anomaly val``: score a trained run on a split of the converted category with the shared evaluator.

The numbers all come from ``defectkit.evaluation``, on raw scores and on maps at each image's own
resolution:

- ``evaluate_anomaly``: image AUROC (image scores against the images' class folders), pixel AUROC,
  AUPRO, pixel AP and pixel F1-max (maps against the union of each image's COCO instance masks);
- ``evaluate_detection(class_agnostic=True)``, ``bbox`` and ``segm``: the instances the maps show at
  the val-chosen pixel threshold (``predict.anomaly_instances``) against ``coco/<split>.json`` with
  every defect type collapsed into one ``defect`` category, so they stand beside the detectors'
  and SAM's class-agnostic numbers.

``out_dir`` then holds ``metrics.json`` (``{"anomaly": {...}, "detection": {...}, "segm": {...},
"thresholds": {...}, "model": {...}}``), ``report.md`` with the ROC/PRO curves, ``bbox/`` and
``segm/`` (the COCO reports: PR curves, confusion matrix), ``scores.json`` (one record per image in
manifest order, with its label) and ``predictions.json`` (the COCO results scored above).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from defectkit.anomaly.checkpoint import load_model, model_file
from defectkit.anomaly.data import coco_path, defect_masks, split_images
from defectkit.anomaly.predict import score_images, write_outputs
from defectkit.evaluation import evaluate_anomaly, evaluate_detection
from defectkit.evaluation.report import markdown_table

from defectkit.core.atomic import atomic_write_json, atomic_write_text
from defectkit.core.errors import DefectkitError
from defectkit.core.layout import flat_name
from defectkit.core.torchio import resolve_device

COCO_SUMMARY = ("AP", "AP50", "AP75", "AR100")


def validate(
    run: str | Path,
    data: str | Path,
    split: str,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    batch: int = 32,
    bootstrap: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Score ``split`` of the converted category ``data`` with the run (folder or model.pt) and write
    the report into ``out_dir`` (see the module docstring); returns the metrics.json contents.
    ``bootstrap``: resamples of the images for 95% intervals of every metric (0: none), seeded by ``seed``."""
    dev = resolve_device(device)
    images = split_images(data, split)
    if not images:
        raise DefectkitError(f"{data}: the {split} split is empty")
    gt_json = coco_path(data, split)
    masks = defect_masks(data, split, images)
    module, ckpt = load_model(run, dev)
    cfg, thresholds = ckpt["config"], ckpt["thresholds"]
    scores, maps = score_images(
        module, images, int(cfg["imgsz"]), dev, batch=batch, progress=progress, desc=split
    )
    labels = np.array([image.label for image in images])
    out = Path(out_dir)
    title = f"{cfg['model']} on {Path(data).name} ({split})"
    # The anomaly report first: evaluate_anomaly writes the folder as a whole.
    anomaly = evaluate_anomaly(
        labels, scores, masks, maps, out_dir=out, title=title, bootstrap=bootstrap, seed=seed
    )
    names = [Path(flat_name(image.file_name)).stem for image in images]
    _, results = write_outputs(out, images, scores, maps, thresholds, names, files=False)
    coco = {
        iou_type: evaluate_detection(
            str(gt_json), results, iou_type, class_agnostic=True, out_dir=out / iou_type,
            title=f"{title}: {iou_type}, class-agnostic", bootstrap=bootstrap, seed=seed,
        )[iou_type]
        for iou_type in ("bbox", "segm")
    }  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.update(
        {
            "detection": coco["bbox"],
            "segm": coco["segm"],
            "thresholds": thresholds,
            "model": {
                "run": str(model_file(run)),
                **{key: cfg[key] for key in ("model", "backbone", "backbone_weights", "imgsz")},
                "split": split,
            },
        }
    )
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", (out / "report.md").read_text() + _coco_section(coco, thresholds))
    if progress:
        print(
            f"{split}: image AUROC {_fmt(anomaly['image_auroc'])}  pixel AUROC {_fmt(anomaly['pixel_auroc'])}  "
            f"AUPRO {_fmt(anomaly['aupro'])}  box AP50 {_fmt(coco['bbox']['AP50'])}  mask AP50 {_fmt(coco['segm']['AP50'])}"
        )
    return metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _coco_section(coco: dict, thresholds: dict) -> str:
    """report.md's part on the COCO scores of the maps' instances."""
    rows = [[iou_type, *(coco[iou_type][k] for k in COCO_SUMMARY)] for iou_type in ("bbox", "segm")]
    return (
        "\n## Defects as instances (class-agnostic COCO)\n\n"
        f"Each map thresholded at the pixel threshold chosen on val ({thresholds['pixel']:.6g}, "
        f"{thresholds['pixel_rule']}); each 8-connected component is one `defect` instance scored by "
        "its highest map value. Every ground-truth defect type counts as `defect`. Full reports: "
        "[bbox/](bbox/report.md), [segm/](segm/report.md).\n\n"
        + markdown_table(["iou type", *COCO_SUMMARY], rows)
        + "\n"
    )
