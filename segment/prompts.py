"""Prompts: parsing the CLI's boxes and points, checking them against the image, and the random
box jitter and point sampling used in training. Small numpy functions; coordinates are pixels of
the original image, boxes ``[x1, y1, x2, y2]`` with pixel-edge corners (x2 = x + w), as SAM expects.
"""

from __future__ import annotations

import math

import numpy as np

from defectkit.core.errors import DefectkitError


def parse_box(text: str) -> list[float]:
    """``"x1,y1,x2,y2"`` -> four floats.

    >>> parse_box("10,20,30.5,40")
    [10.0, 20.0, 30.5, 40.0]
    """
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise DefectkitError(f"--box {text}: expected x1,y1,x2,y2 (four numbers)")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise DefectkitError(f"--box {text}: x2 must be > x1 and y2 > y1")
    return box


def parse_point(text: str) -> tuple[float, float, int]:
    """``"x,y"`` (a foreground click) or ``"x,y,label"`` with label 1 (foreground) or 0 (background).

    >>> parse_point("12,7"), parse_point("3,4,0")
    ((12.0, 7.0, 1), (3.0, 4.0, 0))
    """
    parts = text.split(",")
    try:
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except (ValueError, IndexError):
        raise DefectkitError(f"--point {text}: expected x,y or x,y,label") from None
    if len(parts) > 3 or label not in (0, 1):
        raise DefectkitError(f"--point {text}: expected x,y or x,y,label with label 0 or 1")
    return x, y, label


def check_box(box: list[float], width: int, height: int, where: str) -> None:
    """Raise when a box is not inside a ``width`` x ``height`` image (edges may touch the border).

    >>> check_box([0, 0, 256, 256], 256, 256, "a.png")
    >>> check_box([-5, 0, 10, 10], 256, 256, "a.png")
    Traceback (most recent call last):
    ...
    defectkit.core.errors.DefectkitError: a.png: box [-5, 0, 10, 10] is outside the 256x256 image
    >>> check_box([float("nan"), 0, 5, 5], 256, 256, "a.png")
    Traceback (most recent call last):
    ...
    defectkit.core.errors.DefectkitError: a.png: box [nan, 0, 5, 5] is not finite
    """
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):  # NaN passes every comparison below
        raise DefectkitError(f"{where}: box {list(box)} is not finite")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height or x2 <= x1 or y2 <= y1:
        shown = [int(v) if float(v).is_integer() else round(v, 2) for v in box]
        raise DefectkitError(f"{where}: box {shown} is outside the {width}x{height} image")


def check_point(x: float, y: float, width: int, height: int, where: str) -> None:
    """Raise when a point is not on a pixel of a ``width`` x ``height`` image.

    >>> check_point(255, 0, 256, 256, "a.png")
    >>> check_point(256, 0, 256, 256, "a.png")
    Traceback (most recent call last):
    ...
    defectkit.core.errors.DefectkitError: a.png: point (256, 0) is outside the 256x256 image
    """
    if not (0 <= x < width and 0 <= y < height):
        shown = tuple(int(v) if float(v).is_integer() else round(v, 2) for v in (x, y))
        raise DefectkitError(f"{where}: point {shown} is outside the {width}x{height} image")


def jitter_boxes(
    boxes: np.ndarray, frac: float, rng: np.random.Generator, width: int, height: int
) -> np.ndarray:
    """Move each box corner by Gaussian noise of ``frac`` x the box side (clipped to the image).

    Trains the decoder for the loose boxes a detector gives; corners never cross.

    >>> b = jitter_boxes(np.array([[10., 10., 50., 30.]]), 0.05, np.random.default_rng(0), 64, 64)
    >>> b.shape, bool((b[:, 2] > b[:, 0]).all())
    ((1, 4), True)
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if frac <= 0:
        return boxes.copy()
    side = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    out = boxes + rng.normal(0.0, 1.0, boxes.shape) * frac * np.maximum(side, 1.0)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    # Keep at least a one-pixel box around the original centre when the noise crosses corners.
    for lo, hi, size in ((0, 2, width), (1, 3, height)):
        bad = out[:, hi] - out[:, lo] < 1
        centre = (boxes[bad, lo] + boxes[bad, hi]) / 2
        out[bad, lo] = np.clip(centre - 0.5, 0, size - 1)
        out[bad, hi] = out[bad, lo] + 1
    return out


def sample_points(
    mask: np.ndarray, n_pos: int, n_neg: int, rng: np.random.Generator, box: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n_pos`` foreground points from ``mask`` and ``n_neg`` background points (inside
    ``box`` when it has background, else anywhere). Returns (coords (N, 2) as x, y; labels (N,)).

    Missing points (a mask with no pixels) get label -1, SAM's "not a point".

    >>> m = np.zeros((20, 20), bool); m[5:8, 5:8] = True
    >>> xy, lab = sample_points(m, 2, 1, np.random.default_rng(0))
    >>> xy.shape, lab.tolist(), bool(m[int(xy[0, 1]), int(xy[0, 0])])
    ((3, 2), [1, 1, 0], True)
    """
    coords = np.zeros((n_pos + n_neg, 2), np.float64)
    labels = np.full(n_pos + n_neg, -1, np.int64)
    ys, xs = np.nonzero(mask)
    if n_pos and len(xs):
        pick = rng.integers(0, len(xs), n_pos)
        coords[:n_pos] = np.stack([xs[pick], ys[pick]], 1)
        labels[:n_pos] = 1
    if n_neg:
        background = ~mask
        if box is not None:
            x1, y1, x2, y2 = (int(v) for v in np.round(box))
            inside = np.zeros_like(mask)
            inside[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
            if (background & inside).any():
                background = background & inside
        ys, xs = np.nonzero(background)
        if len(xs):
            pick = rng.integers(0, len(xs), n_neg)
            coords[n_pos:] = np.stack([xs[pick], ys[pick]], 1)
            labels[n_pos:] = 0
    return coords, labels
