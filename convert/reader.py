"""Read a category in the MVTec AD layout: which images exist, their class, and their masks.

Layout (any of the 15 MVTec AD categories, or a custom one)::

    <root>/<category>/train/good/*.png            defect-free training images
    <root>/<category>/test/<type>/*.png           test images; <type> is "good" or a defect type
    <root>/<category>/ground_truth/<type>/<stem>_mask.png

Images may be PNG, JPG, BMP or TIFF (any extension case), RGB or grayscale, any size. A mask is
found by the image's stem + ``_mask`` with any image extension. Hidden and non-image files are
ignored. Only the file listing happens here; images are decoded later, once, by the converter.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from defectkit.core.layout import GOOD
from defectkit.convert.registry import MVTEC_AD_URL, defect_types, known_categories
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import is_image_file

ARCHIVE_SUFFIXES = (".tar", ".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2")
MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class SourceImage:
    """One source image: ``file_name`` relative to the category folder, its class, its mask (or None)."""

    file_name: str
    label: str
    mask: str | None = None


@dataclass
class SourceCategory:
    """A scanned category: its folder, every image, the defect classes (sorted) and what looked wrong."""

    name: str
    folder: Path
    images: list[SourceImage]
    classes: list[str]
    warnings: list[str] = field(default_factory=list)


def is_archive(path: str | Path) -> bool:
    """True for the tar archives MVTec AD ships (one category's or the whole data set's).

    >>> is_archive("downloads/wood.tar.xz"), is_archive("datasets/mvtec_anomaly_detection")
    (True, False)
    """
    name = str(path).lower()
    return name.endswith(ARCHIVE_SUFFIXES)


def missing_data_message(path: Path, category: str) -> str:
    known = category in known_categories()
    what = f"MVTec AD category '{category}'" if known else f"category '{category}'"
    return (
        f"{path}: not found; download {what} from {MVTEC_AD_URL} (the whole data set or its "
        f"{category}.tar.xz), then pass --root with the extracted folder or the archive "
        f"(or set DEFECTKIT_DATA_ROOT)"
    )


def locate_category(root: str | Path, category: str) -> Path:
    """The category folder ``root/category``, with the right error when it is not there.

    A known MVTec AD name that is missing gets the download page; any other missing name gets the
    list of known categories (it is probably a typo).
    """
    root = Path(root)
    folder = root / category
    if folder.is_dir():
        return folder
    if category not in known_categories():
        raise DefectkitError(
            f"{folder}: unknown category '{category}' (no such folder, and not an MVTec AD category; "
            f"known: {', '.join(known_categories())})"
        )
    raise DefectkitError(missing_data_message(folder if root.is_dir() else root, category))


def _list_dir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except PermissionError:
        raise DefectkitError(f"{folder}: cannot read folder (permission denied)") from None
    except NotADirectoryError:
        raise DefectkitError(f"{folder}: not a folder") from None
    except OSError as exc:
        raise DefectkitError(f"{folder}: cannot read folder ({exc.strerror or exc})") from None


def _images_in(folder: Path, what: str) -> list[Path]:
    """Image files of a folder that must exist and hold at least one image."""
    if not folder.exists():
        raise DefectkitError(f"{folder}: missing folder ({what})")
    files = [p for p in _list_dir(folder) if p.is_file() and not p.name.startswith(".") and is_image_file(p)]
    if not files:
        raise DefectkitError(f"{folder}: empty folder (no PNG/JPG/BMP/TIFF images; {what})")
    stems: dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise DefectkitError(
                f"{p}: same name as {stems[p.stem].name}; masks and labels are matched by name"
            )
        stems[p.stem] = p
    return files


def _masks_in(folder: Path) -> dict[str, Path]:
    """Mask files of a ground_truth/<type> folder by the stem of the image they belong to."""
    masks: dict[str, Path] = {}
    if not folder.is_dir():
        return masks
    for p in _list_dir(folder):
        if not p.is_file() or p.name.startswith(".") or not is_image_file(p):
            continue
        key = p.stem.removesuffix(MASK_SUFFIX)
        if key in masks:
            raise DefectkitError(f"{p}: second mask for image '{key}' (also {masks[key].name})")
        masks[key] = p
    return masks


def scan_category(folder: str | Path, name: str | None = None) -> SourceCategory:
    """List the images, classes and masks of a category folder (nothing is decoded).

    Raises DefectkitError for a missing, unreadable or empty folder. Warnings (kept in
    ``SourceCategory.warnings``): a defect image without a mask, a mask without an image, a known
    MVTec AD defect type whose folder is missing.
    """
    folder = Path(folder)
    name = name or folder.name
    if not folder.is_dir():
        raise DefectkitError(missing_data_message(folder, name))
    images: list[SourceImage] = []
    warnings: list[str] = []
    for p in _images_in(folder / "train" / GOOD, "the defect-free training images"):
        images.append(SourceImage(f"train/{GOOD}/{p.name}", GOOD))
    test = folder / "test"
    if not test.is_dir():
        raise DefectkitError(f"{test}: missing folder (the test images, one sub-folder per defect type)")
    types = [p.name for p in _list_dir(test) if p.is_dir() and not p.name.startswith(".")]
    classes = sorted(t for t in types if t != GOOD)
    if not classes:
        raise DefectkitError(f"{test}: no defect folders (expected test/<defect type>/ beside test/good/)")
    official = defect_types(name)
    if official is not None:
        for t in sorted(set(official) - set(classes)):
            warnings.append(
                f"{test / t}: missing (MVTec AD '{name}' has this defect type); converting the others"
            )
    ground_truth = folder / "ground_truth"
    matched_masks: set[Path] = set()
    for t in sorted(types):
        files = _images_in(test / t, f"test images of '{t}'")
        if t == GOOD:
            images += [SourceImage(f"test/{GOOD}/{p.name}", GOOD) for p in files]
            continue
        masks = _masks_in(ground_truth / t)
        for p in files:
            mask = masks.get(p.stem)
            if mask is None:
                warnings.append(
                    f"{p}: defect image without a mask (looked for {ground_truth / t / (p.stem + MASK_SUFFIX)}.*); "
                    "kept with no instances"
                )
            else:
                matched_masks.add(mask)
            rel_mask = None if mask is None else mask.relative_to(folder).as_posix()
            images.append(SourceImage(f"test/{t}/{p.name}", t, rel_mask))
    if ground_truth.is_dir():
        for sub in _list_dir(ground_truth):
            if not sub.is_dir():
                continue
            for mask in _masks_in(sub).values():
                if mask not in matched_masks:
                    warnings.append(
                        f"{mask}: mask without an image (no test/{sub.name}/{mask.stem.removesuffix(MASK_SUFFIX)}.*); ignored"
                    )
    return SourceCategory(name, folder, images, classes, warnings)


def _member_parts(member: tarfile.TarInfo, category: str) -> tuple[str, ...] | None:
    """The path of an archive member below ``<category>/`` (None if it lies elsewhere or looks unsafe)."""
    parts = PurePosixPath(member.name).parts
    parts = tuple(p for p in parts if p not in ("", "."))
    if category not in parts or any(p == ".." for p in parts) or member.name.startswith("/"):
        return None
    i = parts.index(category)
    rest = parts[i + 1 :]
    return rest if rest and rest[0] in ("train", "test", "ground_truth") else None


def extract_category(archive: str | Path, category: str, dest: str | Path, progress: bool = False) -> Path:
    """Extract ``<category>/`` from an MVTec AD tar archive into ``dest/<category>`` and return it.

    Works on one category's archive (``wood.tar.xz``) and on the whole data set's
    (``mvtec_anomaly_detection.tar.xz``); the archive is read once, as a stream, and only the
    category's regular files are written (no links, nothing outside ``dest``).
    """
    archive = Path(archive)
    if not archive.is_file():
        raise DefectkitError(missing_data_message(archive, category))
    target = Path(dest) / category
    found = 0
    seen: set[str] = set()  # top-level names, to say what the archive holds instead
    try:
        with (
            tarfile.open(archive, mode="r|*") as tar,
            tqdm(desc=f"extract {category}", unit="file", disable=not progress) as bar,
        ):
            for member in tar:
                parts = _member_parts(member, category)
                if parts is None or not member.isfile():
                    top = [p for p in PurePosixPath(member.name).parts if p not in ("", ".")]
                    if top:
                        seen.add(top[0])
                    continue
                out = target.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                with open(out, "wb") as fh:
                    while chunk := src.read(1 << 20):
                        fh.write(chunk)
                found += 1
                bar.update()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DefectkitError(f"{archive}: cannot read archive ({exc})") from None
    if found == 0:
        listed = sorted(seen & set(known_categories()))
        hint = f"it holds: {', '.join(listed)}" if listed else f"known: {', '.join(known_categories())}"
        raise DefectkitError(f"{archive}: no category '{category}' in this archive ({hint})")
    return target


def default_root() -> Path:
    """``$DEFECTKIT_DATA_ROOT`` if set, else ``datasets/mvtec_anomaly_detection``."""
    return Path(os.environ.get("DEFECTKIT_DATA_ROOT") or "datasets/mvtec_anomaly_detection")
