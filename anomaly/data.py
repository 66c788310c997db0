"""The anomaly stage's data: the images of one split of a converted category, in manifest order, with
their labels and defect masks paired through the manifest and ``coco/<split>.json`` by file name and
image id (never by sorted position, which pairs the wrong mask as soon as a file is missing).

A defect mask is the union of the image's COCO instance masks: the same ground truth every other
row of the benchmark is scored against. Images are decoded once, resized to the model's square input
(torchvision's antialiased bilinear resize, as anomalib's pre-processor does) and kept in memory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from defectkit.evaluation.coco_io import load_ground_truth, segmentation_to_rle
from torch.utils.data import Dataset

from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import read_image
from defectkit.core.layout import GOOD, MANIFEST, SPLITS, Manifest, class_of
from defectkit.core.rle import rle_to_mask


@dataclass(frozen=True)
class AnomalyImage:
    """One image to score: its file, its name in the converted category (``test/hole/000.png``;
    None for an image from elsewhere), its COCO image id (None when not from a split) and its label
    (1 defect, 0 good, None unknown)."""

    path: Path
    file_name: str | None = None
    image_id: int | None = None
    label: int | None = None


def check_category(data: str | Path) -> Path:
    """The converted category folder (``convert-mvtec <cat> --to all`` output), checked.

    >>> check_category("no/such/folder")
    Traceback (most recent call last):
    defectkit.core.errors.DefectkitError: no/such/folder: no split manifest (split.json); pass the converted category folder (convert-mvtec <category> --to coco)
    """
    folder = Path(data)
    if not (folder / MANIFEST).is_file():
        raise DefectkitError(
            f"{folder}: no split manifest ({MANIFEST}); pass the converted category folder "
            "(convert-mvtec <category> --to coco)"
        )
    return folder


def image_label(file_name: str) -> int:
    """1 for a defect image, 0 for a good one, by its class folder.

    >>> image_label("test/hole/000.png"), image_label("train/good/003.png")
    (1, 0)
    """
    return int(class_of(file_name) != GOOD)


def split_images(data: str | Path, split: str) -> list[AnomalyImage]:
    """The images of ``split`` in manifest order, with labels and the ids of ``coco/<split>.json``."""
    if split not in SPLITS:
        raise DefectkitError(f"--split {split}: choose one of {', '.join(SPLITS)}")
    manifest = Manifest.load(check_category(data))
    return [
        AnomalyImage(manifest.source_path(name), name, image_id, image_label(name))
        for name, image_id in manifest.image_ids(split).items()
    ]


def train_good_images(data: str | Path) -> list[AnomalyImage]:
    """The manifest's train split, good images only: what an unsupervised model learns from."""
    good = [image for image in split_images(data, "train") if image.label == 0]
    if not good:
        raise DefectkitError(f"{Path(data) / MANIFEST}: the train split has no good images to learn from")
    return good


def coco_path(data: str | Path, split: str) -> Path:
    path = Path(data) / "coco" / f"{split}.json"
    if not path.is_file():
        raise DefectkitError(f"{path}: no COCO ground truth; convert with --to coco (or all)")
    return path


def defect_masks(data: str | Path, split: str, images: Sequence[AnomalyImage]) -> list[np.ndarray]:
    """Each image's defect mask (HxW bool at the image's own size: the union of its COCO instance
    masks; all false for a good image), from ``coco/<split>.json`` by image id. The COCO image's
    ``file_name`` must be the manifest's (the two files belong together)."""
    path = coco_path(data, split)
    gt, _ = load_ground_truth(path, "segm")
    by_id = {img["id"]: img for img in gt["images"]}
    anns: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    masks = []
    for image in images:
        entry = by_id.get(image.image_id)
        if entry is None or entry.get("file_name") != image.file_name:
            raise DefectkitError(
                f"{path}: image id {image.image_id} is not {image.file_name} of {Path(data) / MANIFEST}; "
                "convert the category again so the two match"
            )
        height, width = int(entry["height"]), int(entry["width"])
        mask = np.zeros((height, width), bool)
        for ann in anns.get(image.image_id, []):
            mask |= rle_to_mask(segmentation_to_rle(ann["segmentation"], height, width))
        masks.append(mask)
    return masks


def load_resized(path: str | Path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image as a float 3xSxS tensor in [0, 1] (grayscale repeated to RGB), resized with
    torchvision's antialiased bilinear resize, and its original (height, width).

    >>> import tempfile, cv2
    >>> path = Path(tempfile.mkdtemp()) / "a.png"
    >>> _ = cv2.imwrite(str(path), np.zeros((30, 40), np.uint8))
    >>> image, size = load_resized(path, 16)
    >>> tuple(image.shape), size
    ((3, 16, 16), (30, 40))
    """
    array = read_image(path, "rgb")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)
    return TF.resize(tensor, [size, size], antialias=True), (array.shape[0], array.shape[1])


class ImageDataset(Dataset):
    """Items ``{"image": 3xSxS float, "label": int (-1 unknown), "mask": SxS bool, "path": str,
    "index": int}`` for anomalib's batches (``_anomalib.image_batch`` collates them). Each image is
    decoded and resized once and kept: models that train for epochs read it many times. ``masks``
    (full-size, optional) are resized to SxS by nearest neighbour for anomalib's own metrics."""

    def __init__(self, images: Sequence[AnomalyImage], size: int, masks: Sequence[np.ndarray] | None = None):
        self.images = list(images)
        self.size = size
        self.masks = list(masks) if masks is not None else None
        self._cache: dict[int, tuple[torch.Tensor, tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self.images)

    def original_size(self, index: int) -> tuple[int, int]:
        return self._load(index)[1]

    def _load(self, index: int) -> tuple[torch.Tensor, tuple[int, int]]:
        if index not in self._cache:
            self._cache[index] = load_resized(self.images[index].path, self.size)
        return self._cache[index]

    def __getitem__(self, index: int) -> dict:
        image, _ = self._load(index)
        if self.masks is not None:
            mask = torch.from_numpy(self.masks[index].astype(np.uint8))[None]
            mask = TF.resize(mask, [self.size, self.size], interpolation=TF.InterpolationMode.NEAREST)[
                0
            ].bool()
        else:
            mask = torch.zeros(self.size, self.size, dtype=torch.bool)
        label = self.images[index].label
        return {
            "image": image,
            "label": -1 if label is None else label,
            "mask": mask,
            "path": str(self.images[index].path),
            "index": index,
        }


def read_json(path: Path, what: str) -> dict | list:
    """A JSON file with a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DefectkitError(f"{path}: no such {what}") from None
    except (OSError, ValueError) as exc:
        raise DefectkitError(f"{path}: not a readable {what} ({exc})") from None
