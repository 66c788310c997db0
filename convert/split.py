"""The supervised split: MVTec AD keeps every defect in test/, so fine-tuning needs its own split.

Three protocols (docs/PROTOCOLS.md), each deterministic for a seed; ``train/good`` is background
for training in all of them:

- ``defectkit`` (the default): stratified. Each test folder (``test/good`` and every defect type) is
  shuffled with a generator seeded by ``(seed, folder name)`` and cut into train/val/test by the
  fractions; all of ``train/good`` goes to train. Every image lands in exactly one split.
- ``anomalydiffusion`` (Hu et al., AAAI 2024): the first ceil(n/3) images of each defect type by file
  name are for training, the rest and all of ``test/good`` are the test set. Val is drawn from the
  training side: a seeded ``val_frac`` of each type's third and of ``train/good`` (:func:`val_count`: at
  least one from 2 images on, and one always stays in train). Every image lands in exactly one split.
- ``fewshot:K`` (DevNet, DRA, AHL: the "general" setting): K anomalous images drawn at random from
  all defect types together are the labelled training anomalies; every other test image is the test
  set. Val is a seeded ``val_frac`` of ``train/good`` plus the same K shots: the protocol's budget is
  K labelled anomalies in all, so no other anomaly may be used, even to choose a threshold. The K
  shots are thus listed in both train and val.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

from defectkit.core.errors import DefectkitError
from defectkit.core.layout import GOOD, SPLITS

DEFAULT_TEST_FRAC = 0.2
"""``--test-frac`` of the ``defectkit`` protocol; the others fix their test set by their rule."""


@dataclass(frozen=True)
class ProtocolInfo:
    """What docs/PROTOCOLS.md says of a protocol, in one line each (for --help and reports)."""

    citation: str  # key(s) of docs/PROTOCOLS.md's references, comma-separated
    rule: str


PROTOCOLS = {
    "defectkit": ProtocolInfo(
        "defectkit",
        "stratified: each test folder shuffled (seeded) and cut by --val-frac/--test-frac; "
        "train/good to train",
    ),
    "anomalydiffusion": ProtocolInfo(
        "hu2024anomalydiffusion",
        "first ceil(n/3) of each defect type by file name to train, the rest and test/good to test; "
        "val: a seeded --val-frac of each type's third and of train/good",
    ),
    "fewshot": ProtocolInfo(
        "pang2019devnet,ding2022dra,zhu2024ahl",
        "K anomalous images drawn (seeded) from all defect types to train, every other test image to test; "
        "val: a seeded --val-frac of train/good plus the same K shots",
    ),
}
"""Protocol name -> citation and rule; ``fewshot`` is written ``fewshot:K``."""

PROTOCOL_CHOICES = "defectkit, anomalydiffusion, fewshot:K"


@dataclass(frozen=True)
class Protocol:
    """A split protocol and its parameters (``parse_protocol`` makes one from ``--protocol`` text).

    >>> p = Protocol("fewshot", shots=10)
    >>> p.spec, p.params, p.citation
    ('fewshot:10', {'shots': 10}, 'pang2019devnet,ding2022dra,zhu2024ahl')
    >>> Protocol("anomalydiffusion").fixes_test
    True
    """

    name: str = "defectkit"
    shots: int | None = None  # K of fewshot:K

    @property
    def spec(self) -> str:
        """The ``--protocol`` text: ``defectkit``, ``anomalydiffusion`` or ``fewshot:K``."""
        return f"{self.name}:{self.shots}" if self.name == "fewshot" else self.name

    @property
    def params(self) -> dict[str, int]:
        """The protocol's own parameters (recorded in split.json as ``protocol_params``)."""
        return {"shots": self.shots} if self.shots is not None else {}

    @property
    def citation(self) -> str:
        return PROTOCOLS[self.name].citation

    @property
    def fixes_test(self) -> bool:
        """True when the rule, not ``--test-frac``, decides the test set."""
        return self.name != "defectkit"

    def check_shots(self, n_defect_images: int) -> None:
        """Raise DefectkitError when fewshot's K exceeds the defect images there are to draw from.

        >>> Protocol("fewshot", 5).check_shots(3)
        Traceback (most recent call last):
        ...
        defectkit.core.errors.DefectkitError: --protocol fewshot:5: K=5 is more than the 3 defect images in test/
        """
        if self.shots is not None and self.shots > n_defect_images:
            raise DefectkitError(
                f"--protocol {self.spec}: K={self.shots} is more than the {n_defect_images} "
                "defect images in test/"
            )


