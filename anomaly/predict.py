"""``anomaly predict``: raw anomaly scores and maps for images, and the maps' defects as COCO results.

For each image: the model's raw score (no normalisation), its anomaly map resized back to the
image's own resolution, and the defect instances the map shows: the map thresholded at the pixel
threshold chosen on the val split (``score >= t``), each 8-connected component one instance with its
box, its RLE mask, the component's highest map value as score, and the class ``defect``
(category id 1: an unsupervised model does not know defect types).

Outputs of :func:`predict` in ``out_dir``:

- ``scores.json``: ``[{"image", "file_name", "image_id", "score", "defect", "map", "overlay"}]``;
- ``maps/<name>.npy``: the map at the image's resolution, float16 (float32 when a value is beyond
  float16's range), ``np.load`` reads it;
- ``overlays/<name>.png``: the image with the map as a heat map (the pixel threshold at its middle
  colour) and the predicted defect outlines;
- ``predictions.json``: the instances as a COCO results file (``defectkit.core.results``).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import supervision as sv
import torch
from defectkit.anomaly import _anomalib
from defectkit.anomaly.checkpoint import load_model
from defectkit.anomaly.data import AnomalyImage, ImageDataset, check_category
from torch.utils.data import DataLoader
from tqdm import tqdm

from defectkit.core.atomic import atomic_write_bytes, atomic_write_json
from defectkit.core.imageio import list_images, read_image, write_png
from defectkit.core.layout import MANIFEST, Manifest, flat_name
from defectkit.core.results import detections_to_coco, write_coco_results
from defectkit.core.torchio import resolve_device

# COCO evaluation reads at most 100 detections an image (maxDets); a map thresholded too low breaks
# into hundreds of specks, so the 100 strongest components are kept.
MAX_INSTANCES = 100
DEFECT_CATEGORY = {"id": 1, "name": "defect"}


def score_images(
    module: torch.nn.Module,
    images: Sequence[AnomalyImage],
    image_size: int,
    device: torch.device,
    *,
    batch: int = 32,
    progress: bool = False,
    desc: str = "score",
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Raw scores (float64, one per image) and anomaly maps (float32, each at its image's size)."""
    dataset = ImageDataset(images, image_size)
    loader = DataLoader(dataset, batch_size=batch, shuffle=False)
    scores: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    for items in tqdm(loader, desc=desc, unit="batch", disable=not progress):
        sizes = [dataset.original_size(int(i)) for i in items["index"]]
        batch_scores, batch_maps = _anomalib.infer(module, items["image"], sizes, device)
        scores.append(batch_scores)
        maps += batch_maps
    return (np.concatenate(scores) if scores else np.zeros(0)), maps


