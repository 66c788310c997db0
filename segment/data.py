"""Read and check the SAM JSONL that ``convert-mvtec`` writes (``<out>/<category>/sam/<split>.jsonl``).

One line per image: ``{"image", "file_name", "image_id", "width", "height", "instances": [{"category",
"box_xyxy", "points", "point_labels", "mask": RLE}]}`` (docs/FORMATS.md). Every line is checked
against its image before any work starts, so a stale or hand-edited file fails with one line naming
the file, line and problem instead of a shape error deep inside training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from defectkit.core.errors import DefectkitError
from defectkit.core.rle import rle_problem, rle_to_mask
from defectkit.segment.prompts import check_box


@dataclass
class SamInstance:
    category: str
    box_xyxy: list[float]
    mask_rle: dict
    points: list[list[float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)

    def mask(self) -> np.ndarray:
        return rle_to_mask(self.mask_rle)


@dataclass
class SamImage:
    image: Path
    file_name: str
    image_id: int
    width: int
    height: int
    instances: list[SamInstance]


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DefectkitError(f"{where}: image {path} does not exist") from None
    except (UnidentifiedImageError, OSError):
        raise DefectkitError(f"{where}: {path} is not a readable image") from None


def read_sam_jsonl(path: str | Path, *, check_images: bool = True) -> list[SamImage]:
    """Parse and check a SAM JSONL file; raises DefectkitError naming ``path:line`` on any mismatch."""
    path = Path(path)
    if not path.is_file():
        raise DefectkitError(f"{path}: no such file (run `convert-mvtec <category> --to sam` first)")
    records: list[SamImage] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
                rec = SamImage(
                    image=Path(obj["image"]),
                    file_name=str(obj["file_name"]),
                    image_id=int(obj["image_id"]),
                    width=int(obj["width"]),
                    height=int(obj["height"]),
                    instances=[
                        SamInstance(
                            category=str(i["category"]),
                            box_xyxy=[float(v) for v in i["box_xyxy"]],
                            mask_rle=i["mask"],
                            points=[[float(a), float(b)] for a, b in i.get("points", [])],
                            point_labels=[int(v) for v in i.get("point_labels", [])],
                        )
                        for i in obj["instances"]
                    ],
                )
            except json.JSONDecodeError as exc:
                raise DefectkitError(f"{where}: not valid JSON ({exc.msg})") from None
            except (KeyError, TypeError, ValueError) as exc:
                raise DefectkitError(f"{where}: not a SAM record ({type(exc).__name__}: {exc})") from None
            for inst in rec.instances:
                if not isinstance(inst.mask_rle, dict) or list(inst.mask_rle.get("size", [])) != [rec.height, rec.width]:
                    size = inst.mask_rle.get("size") if isinstance(inst.mask_rle, dict) else inst.mask_rle
                    raise DefectkitError(
                        f"{where}: an instance mask is {size} (HxW) but the line says {rec.height}x{rec.width}"
                    )
                problem = rle_problem(inst.mask_rle)
                if problem:
                    raise DefectkitError(f"{where}: an instance mask: {problem}")
                if len(inst.box_xyxy) != 4:
                    raise DefectkitError(f"{where}: box_xyxy needs 4 numbers, got {inst.box_xyxy}")
                check_box(inst.box_xyxy, rec.width, rec.height, where)
                if len(inst.point_labels) != len(inst.points):
                    raise DefectkitError(
                        f"{where}: {len(inst.points)} points but {len(inst.point_labels)} point_labels"
                    )
                for x, y in inst.points:  # SAM would take a point off the image without a word
                    if not (0 <= x <= rec.width and 0 <= y <= rec.height):
                        raise DefectkitError(
                            f"{where}: point ({x:g}, {y:g}) is outside the {rec.width}x{rec.height} image"
                        )
            if check_images:
                w, h = image_size(rec.image, where)
                if (w, h) != (rec.width, rec.height):
                    raise DefectkitError(
                        f"{where}: image {rec.image} is {w}x{h} (WxH) but the line says {rec.width}x{rec.height}"
                    )
            records.append(rec)
    if not records:
        raise DefectkitError(f"{path}: no records")
    return records


def split_jsonl(data_dir: str | Path, split: str) -> Path:
    """``<data>/<split>.jsonl``; ``data_dir`` is the ``sam/`` folder written by convert-mvtec."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DefectkitError(f"{data_dir}: no such folder (expected <out>/<category>/sam from convert-mvtec)")
    return data_dir / f"{split}.jsonl"


def coco_json_for(data_dir: str | Path, split: str) -> Path:
    """The COCO ground truth beside the SAM JSONL: ``<data>/../coco/<split>.json`` (same image ids)."""
    path = Path(data_dir).resolve().parent / "coco" / f"{split}.json"
    if not path.is_file():
        raise DefectkitError(f"{path}: no such file (convert with --to all, or --to sam,coco, to score segm AP)")
    return path
