"""Names and ids of the converted data set, in one place every stage imports.

A source image is named everywhere by its ``file_name``: its path relative to the MVTec category
folder (``test/hole/000.png``). From it follow the flat name used in ``yolo/``, ``yolo-seg/`` and
``classify/`` (``test_hole_000.png``), the YOLO label file (``test_hole_000.txt``), and, with the
split manifest, the COCO / SAM ``image_id`` (1-based position in the split's list).

>>> flat_name("test/hole/000.png")
'test_hole_000.png'
>>> label_name("test/hole/000.png")
'test_hole_000.txt'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

from defectkit.core.errors import DefectkitError

SPLITS = ("train", "val", "test")
GOOD = "good"
MANIFEST = "split.json"
FORMATS = ("yolo", "yolo-seg", "coco", "sam", "classify")


def flat_name(file_name: str) -> str:
    """The file name unique across defect folders: ``/`` replaced by ``_``.

    >>> flat_name("train/good/003.png")
    'train_good_003.png'
    """
    return str(PurePosixPath(file_name)).replace("/", "_")


def label_name(file_name: str) -> str:
    """The YOLO label file for an image: the flat name with ``.txt``.

    >>> label_name("test/scratch/001.jpg")
    'test_scratch_001.txt'
    """
    return str(PurePosixPath(flat_name(file_name)).with_suffix(".txt"))


def check_unique_flat_names(file_names: list[str], folder: str | Path = "") -> None:
    """Raise DefectkitError when two source images would share a flat name (or a label file).

    >>> check_unique_flat_names(["test/a_b/0.png", "test/a/b_0.png"])
    Traceback (most recent call last):
    ...
    defectkit.core.errors.DefectkitError: test/a/b_0.png: its flat name test_a_b_0.txt clashes with test/a_b/0.png; rename one
    """
    seen: dict[str, str] = {}
    for name in file_names:
        key = label_name(name)
        if key in seen:
            where = Path(folder) / name if folder else name
            raise DefectkitError(f"{where}: its flat name {key} clashes with {seen[key]}; rename one")
        seen[key] = name


def class_of(file_name: str) -> str:
    """The class folder of a source image: ``good`` for train/good and test/good, else the defect type.

    >>> class_of("test/hole/000.png"), class_of("train/good/000.png")
    ('hole', 'good')
    """
    return PurePosixPath(file_name).parts[1]


def image_ids(file_names: list[str]) -> dict[str, int]:
    """COCO / SAM image ids of one split: 1..N in manifest order.

    >>> image_ids(["test/hole/000.png", "train/good/000.png"])
    {'test/hole/000.png': 1, 'train/good/000.png': 2}
    """
    return {name: i for i, name in enumerate(file_names, start=1)}


def category_ids(classes: list[str]) -> dict[str, int]:
    """COCO category ids: 1-based index into the sorted defect classes (YOLO index = id - 1).

    >>> category_ids(["color", "hole"])
    {'color': 1, 'hole': 2}
    """
    return {name: i for i, name in enumerate(classes, start=1)}


def classify_classes(classes: list[str]) -> list[str]:
    """Classification classes: ``good`` plus the defect classes, sorted (torchvision ImageFolder order).

    >>> classify_classes(["scratch", "color", "hole"])
    ['color', 'good', 'hole', 'scratch']
    """
    return sorted({GOOD, *classes})


@dataclass(frozen=True)
class Manifest:
    """The split manifest ``<out>/<category>/split.json``: which source image went to which split.

    ``protocol`` is the rule that drew the split (docs/PROTOCOLS.md): ``defectkit``,
    ``anomalydiffusion`` or ``fewshot:K``, with its parameters and the citation key(s) of the paper it
    follows; a split.json from before protocols existed reads as ``defectkit``. ``test_frac`` is None
    where the protocol's rule fixes the test set. Under ``fewshot:K`` the K training anomalies are
    listed in val too (the protocol's whole labelled budget); :meth:`split_of` then says ``train``.

    >>> m = Manifest("wood", "/data/wood", 0, 0.2, 0.2, ["hole"],
    ...              {"train": ["train/good/000.png"], "val": [], "test": ["test/hole/000.png"]})
    >>> m.image_id("test", "test/hole/000.png"), m.split_of("train/good/000.png"), m.protocol
    (1, 'train', 'defectkit')
    >>> m.from_flat("test", "test_hole_000.txt"), m.file_name("test", 1)
    ('test/hole/000.png', 'test/hole/000.png')
    """

    category: str
    source: str
    seed: int
    val_frac: float
    test_frac: float | None
    classes: list[str]
    splits: dict[str, list[str]]
    protocol: str = "defectkit"
    protocol_params: dict[str, int] = field(default_factory=dict)
    citation: str = "defectkit"

    @classmethod
    def load(cls, category_dir: str | Path) -> Manifest:
        """Read ``split.json`` from a converted category folder (``<out>/<category>``)."""
        path = Path(category_dir) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            # Only the fields present: the protocol fields have defaults, for manifests written before them.
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except FileNotFoundError:
            raise DefectkitError(f"{path}: no split manifest; run convert-mvtec first") from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DefectkitError(f"{path}: not a defectkit split manifest ({exc})") from None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def image_ids(self, split: str) -> dict[str, int]:
        """file_name -> image id for ``split`` (the ids of ``coco/<split>.json`` and ``sam/<split>.jsonl``)."""
        return image_ids(self.splits[split])

    def image_id(self, split: str, file_name: str) -> int:
        return self.splits[split].index(file_name) + 1

    def file_name(self, split: str, image_id: int) -> str:
        """The source file_name of ``image_id`` in ``split`` (inverse of :meth:`image_id`)."""
        return self.splits[split][image_id - 1]

    def from_flat(self, split: str, flat: str) -> str:
        """The source file_name of a YOLO / classify file (``test_hole_000.png`` or its ``.txt`` label)."""
        try:
            return self._by_flat_stem[split][PurePosixPath(flat).stem]
        except KeyError:
            raise KeyError(f"{flat}: not in split {split!r}") from None

    @cached_property
    def _by_flat_stem(self) -> dict[str, dict[str, str]]:
        return {s: {PurePosixPath(flat_name(n)).stem: n for n in names} for s, names in self.splits.items()}

    def split_of(self, file_name: str) -> str:
        for split, names in self.splits.items():
            if file_name in names:
                return split
        raise KeyError(f"{file_name}: in no split")

    def source_path(self, file_name: str) -> Path:
        """Absolute path of a source image."""
        return Path(self.source) / file_name
