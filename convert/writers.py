"""The five output formats, each written from the same decoded instances and the same split.

Writers never decode an image: they link (or copy) the source file and write labels computed once
by :mod:`convert.instances`. Each format is a :class:`Writer` in three steps: its folders before
decoding starts; an image's own files (its links, its YOLO label files) as soon as its record is
in, while the threads decode the next images; the files that need every record (COCO, SAM,
``data.yaml``) at the end. (Creating a small file costs 0.05-0.7 ms of CPU on the machines
measured: the ~230 label files of a 116-image category, written after the last image was decoded,
left a core idle for 0.1-0.3 s.)

Paths written into files (``yolo/data.yaml``'s ``path``, COCO's ``info.image_root``, SAM's
``image``) are the *final* absolute locations, although everything is written inside a temporary
folder first.
"""

from __future__ import annotations

import functools
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

    @functools.cached_property
    def class_ids(self) -> dict[str, int]:
        """Defect class -> COCO category id (1..N; docs/FORMATS.md), worked out once per run."""
        return category_ids(self.manifest.classes)

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


def _yolo_prepare(ctx: WriteContext, name: str) -> None:
    for split in SPLITS:
        (ctx.out / name / "images" / split).mkdir(parents=True)
        (ctx.out / name / "labels" / split).mkdir(parents=True)


def _yolo_image(ctx: WriteContext, split: str, rec: ImageRecord, name: str, seg: bool) -> None:
    """One image of ``yolo/`` (boxes) or ``yolo-seg/`` (polygons): its link and its label file."""
    root = ctx.out / name
    ctx.place(rec.file_name, root / "images" / split / flat_name(rec.file_name))
    line = yolo_polygon_line if seg else yolo_box_line
    shapes = [inst.polygon if seg else inst.bbox for inst in rec.instances]
    # Good images have no instances (and no class id): an empty label file.
    text = "".join(line(ctx.class_ids[rec.label] - 1, shape, rec.width, rec.height) + "\n" for shape in shapes)
    (root / "labels" / split / label_name(rec.file_name)).write_text(text)


def _yolo_finish(ctx: WriteContext, name: str) -> None:
    """``data.yaml``, beside images/<split>/ and labels/<split>/."""
    ids = ctx.class_ids
    data = {
        "path": str(ctx.final / name),
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "nc": len(ids),
        "names": {i - 1: c for c, i in ids.items()},
    }
    (ctx.out / name / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _yolo_writer(name: str, seg: bool) -> Writer:
    return Writer(
        functools.partial(_yolo_prepare, name=name),
        functools.partial(_yolo_image, name=name, seg=seg),
        functools.partial(_yolo_finish, name=name),
    )


def coco_dict(ctx: WriteContext, split: str) -> dict:
    """The COCO instances dict of one split (ids as docs/FORMATS.md: images 1..N in manifest order)."""
    ids = ctx.class_ids
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
    for split in SPLITS:
        (ctx.out / "coco" / f"{split}.json").write_text(json.dumps(coco_dict(ctx, split)) + "\n")


def write_sam(ctx: WriteContext) -> None:
    """``sam/<split>.jsonl``: one line per image with box, interior points and mask per instance."""
    ids = ctx.class_ids
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


def _classify_prepare(ctx: WriteContext) -> None:
    """``classify/<split>/<class>/``: the ImageFolder layout (every class folder in every split)."""
    for split in SPLITS:
        for c in classify_classes(ctx.manifest.classes):
            (ctx.out / "classify" / split / c).mkdir(parents=True)


def _classify_image(ctx: WriteContext, split: str, rec: ImageRecord) -> None:
    dst = ctx.out / "classify" / split / class_of(rec.file_name) / flat_name(rec.file_name)
    ctx.place(rec.file_name, dst)


def _nothing(ctx: WriteContext, *args) -> None:
    pass


@dataclass(frozen=True)
class Writer:
    """One output format: ``prepare(ctx)`` makes its folders before any image is decoded;
    ``image(ctx, split, record)`` writes one image's own files as soon as its record is in (records
    come in the order of the images, so files are the same bytes whatever the order of decoding);
    ``finish(ctx)`` writes what needs every record (``ctx.records`` is then complete)."""

    prepare: Callable[[WriteContext], None] = _nothing
    image: Callable[[WriteContext, str, ImageRecord], None] = _nothing
    finish: Callable[[WriteContext], None] = _nothing


def _folder(name: str) -> Callable[[WriteContext], None]:
    return lambda ctx: (ctx.out / name).mkdir()


WRITERS: dict[str, Writer] = {
    "yolo": _yolo_writer("yolo", seg=False),
    "yolo-seg": _yolo_writer("yolo-seg", seg=True),
    "coco": Writer(prepare=_folder("coco"), finish=write_coco),
    "sam": Writer(prepare=_folder("sam"), finish=write_sam),
    "classify": Writer(prepare=_classify_prepare, image=_classify_image),
}
"""Format name -> writer; ``--to all`` runs them in this order."""
