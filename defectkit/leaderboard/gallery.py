"""The gallery: the validation images the approaches got most wrong, ground truth beside each
approach's prediction, drawn with supervision's annotators.

Scenes are drawn in BGR (supervision's colours are BGR, as OpenCV's) and encoded to PNG bytes.
"""

from __future__ import annotations

import cv2
import numpy as np
import supervision as sv

from defectkit.core.imageio import read_image
from defectkit.core.results import results_to_detections

TILE = 224  # panel height and width in pixels
HEADER = 34  # two text lines above each panel
MAX_DRAWN = 10  # boxes or masks drawn per panel, highest scores first


def _detections(results: list[dict], with_masks: bool, shape: tuple[int, int]):
    # One image's COCO results through the one reader (defectkit.core.results).
    dets = results_to_detections(results, masks=with_masks)
    if dets.mask is not None and dets.mask.shape[1:] != shape:
        dets.mask = None  # a mask of another size cannot be drawn on this image; boxes still are
    return dets


def draw_instances(
    image_bgr: np.ndarray, results: list[dict], names: list[str], *, masks: bool, show_scores: bool = True
) -> np.ndarray:
    """Masks (when ``masks``), boxes and "class score" labels of COCO-style entries on a copy of the image.

    >>> img = np.zeros((32, 32, 3), np.uint8)
    >>> out = draw_instances(img, [{"bbox": [4, 4, 10, 10], "category_id": 1, "score": 0.9}], ["hole"], masks=False)
    >>> out.shape, bool(out.any())
    ((32, 32, 3), True)
    """
    scene = image_bgr.copy()
    dets = _detections(results, masks, image_bgr.shape[:2])
    if len(dets) == 0:
        return scene
    if dets.mask is not None:
        scene = sv.MaskAnnotator(opacity=0.45).annotate(scene=scene, detections=dets)
    thickness = max(1, round(max(image_bgr.shape[:2]) / 256))
    scene = sv.BoxAnnotator(thickness=thickness).annotate(scene=scene, detections=dets)
    labels = [
        names[c] + (f" {s:.2f}" if show_scores else "") if 0 <= c < len(names) else str(c)
        for c, s in zip(dets.class_id, dets.confidence)
    ]
    scale = 0.35 * max(1.0, max(image_bgr.shape[:2]) / 256)
    return sv.LabelAnnotator(text_scale=scale, text_padding=2).annotate(
        scene=scene, detections=dets, labels=labels
    )


def panel(scene_bgr: np.ndarray, title: str, subtitle: str = "") -> np.ndarray:
    """The scene resized into a TILE x TILE square (letterboxed), under a white two-line header."""
    h, w = scene_bgr.shape[:2]
    scale = TILE / max(h, w)
    resized = cv2.resize(
        scene_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    canvas = np.full((HEADER + TILE, TILE, 3), 255, np.uint8)
    y0, x0 = HEADER + (TILE - resized.shape[0]) // 2, (TILE - resized.shape[1]) // 2
    canvas[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
    for i, text in enumerate((title, subtitle)):
        cv2.putText(
            canvas, text[:40], (3, 13 + 15 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (20, 20, 20), 1, cv2.LINE_AA
        )
    return canvas


def tile_row(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels side by side with a white gap."""
    spacer = np.full((panels[0].shape[0], gap, 3), 255, np.uint8)
    parts = []
    for p in panels:
        parts += [p, spacer]
    return np.concatenate(parts[:-1], axis=1)


def png_bytes(image_bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise ValueError("could not encode PNG")
    return buf.tobytes()


def approach_panel(image_bgr: np.ndarray, spec: dict, names: list[str]) -> np.ndarray:
    """One approach's panel. ``spec``: ``title``, ``kind`` (boxes / masks / labels), ``results`` (COCO
    entries of this image, or the classifier's record), ``threshold`` (the image-level threshold
    chosen on val, None for ground-truth prompts), ``call`` (its ``val_call``: ``split``, or
    ``all defective`` / ``all good`` when it separates nothing) and ``score`` (the image-level score).

    Boxes and masks are drawn when scored at or above the threshold, so a drawn box means the
    image is called defective; the frame is red when it is.
    """
    kind, threshold, score = spec["kind"], spec.get("threshold"), spec.get("score")
    if kind == "labels":
        rec = spec["results"]
        scene = image_bgr.copy()
        subtitle = f"{rec['class']} {rec['score']:.2f}, defective {rec['defective']:.2f}"
    else:
        results = sorted(spec["results"], key=lambda r: -float(r.get("score", 1.0)))
        if threshold is not None:
            results = [r for r in results if float(r["score"]) >= threshold]
        scene = draw_instances(image_bgr, results[:MAX_DRAWN], names, masks=kind == "masks")
        call = spec.get("call", "split")
        subtitle = (
            f"{len(results)} shown"
            if threshold is None
            else f"max {score:.2f}, " + (f"threshold {threshold:.2f}" if call == "split" else f"calls {call}")
        )
    if threshold is not None and score is not None and score >= threshold:
        thick = max(2, round(max(image_bgr.shape[:2]) / 100))
        cv2.rectangle(scene, (0, 0), (scene.shape[1] - 1, scene.shape[0] - 1), (40, 40, 220), thick)
    return panel(scene, spec["title"], subtitle)


def gallery_image(path, annotations: list[dict], names: list[str], approaches: list[dict]) -> bytes:
    """One gallery row as PNG bytes: the ground truth, then :func:`approach_panel` per approach."""
    image = cv2.cvtColor(read_image(path, "rgb"), cv2.COLOR_RGB2BGR)
    gt = draw_instances(image, annotations, names, masks=True, show_scores=False)
    panels = [panel(gt, "ground truth", f"{len(annotations)} defect(s)")]
    panels += [approach_panel(image, spec, names) for spec in approaches]
    return png_bytes(tile_row(panels))
