"""``detect val``: predict on a split, score it with the shared evaluator, and show ultralytics' own mAP beside.

The COCO numbers (faster-coco-eval / pycocotools, 101-point interpolated AP over IoU 0.50:0.95, all
detections down to ``conf``) are the project's common yardstick. ultralytics' validator computes its
mAP50 / mAP50-95 its own way (trapezoid-integrated PR envelope, its own matching, up to 300 boxes an
image), so the two differ slightly on the same predictions; both are reported.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from defectkit.core.atomic import atomic_dir, atomic_write_json, atomic_write_text
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import read_image
from defectkit.detect import embeddings as emb
from defectkit.detect.data import YoloData, labels_dir_for, load_data, read_label_file
from defectkit.detect.models import is_world, model_names, open_model
from defectkit.detect.predict import coco_image_ids, predict_images

WHY_THEY_DIFFER = (
    "Why they differ: COCO AP (shared evaluator) samples the precision envelope at 101 recall points, matches "
    "greedily by score per image and keeps at most 100 detections per image; ultralytics integrates the same "
    "envelope with the trapezoid rule, matches by its own IoU-matrix rule and keeps up to 300 detections. "
    "Both count every detection above conf={conf} (keep it low, e.g. 0.001, when measuring mAP)."
)


def coco_from_yolo_labels(data: YoloData, split: str) -> dict:
    """A COCO ground-truth dict from a split's YOLO labels (when there is no ``coco/<split>.json``).

    Boxes come from normalised labels, so they are exact only to rounding; image ids are 1..N in
    sorted file order, ``file_name`` is the image's path.
    """
    images, annotations = [], []
    labels = labels_dir_for(data.splits[split])
    for image_id, path in enumerate(data.images(split), 1):
        height, width = read_image(path, mode="unchanged").shape[:2]
        images.append({"id": image_id, "file_name": str(path.resolve()), "width": width, "height": height})
        for cls, coords in read_label_file(labels / f"{path.stem}.txt", len(data.names)):
            if len(coords) == 4:
                cx, cy, w, h = coords
                x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            else:
                xs, ys = coords[0::2], coords[1::2]
                x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
            box = [x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n, "supercategory": "defect"} for i, n in enumerate(data.names)]
    return {
        "info": {"description": f"{data.yaml_path} {split} (from YOLO labels)"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _ground_truth(data: YoloData, split: str) -> tuple[dict, dict[str, int]]:
    """(COCO gt dict, image path -> id): convert-mvtec's coco/<split>.json when present, else from labels."""
    coco_path = data.coco_json(split)
    if coco_path is not None:
        ids, cats = coco_image_ids(coco_path)
        if cats != data.names:
            raise DefectkitError(
                f"{coco_path}: categories {cats} differ from {data.yaml_path} names {data.names}"
            )
        return json.loads(coco_path.read_text()), ids
    gt = coco_from_yolo_labels(data, split)
    return gt, {img["file_name"]: img["id"] for img in gt["images"]}


def prepare_model(
    model, data: YoloData, *, zero_shot: bool, text_embeddings: str | None, prompts: str | None, seed: int = 0
):
    """Open ``model`` and make its classes the data set's; for YOLO-World, from the embeddings file.

    A fine-tuned model must already have the data set's classes, in order. ``zero_shot`` (YOLO-World
    only): set the classes from the prompts' text embeddings, to score a model never trained on them.
    """
    yolo = open_model(model)
    names = model_names(yolo)
    if zero_shot or text_embeddings or prompts:
        if not is_world(yolo):
            raise DefectkitError(
                f"{model}: --zero-shot, --prompts and --text-embeddings need a YOLO-World model"
            )
        table = emb.resolve(
            text_embeddings, data.names, data.yaml_path.parent, prompts_spec=prompts, seed=seed
        )
        with emb.use_text_embeddings(table):
            yolo.set_classes(list(data.names))  # -> WorldModel.get_text_pe -> the file, never CLIP
        return yolo
    if names != data.names:
        hint = " (a YOLO-World model? pass --zero-shot to use the prompts)" if is_world(yolo) else ""
        raise DefectkitError(
            f"{model}: model classes {names} differ from {data.yaml_path} names {data.names}{hint}"
        )
    return yolo


