"""The image-folder data set (``classify/<split>/<class>/*.png``), decoded once into a cache.

Decoding a 1024x1024 PNG costs far more than a training step on a small input, so every image is
decoded and resized once (in parallel threads: OpenCV releases the GIL) into one uint8 tensor held in
memory, optionally backed by a disk cache keyed by file path, mtime, byte size and image size.
Augmentation then runs on those uint8 tensors (torchvision.transforms.v2), and the float
conversion and normalisation happen on the device, batch-wise.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from defectkit.core.atomic import atomic_write_bytes
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import is_image_file, read_image
from defectkit.core.weights import cache_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageList:
    """The images of one split: ``paths[i]`` has class index ``labels[i]`` into ``classes``."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]

    def class_counts(self) -> list[int]:
        """Images per class, in ``classes`` order.

        >>> ImageList([Path("a"), Path("b"), Path("c")], [0, 1, 1], ["good", "hole"]).class_counts()
        [1, 2]
        """
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.classes)).tolist()


def list_class_folders(split_dir: Path) -> list[str]:
    """The class folder names under ``split_dir``, sorted (torchvision ImageFolder order)."""
    if not split_dir.is_dir():
        raise DefectkitError(
            f"{split_dir}: no such folder (expected <data>/<split>/<class>/*.png from convert-mvtec)"
        )
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def split_has_images(split_dir: str | Path) -> bool:
    """Whether any ``<split_dir>/<class>/`` folder holds an image (False for a missing split)."""
    return any(p.is_file() and is_image_file(p) for p in Path(split_dir).glob("*/*"))


def scan_split(data: str | Path, split: str, classes: Sequence[str] | None = None) -> ImageList:
    """List ``<data>/<split>/<class>/*`` images.

    Without ``classes`` (the training split) the class folders define the classes: there must be at
    least two and none may be empty. With ``classes`` (val/test, or data scored by a checkpoint),
    every folder must be one of those classes; a class may be absent or empty (small splits).
    """
    split_dir = Path(data) / split
    folders = list_class_folders(split_dir)
    given = classes
    if classes is None:
        if not folders:
            raise DefectkitError(f"{split_dir}: no class folders")
        if len(folders) < 2:
            raise DefectkitError(
                f"{split_dir}: only one class ({folders[0]}); a classifier needs at least two"
            )
        for name in folders:
            if not _images_in(split_dir / name):
                raise DefectkitError(f"{split_dir / name}: empty class folder (no images)")
        classes = folders
    else:
        unknown = [f for f in folders if f not in classes]
        if unknown:
            raise DefectkitError(
                f"{split_dir}: class folder(s) {', '.join(unknown)} not among the model's classes "
                f"({', '.join(classes)})"
            )
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        folder = split_dir / name
        if folder.is_dir():
            found = _images_in(folder)
            paths += found
            labels += [index] * len(found)
    if not paths:
        hint = "" if given is None else " (converted with --val-frac or --test-frac 0?)"
        raise DefectkitError(f"{split_dir}: no images in any class folder{hint}")
    return ImageList(paths, labels, list(classes))


def dataset_name(data: str | Path) -> str:
    """A name for titles: the category of convert-mvtec's ``<out>/<category>/classify`` folder.

    >>> dataset_name("datasets/converted/wood/classify"), dataset_name("my_images")
    ('wood', 'my_images')
    """
    path = Path(data)
    return path.parent.name if path.name == "classify" and path.parent.name else path.name


def decode_resized(path: str | Path, size: int) -> np.ndarray:
    """Decode an image as RGB and resize it to ``size`` x ``size`` (area interpolation: anti-aliased).

    >>> decode_resized("datasets/sample/wood/test/hole/000.png", 64).shape  # doctest: +SKIP
    (64, 64, 3)
    """
    img = read_image(path, mode="rgb")
    if img.shape[0] != size or img.shape[1] != size:
        shrinking = img.shape[0] >= size and img.shape[1] >= size
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.ascontiguousarray(img)


def disk_cache_key(path: str | Path, size: int) -> str:
    """A cache file name that changes when the file (path, mtime, byte size) or the image size does."""
    path = Path(path).resolve()
    st = os.stat(path)
    raw = f"{path}|{st.st_mtime_ns}|{st.st_size}|{size}"
    return hashlib.sha1(raw.encode()).hexdigest() + ".npy"


def default_disk_cache() -> Path:
    return cache_dir() / "classify-images"


class ImageCache:
    """Decode-and-resize each file once; keep the results in memory and, optionally, on disk.

    >>> cache = ImageCache(size=64)  # doctest: +SKIP
    >>> batch = cache.load([Path("a.png"), Path("b.png")])  # uint8 tensor (2, 3, 64, 64)  # doctest: +SKIP
    """

    def __init__(self, size: int, disk_dir: str | Path | None = None, workers: int = 4):
        self.size = size
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self.workers = max(1, workers)
        self._memory: dict[tuple[str, int], np.ndarray] = {}

    def _one(self, path: Path) -> np.ndarray:
        key = (str(path), self.size)
        if key in self._memory:
            return self._memory[key]
        img = None
        if self.disk_dir is not None:
            cached = self.disk_dir / disk_cache_key(path, self.size)
            if cached.is_file():
                try:
                    img = np.load(cached)
                except (OSError, ValueError):
                    img = None  # a damaged cache entry is simply rebuilt
            if img is None:
                img = decode_resized(path, self.size)
                buf = io.BytesIO()
                np.save(buf, img)
                atomic_write_bytes(cached, buf.getvalue())
        else:
            img = decode_resized(path, self.size)
        self._memory[key] = img
        return img

    def load(self, paths: Sequence[Path], progress: bool = False, desc: str = "decode") -> torch.Tensor:
        """All ``paths`` as one uint8 tensor (N, 3, size, size), decoding only what is not cached."""
        with ThreadPoolExecutor(self.workers) as pool:
            images = list(
                tqdm(
                    pool.map(self._one, paths), total=len(paths), desc=desc, unit="img", disable=not progress
                )
            )
        stacked = np.stack(images) if images else np.zeros((0, self.size, self.size, 3), np.uint8)
        return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


class CachedImages(Dataset):
    """A data set over decoded uint8 images: item ``i`` is (transform(images[i]), label)."""

    def __init__(self, images: torch.Tensor, labels: Sequence[int], transform=None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        img = self.images[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, self.labels[index]


def train_transform(augment: bool, hflip: bool = False, rotation: float = 15.0, jitter: float = 0.2):
    """The train-time transform on uint8 CHW tensors: the course's ``augment`` preset adds a random
    rotation and colour jitter; ``hflip`` adds horizontal flips. None when there is nothing to do."""
    steps = []
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment:
        steps.append(v2.RandomRotation(rotation))
        steps.append(
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=min(jitter / 4, 0.5))
        )
    return v2.Compose(steps) if steps else None


def normalize_batch(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, 3, H, W) on any device -> float, scaled to [0, 1] and normalised per channel."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return (batch.float().div_(255.0) - mean_t) / std_t