def anomaly_instances(
    anomaly_map: np.ndarray, threshold: float, max_instances: int = MAX_INSTANCES
) -> sv.Detections:
    """The defects an anomaly map shows: the 8-connected components of ``map >= threshold``, each with
    its pixel box, its mask and the highest map value inside it as confidence (class 0: ``defect``),
    strongest first, at most ``max_instances``.

    >>> m = np.zeros((6, 8), np.float32); m[1:3, 1:3] = 0.9; m[4, 5:8] = 0.6
    >>> d = anomaly_instances(m, 0.5)
    >>> d.xyxy.tolist(), d.confidence.round(2).tolist(), d.mask.sum(axis=(1, 2)).tolist()
    ([[1.0, 1.0, 3.0, 3.0], [5.0, 4.0, 8.0, 5.0]], [0.9, 0.6], [4, 3])
    >>> len(anomaly_instances(m, 1.0))
    0
    """
    above = (anomaly_map >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(above, connectivity=8)
    if count <= 1:
        return sv.Detections.empty()
    # The highest map value of each component: one pass over the pixels above the threshold.
    peaks = np.full(count, -np.inf)
    np.maximum.at(peaks, labels[above.astype(bool)], anomaly_map[above.astype(bool)])
    order = np.argsort(-peaks[1:], kind="stable")[:max_instances] + 1
    x, y, w, h = (stats[order, k].astype(np.float64) for k in range(4))
    return sv.Detections(
        xyxy=np.stack([x, y, x + w, y + h], axis=1),
        mask=labels[None] == order[:, None, None],
        confidence=peaks[order].astype(np.float64),
        class_id=np.zeros(len(order), int),
    )


def coco_results(image_ids: Sequence[int], maps: Sequence[np.ndarray], pixel_threshold: float) -> list[dict]:
    """COCO results of every image's :func:`anomaly_instances` (category 1, ``defect``)."""
    results: list[dict] = []
    for image_id, anomaly_map in zip(image_ids, maps):
        results += detections_to_coco(anomaly_instances(anomaly_map, pixel_threshold), image_id)
    return results


def overlay(image: np.ndarray, anomaly_map: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """The image (HxWx3 RGB) with the map as a JET heat map, scaled so the pixel threshold is the
    middle colour, and the outlines of ``map >= threshold`` in white.

    >>> overlay(np.zeros((4, 5, 3), np.uint8), np.ones((4, 5), np.float32), 0.5).shape
    (4, 5, 3)
    """
    scale = 0.5 / pixel_threshold if pixel_threshold > 0 else 1.0
    level = np.clip(anomaly_map * scale, 0.0, 1.0)
    heat = cv2.cvtColor(
        cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    blended = cv2.addWeighted(image, 0.55, heat, 0.45, 0.0)
    contours, _ = cv2.findContours(
        (anomaly_map >= pixel_threshold).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(blended, contours, -1, (255, 255, 255), 1)
    return blended


def map_bytes(anomaly_map: np.ndarray) -> bytes:
    """The map as ``.npy`` bytes: float16 (half the size; the rank of the values survives) unless
    a value is beyond float16's range, then float32.

    >>> np.load(io.BytesIO(map_bytes(np.array([[0.5, 2.0]], np.float32)))).dtype
    dtype('float16')
    >>> np.load(io.BytesIO(map_bytes(np.array([[1e6]], np.float32)))).dtype
    dtype('float32')
    """
    fits = np.abs(anomaly_map).max(initial=0.0) <= np.finfo(np.float16).max
    keep = anomaly_map.astype(np.float16 if fits else np.float32)
    buf = io.BytesIO()
    np.save(buf, keep)
    return buf.getvalue()


def output_names(images: Sequence[AnomalyImage], roots: Sequence[Path | None]) -> list[str]:
    """A unique file stem per image for maps/ and overlays/: the flat name of its file_name when
    known, else its path below the source folder it came from, flattened.

    >>> imgs = [AnomalyImage(Path("/d/a/1.png")), AnomalyImage(Path("/x/t.png"), "test/hole/000.png")]
    >>> output_names(imgs, [Path("/d"), None])
    ['a_1', 'test_hole_000']
    """
    names: list[str] = []
    seen: set[str] = set()
    for image, root in zip(images, roots):
        if image.file_name:
            name = Path(flat_name(image.file_name)).stem
        else:
            rel = image.path.relative_to(root) if root is not None else Path(image.path.name)
            name = flat_name(rel.with_suffix("").as_posix())
        unique, n = name, 2
        while unique in seen:
            unique, n = f"{name}_{n}", n + 1
        seen.add(unique)
        names.append(unique)
    return names


def listed_sources(sources: str | Path | Iterable[str | Path]) -> list[tuple[Path, Path | None]]:
    """Every image of ``sources`` (files and folders, see ``list_images``) and the folder it was found
    in (None for a file given directly)."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    found: list[tuple[Path, Path | None]] = []
    for source in map(Path, sources):
        found += [(p, source if source.is_dir() else None) for p in list_images(source)]
    return found


def name_images(
    found: Sequence[tuple[Path, Path | None]], category_dir: str | Path | None
) -> list[AnomalyImage]:
    """:class:`AnomalyImage` s for listed files. With a converted ``category_dir``, an image inside its
    source folder gets its ``file_name``, and when every image belongs to one split, the image ids of
    ``coco/<split>.json``; otherwise the ids are 1..N in listed order."""
    manifest = Manifest.load(check_category(category_dir)) if category_dir is not None else None
    names: list[str | None] = [None] * len(found)
    if manifest is not None:
        known = {n for split in manifest.splits.values() for n in split}
        root = Path(manifest.source).resolve()
        for i, (path, _) in enumerate(found):
            resolved = path.resolve()
            if resolved.is_relative_to(root) and resolved.relative_to(root).as_posix() in known:
                names[i] = resolved.relative_to(root).as_posix()
    splits = {manifest.split_of(n) for n in names if n} if manifest is not None else set()
    one_split = splits.pop() if len(splits) == 1 and all(names) else None
    ids = manifest.image_ids(one_split) if one_split else {}
    return [
        AnomalyImage(path, name, ids.get(name, i))
        for i, ((path, _), name) in enumerate(zip(found, names), start=1)
    ]


def write_outputs(
    out_dir: Path,
    images: Sequence[AnomalyImage],
    scores: np.ndarray,
    maps: Sequence[np.ndarray],
    thresholds: dict,
    names: Sequence[str],
    *,
    files: bool = True,
    progress: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Write scores.json and predictions.json (and, with ``files``, maps/ and overlays/) into
    ``out_dir``; return (the scores.json records, the COCO results)."""
    records = []
    for image, score, name, anomaly_map in tqdm(
        list(zip(images, scores, names, maps)), desc="write", unit="img", disable=not progress
    ):
        record = {
            "image": str(image.path),
            "file_name": image.file_name,
            "image_id": image.image_id,
            "score": float(score),
            "defect": bool(score >= thresholds["image"]),
        }
        if image.label is not None:
            record["label"] = int(image.label)
        if files:
            atomic_write_bytes(out_dir / "maps" / f"{name}.npy", map_bytes(anomaly_map))
            write_png(
                out_dir / "overlays" / f"{name}.png",
                overlay(read_image(image.path, "rgb"), anomaly_map, thresholds["pixel"]),
            )
            record["map"] = f"maps/{name}.npy"
            record["overlay"] = f"overlays/{name}.png"
        records.append(record)
    results = coco_results([image.image_id for image in images], maps, thresholds["pixel"])
    atomic_write_json(out_dir / "scores.json", records)
    write_coco_results(out_dir / "predictions.json", results)
    return records, results


def predict(
    run: str | Path,
    sources: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    *,
    device: str = "cpu",
    category_dir: str | Path | None = None,
    batch: int = 32,
    progress: bool = True,
) -> list[dict]:
    """Score images with a trained run (folder or model.pt) and write ``out_dir`` (see the module
    docstring); returns the scores.json records. ``category_dir``: the converted category the
    images come from (default: the run's training data, when it is still there), for ``file_name``
    and image ids."""
    dev = resolve_device(device)
    found = listed_sources(sources)  # a bad source fails before the model is read
    module, ckpt = load_model(run, dev)
    if category_dir is None:
        trained_on = Path(ckpt["config"]["data"])
        category_dir = trained_on if (trained_on / MANIFEST).is_file() else None
    images = name_images(found, category_dir)
    scores, maps = score_images(
        module, images, int(ckpt["config"]["imgsz"]), dev, batch=batch, progress=progress, desc="predict"
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = output_names(images, [root for _, root in found])
    records, _ = write_outputs(out, images, scores, maps, ckpt["thresholds"], names, progress=progress)
    return records
