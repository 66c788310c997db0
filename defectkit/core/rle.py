"""COCO RLE <-> binary mask, and exact boxes. COCO JSON is defectkit's interchange format, so every
stage encodes masks the same way: pycocotools' compressed RLE with ``counts`` as a str."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a HxW bool/uint8 mask as COCO compressed RLE (JSON-ready: counts is a str).

    >>> m = np.zeros((4, 5), bool); m[1:3, 2:4] = True
    >>> rle = mask_to_rle(m); rle["size"]
    [4, 5]
    >>> int(rle_area(rle))
    4
    """
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode COCO RLE (compressed str/bytes counts, or uncompressed list counts) to a bool HxW mask."""
    if isinstance(rle.get("counts"), list):
        h, w = rle["size"]
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def rle_area(rle: dict) -> int:
    if isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return int(mask_utils.area(rle))


def mask_to_bbox_xywh(mask: np.ndarray) -> list[int]:
    """Exact COCO box of a mask's pixels: ``[x_min, y_min, x_max - x_min + 1, y_max - y_min + 1]``.

    >>> m = np.zeros((10, 10), bool); m[2, 3] = m[5, 7] = True
    >>> mask_to_bbox_xywh(m)
    [3, 2, 5, 4]
    """
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def xywh_to_xyxy(box: list[float]) -> list[float]:
    """COCO ``[x, y, w, h]`` to ``[x1, y1, x2, y2]`` with x2 = x + w (pixel edges, as SAM expects)."""
    x, y, w, h = box
    return [x, y, x + w, y + h]
