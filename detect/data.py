"""Read and check a YOLO data set (``yolo/data.yaml`` from convert-mvtec) before anything trains on it.

ultralytics finds most of these problems too, but late (after the model is built), or silently (a
label with an out-of-range class is dropped with a warning, a reordered ``names`` list trains fine
and mislabels every box). :func:`load_data` raises one clear DefectkitError instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import is_image_file
from defectkit.core.layout import MANIFEST, Manifest, class_of, flat_name

SPLITS = ("train", "val", "test")


def labels_dir_for(images_dir: Path) -> Path:
    """ultralytics' rule: the last ``images`` path component becomes ``labels``.

    >>> labels_dir_for(Path("/d/yolo/images/train")).as_posix()
    '/d/yolo/labels/train'
    """
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    raise DefectkitError(
        f"{images_dir}: image folder path has no 'images' component, so labels cannot be found"
    )


@dataclass
class YoloData:
    """A checked YOLO data set: where its splits are, its class names and its label kind."""

    yaml_path: Path
    root: Path
    names: list[str]
    splits: dict[str, Path] = field(default_factory=dict)  # split -> images folder
    label_kind: str = "box"  # "box" (class cx cy w h) or "polygon" (class x1 y1 x2 y2 ...)

    @property
    def converted_root(self) -> Path:
        """``<out>/<category>`` when this is convert-mvtec output (the yaml lives in ``yolo/``)."""
        return self.yaml_path.parent.parent

    def images(self, split: str) -> list[Path]:
        return sorted(p for p in self.splits[split].iterdir() if is_image_file(p))

    @property
    def is_converted(self) -> bool:
        """True for convert-mvtec output: its split manifest lies in :attr:`converted_root`."""
        return (self.converted_root / MANIFEST).is_file()


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise DefectkitError(f"{path}: no such data file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DefectkitError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DefectkitError(
            f"{path}: not a YOLO data file (a mapping with 'names', 'train', 'val' expected)"
        )
    return data


def _names(data: dict, path: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DefectkitError(f"{path}: 'names' is missing or empty")
    try:
        keys = sorted(int(k) for k in names)
    except (TypeError, ValueError):
        raise DefectkitError(f"{path}: 'names' keys must be class ids 0..N-1") from None
    if keys != list(range(len(keys))):
        raise DefectkitError(f"{path}: 'names' ids must be 0..{len(keys) - 1} without gaps, got {keys}")
    out = [str(names[k] if k in names else names[str(k)]).strip() for k in keys]
    if any(not n for n in out) or len(set(out)) != len(out):
        raise DefectkitError(f"{path}: class names must be non-empty and unique, got {out}")
    if "nc" in data and int(data["nc"]) != len(out):
        raise DefectkitError(f"{path}: nc={data['nc']} but {len(out)} names")
    return out


def _root(data: dict, path: Path) -> Path:
    # ultralytics' rule: 'path' (absolute, or relative to the working folder), else the yaml's folder.
    base = data.get("path")
    if not base:
        return path.parent.resolve()
    root = Path(str(base)).expanduser()
    if not root.is_absolute() and not root.exists() and (path.parent / root).exists():
        root = path.parent / root
    return root.resolve()


def read_label_file(file: Path, n_classes: int) -> list[tuple[int, list[float]]]:
    """The ``(class id, normalised coordinates)`` of each line of a YOLO label file (none when it is missing).

    A line is ``class cx cy w h`` (box) or ``class x1 y1 x2 y2 ...`` (polygon, at least 3 points).
    Raises DefectkitError naming ``file:line`` for a malformed line, a class id outside
    ``0..n_classes-1`` or coordinates outside 0..1.
    """
    objects: list[tuple[int, list[float]]] = []
    if not file.is_file():
        return objects
    for n, line in enumerate(file.read_text().splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            cls, coords = int(values[0]), [float(v) for v in values[1:]]
        except ValueError:
            raise DefectkitError(f"{file}:{n}: not a YOLO label line ({line.strip()!r})") from None
        if not 0 <= cls < n_classes:
            raise DefectkitError(
                f"{file}:{n}: class id {cls} out of range: data.yaml names {n_classes} classes (0..{n_classes - 1})"
            )
        if len(coords) != 4 and (len(coords) < 6 or len(coords) % 2):
            raise DefectkitError(
                f"{file}:{n}: {len(coords)} coordinates; 4 (box) or an even number >= 6 (polygon)"
            )
        if any(c < -0.01 or c > 1.01 for c in coords):
            raise DefectkitError(f"{file}:{n}: coordinates must be normalised to 0..1")
        objects.append((cls, coords))
    return objects


def _check_labels(
    labels_dir: Path, stems: list[str], names: list[str]
) -> tuple[dict[str, list[int]], set[str]]:
    """Parse every label file of a split; returns ({stem: [class ids]}, label kinds seen)."""
    classes: dict[str, list[int]] = {}
    kinds: set[str] = set()
    for stem in stems:
        objects = read_label_file(labels_dir / f"{stem}.txt", len(names))
        kinds |= {"box" if len(coords) == 4 else "polygon" for _, coords in objects}
        classes[stem] = [cls for cls, _ in objects]
    return classes, kinds


def _check_against_manifest(
    data: YoloData, split: str, classes: dict[str, list[int]], labels_dir: Path
) -> None:
    """convert-mvtec output: each image's defect folder names its class, so names and labels must agree."""
    if not data.is_converted:
        return
    manifest = Manifest.load(data.converted_root)
    if manifest.classes and list(manifest.classes) != data.names:
        raise DefectkitError(
            f"{data.yaml_path}: names {data.names} disagree with the converted classes {list(manifest.classes)} "
            f"in {data.converted_root / MANIFEST}"
        )
    for file_name in manifest.splits.get(split, []):
        folder = class_of(file_name) if len(Path(file_name).parts) >= 3 else None
        if folder not in data.names:
            continue
        stem = Path(flat_name(file_name)).stem
        wrong = [c for c in classes.get(stem, []) if data.names[c] != folder]
        if wrong:
            raise DefectkitError(
                f"{labels_dir / (stem + '.txt')}: class {wrong[0]} ({data.names[wrong[0]]}) on a '{folder}' image: "
                f"data.yaml names disagree with the labels (order changed?)"
            )