def parse_protocol(spec: str | Protocol) -> Protocol:
    """``--protocol`` text -> :class:`Protocol`; DefectkitError names the problem.

    >>> parse_protocol("fewshot:10"), parse_protocol(" anomalydiffusion ").spec
    (Protocol(name='fewshot', shots=10), 'anomalydiffusion')
    >>> parse_protocol("fewshot:0")
    Traceback (most recent call last):
    ...
    defectkit.core.errors.DefectkitError: --protocol fewshot:0: K must be a positive integer (e.g. fewshot:10)
    """
    if isinstance(spec, Protocol):
        spec = spec.spec  # checked like text: a hand-made Protocol("fewshot", -1) is refused too
    text = str(spec).strip()
    name, colon, value = text.partition(":")
    if name == "fewshot":
        if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
            raise DefectkitError(f"--protocol {text}: K must be a positive integer (e.g. fewshot:10)")
        return Protocol("fewshot", int(value))
    if name in PROTOCOLS and not colon:
        return Protocol(name)
    if name in PROTOCOLS:
        raise DefectkitError(f"--protocol {text}: {name} takes no parameter")
    raise DefectkitError(f"--protocol {text}: unknown protocol (choose from {PROTOCOL_CHOICES})")


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


def check_fractions(val_frac: float, test_frac: float | None) -> None:
    """Raise DefectkitError for fractions outside [0, 1) or summing to 1 (``test_frac`` None: not used)."""
    for name, value in (("--val-frac", val_frac), ("--test-frac", test_frac)):
        if value is not None and not 0.0 <= value < 1.0:
            raise DefectkitError(f"{name} {value}: must be in [0, 1)")
    if test_frac is not None and val_frac + test_frac >= 1.0:
        raise DefectkitError(
            f"--val-frac {val_frac} + --test-frac {test_frac}: must leave images for training (sum < 1)"
        )


def resolve_test_frac(protocol: Protocol, test_frac: float | None) -> float | None:
    """``--test-frac`` as the protocol uses it: the default 0.2 for ``defectkit``, None (unused) for
    a protocol whose rule fixes the test set, where giving one is an error (it would be ignored).

    >>> resolve_test_frac(Protocol(), None), resolve_test_frac(Protocol("anomalydiffusion"), None)
    (0.2, None)
    """
    if not protocol.fixes_test:
        return DEFAULT_TEST_FRAC if test_frac is None else test_frac
    if test_frac is not None:
        raise DefectkitError(
            f"--test-frac {test_frac}: the {protocol.spec} protocol fixes the test set by its rule; "
            "leave --test-frac out"
        )
    return None


def shuffled(names: list[str], seed: int, key: str) -> list[str]:
    """``names`` in a seeded random order; ``key`` (a folder name) gives each list its own stream.

    >>> shuffled(["a", "b", "c"], 0, "hole") == shuffled(["a", "b", "c"], 0, "hole")
    True
    """
    # A stable per-key seed (crc32, not hash(): that changes between runs).
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    return [names[i] for i in rng.permutation(len(names))]


