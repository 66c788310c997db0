"""Pixel entries (``defectkit.evaluation.pixels``) of score maps made of instance masks, on the RLEs.

The score map of an image: each pixel takes the highest score among the predicted masks covering
it, 0 where none does. Pixel AUROC, AUPRO, AP and F1-max of these maps need, for every pixel, that
score, whether it is a defect pixel, and the area of its ground-truth region (8-connected component
of the union of the ground-truth masks). Everything here works on the run-length encodings of all
images at once, laid end to end on one line of pixels (column-major, as COCO's RLE), in numpy:

1. every mask's foreground runs become intervals on that line (``compressed_run_lengths`` decodes
   all RLE strings in one pass);
2. the ground-truth intervals are merged into their union and cut at column ends; two such pieces
   in neighbouring columns touching 8-connectedly join a region (a vectorised union-find);
3. the line is cut at every interval end into segments, and each segment takes the highest score
   among the predicted intervals covering it.

No mask is decoded and nothing is done per image in Python: pycocotools' per-mask calls (merge,
decode, area) and OpenCV's connected components per image cost 0.3-1 ms an image, more than the
rest of ``evaluate masks``. Checked against score maps drawn pixel by pixel in
tests/test_pixel_metrics.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from defectkit.evaluation.coco_io import compressed_run_lengths, segmentation_to_rle
from defectkit.evaluation.pixels import PixelEntries

CHUNK = 1024  # masks decoded per numpy pass: temporaries stay in cache


def _as_compressed(segm, height: int, width: int) -> dict:
    """A segmentation as an RLE with str counts (what ``compressed_run_lengths`` reads)."""
    if isinstance(segm, dict) and type(segm.get("counts")) is str:
        return segm
    rle = segmentation_to_rle(segm, height, width)
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def foreground_intervals(rles: Sequence[dict], offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, mask index) of the foreground runs of ``rles`` (str counts), each mask's
    positions shifted by its ``offsets`` entry (its image's first pixel on the shared line).

    >>> s, e, m = foreground_intervals([{"size": [2, 2], "counts": "121"}, {"size": [1, 3], "counts": "12"}], np.array([0, 10]))
    >>> s.tolist(), e.tolist(), m.tolist()
    ([1, 11], [3, 13], [0, 1])
    """
    starts, ends, owners = [], [], []
    for first in range(0, len(rles), CHUNK):
        chunk = rles[first : first + CHUNK]
        parsed = compressed_run_lengths(chunk)
        if parsed is None:  # the loaders checked every RLE already
            raise ValueError("invalid RLE counts")
        runs, run_end = parsed
        run_start = np.concatenate(([0], run_end[:-1]))
        mask_of_run = np.repeat(np.arange(len(chunk)), run_end - run_start)
        end_in_line = np.cumsum(runs)
        mask_base = np.concatenate(([0], end_in_line))[run_start]  # line position where each mask starts
        end_in_mask = end_in_line - mask_base[mask_of_run]
        foreground = ((np.arange(runs.size) - run_start[mask_of_run]) & 1).astype(bool) & (runs > 0)
        shift = np.asarray(offsets[first : first + CHUNK], dtype=np.int64)[mask_of_run[foreground]]
        ends.append(end_in_mask[foreground] + shift)
        starts.append(ends[-1] - runs[foreground])
        owners.append(mask_of_run[foreground] + first)
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(owners)