def load_data(
    yaml_path: str | Path, *, splits: tuple[str, ...] = ("train", "val"), check_labels: bool = True
) -> YoloData:
    """Read ``yaml_path`` and check the ``splits`` a command needs; raises DefectkitError on the first problem.

    Checked: names are 0..N-1 unique strings; each split is listed, its image folder exists and holds
    images; label lines parse, class ids are in range, coordinates are normalised, one label kind
    (boxes or polygons) throughout; the training split has at least one object; for convert-mvtec
    output, names agree with ``split.json`` and with the defect folder of every labelled image.
    """
    path = Path(yaml_path)
    raw = _read_yaml(path)
    names = _names(raw, path)
    data = YoloData(path, _root(raw, path), names)
    kinds: set[str] = set()
    for split in splits:
        entry = raw.get(split)
        if not entry:
            raise DefectkitError(f"{path}: no '{split}' split listed")
        if isinstance(entry, list):
            raise DefectkitError(
                f"{path}: '{split}' lists several folders; defectkit expects one image folder"
            )
        images_dir = Path(str(entry))
        images_dir = images_dir if images_dir.is_absolute() else data.root / images_dir
        if not images_dir.is_dir():
            raise DefectkitError(f"{path}: {split} image folder {images_dir} does not exist")
        data.splits[split] = images_dir
        images = data.images(split)
        if not images:
            raise DefectkitError(f"{path}: {split} split is empty (no images in {images_dir})")
        if not check_labels:
            continue
        labels_dir = labels_dir_for(images_dir)
        classes, split_kinds = _check_labels(labels_dir, [p.stem for p in images], names)
        kinds |= split_kinds
        if split == "train" and not any(classes.values()):
            raise DefectkitError(f"{labels_dir}: the train split has no labelled objects, nothing to learn")
        _check_against_manifest(data, split, classes, labels_dir)
    if len(kinds) > 1:
        raise DefectkitError(
            f"{path}: labels mix boxes and polygons; use yolo/ (boxes) or yolo-seg/ (polygons)"
        )
    data.label_kind = kinds.pop() if kinds else "box"
    return data
