"""``detect val``: predict on a split, score it with the shared evaluator, and show ultralytics' own mAP beside.

The COCO numbers (faster-coco-eval / pycocotools, 101-point interpolated AP over IoU 0.50:0.95, all
detections down to ``conf``) are the project's common yardstick. ultralytics' validator computes its
mAP50 / mAP50-95 its own way (trapezoid-integrated PR envelope, its own matching, up to 300 boxes an
image), so the two differ slightly on the same predictions; both are reported, in one report.

The ground truth is the one convert-mvtec wrote (``coco/<split>.json`` beside ``yolo/``), its image ids
mapped to the YOLO images through the split manifest; val needs convert-mvtec output.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from defectkit.core.atomic import atomic_dir, atomic_write_json
from defectkit.core.errors import DefectkitError
from defectkit.core.layout import MANIFEST, Manifest
from defectkit.detect import embeddings as emb
from defectkit.detect._ultralytics import ultralytics_patched
from defectkit.detect.data import YoloData, load_data
from defectkit.detect.models import is_world, model_names, open_model
from defectkit.detect.predict import predict_images
from defectkit.evaluation import Report, evaluate_detection

WHY_THEY_DIFFER = (
    "Why they differ: COCO AP (shared evaluator) samples the precision envelope at 101 recall points, matches "
    "greedily by score per image and keeps at most 100 detections per image; ultralytics integrates the same "
    "envelope with the trapezoid rule, matches by its own IoU-matrix rule and keeps up to 300 detections. "
    "Both count every detection above conf={conf} (keep it low, e.g. 0.001, when measuring mAP)."
)


def ground_truth(data: YoloData, split: str) -> tuple[dict, dict[str, int]]:
    """convert-mvtec's ground truth of ``split``: ``coco/<split>.json`` beside ``yolo/``, and the COCO image
    id of each image of the split's YOLO folder, through the split manifest (``defectkit.core.layout``).

    Raises DefectkitError when ``data`` is not convert-mvtec output (val scores against the COCO file
    convert wrote; it does not rebuild ground truth from YOLO labels) or when the files disagree.
    """
    root = data.converted_root
    coco_path = root / "coco" / f"{split}.json"
    if not data.is_converted or not coco_path.is_file():
        raise DefectkitError(
            f"{data.yaml_path}: detect val needs convert-mvtec output ({MANIFEST} and coco/{split}.json in {root}, "
            "beside yolo/); convert the data set with `convert-mvtec CATEGORY --to yolo,coco`"
        )
    manifest = Manifest.load(root)
    try:
        coco = json.loads(coco_path.read_text())
        cats = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
        coco_ids = {int(img["id"]) for img in coco["images"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise DefectkitError(f"{coco_path}: not a COCO ground-truth file ({exc})") from None
    if cats != data.names:
        raise DefectkitError(f"{coco_path}: categories {cats} differ from {data.yaml_path} names {data.names}")
    ids: dict[str, int] = {}
    for path in data.images(split):
        try:
            image_id = manifest.image_id(split, manifest.from_flat(split, path.name))
        except (KeyError, ValueError):
            image_id = None
        if image_id not in coco_ids:
            raise DefectkitError(
                f"{path}: not an image of split '{split}' in {root / MANIFEST} and {coco_path}; "
                "convert the data set again"
            )
        ids[str(path.resolve())] = image_id
    return coco, ids


@ultralytics_patched()
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
        with ultralytics_patched(text_embeddings=table):
            yolo.set_classes(list(data.names))  # -> WorldModel.get_text_pe -> the file, never CLIP
        return yolo
    if names != data.names:
        hint = " (a YOLO-World model? pass --zero-shot to use the prompts)" if is_world(yolo) else ""
        raise DefectkitError(
            f"{model}: model classes {names} differ from {data.yaml_path} names {data.names}{hint}"
        )
    return yolo


@ultralytics_patched()
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


def add_ultralytics_section(report: Report, coco: dict, theirs: dict, conf: float) -> None:
    """ultralytics' mAP beside COCO's in the evaluator's report, and why the two differ."""
    report.add_heading("COCO vs ultralytics")
    report.add_table(
        ["metric", "COCO (shared evaluator)", "ultralytics"],
        [["mAP50", coco["AP50"], theirs["mAP50"]], ["mAP50-95", coco["AP"], theirs["mAP50-95"]]],
    )
    report.add_text(WHY_THEY_DIFFER.format(conf=conf))


@ultralytics_patched()
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
    """Score ``model`` on ``split`` of convert-mvtec's ``data``; writes the evaluator's report to ``out``.

    ``out`` holds ``predictions.json`` (COCO results) and the evaluator's ``metrics.json``,
    ``report.md``, ``pr_curves.png``, ``confusion_matrix.png``; the report gains a "COCO vs
    ultralytics" section and ``metrics.json`` the entries ``"ultralytics"`` (its validator's numbers)
    and ``"run"``. Returns the metrics. ``seed`` seeds ``text_embeddings="random"``.
    """
    if Path(out).exists() and not overwrite:  # before minutes of prediction, not after
        raise DefectkitError(f"{out}: already exists; pass --overwrite to replace it")
    ds = load_data(data, splits=(split,))
    gt, image_ids = ground_truth(ds, split)
    yolo = prepare_model(
        model, ds, zero_shot=zero_shot, text_embeddings=text_embeddings, prompts=prompts, seed=seed
    )
    images = ds.images(split)
    preds = predict_images(
        yolo, images, conf=conf, imgsz=imgsz, device=device, image_ids=image_ids, progress=progress
    )
    with ultralytics_patched(quiet=not progress):  # its validator's table and bar go with ours
        theirs = ultralytics_metrics(yolo, ds, split, conf=conf, imgsz=imgsz, device=device)
    run = {
        "model": str(model),
        "data": str(ds.yaml_path),
        "split": split,
        "zero_shot": zero_shot,
        "conf": conf,
        "images": len(images),
        "predictions": len(preds),
    }

    def extend(report: Report) -> None:
        add_ultralytics_section(report, report.metrics["bbox"], theirs, conf)
        report.add_metrics("ultralytics", theirs).add_metrics("run", run)

    with atomic_dir(out, overwrite=overwrite) as tmp:
        # The evaluator writes its report into tmp (replacing what is there), so it goes first.
        metrics = evaluate_detection(gt, preds, iou_type="bbox", out_dir=tmp, overwrite=True, extend_report=extend)
        atomic_write_json(tmp / "predictions.json", preds, indent=None)
    return {**metrics, "ultralytics": theirs, "run": run}
