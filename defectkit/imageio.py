"""Image and mask reading with one-line errors that name the file.

OpenCV decodes (fast, and handles PNG/JPG/BMP/TIFF); a cheap trailer check catches the truncated PNG
and JPEG files that OpenCV would otherwise half-decode with only a warning on stderr.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from defectkit.errors import DefectkitError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_TRAILER = b"IEND\xaeB`\x82"


def is_image_file(path: str | Path) -> bool:
    """True for the file types defectkit reads (by suffix, case-insensitive).

    >>> is_image_file("test/hole/000.PNG"), is_image_file("notes.txt")
    (True, False)
    """
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _check_complete(path: Path, data: np.ndarray) -> None:
    raw = data[:8].tobytes()
    if raw == _PNG_MAGIC:
        if _PNG_TRAILER not in data[-32:].tobytes():
            raise DefectkitError(f"{path}: truncated PNG (no IEND chunk)")
    elif raw[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:].tobytes():
        raise DefectkitError(f"{path}: truncated JPEG (no end-of-image marker)")


def read_image(path: str | Path, mode: str = "rgb") -> np.ndarray:
    """Decode an image file.

    mode: ``"rgb"`` gives HxWx3 uint8 RGB (grayscale files are expanded), ``"gray"`` gives HxW
    uint8, ``"unchanged"`` gives what the file holds. Raises DefectkitError naming the file when it
    is missing, empty, truncated or not an image.

    >>> img = read_image("datasets/sample/wood/test/hole/000.png")  # doctest: +SKIP
    >>> img.shape, img.dtype  # doctest: +SKIP
    ((256, 256, 3), dtype('uint8'))
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DefectkitError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise DefectkitError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise DefectkitError(f"{path}: empty file")
    _check_complete(path, data)
    flag = {"rgb": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_GRAYSCALE, "unchanged": cv2.IMREAD_UNCHANGED}[mode]
    img = cv2.imdecode(data, flag)
    if img is None:
        raise DefectkitError(f"{path}: not a readable image (corrupt, or not an image file)")
    if mode == "rgb":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif mode == "unchanged" and img.dtype != np.uint8:
        # 16-bit PNG/TIFF: scale to 8 bits so thresholds mean the same everywhere.
        img = (img.astype(np.float32) * (255.0 / np.iinfo(img.dtype).max)).round().astype(np.uint8)
    return img


def read_mask(path: str | Path, threshold: int = 127) -> np.ndarray:
    """Read a defect mask as a bool HxW array: a pixel is defect when its grey value is > threshold.

    Colour masks are converted to grey first; JPEG masks with noisy values are why the threshold
    exists (the MVTec masks themselves are 0/255 PNG).
    """
    grey = read_image(path, mode="gray")
    return grey > threshold


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB (HxWx3) or grey (HxW, bool or uint8) array as PNG, atomically."""
    from defectkit.atomic import atomic_write_bytes

    arr = image
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise DefectkitError(f"{path}: could not encode PNG")
    return atomic_write_bytes(path, buf.tobytes())