def _by_folder(file_names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Sorted unique names -> (``train/`` images, test images by folder), each list sorted."""
    train: list[str] = []
    strata: dict[str, list[str]] = {}
    for name in sorted(set(file_names)):
        top, folder = name.split("/")[:2]
        if top == "train":
            train.append(name)
        else:
            strata.setdefault(folder, []).append(name)
    return train, dict(sorted(strata.items()))


def val_count(n: int, val_frac: float) -> int:
    """How many of ``n`` training-side images a published protocol's val takes: ``val_frac`` of them
    rounded, at least one from 2 images on (val needs a defect of each type to choose thresholds on,
    and a small category's third of a type may be 2 images), always leaving one for training.

    >>> [val_count(n, 0.2) for n in (0, 1, 2, 3, 10, 240)], val_count(5, 0.0)
    ([0, 0, 1, 1, 2, 48], 0)
    """
    n_val = round(n * val_frac)
    if val_frac > 0 and n >= 2:
        n_val = max(n_val, 1)
    return min(n_val, max(n - 1, 0))


def _cut_val(names: list[str], val_frac: float, seed: int, key: str) -> tuple[list[str], list[str]]:
    """A seeded :func:`val_count` of ``names`` for val, the rest for train: (train, val)."""
    order = shuffled(names, seed, key)
    n_train = len(names) - val_count(len(names), val_frac)
    return order[:n_train], order[n_train:]


def assign_splits(
    file_names: list[str],
    val_frac: float = 0.2,
    test_frac: float | None = None,
    seed: int = 0,
    protocol: str | Protocol = "defectkit",
) -> dict[str, list[str]]:
    """Split file names (relative to the category folder) into ``{"train", "val", "test"}``, each sorted,
    by ``protocol`` (see the module's docstring; ``test_frac`` None: 0.2 for ``defectkit``).

    >>> names = [f"test/hole/{i:03d}.png" for i in range(5)] + ["train/good/000.png"]
    >>> s = assign_splits(names, 0.2, 0.2, seed=0)
    >>> [len(s[k]) for k in ("train", "val", "test")], "train/good/000.png" in s["train"]
    ([4, 1, 1], True)
    >>> s == assign_splits(list(reversed(names)), 0.2, 0.2, seed=0)
    True
    >>> assign_splits(names, 0.0, protocol="anomalydiffusion")["train"]
    ['test/hole/000.png', 'test/hole/001.png', 'train/good/000.png']
    >>> s = assign_splits(names, 0.2, protocol="fewshot:2", seed=1)
    >>> [n for n in s["train"] if n.startswith("test/")] == s["val"], len(s["test"])
    (True, 3)
    """
    protocol = parse_protocol(protocol)
    test_frac = resolve_test_frac(protocol, test_frac)
    check_fractions(val_frac, test_frac)
    train_folder, strata = _by_folder(file_names)
    splits: dict[str, list[str]] = {k: [] for k in SPLITS}
    if protocol.name == "defectkit":
        splits["train"] += train_folder
        for folder, names in strata.items():
            order = shuffled(names, seed, folder)
            n_train, n_val, _ = split_counts(len(names), val_frac, test_frac)
            splits["train"] += order[:n_train]
            splits["val"] += order[n_train : n_train + n_val]
            splits["test"] += order[n_train + n_val :]
    else:
        # Both published protocols keep train/good as normal training data; val takes a seeded part.
        train_good, val_good = _cut_val(train_folder, val_frac, seed, "train/" + GOOD)
        splits["train"] += train_good
        splits["val"] += val_good
        splits["test"] += strata.pop(GOOD, [])
        if protocol.name == "anomalydiffusion":
            for folder, names in strata.items():
                n_train = math.ceil(len(names) / 3)  # names are sorted: the first third by file name
                keep, val = _cut_val(names[:n_train], val_frac, seed, folder)
                splits["train"] += keep
                splits["val"] += val
                splits["test"] += names[n_train:]
        else:
            defects = [n for names in strata.values() for n in names]
            protocol.check_shots(len(defects))
            order = shuffled(defects, seed, "fewshot")
            shots = order[: protocol.shots]
            splits["train"] += shots
            splits["val"] += shots  # the K shots are the whole labelled budget (module docstring)
            splits["test"] += order[protocol.shots :]
    return {k: sorted(v) for k, v in splits.items()}
