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
import supervision as sv
import torch
from tqdm import tqdm

from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import list_images, read_image, write_png
from defectkit.core.layout import flat_name
from defectkit.core.results import coco_to_detections, detections_to_coco, read_coco_results, write_coco_results
from defectkit.core.torchio import parse_device
from defectkit.detect import predict_images
from defectkit.segment.decoder import PromptDecoder, prompts_to_model_frame, upscale_logits
from defectkit.segment.embeddings import EmbeddingCache, ImageEncoder
from defectkit.segment.models import apply_finetuned, build_sam, load_finetuned, trainable_state
from defectkit.segment.prompts import check_box, check_point

RESULTS_FILE = "results.json"  # segment predict's COCO results, in its --out folder


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


def image_ids_from_coco(coco_json: str | Path, images: list[Path]) -> list[int]:
    """Ids of ``images`` in a COCO file: matched by path (``info.image_root`` + ``file_name``, or its
    convert-mvtec copy ``yolo/images/<split>/<flat name>`` beside the ``coco/`` folder), else by the
    path ending in ``file_name`` (a copied ``.../test/hole/000.png``). Unmatched images are an error."""
    coco_json = Path(coco_json)
    try:
        coco = json.loads(coco_json.read_text())
        entries = coco["images"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DefectkitError(f"{coco_json}: not a readable COCO json with an 'images' list") from None
    root = Path(coco.get("info", {}).get("image_root", ""))
    copies = [coco_json.parent.parent / kind / "images" / coco_json.stem for kind in ("yolo", "yolo-seg")]
    by_path = {}
    for e in entries:
        by_path[str((root / e["file_name"]).resolve())] = int(e["id"])
        for folder in copies:
            by_path[str((folder / flat_name(e["file_name"])).resolve())] = int(e["id"])
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


def attach_boxes(
    prompts: list[ImagePrompts], results: list[dict], min_score: float = 0.0, max_det: int | None = None
) -> None:
    """Turn COCO results (``detect predict`` output, or a detector run by ``--detector``) into box
    prompts of the matching images: per image, the ``max_det`` highest-scored boxes scored at least
    ``min_score`` (ties keep file order). A box of zero width or height (nothing to segment) is
    skipped; results for images not asked about are ignored."""
    by_image = coco_to_detections(results, [p.image_id for p in prompts], masks=False)
    for p in prompts:
        dets = by_image[p.image_id]
        if len(dets) == 0:
            continue
        w, h = dets.xyxy[:, 2] - dets.xyxy[:, 0], dets.xyxy[:, 3] - dets.xyxy[:, 1]
        dets = dets[(dets.confidence >= min_score) & (w > 0) & (h > 0)]
        dets = dets[np.argsort(-dets.confidence, kind="stable")][:max_det]
        p.boxes += dets.xyxy.tolist()
        p.box_categories += (dets.class_id + 1).tolist()
        p.box_scores += dets.confidence.tolist()


def detector_results(
    detector: str | Path,
    prompts: list[ImagePrompts],
    *,
    conf: float = 0.25,
    max_det: int = 100,
    imgsz: int | None = None,
    device: str | None = "cpu",
    progress: bool = False,
) -> list[dict]:
    """Run a detector (``detect``'s public predict API) on the prompts' images: COCO results with
    the prompts' image ids, the boxes ``--detector`` segments."""
    return predict_images(
        detector, [p.path for p in prompts], conf=conf, imgsz=imgsz,
        device=None if device is None else parse_device(device).ultralytics,
        image_ids={str(p.path): p.image_id for p in prompts}, progress=progress, max_det=max_det,
    )  # fmt: skip


# ---------------------------------------------------------------- outputs


def prompt_detections(prompts: ImagePrompts, masks: np.ndarray, ious: np.ndarray, category_id: int) -> sv.Detections:
    """One image's masks as ``sv.Detections``, scored by the one rule of ``segment predict``:

        score = the prompt's score x SAM's predicted IoU of its mask

    A detector box's score is the detector's confidence; a box or click given by hand scores 1, so
    its mask scores SAM's predicted IoU. The product ranks a box SAM cannot outline below an
    equally confident box it outlines well (the mask score of Mask Scoring R-CNN, Huang et al.
    2019: classification confidence x predicted mask IoU); segm AP and the image-level score rank
    by it. Detector boxes keep the detector's class, others get ``category_id``.
    """
    n_det = len(prompts.box_scores)
    prompt_scores = np.r_[np.asarray(prompts.box_scores, np.float64), np.ones(len(masks) - n_det)]
    categories = np.r_[np.asarray(prompts.box_categories, int), np.full(len(masks) - n_det, int(category_id))]
    if len(masks) == 0:
        return sv.Detections.empty()
    masks = masks.astype(bool)
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float64),
        mask=masks,
        confidence=prompt_scores * np.asarray(ious, np.float64),
        class_id=categories.astype(int) - 1,
    )


