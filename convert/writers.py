"""The five output formats, each written from the same decoded instances and the same split.

Writers never decode an image: they link (or copy) the source file and write labels computed once
by :mod:`convert.instances`. Paths written into files (``yolo/data.yaml``'s ``path``, COCO's
``info.image_root``, SAM's ``image``) are the *final* absolute locations, although everything is
written inside a temporary folder first.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from defectkit.convert.instances import Instance
from defectkit.core.layout import SPLITS, Manifest, category_ids, class_of, classify_classes, flat_name, label_name


@dataclass
class ImageRecord:
    """A decoded source image: its size and its instances (empty for good images)."""

    file_name: str
    label: str
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)


@dataclass
class WriteContext:
    """What every writer needs: where to write, where the sources are now and will be, and the data."""

    out: Path  # the temporary category folder being written
    final: Path  # where ``out`` will be moved: absolute paths in files point here
    source: Path  # the source category folder as it is readable now
    final_source: Path  # the source category folder's absolute path once the run is done
    manifest: Manifest
    records: dict[str, ImageRecord]
    copy: bool = False

    def place(self, file_name: str, dst: Path) -> None:
        """Put source image ``file_name`` at ``dst``: a hard link (same file system), else a symlink
        to its final absolute path, or a copy with ``copy=True``."""
        src = self.source / file_name
        if self.copy:
            shutil.copyfile(src, dst)
            return
        try:
            os.link(src, dst)
        except OSError:
            os.symlink(self.final_source / file_name, dst)


def _fmt(v: float) -> str:
    return f"{v:.6f}"


def yolo_box_line(class_index: int, bbox: list[int], width: int, height: int) -> str:
    """A YOLO detection label line: ``class cx cy w h`` normalised by the image size (pixel edges).

    >>> yolo_box_line(2, [10, 20, 30, 40], 100, 200)
    '2 0.250000 0.200000 0.300000 0.200000'
    """
    x, y, w, h = bbox
    return " ".join(
        [
            str(class_index),
            _fmt((x + w / 2) / width),
            _fmt((y + h / 2) / height),
            _fmt(w / width),
            _fmt(h / height),
        ]
    )


def yolo_polygon_line(class_index: int, polygon: list[int], width: int, height: int) -> str:
    """A YOLO-seg label line: ``class x1 y1 x2 y2 ...`` normalised; vertices at pixel centres.

    Writing the centre ``(x + 0.5) / W`` makes ultralytics' ``int(v * W)`` give back pixel ``x``.

    >>> yolo_polygon_line(0, [0, 0, 9, 0, 9, 4], 10, 5)
    '0 0.050000 0.100000 0.950000 0.100000 0.950000 0.900000'
    """
    xy = (np.asarray(polygon, np.float64).reshape(-1, 2) + 0.5) / (width, height)
    return " ".join([str(class_index), *map("{:.6f}".format, xy.ravel().tolist())])


def write_yolo(ctx: WriteContext, seg: bool = False) -> None:
    """``yolo/`` (boxes) or ``yolo-seg/`` (polygons): images/<split>/, labels/<split>/, data.yaml."""
    name = "yolo-seg" if seg else "yolo"
    root = ctx.out / name
    ids = category_ids(ctx.manifest.classes)
    for split in SPLITS:
        images, labels = root / "images" / split, root / "labels" / split
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for file_name in ctx.manifest.splits[split]:
            rec = ctx.records[file_name]
            ctx.place(file_name, images / flat_name(file_name))
            lines = []
            for inst in rec.instances:
                k = ids[rec.label] - 1
                if seg:
                    lines.append(yolo_polygon_line(k, inst.polygon, rec.width, rec.height))
                else:
                    lines.append(yolo_box_line(k, inst.bbox, rec.width, rec.height))
            (labels / label_name(file_name)).write_text("".join(line + "\n" for line in lines))
    data = {
        "path": str(ctx.final / name),
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "nc": len(ids),
        "names": {i - 1: c for c, i in ids.items()},
    }
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def coco_dict(ctx: WriteContext, split: str) -> dict:
    """The COCO instances dict of one split (ids as docs/FORMATS.md: images 1..N in manifest order)."""
    ids = category_ids(ctx.manifest.classes)
    images, annotations = [], []
    for image_id, file_name in enumerate(ctx.manifest.splits[split], start=1):
        rec = ctx.records[file_name]
        images.append({"id": image_id, "file_name": file_name, "width": rec.width, "height": rec.height})
        for inst in rec.instances:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": ids[rec.label],
                    "segmentation": inst.rle,
                    "area": inst.area,
                    "bbox": inst.bbox,
                    "iscrowd": 0,
                }
            )
    category = ctx.manifest.category
    return {
        "info": {
            "description": f"{category} ({split} split), converted from the MVTec AD layout by defectkit",
            "version": "1.0",
            "image_root": str(ctx.final_source),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": c, "supercategory": category} for c, i in ids.items()],
    }


def write_coco(ctx: WriteContext) -> None:
    """``coco/<split>.json``: COCO instances with compressed-RLE masks, good images listed too."""
    (ctx.out / "coco").mkdir()
    for split in SPLITS:
        (ctx.out / "coco" / f"{split}.json").write_text(json.dumps(coco_dict(ctx, split)) + "\n")


def write_sam(ctx: WriteContext) -> None:
    """``sam/<split>.jsonl``: one line per image with box, interior points and mask per instance."""
    (ctx.out / "sam").mkdir()
    ids = category_ids(ctx.manifest.classes)
    for split in SPLITS:
        lines = []
        for image_id, file_name in enumerate(ctx.manifest.splits[split], start=1):
            rec = ctx.records[file_name]
            instances = [
                {
                    "category": rec.label,
                    "category_id": ids[rec.label],
                    "box_xyxy": inst.box_xyxy,
                    "points": inst.points,
                    "point_labels": [1] * len(inst.points),
                    "mask": inst.rle,
                }
                for inst in rec.instances
            ]
            line = {
                "image": str(ctx.final_source / file_name),
                "file_name": file_name,
                "image_id": image_id,
                "width": rec.width,
                "height": rec.height,
                "instances": instances,
            }
            lines.append(json.dumps(line) + "\n")
        (ctx.out / "sam" / f"{split}.jsonl").write_text("".join(lines))


def write_classify(ctx: WriteContext) -> None:
    """``classify/<split>/<class>/``: the ImageFolder layout (every class folder in every split)."""
    classes = classify_classes(ctx.manifest.classes)
    for split in SPLITS:
        for c in classes:
            (ctx.out / "classify" / split / c).mkdir(parents=True)
        for file_name in ctx.manifest.splits[split]:
            ctx.place(file_name, ctx.out / "classify" / split / class_of(file_name) / flat_name(file_name))


WRITERS: dict[str, Callable[[WriteContext], None]] = {
    "yolo": write_yolo,
    "yolo-seg": lambda ctx: write_yolo(ctx, seg=True),
    "coco": write_coco,
    "sam": write_sam,
    "classify": write_classify,
}
"""Format name -> writer; ``--to all`` runs them in this order."""
