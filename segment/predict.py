"""Segment images from box / point prompts (or a detector's boxes) and write masks, overlays and
COCO results.

``Segmenter`` is the one inference path: ``segment val`` and training's validation use it too, so
what is scored is what users get.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import IMAGE_EXTENSIONS, is_image_file, read_image, write_png
from defectkit.core.rle import mask_to_bbox_xywh, mask_to_rle
from defectkit.segment.decoder import PromptDecoder, prompts_to_model_frame, upscale_logits
from defectkit.segment.embeddings import ImageEncoder
from defectkit.segment.prompts import check_box, check_point


class Segmenter:
    """A (possibly fine-tuned) SAM with its image encoder: prompts in, binary masks out."""

    def __init__(self, encoder: ImageEncoder) -> None:
        self.encoder = encoder
        self.sam = encoder.model.sam
        self.decoder = PromptDecoder(self.sam)

    @torch.no_grad()
    def masks_for(
        self,
        embedding: torch.Tensor,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
        boxes: np.ndarray | None = None,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks (B, H, W) bool and SAM's predicted IoU (B,) for B prompts on one embedded image.

        boxes (B, 4) and/or points (B, N, 2) with labels (B, N). A lone click is ambiguous, so it
        gets SAM's three candidate masks and keeps the one with the best predicted IoU (as the
        segment-anything README advises); boxes and several points give one mask.
        """
        b, c, lab = prompts_to_model_frame(
            self.encoder.transform, original_size, self.sam.device, boxes, point_coords, point_labels
        )
        multimask = boxes is None and point_coords is not None and point_coords.shape[1] == 1
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.encoder.amp):
            low_res, iou = self.decoder(embedding, b, c, lab, multimask=multimask)
        if multimask:
            best = iou.argmax(1)
            rows = torch.arange(len(best), device=best.device)
            low_res, iou = low_res[rows, best][:, None], iou[rows, best][:, None]
        logits = upscale_logits(self.sam, low_res, input_size, original_size)
        masks = (logits[:, 0] > self.sam.mask_threshold).cpu().numpy()
        return masks, iou[:, 0].float().clamp(0, 1).cpu().numpy()

    def segment_file(
        self,
        path: str | Path,
        boxes: list[list[float]] | None = None,
        points: list[tuple[float, float, int]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read an image, check the prompts fit it, segment. Returns (image RGB, masks, scores).

        Each box is a prompt; the points (if any) form one more prompt, or join the box when there
        is exactly one box.
        """
        image = read_image(path, "rgb")
        h, w = image.shape[:2]
        for box in boxes or []:
            check_box(box, w, h, str(path))
        for x, y, _ in points or []:
            check_point(x, y, w, h, str(path))
        if not boxes and not points:
            return image, np.zeros((0, h, w), bool), np.zeros(0, np.float32)
        emb, original_size, input_size = self.encoder.embed(path, image)
        box_arr = np.asarray(boxes, np.float64).reshape(-1, 4) if boxes else None
        pc = pl = None
        if points:
            pc = np.asarray([[p[0], p[1]] for p in points], np.float64)[None]
            pl = np.asarray([[p[2] for p in points]], np.int64)
        if box_arr is not None and pc is not None and len(box_arr) > 1:
            # Points belong to one object: a separate prompt next to the boxes.
            m1, s1 = self.masks_for(emb, original_size, input_size, boxes=box_arr)
            m2, s2 = self.masks_for(emb, original_size, input_size, point_coords=pc, point_labels=pl)
            return image, np.concatenate([m1, m2]), np.concatenate([s1, s2])
        masks, scores = self.masks_for(emb, original_size, input_size, box_arr, pc, pl)
        return image, masks, scores


# ---------------------------------------------------------------- prompt sources


@dataclass
class ImagePrompts:
    """What to segment in one image: boxes (with category and score when a detector gave them) and
    points; ``image_id`` is the COCO id used in the results."""

    path: Path
    image_id: int
    boxes: list[list[float]] = field(default_factory=list)
    box_categories: list[int] = field(default_factory=list)
    box_scores: list[float] = field(default_factory=list)
    points: list[tuple[float, float, int]] = field(default_factory=list)


def list_images(source: str | Path) -> list[Path]:
    """An image file, or the image files of a folder (recursive, sorted)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise DefectkitError(f"{source}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        return files
    if not source.exists():
        raise DefectkitError(f"{source}: no such image or folder")
    return [source]


def image_ids_from_coco(coco_json: str | Path, images: list[Path]) -> list[int]:
    """Ids of ``images`` in a COCO file: matched by path (``info.image_root`` + ``file_name``), else by
    the path ending in ``file_name`` (a copied ``.../test/hole/000.png``). Unmatched images are an error."""
    coco_json = Path(coco_json)
    try:
        coco = json.loads(coco_json.read_text())
        entries = coco["images"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DefectkitError(f"{coco_json}: not a readable COCO json with an 'images' list") from None
    root = Path(coco.get("info", {}).get("image_root", ""))
    by_path = {str((root / e["file_name"]).resolve()): int(e["id"]) for e in entries}
    by_name: dict[str, list[int]] = {}
    for e in entries:
        by_name.setdefault(e["file_name"], []).append(int(e["id"]))
    ids = []
    for p in images:
        hit = by_path.get(str(p.resolve()))
        if hit is None:
            for name, found in by_name.items():
                if p.as_posix().endswith("/" + name) and len(found) == 1:
                    hit = found[0]
                    break
        if hit is None:
            raise DefectkitError(f"{coco_json}: has no image entry for {p}")
        ids.append(hit)
    return ids


def read_results(path: str | Path) -> list[dict]:
    """A COCO results list (``detect predict`` output) with one-line errors."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise DefectkitError(f"{path}: no such file") from None
    except ValueError as exc:
        raise DefectkitError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(results, list) or any(
        not isinstance(r, dict) or not {"image_id", "bbox"} <= r.keys() for r in results
    ):
        raise DefectkitError(f"{path}: not a COCO results list (entries need image_id and bbox)")
    return results


def attach_boxes(prompts: list[ImagePrompts], results: list[dict], min_score: float, where: str) -> None:
    """Turn COCO results (xywh boxes) into box prompts of the matching images."""
    by_id = {p.image_id: p for p in prompts}
    for r in results:
        if r.get("score", 1.0) < min_score:
            continue
        target = by_id.get(int(r["image_id"]))
        if target is None:
            continue  # a detection for an image not asked about
        x, y, w, h = (float(v) for v in r["bbox"])
        if w <= 0 or h <= 0:
            raise DefectkitError(f"{where}: image {r['image_id']} has an empty box {r['bbox']}")
        target.boxes.append([x, y, x + w, y + h])
        target.box_categories.append(int(r.get("category_id", 1)))
        target.box_scores.append(float(r.get("score", 1.0)))


# ---------------------------------------------------------------- outputs


def coco_results_for(prompts: ImagePrompts, masks: np.ndarray, scores: np.ndarray, category_id: int) -> list[dict]:
    """COCO results entries (RLE + box + score) for one image's masks.

    Detector boxes keep the detector's score and class (they rank detections for segm AP); manual
    prompts get SAM's predicted IoU as score and ``category_id``.
    """
    out = []
    for i, mask in enumerate(masks):
        from_detector = i < len(prompts.box_scores)
        out.append({
            "image_id": int(prompts.image_id),
            "category_id": int(prompts.box_categories[i]) if from_detector else int(category_id),
            "score": round(float(prompts.box_scores[i] if from_detector else scores[i]), 5),
            "bbox": [float(v) for v in mask_to_bbox_xywh(mask)],
            "segmentation": mask_to_rle(mask),
            "area": int(mask.sum()),
        })
    return out


def draw_overlay(image: np.ndarray, masks: np.ndarray, boxes: list[list[float]], class_ids: list[int]) -> np.ndarray:
    """The image with each mask tinted (supervision's MaskAnnotator) and its prompt box drawn."""
    import supervision as sv

    if len(masks) == 0:
        return image.copy()
    xyxy = np.array([mask_to_bbox_xywh(m) for m in masks], np.float32)
    xyxy[:, 2:] += xyxy[:, :2]
    det = sv.Detections(xyxy=xyxy, mask=masks.astype(bool), class_id=np.asarray(class_ids, int))
    scene = sv.MaskAnnotator(opacity=0.5).annotate(scene=image.copy(), detections=det)
    if boxes:
        prompt = sv.Detections(xyxy=np.asarray(boxes, np.float32), class_id=np.asarray(class_ids[: len(boxes)], int))
        scene = sv.BoxAnnotator(thickness=1).annotate(scene=scene, detections=prompt)
    return scene


def output_stem(path: Path, source: Path) -> str:
    """A unique flat name for an image: its path under the --image folder with '/' -> '_'."""
    if source.is_dir():
        return "_".join(path.relative_to(source).with_suffix("").parts)
    return path.stem


def predict_folder(
    segmenter: Segmenter,
    source: Path,
    prompts: list[ImagePrompts],
    out_dir: Path,
    *,
    category_id: int = 1,
    progress: bool = True,
) -> list[dict]:
    """Segment every image's prompts; write ``masks/<stem>.png`` (union, 0/255), ``overlays/<stem>.png``
    and return the COCO results. ``out_dir`` should be a fresh (temporary) folder."""
    from tqdm import tqdm

    results: list[dict] = []
    for p in tqdm(prompts, desc="segment", unit="img", disable=not progress or len(prompts) < 2):
        image, masks, scores = segmenter.segment_file(p.path, p.boxes, p.points)
        stem = output_stem(p.path, source)
        union = masks.any(0) if len(masks) else np.zeros(image.shape[:2], bool)
        write_png(out_dir / "masks" / f"{stem}.png", union)
        class_ids = list(p.box_categories) + [category_id] * (len(masks) - len(p.box_categories))
        write_png(out_dir / "overlays" / f"{stem}.png", draw_overlay(image, masks, p.boxes, class_ids))
        results.extend(coco_results_for(p, masks, scores, category_id))
    return results
