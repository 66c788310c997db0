"""The supervised split: MVTec AD keeps every defect in test/, so fine-tuning needs its own split.

Deterministic and stratified: each test folder (``test/good`` and every defect type) is shuffled
with a generator seeded by ``(seed, folder name)`` and cut into train/val/test by the fractions;
``train/good`` all goes to train (background images). Every image lands in exactly one split.
"""

from __future__ import annotations

import zlib

import numpy as np

from defectkit.core.layout import SPLITS
from defectkit.core.errors import DefectkitError


def split_counts(n: int, val_frac: float, test_frac: float) -> tuple[int, int, int]:
    """How many of ``n`` images go to (train, val, test).

    Rounded to the nearest count; a folder of 3 or more images gives at least one image to each
    split asked for (so every class is scored), and train keeps at least one.

    >>> split_counts(4, 0.2, 0.2), split_counts(10, 0.2, 0.2), split_counts(2, 0.2, 0.2)
    ((2, 1, 1), (6, 2, 2), (2, 0, 0))
    >>> split_counts(60, 0.1, 0.0)
    (54, 6, 0)
    """
    n_val, n_test = round(n * val_frac), round(n * test_frac)
    if n >= 3:
        n_val = max(n_val, 1) if val_frac > 0 else 0
        n_test = max(n_test, 1) if test_frac > 0 else 0
    while n_val + n_test > max(n - 1, 0):  # keep one for training
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return n - n_val - n_test, n_val, n_test


def check_fractions(val_frac: float, test_frac: float) -> None:
    for name, value in (("--val-frac", val_frac), ("--test-frac", test_frac)):
        if not 0.0 <= value < 1.0:
            raise DefectkitError(f"{name} {value}: must be in [0, 1)")
    if val_frac + test_frac >= 1.0:
        raise DefectkitError(
            f"--val-frac {val_frac} + --test-frac {test_frac}: must leave images for training (sum < 1)"
        )


def assign_splits(
    file_names: list[str], val_frac: float = 0.2, test_frac: float = 0.2, seed: int = 0
) -> dict[str, list[str]]:
    """Split file names (relative to the category folder) into ``{"train", "val", "test"}``, each sorted.

    >>> names = [f"test/hole/{i:03d}.png" for i in range(5)] + ["train/good/000.png"]
    >>> s = assign_splits(names, 0.2, 0.2, seed=0)
    >>> [len(s[k]) for k in ("train", "val", "test")], "train/good/000.png" in s["train"]
    ([4, 1, 1], True)
    >>> s == assign_splits(list(reversed(names)), 0.2, 0.2, seed=0)
    True
    """
    check_fractions(val_frac, test_frac)
    splits: dict[str, list[str]] = {k: [] for k in SPLITS}
    strata: dict[str, list[str]] = {}
    for name in sorted(set(file_names)):
        top, folder = name.split("/")[:2]
        if top == "train":
            splits["train"].append(name)
        else:
            strata.setdefault(folder, []).append(name)
    for folder, names in sorted(strata.items()):
        # A stable per-folder seed (crc32, not hash(): that changes between runs).
        rng = np.random.default_rng([seed, zlib.crc32(folder.encode("utf-8"))])
        order = [names[i] for i in rng.permutation(len(names))]
        n_train, n_val, _ = split_counts(len(names), val_frac, test_frac)
        splits["train"] += order[:n_train]
        splits["val"] += order[n_train : n_train + n_val]
        splits["test"] += order[n_train + n_val :]
    return {k: sorted(v) for k, v in splits.items()}