def merge_intervals(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of intervals [start, end) as sorted disjoint intervals (touching ones joined).

    >>> s, e = merge_intervals(np.array([5, 0, 2, 9]), np.array([7, 3, 4, 10]))
    >>> s.tolist(), e.tolist()
    ([0, 5, 9], [4, 7, 10])
    """
    if starts.size == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    new_group = np.r_[True, starts[1:] > reach[:-1]]
    group_end_index = np.r_[np.flatnonzero(new_group)[1:] - 1, starts.size - 1]
    return starts[new_group], reach[group_end_index]


def split_at_columns(
    starts: np.ndarray, ends: np.ndarray, image_start: np.ndarray, height: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Intervals cut where a column ends (``image_start`` and ``height`` per interval): every piece
    lies in one column of one image.

    >>> s, e = split_at_columns(np.array([1]), np.array([7]), np.array([0]), np.array([3]))
    >>> s.tolist(), e.tolist()
    ([1, 3, 6], [3, 6, 7])
    """
    first_col = (starts - image_start) // height
    last_col = (ends - 1 - image_start) // height
    n = last_col - first_col + 1
    which = np.repeat(np.arange(starts.size), n)
    col = first_col[which] + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    col_start = image_start[which] + col * height[which]
    return np.maximum(starts[which], col_start), np.minimum(ends[which], col_start + height[which])


def connected_labels(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The smallest node of each node's connected component, for a graph of ``n`` nodes and edges
    (u[i], v[i]): union-find by hooking each edge's larger root under the smaller, then pointer
    jumping, all edges at once per round.

    >>> connected_labels(5, np.array([3, 1]), np.array([4, 3])).tolist()
    [0, 1, 2, 1, 1]
    """
    parent = np.arange(n)
    while True:
        ru, rv = parent[u], parent[v]
        differ = ru != rv
        if not differ.any():
            return parent
        np.minimum.at(parent, np.maximum(ru[differ], rv[differ]), np.minimum(ru[differ], rv[differ]))
        while True:  # point every node at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def region_pieces(
    starts: np.ndarray, ends: np.ndarray, image_start: np.ndarray, height: np.ndarray, width: np.ndarray
) -> np.ndarray:
    """Region label (the index of its region's first piece) of each column piece (sorted,
    disjoint, one column each): pieces in neighbouring columns of one image are joined when their
    rows touch or overlap diagonally (8-connectivity).

    >>> # 4x3 image (rows x columns), column-major: pixels (row 0, col 0) and (1, 1) touch
    >>> # diagonally, (3, 2) stands alone.
    >>> region_pieces(np.array([0, 5, 11]), np.array([1, 6, 12]), np.zeros(3, int), np.full(3, 4), np.full(3, 3)).tolist()
    [0, 0, 2]
    """
    col = (starts - image_start) // height
    next_col = image_start + (col + 1) * height
    row0, row1 = starts - image_start - col * height, ends - image_start - col * height
    has_next = col + 1 < width
    lo = next_col + np.maximum(row0 - 1, 0)
    hi = next_col + np.minimum(row1 + 1, height)
    first = np.searchsorted(ends, lo, side="right")  # first piece ending after lo
    last = np.searchsorted(starts, hi, side="left")  # first piece starting at or after hi
    count = np.where(has_next, np.maximum(last - first, 0), 0)
    u = np.repeat(np.arange(starts.size), count)
    v = np.repeat(first, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    return connected_labels(starts.size, u, v)


def instance_map_entries(
    images: Sequence[dict],
    gt_segmentations: Sequence[Sequence],
    pred_segmentations: Sequence[Sequence],
    pred_scores: Sequence[Sequence[float]],
    images_per_chunk: int = 128,
) -> PixelEntries:
    """Pixel entries of every image's instance score map, image after image. ``images``: COCO
    image dicts (``height``, ``width``); per image, its ground-truth segmentations, its predicted
    segmentations and their scores (COCO RLE or polygons; sizes checked by the loaders).

    >>> img = {"height": 1, "width": 4}
    >>> gt = [[{"size": [1, 4], "counts": "022"}]]  # pixels 0-1 are a defect
    >>> preds = [[{"size": [1, 4], "counts": "121"}, {"size": [1, 4], "counts": "022"}]]
    >>> e = instance_map_entries([img], gt, preds, [[0.9, 0.4]])
    >>> e.scores.tolist(), e.positives.tolist(), e.negatives.tolist(), e.region_mass.tolist()
    ([0.4, 0.9, 0.9, 0.0], [1, 1, 0, 0], [0, 0, 1, 1], [0.5, 0.5, 0.0, 0.0])
    """
    # Chunks of images: the arrays (a few per run of every mask) stay small and in cache, and the
    # peak memory bounded; regions never cross images, so chunks are independent.
    chunks = [
        _chunk_entries(
            images[i : i + images_per_chunk],
            gt_segmentations[i : i + images_per_chunk],
            pred_segmentations[i : i + images_per_chunk],
            pred_scores[i : i + images_per_chunk],
        )
        for i in range(0, len(images), images_per_chunk)
    ]
    return PixelEntries(
        **{
            name: np.concatenate([getattr(c, name) for c in chunks]) if chunks else np.zeros(0, dtype)
            for name, dtype in (
                ("scores", np.float64),
                ("positives", np.int64),
                ("negatives", np.int64),
                ("region_mass", np.float64),
                ("entries_per_image", np.int64),
                ("regions_per_image", np.int64),
            )
        }
    )


def _chunk_entries(
    images: Sequence[dict],
    gt_segmentations: Sequence[Sequence],
    pred_segmentations: Sequence[Sequence],
    pred_scores: Sequence[Sequence[float]],
) -> PixelEntries:
    """``instance_map_entries`` of a few images at once."""
    heights = np.asarray([img["height"] for img in images], dtype=np.int64)
    widths = np.asarray([img["width"] for img in images], dtype=np.int64)
    image_offsets = np.concatenate(([0], np.cumsum(heights * widths)))

    def intervals(per_image: Sequence[Sequence]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, ends, index of the mask in image-after-image order) of the foreground runs."""
        owner = np.repeat(np.arange(len(images)), [len(segms) for segms in per_image])
        rles = [
            _as_compressed(s, images[i]["height"], images[i]["width"])
            for i, segms in enumerate(per_image)
            for s in segms
        ]
        return foreground_intervals(rles, image_offsets[owner])

    def image_of(positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(image_offsets, positions, side="right") - 1

    # Ground truth: the union, cut at column ends, pieces joined into regions.
    gt_starts, gt_ends, _ = intervals(gt_segmentations)
    union_starts, union_ends = merge_intervals(gt_starts, gt_ends)
    union_image = image_of(union_starts)
    piece_starts, piece_ends = split_at_columns(
        union_starts, union_ends, image_offsets[union_image], heights[union_image]
    )
    piece_image = image_of(piece_starts)
    region = region_pieces(
        piece_starts, piece_ends, image_offsets[piece_image], heights[piece_image], widths[piece_image]
    )
    region_area = np.bincount(region, weights=piece_ends - piece_starts, minlength=piece_starts.size)
    regions_per_image = np.bincount(piece_image[region == np.arange(region.size)], minlength=len(images))

    # Segments: the line cut at every image start and every interval end; each takes the highest
    # score among the predicted intervals spanning it (0 where none does).
    pred_starts, pred_ends, pred_mask = intervals(pred_segmentations)
    scores = np.fromiter((float(v) for per in pred_scores for v in per), np.float64)
    bounds = np.sort(np.concatenate((image_offsets, piece_starts, piece_ends, pred_starts, pred_ends)))
    bounds = bounds[np.r_[True, bounds[1:] != bounds[:-1]]]  # np.unique's hash path is 5x slower here
    seg_start, seg_len = bounds[:-1], np.diff(bounds)
    first_seg = np.searchsorted(bounds, pred_starts)
    n_seg = np.searchsorted(bounds, pred_ends) - first_seg
    spanned = np.repeat(first_seg, n_seg) + np.arange(n_seg.sum()) - np.repeat(np.cumsum(n_seg) - n_seg, n_seg)
    seg_score = np.full(seg_start.size, -np.inf)
    np.maximum.at(seg_score, spanned, np.repeat(scores[pred_mask], n_seg))
    seg_score[seg_score == -np.inf] = 0.0
    # Ground truth of each segment: the piece holding it, if any.
    piece = np.searchsorted(piece_starts, seg_start, side="right") - 1
    inside = piece >= 0
    inside[inside] = seg_start[inside] < piece_ends[piece[inside]]
    seg_region = np.where(inside, region[np.maximum(piece, 0)], -1)
    # One entry per run of neighbouring segments of one image with the same score and region.
    seg_image = image_of(seg_start)
    new_entry = np.r_[
        True,
        (seg_image[1:] != seg_image[:-1]) | (seg_score[1:] != seg_score[:-1]) | (seg_region[1:] != seg_region[:-1]),
    ]
    entry_of_seg = np.cumsum(new_entry) - 1
    length = np.bincount(entry_of_seg, weights=seg_len).astype(np.int64)
    entry_region = seg_region[new_entry]
    positives = np.where(entry_region >= 0, length, 0)
    return PixelEntries(
        scores=seg_score[new_entry],
        positives=positives,
        negatives=length - positives,
        region_mass=np.where(entry_region >= 0, length / region_area[np.maximum(entry_region, 0)].clip(1), 0.0),
        entries_per_image=np.bincount(seg_image[new_entry], minlength=len(images)),
        regions_per_image=regions_per_image.astype(np.int64),
    )