def ultralytics_metrics(
    yolo, data: YoloData, split: str, *, conf: float, imgsz: int | None, device: str | None
) -> dict:
    """ultralytics' own validator on the same split: ``{"mAP50", "mAP50-95", "precision", "recall"}``."""
    kwargs = {
        "data": str(data.yaml_path.resolve()),
        "split": split,
        "conf": conf,
        "plots": False,
        "verbose": False,
        "batch": 16,
    }
    if imgsz:
        kwargs["imgsz"] = imgsz
    if device is not None:
        kwargs["device"] = device
    with tempfile.TemporaryDirectory(prefix="detect-val-") as tmp:
        metrics = yolo.val(project=tmp, name="val", **kwargs)
    box = metrics.box
    return {
        "mAP50": float(box.map50),
        "mAP50-95": float(box.map),
        "precision": float(box.mp),
        "recall": float(box.mr),
    }


def validate(
    model,
    data: str | Path,
    *,
    split: str = "val",
    out: str | Path,
    zero_shot: bool = False,
    text_embeddings: str | None = None,
    prompts: str | None = None,
    conf: float = 0.001,
    imgsz: int | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    seed: int = 0,
) -> dict:
    """Score ``model`` on ``split`` of ``data``; writes the evaluator's report plus ultralytics' numbers to ``out``.

    ``out`` holds: ``predictions.json`` (COCO results), ``ground_truth.json`` when it was built from
    YOLO labels, and the evaluator's ``metrics.json``, ``report.md``, ``pr_curves.png``,
    ``confusion_matrix.png``; ``metrics.json`` gains an ``"ultralytics"`` entry. Returns the metrics.
    ``seed`` seeds ``text_embeddings="random"``.
    """
    from defectkit.evaluation import evaluate_detection

    if Path(out).exists() and not overwrite:  # before minutes of prediction, not after
        raise DefectkitError(f"{out}: already exists; pass --overwrite to replace it")
    ds = load_data(data, splits=(split,))
    yolo = prepare_model(
        model, ds, zero_shot=zero_shot, text_embeddings=text_embeddings, prompts=prompts, seed=seed
    )
    gt, image_ids = _ground_truth(ds, split)
    images = ds.images(split)
    preds = predict_images(
        yolo, images, conf=conf, imgsz=imgsz, device=device, image_ids=image_ids, progress=progress
    )
    theirs = ultralytics_metrics(yolo, ds, split, conf=conf, imgsz=imgsz, device=device)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        # The evaluator writes its report into tmp (replacing what is there), so it goes first.
        metrics = evaluate_detection(gt, preds, iou_type="bbox", out_dir=tmp, overwrite=True)
        atomic_write_json(tmp / "predictions.json", preds, indent=None)
        if ds.coco_json(split) is None:
            atomic_write_json(tmp / "ground_truth.json", gt, indent=None)
        metrics["ultralytics"] = theirs
        metrics["run"] = {
            "model": str(model),
            "data": str(ds.yaml_path),
            "split": split,
            "zero_shot": zero_shot,
            "conf": conf,
            "images": len(images),
            "predictions": len(preds),
        }
        atomic_write_json(tmp / "metrics.json", metrics)
        report = tmp / "report.md"
        coco = metrics["bbox"]
        section = (
            "\n## COCO vs ultralytics\n\n"
            "| metric | COCO (shared evaluator) | ultralytics |\n|---|---|---|\n"
            f"| mAP50 | {coco['AP50']:.4f} | {theirs['mAP50']:.4f} |\n"
            f"| mAP50-95 | {coco['AP']:.4f} | {theirs['mAP50-95']:.4f} |\n\n"
            + WHY_THEY_DIFFER.format(conf=conf)
            + "\n"
        )
        atomic_write_text(report, (report.read_text() if report.is_file() else "") + section)
    return metrics
