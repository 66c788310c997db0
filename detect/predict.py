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

from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import is_image_file
from defectkit.core.layout import flat_name
from defectkit.detect._ultralytics import check_args, ultralytics_patched
from defectkit.detect.models import check_device, model_names, open_model

CHUNK = 16  # images handed to ultralytics per call (its batch); results come back in input order


def list_sources(sources) -> list[Path]:
    """Image files from a file, a folder (sorted, not recursive) or a list of files and folders."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if is_image_file(f))
            if not found:
                raise DefectkitError(f"{p}: no images in this folder")
            out += found
        elif p.is_file():
            if not is_image_file(p):
                raise DefectkitError(f"{p}: not an image file (expected one of png, jpg, bmp, tif)")
            out.append(p)
        else:
            raise DefectkitError(f"{p}: no such file or folder")
    return out


def boxes_to_coco(xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray, image_id: int) -> list[dict]:
    """ultralytics boxes (pixel-edge xyxy, 0-based class) -> COCO results (xywh, 1-based category_id).

    Coordinates are rounded to 1/100 pixel; scores keep full float precision, so the weak, tiny
    scores of a barely trained model still rank (rounded, they would tie and scramble the PR curve).

    >>> boxes_to_coco(np.array([[10.0, 20.0, 30.0, 60.0]]), np.array([0.9]), np.array([2.0]), 7)
    [{'image_id': 7, 'category_id': 3, 'bbox': [10.0, 20.0, 20.0, 40.0], 'score': 0.9}]
    >>> [r["score"] for r in boxes_to_coco(np.zeros((2, 4)), np.array([1.2e-6, 1.1e-6]), np.zeros(2), 1)]
    [1.2e-06, 1.1e-06]
    """
    out = []
    for (x1, y1, x2, y2), score, cls in zip(xyxy.tolist(), scores.tolist(), classes.tolist()):
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(cls) + 1,
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": float(score),
            }
        )
    return out


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
    from tqdm import tqdm

    check_device(device)
    kwargs = {"conf": conf, "verbose": False, "save": False}
    kwargs.update(check_args(predict_args, reserved=OWN_PREDICT_ARGS, what="predict"))
    if imgsz:
        kwargs["imgsz"] = imgsz
    if device is not None:
        kwargs["device"] = device
    # A generator: the patch context lasts while results are produced (a decorator would leave at once).
    with ultralytics_patched(), tqdm(total=len(paths), desc="detect", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start : start + CHUNK]
            results = model.predict(source=[str(p) for p in chunk], batch=len(chunk), **kwargs)
            for path, result in zip(chunk, results):
                yield path, result
                bar.update(1)


def _as_arrays(result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0)
    return boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy()


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
    """Detect defects in ``sources`` and return COCO results dicts.

    ``model``: a checkpoint path, hub name or an ``ultralytics.YOLO``. ``sources``: an image, a folder
    or a list of them. ``image_ids`` maps a source path to its COCO image id (None: 1..N in input
    order). Each result: ``{"image_id", "category_id" (1-based, the model's class + 1), "bbox"
    [x, y, w, h] in pixels, "score"}``. ``imgsz`` None uses the size the model was trained at.
    ``predict_args``: further ultralytics predict arguments, e.g. ``max_det=100`` (COCO's limit),
    ``iou=0.6`` (NMS), passed unchanged (see :func:`iter_results`).

    >>> preds = predict_images("runs/detect/train/weights/best.pt", "images/")  # doctest: +SKIP
    >>> sorted(preds[0])  # doctest: +SKIP
    ['bbox', 'category_id', 'image_id', 'score']
    """
    yolo = open_model(model)
    paths = list_sources(sources)
    ids = _image_id_lookup(paths, image_ids)
    out: list[dict] = []
    for image_id, (_, result) in zip(
        ids,
        iter_results(yolo, paths, conf=conf, imgsz=imgsz, device=device, progress=progress, **predict_args),
    ):
        out.extend(boxes_to_coco(*_as_arrays(result), image_id))
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
    import supervision as sv

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

    ``predict_args``: further ultralytics predict arguments (``max_det``, ``iou`` ...), unchanged.
    """
    from defectkit.core.atomic import atomic_write_json

    yolo = open_model(model)
    names = model_names(yolo)
    paths = list_sources(sources)
    image_ids = None
    if coco is not None:
        image_ids, coco_names = coco_image_ids(coco)
        if coco_names != names:
            raise DefectkitError(f"{coco}: categories {coco_names} differ from the model's classes {names}")
    ids = _image_id_lookup(paths, image_ids)
    stems = dict(zip(paths, output_stems(paths)))
    if save_coco is not None and Path(save_coco).exists() and not overwrite:
        raise DefectkitError(f"{save_coco}: already exists; pass --overwrite to replace it")
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
            xyxy, scores, classes = _as_arrays(result)
            results.extend(boxes_to_coco(xyxy, scores, classes, image_id))
            height, width = result.orig_shape
            if txt_dir is not None:
                lines = yolo_txt_lines(xyxy, scores, classes, width, height)
                (txt_dir / f"{stems[path]}.txt").write_text("".join(f"{line}\n" for line in lines))
            if img_dir is not None:
                drawn = annotate(result.orig_img, xyxy, scores, classes.astype(int), names)
                _, buf = cv2.imencode(".png", drawn)
                (img_dir / f"{stems[path]}.png").write_bytes(buf.tobytes())
    if save_coco is not None:
        atomic_write_json(save_coco, results, indent=None)
    return results
