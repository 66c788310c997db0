"""Run a detector on images and write what it finds: COCO results, YOLO txt, annotated images.

:func:`predict_images` is the Python API other stages call (``segment predict --detector W``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import supervision as sv
from tqdm import tqdm

from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import list_images, read_image
from defectkit.core.layout import flat_name
from defectkit.core.results import detections_to_coco, write_coco_results
from defectkit.core.torchio import parse_device
from defectkit.detect._ultralytics import check_args, ultralytics_patched
from defectkit.detect.models import model_names, open_model

CHUNK = 16  # images handed to ultralytics per call (its batch); results come back in input order


def result_to_detections(result) -> sv.Detections:
    """One ultralytics ``Results`` as ``sv.Detections`` (the result model, ``defectkit.core.results``):
    boxes, confidences, 0-based classes and, for a segmentation model, masks at the image's size."""
    if result.boxes is None or len(result.boxes) == 0:
        return sv.Detections.empty()
    return sv.Detections.from_ultralytics(result)


def _image_id_lookup(paths: list[Path], image_ids: Mapping | None) -> list[int]:
    if image_ids is None:
        return list(range(1, len(paths) + 1))
    table = {str(Path(k).resolve()): int(v) for k, v in image_ids.items()}
    ids = []
    for p in paths:
        key = str(p.resolve())
        if key not in table:
            raise DefectkitError(f"{p}: no COCO image id for this image (not in the image_ids / --coco file)")
        ids.append(table[key])
    return ids


# ultralytics predict arguments iter_results sets itself (the rest pass through unchanged).
OWN_PREDICT_ARGS = ("source", "stream", "batch", "save", "conf", "imgsz", "device")


def iter_results(
    model,
    paths: list[Path],
    *,
    conf: float,
    imgsz: int | None,
    device: str | None,
    progress: bool,
    **predict_args,
):
    """Yield ``(path, ultralytics Results)`` for each image, in order, with a tqdm bar.

    ``predict_args``: further ultralytics predict arguments (``max_det=100``, ``iou=0.5``,
    ``retina_masks=True``, ``agnostic_nms=True`` ...), checked against ultralytics' list and passed
    unchanged.
    """
    kwargs = {"conf": conf, "verbose": False, "save": False}
    kwargs.update(check_args(predict_args, reserved=OWN_PREDICT_ARGS, what="predict"))
    if imgsz:
        kwargs["imgsz"] = imgsz
    if device is not None:  # None: ultralytics picks (the first GPU, else the CPU)
        kwargs["device"] = parse_device(device).ultralytics
    # A generator: the patch context lasts while results are produced (a decorator would leave at once).
    # Without a progress bar, ultralytics is quiet too (no INFO lines of its own).
    with (
        ultralytics_patched(quiet=not progress),
        tqdm(total=len(paths), desc="detect", unit="img", disable=not progress) as bar,
    ):
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start : start + CHUNK]
            # Decoded here, through defectkit's checks (a truncated or non-image file is a one-line error
            # naming it); ultralytics gets the BGR arrays it would have read itself and never opens a file.
            images = [cv2.cvtColor(read_image(p, "rgb"), cv2.COLOR_RGB2BGR) for p in chunk]
            results = model.predict(source=images, batch=len(chunk), **kwargs)
            for path, result in zip(chunk, results):
                yield path, result
                bar.update(1)


def _predict_args(yolo, predict_args: dict) -> dict:
    # A segmentation model's masks at the image's own resolution (not the letterboxed input's):
    # COCO results are scored against masks of the image's size.
    if getattr(yolo, "task", None) == "segment":
        return {"retina_masks": True, **predict_args}
    return predict_args


@ultralytics_patched()
def predict_images(
    model,
    sources,
    *,
    conf: float = 0.25,
    imgsz: int | None = None,
    device: str | None = "cpu",
    image_ids: Mapping[str, int] | None = None,
    progress: bool = False,
    **predict_args,
) -> list[dict]:
    """Detect defects in ``sources`` and return COCO results dicts (``defectkit.core.results``).

    ``model``: a checkpoint path, hub name or an ``ultralytics.YOLO``. ``sources``: an image, a folder
    or a list of them. ``image_ids`` maps a source path to its COCO image id (None: 1..N in input
    order). Each result: ``{"image_id", "category_id" (1-based, the model's class + 1), "bbox"
    [x, y, w, h] in pixels, "score"}`` at full precision, plus ``"segmentation"`` (RLE) and
    ``"area"`` for a segmentation model, whose bbox is then the mask's. ``imgsz`` None uses the size the model was trained at.
    ``predict_args``: further ultralytics predict arguments, e.g. ``max_det=100`` (COCO's limit),
    ``iou=0.6`` (NMS), passed unchanged (see :func:`iter_results`).

    >>> preds = predict_images("runs/detect/train/weights/best.pt", "images/")  # doctest: +SKIP
    >>> sorted(preds[0])  # doctest: +SKIP
    ['bbox', 'category_id', 'image_id', 'score']
    """
    yolo = open_model(model)
    paths = list_images(sources)
    ids = _image_id_lookup(paths, image_ids)
    predict_args = _predict_args(yolo, predict_args)
    out: list[dict] = []
    for image_id, (_, result) in zip(
        ids,
        iter_results(yolo, paths, conf=conf, imgsz=imgsz, device=device, progress=progress, **predict_args),
    ):
        out.extend(detections_to_coco(result_to_detections(result), image_id))
    return out


