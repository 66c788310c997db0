"""Masks to instances: connected components, exact boxes, RLE, YOLO-seg polygons and SAM points.

Every per-instance step works on the instance's bounding-box crop (a 1024x1024 mask with three small
defects costs three small crops, not three full-image passes), the RLE too
(``core.rle.crop_to_rle``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from defectkit.core.rle import crop_to_rle

DEFAULT_MIN_AREA = 10
"""Components under 10 pixels (a 3x3 blob) are dropped by default: stray pixels left by mask drawing
or JPEG noise, far below what a detector sees at its input size. ``min_area=1`` keeps everything."""


@dataclass
class Instance:
    """One defect instance: a connected component of a mask (or a merged group of them).

    ``bbox`` is COCO ``[x, y, w, h]`` with ``w = x_max - x_min + 1``; ``area`` the pixel count;
    ``polygon`` a flat ``[x1, y1, x2, y2, ...]`` list of pixel indices (one ring, holes bridged in);
    ``points`` SAM prompt points ``[[x, y], ...]`` (pixel indices, the most interior first).
    """

    bbox: list[int]
    area: int
    rle: dict | None = None
    polygon: list[int] | None = None
    points: list[list[int]] | None = None

    @property
    def box_xyxy(self) -> list[int]:
        x, y, w, h = self.bbox
        return [x, y, x + w, y + h]


def label_components(
    mask: np.ndarray, connectivity: int = 8, merge_distance: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Label the instances of a bool mask.

    Returns int32 labels (0 = background, 1..n) and an (n, 5) array of ``[x, y, w, h, area]`` per
    instance (exact boxes, pixel counts). With ``merge_distance`` > 0, components whose pixels come
    within about that many pixels of each other (a dilation by a disk of that diameter joins them)
    become one instance made of their own pixels only (the dilation only decides the grouping).

    >>> m = np.zeros((5, 9), bool); m[1:3, 1:3] = m[1:3, 5:7] = True
    >>> len(label_components(m)[1]), label_components(m, merge_distance=3)[1].tolist()
    (2, [[1, 1, 6, 2, 8]])
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, not {connectivity}")
    mask_u8 = mask.view(np.uint8) if mask.dtype == bool else (mask > 0).view(np.uint8)
    n, labels = cv2.connectedComponents(mask_u8, connectivity=connectivity, ltype=cv2.CV_32S)
    if merge_distance > 0 and n > 2:
        radius = merge_distance // 2
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        _, groups = cv2.connectedComponents(
            cv2.dilate(mask_u8, kernel), connectivity=connectivity, ltype=cv2.CV_32S
        )
        fg = mask_u8.astype(bool)
        lut = np.zeros(n, np.int32)
        lut[labels[fg]] = groups[fg]
        # Renumber the groups 1..k in order of their first component (top-to-bottom, stable ids).
        _, first, group_of = np.unique(lut[1:], return_index=True, return_inverse=True)
        rank = np.empty(first.size, np.int32)
        rank[np.argsort(first)] = np.arange(1, first.size + 1, dtype=np.int32)
        lut[1:] = rank[group_of]
        labels = lut[labels]
    return labels, component_stats(labels)


def component_stats(labels: np.ndarray) -> np.ndarray:
    """``[x, y, w, h, area]`` of labels 1..n (all present), from the foreground pixels only.

    Costs one pass over the labels plus work per defect pixel (``cv2.connectedComponentsWithStats``
    spends about 5x more on a 1024x1024 mask: it computes statistics for the background too).

    >>> component_stats(np.array([[0, 1, 1], [2, 0, 1]], np.int32)).tolist()
    [[1, 0, 2, 2, 3], [0, 1, 1, 1, 1]]
    """
    points = cv2.findNonZero((labels > 0).view(np.uint8))  # far faster than np.nonzero
    if points is None:
        return np.zeros((0, 5), np.int64)
    points = points.reshape(-1, 2)
    xs, ys = points[:, 0], points[:, 1]
    lab = labels[ys, xs]
    order = np.argsort(lab, kind="stable")
    lab, ys, xs = lab[order], ys[order], xs[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    x0, y0 = np.minimum.reduceat(xs, starts), np.minimum.reduceat(ys, starts)
    x1, y1 = np.maximum.reduceat(xs, starts), np.maximum.reduceat(ys, starts)
    area = np.diff(np.r_[starts, lab.size])
    return np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1, area], axis=1).astype(np.int64)


def polygon_from_crop(crop: np.ndarray) -> np.ndarray:
    """One closed polygon (Nx2 int, crop pixel indices) whose filling gives back ``crop``'s pixels.

    Contours come from ``cv2.findContours(RETR_CCOMP)``: outer boundaries and the boundaries of
    holes. YOLO-seg allows one polygon per instance, so each hole (and each further outer part of a
    merged instance) is joined to the polygon by a two-way bridge between the nearest points; the
    bridge's two coincident edges cancel under the even-odd fill (``cv2.fillPoly``, as ultralytics
    rasterises), so a ring stays a ring.

    >>> ring = cv2.circle(np.zeros((40, 40), np.uint8), (20, 20), 12, 1, 3)
    >>> poly = polygon_from_crop(ring)
    >>> back = cv2.fillPoly(np.zeros_like(ring), [poly.astype(np.int32)], 1)
    >>> bool((back == ring).all())
    True
    """
    contours, hierarchy = cv2.findContours(crop.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), np.int32)
    parts = [c[:, 0, :] for c in contours]
    # Largest outer boundary first, then the rest (holes and, for merged instances, other parts).
    outer = [i for i, h in enumerate(hierarchy[0]) if h[3] < 0]
    first = max(outer, key=lambda i: cv2.contourArea(contours[i]))
    poly = parts[first]
    for i, part in enumerate(parts):
        if i != first:
            poly = _bridge(poly, part)
    return poly


def _bridge(poly: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Splice closed ring ``part`` into ``poly`` at their nearest points (out along a bridge and back)."""
    d = ((poly[:, None, :].astype(np.int64) - part[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(d.argmin()), d.shape)
    ring = np.concatenate([part[j:], part[: j + 1]])
    return np.concatenate([poly[: i + 1], ring, poly[i:]])


def interior_points(crop: np.ndarray, max_points: int = 3) -> list[list[int]]:
    """Prompt points inside the instance (crop pixel indices ``[x, y]``), the most interior first.

    The first is the maximum of the distance transform: the pixel farthest from the background,
    which lies inside thin scratches and on the body of a ring (never in its hole). Further points
    (up to ``max_points``) are added only where the instance is large enough for them to matter:
    each maximises its distance to the background and to the points chosen so far, and must be at
    least as interior as half the first point's depth.

    >>> m = np.zeros((9, 30), np.uint8); m[2:7, 1:29] = 1
    >>> pts = interior_points(m)
    >>> all(m[y, x] for x, y in pts), pts[0][1]
    (True, 4)
    """
    # The crop edge counts as background (cv2's border: np.pad spends more on its Python than this).
    padded = cv2.copyMakeBorder(crop.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    points = [[int(x), int(y)]]
    depth = float(dist[y, x])
    if max_points > 1 and depth >= 2:
        ys, xs = np.nonzero(dist >= max(1.0, depth / 2))
        spread = np.full(xs.shape, np.inf)
        for _ in range(max_points - 1):
            px, py = points[-1]
            spread = np.minimum(spread, np.hypot(xs - px, ys - py))
            score = np.minimum(spread, dist[ys, xs])
            k = int(score.argmax())
            # A new point must be well apart from the others (more than the instance's thickness).
            if spread[k] <= 2 * depth:
                break
            points.append([int(xs[k]), int(ys[k])])
    return points


def extract_instances(
    mask: np.ndarray,
    *,
    connectivity: int = 8,
    merge_distance: int = 0,
    min_area: int = DEFAULT_MIN_AREA,
    rle: bool = True,
    polygons: bool = True,
    points: bool = True,
) -> tuple[list[Instance], int]:
    """The instances of a bool HxW mask and the number of components dropped by ``min_area``.

    Instances come sorted by the top, then the left edge of their box.

    >>> m = np.zeros((20, 20), bool); m[2:6, 3:8] = True; m[15, 15] = True
    >>> found, dropped = extract_instances(m, min_area=2)
    >>> [(i.bbox, i.area) for i in found], dropped
    ([([3, 2, 5, 4], 20)], 1)
    """
    # Label only the box around all defect pixels: masks are mostly background.
    ox, oy, bw, bh = cv2.boundingRect(
        mask.view(np.uint8) if mask.dtype == bool else (mask > 0).view(np.uint8)
    )
    if bw == 0:
        return [], 0
    labels, stats = label_components(mask[oy : oy + bh, ox : ox + bw], connectivity, merge_distance)
    height, width = mask.shape
    found: list[Instance] = []
    dropped = 0
    # Sorted by box top, then left: an order that does not depend on OpenCV's labelling algorithm.
    ordered = sorted(enumerate(stats.tolist(), start=1), key=lambda item: (item[1][1], item[1][0], item[0]))
    for label, (cx, cy, w, h, area) in ordered:
        if area < min_area:
            dropped += 1
            continue
        crop = labels[cy : cy + h, cx : cx + w] == label
        x, y = cx + ox, cy + oy
        inst = Instance(bbox=[x, y, w, h], area=area)
        if rle:
            inst.rle = crop_to_rle(crop, x, y, height, width)
        if polygons:
            poly = polygon_from_crop(crop)
            poly[:, 0] += x
            poly[:, 1] += y
            inst.polygon = poly.ravel().tolist()
        if points:
            inst.points = [[px + x, py + y] for px, py in interior_points(crop)]
        found.append(inst)
    return found, dropped
