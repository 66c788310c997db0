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


def crop_to_rle(crop: np.ndarray, x: int, y: int, height: int, width: int) -> dict:
    """COCO compressed RLE of a ``height`` x ``width`` mask that is ``crop`` at column ``x``, row
    ``y`` and background elsewhere: the same dict as :func:`mask_to_rle` of that full mask.

    pycocotools encodes only whole frames: one small defect on a 1024x1024 image costs a 1 MB frame
    and a pass over its every pixel (about 0.5 ms per instance, a quarter of convert's non-decoding
    work). Here numpy finds the runs inside the crop, where all the foreground is, and pycocotools
    compresses them (``frPyObjects``), so the string is pycocotools' own.

    >>> m = np.zeros((6, 5), bool); m[1:4, 2:4] = True; m[2, 2] = False
    >>> crop_to_rle(m[1:4, 2:4], 2, 1, 6, 5) == mask_to_rle(m)
    True
    >>> full = np.ones((3, 2), bool)  # runs that go on from one column into the next
    >>> crop_to_rle(full, 0, 0, 3, 2) == mask_to_rle(full)
    True
    """
    h, w = crop.shape
    # COCO runs go down each column: each crop column, with a background pixel above and below it.
    columns = np.zeros((w, h + 2), np.int8)
    columns[:, 1:-1] = crop.T
    step = np.diff(columns, axis=1)
    start_col, start_row = np.nonzero(step == 1)  # in column-major order, as the runs come
    end_col, end_row = np.nonzero(step == -1)
    starts = (x + start_col) * height + y + start_row
    ends = (x + end_col) * height + y + end_row
    # A run that reaches the bottom of a full-height crop goes on at the top of its next column.
    joined = starts[1:] == ends[:-1]
    if joined.any():
        starts, ends = starts[np.r_[True, ~joined]], ends[np.r_[~joined, True]]
    edges = np.empty(2 * starts.size, np.int64)
    edges[0::2], edges[1::2] = starts, ends
    counts = np.diff(edges, prepend=0, append=height * width)
    if counts.size > 1 and counts[-1] == 0:  # pycocotools ends on the last pixel's run
        counts = counts[:-1]
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
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


# COCO's compressed RLE writes each run length as 5-bit groups, offset by 48 ('0'), bit 0x20 meaning
# "more groups follow" and bit 0x10 of the last group the sign; from the fourth run on, a value is the
# difference to the run two places back. pycocotools decodes without checking any of it: garbage
# counts become run lengths in the billions, and its merge() then loops for minutes. No library offers
# a check, so this decodes the string vectorised (numpy, microseconds per mask) and checks it.
_MAX_GROUPS = 7  # 7 x 5 bits cover any uint32 run length, the type pycocotools stores


def _decode_counts(counts: bytes) -> np.ndarray | str:
    """Run lengths of a compressed RLE string, or the problem with it.

    >>> _decode_counts(b"04").tolist()
    [0, 4]
    >>> _decode_counts(b"garbage!!")
    "RLE counts has characters outside COCO's alphabet ('0'..'o')"
    """
    codes = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, np.int64)
    if codes.min() < 0 or codes.max() > 63:
        return "RLE counts has characters outside COCO's alphabet ('0'..'o')"
    ends = (codes & 0x20) == 0
    if not ends[-1]:
        return "RLE counts ends in the middle of a run length"
    last = np.flatnonzero(ends)
    group = np.concatenate(([0], np.cumsum(ends)[:-1]))
    starts = np.concatenate(([0], last[:-1] + 1))
    shift = np.arange(codes.size) - starts[group]
    if shift.max() >= _MAX_GROUPS:
        return "RLE counts holds a run length too long for any image"
    values = np.zeros(last.size, np.int64)
    np.add.at(values, group, (codes & 0x1F) << (5 * shift))
    negative = (codes[last] & 0x10) != 0
    values[negative] |= np.left_shift(np.int64(-1), 5 * (shift[last][negative] + 1))
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])  # run m (m >= 3) adds run m - 2
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def rle_problem(rle, height: int | None = None, width: int | None = None) -> str | None:
    """None when ``rle`` is a COCO RLE whose run lengths cover exactly its ``size`` (and the image's
    ``height`` x ``width`` when given), else what is wrong with it, in words.

    Checks what pycocotools does not, so garbage never reaches it: the counts' alphabet, negative
    run lengths and runs that do not add up to height x width.

    >>> rle_problem({"size": [2, 2], "counts": "04"}) is None
    True
    >>> rle_problem({"size": [2, 3], "counts": "04"})
    'RLE run lengths add up to 4 pixels, not 2x3 = 6'
    >>> rle_problem({"size": [256, 256], "counts": "garbage!!"})
    "RLE counts has characters outside COCO's alphabet ('0'..'o')"
    >>> rle_problem({"size": [4, 4], "counts": [3, -1, 14]})
    'RLE has a negative run length'
    """
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        return "segmentation is neither a COCO RLE dict ({'size', 'counts'}) nor a polygon list"
    size = rle["size"]
    if not (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        return f"RLE size {size!r} is not [height, width]"
    h, w = int(size[0]), int(size[1])
    if height is not None and width is not None and (h, w) != (int(height), int(width)):
        return f"mask size {h}x{w} differs from the image's {int(height)}x{int(width)}"
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            return "RLE counts has characters outside COCO's alphabet ('0'..'o')"
    if isinstance(counts, bytes):
        runs = _decode_counts(counts)
        if isinstance(runs, str):
            return runs
    elif isinstance(counts, list):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in counts):
            return "RLE counts list holds something other than integers"
        runs = np.asarray(counts, np.int64)
    else:
        return "RLE counts is neither a string nor a list of run lengths"
    if runs.size and runs.min() < 0:
        return "RLE has a negative run length"
    total = int(runs.sum())
    if total != h * w:
        return f"RLE run lengths add up to {total} pixels, not {h}x{w} = {h * w}"
    return None


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
