"""Image and mask reading with one-line errors that name the file.

OpenCV decodes (fast, and handles PNG/JPG/BMP/TIFF). A cheap structural check runs first (PNG: every
chunk's CRC and the IEND chunk; JPEG: the header segments and the end-of-image marker), so a truncated
or corrupt file ends in one error line naming it, instead of a half-decoded image or the decoder
libraries' own messages on stderr.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from defectkit.core.atomic import atomic_write_bytes
from defectkit.core.errors import DefectkitError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# JPEG markers that stand alone (no length field): TEM, RST0-7.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def is_image_file(path: str | Path) -> bool:
    """True for the file types defectkit reads (by suffix, case-insensitive).

    >>> is_image_file("test/hole/000.PNG"), is_image_file("notes.txt")
    (True, False)
    """
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(sources: str | Path | Iterable[str | Path]) -> list[Path]:
    """The image files of a file, a folder (recursive, sorted) or a list of files and folders.

    The one source lister of every stage's ``predict`` (and ``convert``'s extension list, through
    :func:`is_image_file`). Hidden files and folders (a name starting with ``.``, such as macOS'
    ``._000.png`` or ``.ipynb_checkpoints``) are skipped below a folder, as ``convert-mvtec`` skips
    them. A folder's files are sorted by their path parts, so the order is the same on every
    platform and Python version. Raises DefectkitError naming the path for a missing path, a file
    that is not an image, or a folder with no image anywhere below it.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("b.PNG", "a/2.jpg", "a/1.tif", "notes.txt", ".hidden/3.png", "a/._1.png"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True); (root / name).touch()
    >>> [p.relative_to(root).as_posix() for p in list_images(root)]
    ['a/1.tif', 'a/2.jpg', 'b.PNG']
    >>> [p.name for p in list_images([root / "b.PNG", root / "a"])]
    ['b.PNG', '1.tif', '2.jpg']
    >>> list_images(root / "notes.txt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    defectkit.core.errors.DefectkitError: .../notes.txt: not an image file (expected .png, .jpg, .jpeg, .bmp, .tif, .tiff)
    >>> import shutil; shutil.rmtree(root)
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            below = [p for p in source.rglob("*") if _listed(p, source)]
            if not below:
                raise DefectkitError(f"{source}: no images in this folder or below ({', '.join(IMAGE_EXTENSIONS)})")
            found += sorted(below, key=lambda p: p.relative_to(source).parts)
        elif source.is_file():
            if not is_image_file(source):
                raise DefectkitError(f"{source}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
            found.append(source)
        else:
            raise DefectkitError(f"{source}: no such file or folder")
    return found


def _listed(path: Path, root: Path) -> bool:
    """Whether :func:`list_images` takes ``path`` found below ``root``: an image file, nothing hidden."""
    if not is_image_file(path) or any(part.startswith(".") for part in path.relative_to(root).parts):
        return False
    return path.is_file()


def _png_problem(raw: memoryview) -> str | None:
    """Walk the PNG chunks and check each CRC: None when the file is whole, else what is wrong.

    libpng checks the same CRCs while decoding, but reports a failure by printing ``libpng error:
    ...`` on stderr before OpenCV returns None; checking first keeps a corrupt file to our one-line
    error. It costs one CRC-32 pass over the file (about 1 ms per MB), a few percent of a decode.

    >>> png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    >>> _png_problem(memoryview(png)) is None
    True
    >>> damaged = bytearray(png); damaged[45] ^= 1
    >>> _png_problem(memoryview(damaged)), _png_problem(memoryview(png[:50]))
    ('corrupt PNG (CRC error in chunk IDAT at byte 33)', "truncated PNG (chunk 'IDAT' at byte 33 runs past the end)")
    """
    pos, end = 8, len(raw)
    while pos + 12 <= end:
        length = int.from_bytes(raw[pos : pos + 4], "big")
        kind = bytes(raw[pos + 4 : pos + 8])
        stop = pos + 12 + length
        if not kind.isalpha() or (pos == 8 and kind != b"IHDR"):
            return f"corrupt PNG (no valid chunk at byte {pos})"
        if stop > end:
            return f"truncated PNG (chunk {kind.decode('latin-1')!r} at byte {pos} runs past the end)"
        crc = int.from_bytes(raw[stop - 4 : stop], "big")
        if zlib.crc32(raw[pos + 4 : stop - 4]) != crc:
            return f"corrupt PNG (CRC error in chunk {kind.decode('latin-1')} at byte {pos})"
        if kind == b"IEND":
            return None
        pos = stop
    return "truncated PNG (no IEND chunk)"


def _jpeg_problem(raw: memoryview) -> str | None:
    """Walk the JPEG marker segments up to the first scan, then look for the end-of-image marker.

    Catches truncated files and garbage in the headers, which libjpeg would otherwise report on
    stderr ("Corrupt JPEG data: ...") while half-decoding. Damage inside the compressed scan data
    cannot be seen without decoding (JPEG has no checksum).
    """
    if bytes(raw[-64:]).find(b"\xff\xd9") < 0:
        return "truncated JPEG (no end-of-image marker)"
    pos, end = 2, len(raw)
    while pos + 4 <= end:
        if raw[pos] != 0xFF:
            return f"corrupt JPEG (no marker at byte {pos})"
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: compressed data follows
            return None
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0x00, 0xD8, 0xD9):
            return f"corrupt JPEG (unexpected marker 0xff{marker:02x} at byte {pos})"
        pos += 2 + int.from_bytes(raw[pos + 2 : pos + 4], "big")
    return "truncated JPEG (no image data)"


def _structure_problem(data: np.ndarray) -> str | None:
    """Cheap checks of PNG and JPEG files before decoding (see _png_problem, _jpeg_problem)."""
    raw = memoryview(data)
    if bytes(raw[:8]) == _PNG_MAGIC:
        return _png_problem(raw)
    if bytes(raw[:2]) == _JPEG_SOI:
        return _jpeg_problem(raw)
    return None


@contextlib.contextmanager
def _opencv_quiet() -> Iterator[None]:
    """Silence OpenCV's own log (``[ERROR] ... imdecode_ ...``, TIFF/BMP decoder errors) during a
    decode whose failure we report ourselves; nested and threaded uses restore the level once."""
    global _quiet_depth, _saved_level
    with _quiet_lock:
        if _quiet_depth == 0:
            _saved_level = _OPENCV_LOG.getLogLevel()
            _OPENCV_LOG.setLogLevel(_OPENCV_LOG_SILENT)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                _OPENCV_LOG.setLogLevel(_saved_level)


# OpenCV 4.13 moved getLogLevel/setLogLevel to cv2.utils.logging; earlier 4.x (the ones that run on
# numpy 1.x) has them on cv2 itself. Level 0 is LOG_LEVEL_SILENT in both.
_OPENCV_LOG = getattr(cv2.utils, "logging", cv2)
_OPENCV_LOG_SILENT = 0
_quiet_lock = threading.Lock()
_quiet_depth = 0
_saved_level = 0


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
    problem = _structure_problem(data)
    if problem:
        raise DefectkitError(f"{path}: {problem}")
    flags = {"rgb": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_GRAYSCALE, "unchanged": cv2.IMREAD_UNCHANGED}
    flag = flags.get(mode, cv2.IMREAD_UNCHANGED)  # "raw": what the file holds, 16 bits kept
    with _opencv_quiet():
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
    """Read a defect mask as a bool HxW array: a pixel is defect when its value is > threshold.

    - 0/1 label masks (8- or 16-bit; many data sets ship them) are read as such: a pixel is defect
      when it is 1. Thresholded at 127 they would all be empty and every defect would be dropped.
    - Colour masks: a pixel is defect when any colour channel is > threshold, so a mask painted pure
      red (grey level 76) is not read as empty.
    - 16-bit masks: the threshold is on the 8-bit scale (value * 255 / 65535).
    JPEG masks with noisy values are why the threshold exists (the MVTec masks are 0/255 PNG).
    """
    raw = read_image(path, mode="raw")
    if raw.ndim == 3:
        raw = raw[..., :3].max(axis=2)
    if raw.max(initial=0) == 1:
        return raw == 1
    if raw.dtype != np.uint8:
        return raw.astype(np.float32) * (255.0 / np.iinfo(raw.dtype).max) > threshold
    return raw > threshold


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB (HxWx3) or grey (HxW, bool or uint8) array as PNG, atomically."""
    arr = image
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise DefectkitError(f"{path}: could not encode PNG")
    return atomic_write_bytes(path, buf.tobytes())