def coco_image_ids(coco_json: str | Path) -> tuple[dict[str, int], list[str]]:
    """Image ids of a convert-mvtec COCO split file, by path: the original image (``info.image_root`` +
    ``file_name``) and its YOLO copy (``yolo/images/<split>/<flat name>``) both map to the id.

    Returns (path -> id, category names in id order).
    """
    path = Path(coco_json)
    try:
        coco = json.loads(path.read_text())
    except FileNotFoundError:
        raise DefectkitError(f"{path}: no such COCO file") from None
    except json.JSONDecodeError as exc:
        raise DefectkitError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(coco, dict) or "images" not in coco or "categories" not in coco:
        raise DefectkitError(f"{path}: not a COCO instances file (no 'images'/'categories')")
    root = Path((coco.get("info") or {}).get("image_root", path.parent))
    split = path.stem
    yolo_images = path.parent.parent / "yolo" / "images" / split
    ids: dict[str, int] = {}
    for img in coco["images"]:
        ids[str((root / img["file_name"]).resolve())] = int(img["id"])
        ids[str((yolo_images / flat_name(img["file_name"])).resolve())] = int(img["id"])
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    if [c["id"] for c in cats] != list(range(1, len(cats) + 1)):
        raise DefectkitError(f"{path}: category ids must be 1..N (defectkit's convention)")
    return ids, [c["name"] for c in cats]


def output_stems(paths: list[Path]) -> list[str]:
    """File stems for per-image outputs: the image stems, or, when two images share a stem (``hole/000.png``,
    ``scratch/000.png``), their paths below the common folder joined with ``_``.

    >>> output_stems([Path("a/hole/000.png"), Path("a/scratch/000.png")])
    ['hole_000', 'scratch_000']
    """
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    resolved = [p.resolve() for p in paths]
    common = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return ["_".join(p.relative_to(common).with_suffix("").parts) for p in resolved]


def annotate(image_bgr: np.ndarray, xyxy, scores, classes, names: list[str]) -> np.ndarray:
    """Draw boxes and "name score" labels with supervision's annotators (cv2 text: no font file needed)."""
    dets = sv.Detections(
        xyxy=np.asarray(xyxy, float).reshape(-1, 4),
        confidence=np.asarray(scores, float),
        class_id=np.asarray(classes, int),
    )
    # .2g: a weak model's 3e-05 reads as such, not as 0.00
    labels = [f"{names[c]} {s:.2g}" for c, s in zip(dets.class_id, dets.confidence)]
    scene = sv.BoxAnnotator(thickness=2).annotate(scene=image_bgr.copy(), detections=dets)
    # smart_position keeps labels inside the image (a box at the top edge would put its label above it)
    return sv.LabelAnnotator(text_scale=0.4, text_padding=4, smart_position=True).annotate(
        scene=scene, detections=dets, labels=labels
    )


def yolo_txt_lines(xyxy, scores, classes, width: int, height: int) -> list[str]:
    """ultralytics' ``save_txt`` format with confidence: ``class cx cy w h conf``, normalised.

    >>> yolo_txt_lines([[0, 0, 50, 20]], [0.5], [1], 100, 40)
    ['1 0.250000 0.250000 0.500000 0.500000 0.5']
    >>> yolo_txt_lines([[0, 0, 50, 20]], [1.234567e-06], [1], 100, 40)[0].split()[-1]
    '1.23457e-06'
    """
    lines = []
    for (x1, y1, x2, y2), s, c in zip(np.asarray(xyxy, float).tolist(), list(scores), list(classes)):
        cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f} {float(s):.6g}")  # tiny scores stay apart
    return lines


@ultralytics_patched()
def predict_to_files(
    model,
    sources,
    *,
    save_coco: str | Path | None = None,
    coco: str | Path | None = None,
    save_txt: str | Path | None = None,
    save_images: str | Path | None = None,
    conf: float = 0.25,
    imgsz: int | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **predict_args,
) -> list[dict]:
    """``detect predict``: one pass over the images, writing each requested output atomically.
    ``save_coco``: COCO results through ``defectkit.core.results`` (masks too for a segmentation
    model). ``predict_args``: further ultralytics predict arguments (``max_det``, ``iou`` ...), unchanged.
    """
    yolo = open_model(model)
    names = model_names(yolo)
    paths = list_images(sources)
    image_ids = None
    if coco is not None:
        image_ids, coco_names = coco_image_ids(coco)
        if coco_names != names:
            raise DefectkitError(f"{coco}: categories {coco_names} differ from the model's classes {names}")
    ids = _image_id_lookup(paths, image_ids)
    stems = dict(zip(paths, output_stems(paths)))
    if save_coco is not None and Path(save_coco).exists() and not overwrite:
        raise DefectkitError(f"{save_coco}: already exists; pass --overwrite to replace it")
    predict_args = _predict_args(yolo, predict_args)
    results: list[dict] = []
    with contextlib.ExitStack() as stack:
        txt_dir = stack.enter_context(atomic_dir(save_txt, overwrite=overwrite)) if save_txt else None
        img_dir = stack.enter_context(atomic_dir(save_images, overwrite=overwrite)) if save_images else None
        for image_id, (path, result) in zip(
            ids,
            iter_results(
                yolo, paths, conf=conf, imgsz=imgsz, device=device, progress=progress, **predict_args
            ),
        ):
            dets = result_to_detections(result)
            results.extend(detections_to_coco(dets, image_id))
            height, width = result.orig_shape
            if txt_dir is not None:
                lines = yolo_txt_lines(dets.xyxy, dets.confidence, dets.class_id, width, height)
                (txt_dir / f"{stems[path]}.txt").write_text("".join(f"{line}\n" for line in lines))
            if img_dir is not None:
                drawn = annotate(result.orig_img, dets.xyxy, dets.confidence, dets.class_id, names)
                _, buf = cv2.imencode(".png", drawn)
                (img_dir / f"{stems[path]}.png").write_bytes(buf.tobytes())
    if save_coco is not None:
        write_coco_results(save_coco, results)
    return results