def draw_overlay(image: np.ndarray, detections: sv.Detections, boxes: list[list[float]]) -> np.ndarray:
    """The image with each mask tinted (supervision's MaskAnnotator) and its prompt box drawn."""
    if len(detections) == 0:
        return image.copy()
    scene = sv.MaskAnnotator(opacity=0.5).annotate(scene=image.copy(), detections=detections)
    if boxes:
        prompt = sv.Detections(xyxy=np.asarray(boxes, np.float32), class_id=detections.class_id[: len(boxes)])
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
    and return the COCO results (``defectkit.core.results``; scores: :func:`prompt_detections`).
    ``out_dir`` should be a fresh (temporary) folder."""
    results: list[dict] = []
    for p in tqdm(prompts, desc="segment", unit="img", disable=not progress or len(prompts) < 2):
        image, masks, ious = segmenter.segment_file(p.path, p.boxes, p.points)
        dets = prompt_detections(p, masks, ious, category_id)
        stem = output_stem(p.path, source)
        union = masks.any(0) if len(masks) else np.zeros(image.shape[:2], bool)
        write_png(out_dir / "masks" / f"{stem}.png", union)
        write_png(out_dir / "overlays" / f"{stem}.png", draw_overlay(image, dets, p.boxes))
        results.extend(detections_to_coco(dets, p.image_id))
    return results


def segment_images(
    segmenter: Segmenter,
    source: str | Path,
    out: str | Path,
    *,
    boxes: list[list[float]] = (),
    points: list[tuple[float, float, int]] = (),
    boxes_from: str | Path | None = None,
    detector: str | Path | None = None,
    coco: str | Path | None = None,
    min_score: float = 0.0,
    conf: float = 0.25,
    max_det: int = 100,
    imgsz: int | None = None,
    device: str | None = "cpu",
    category_id: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict]:
    """``segment predict``: segment an image or every image under a folder from one kind of prompt
    (``boxes``/``points``, the COCO results file ``boxes_from``, or the ``detector``'s boxes: see
    :func:`attach_boxes`, :func:`detector_results`) and write ``out`` atomically: ``masks/``,
    ``overlays/`` and ``results.json`` (COCO results, scored by :func:`prompt_detections`).
    Image ids follow ``coco`` (:func:`image_ids_from_coco`), else 1..N in sorted order.
    ``device`` is SAM's and the detector's. Returns the results."""
    if Path(out).exists() and not overwrite:
        raise DefectkitError(f"{out}: already exists; pass --overwrite to replace it")
    images = list_images(source)
    ids = image_ids_from_coco(coco, images) if coco else list(range(1, len(images) + 1))
    prompts = [ImagePrompts(path, i, boxes=[list(b) for b in boxes], points=list(points)) for path, i in zip(images, ids)]
    if boxes_from is not None:
        attach_boxes(prompts, read_coco_results(boxes_from), min_score, max_det)
    elif detector is not None:
        found = detector_results(detector, prompts, conf=conf, max_det=max_det, imgsz=imgsz, device=device,
                                 progress=progress)  # fmt: skip
        attach_boxes(prompts, found, min_score, max_det)
    with atomic_dir(out, overwrite=True) as tmp:
        results = predict_folder(segmenter, Path(source), prompts, tmp, category_id=category_id, progress=progress)
        write_coco_results(tmp / RESULTS_FILE, results)
    return results


def load_segmenter(
    model: str | None = None,
    *,
    checkpoint: str | Path | None = None,
    random_weights: bool = False,
    seed: int = 0,
    device: str = "auto",
    finetuned: str | Path | None = None,
    cache_dir: str | Path | None = None,
    amp: bool = True,
) -> tuple[Segmenter, dict | None]:
    """The SAM named by ``model``/``checkpoint`` (``random_weights`` from ``seed``), with the
    ``finetuned`` decoder when given, and its encoder (embeddings cached in ``cache_dir``; None:
    no cache). ``model`` None: the one ``finetuned`` was trained on, else vit_b. Returns (segmenter,
    base SAM's own decoder and prompt-encoder weights when ``finetuned`` replaced them, else None):
    what ``segment val`` needs to score base SAM on the same encoder."""
    tuned = load_finetuned(finetuned) if finetuned else None
    name = model or (tuned["config"]["name"] if tuned else "vit_b")
    sam = build_sam(name, checkpoint, random_weights=random_weights, seed=seed, device=parse_device(device).torch)
    base_state = None
    if tuned is not None:
        base_state = trainable_state(sam.sam, train_prompt_encoder=True)
        apply_finetuned(sam, tuned, finetuned)
    cache = EmbeddingCache(cache_dir, sam.identity, sam.spec.img_size) if cache_dir is not None else None
    return Segmenter(ImageEncoder(sam, cache, amp=amp)), base_state
