"""A suite: one benchmark over several categories (``benchmark all`` or ``a,b,c``), seeds
(``--repeats R``) and split protocols (``--shots``), as work units that ``--shard i/n`` cuts into n
equal parts for a scheduler's job array, joined into one table by ``benchmark merge``.

Suite folder (``--out``)::

    suite.json                        the plan (categories, protocols, seeds, rows), settings, shard, units
    [shots-<K>/]<category>[/seed-<s>]/  one benchmark run folder per (protocol, seed, category), as
                                      ``defectkit benchmark <category>`` writes it (run.json, rows/, report/)
    report/                           report.md, report.html, leaderboard.json: the category table

The unit of work is one category x one row group (a row with the rows it needs or reads:
``rows.row_groups``) x one protocol x one seed, in the order protocol, seed, category, group.
``--shard i/n`` runs the i-th of n contiguous, equal parts of that list (their sizes differ by at most
one), so every shard computes its part from the command line alone, with no coordinator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectkit.convert.reader import is_archive, locate_category
from defectkit.core.errors import DefectkitError
from defectkit.core.layout import GOOD, Manifest, class_of
from defectkit.evaluation.coco_io import load_json
from defectkit.leaderboard.context import BenchmarkConfig
from defectkit.leaderboard.rows import row_groups
from defectkit.leaderboard.runner import (
    RESULT_FILE,
    RUN_FILE,
    SETTINGS_THAT_MATTER,
    check_same_settings,
    prepare_output,
    versions,
)

SUITE_FILE = "suite.json"
ALL_SHOTS = "all"  # --shots: the default protocol, every labelled anomalous image it puts in train
# Settings a suite's units share; category, seed and protocol are the plan's (they vary by unit).
SUITE_SETTINGS = tuple(k for k in SETTINGS_THAT_MATTER if k not in ("category", "seed", "protocol"))


def is_category_folder(path: Path) -> bool:
    """A folder in the MVTec AD layout: ``train/good/`` and ``test/``."""
    return (path / "train" / GOOD).is_dir() and (path / "test").is_dir()


def find_categories(root: str | Path, spec: str) -> list[str]:
    """The categories ``spec`` names under ``root``: ``all`` (every folder in the MVTec AD layout,
    sorted) or a comma-separated list (each checked, in the given order, repeats dropped)."""
    root = Path(root)
    names = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    if names == ["all"]:
        if is_archive(root) or not root.is_dir():
            raise DefectkitError(f"{root}: 'all' needs a data root folder holding the categories")
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and is_category_folder(p))
        if not found:
            raise DefectkitError(f"{root}: no category folder in it (a category has train/good/ and test/)")
        return found
    if not names or "all" in names:
        raise DefectkitError(f"{spec!r}: name categories (wood,carpet) or 'all', not both and not none")
    if not is_archive(root):
        for name in names:
            folder = locate_category(root, name)  # a missing or misspelt name, with the right advice
            if not is_category_folder(folder):
                raise DefectkitError(f"{folder}: not a category folder (no train/good/ and test/)")
    return names


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard i/n``: the i-th (1-based) of n parts.

    >>> parse_shard("2/4")
    (2, 4)
    """
    i, slash, n = text.partition("/")
    if not (slash and i.strip().isdigit() and n.strip().isdigit()):
        raise DefectkitError(f"--shard {text}: expected i/n (the i-th of n parts, e.g. 1/4)")
    index, count = int(i), int(n)
    if count < 1 or not 1 <= index <= count:
        raise DefectkitError(f"--shard {text}: i must be 1..n and n at least 1")
    return index, count


def parse_shots(text: str, protocol: str) -> list[str]:
    """``--shots 1,5,10,all``: the ``fewshot:K`` protocol for each K, ``all`` being ``protocol`` (the
    default split, with every defect image it gives train); ascending K, ``all`` last.

    >>> parse_shots("10,1,all", "defectkit")
    ['fewshot:1', 'fewshot:10', 'defectkit']
    """
    if protocol.startswith("fewshot"):
        raise DefectkitError(
            f"--shots {text} with --protocol {protocol}: --shots sets the protocols; pick one"
        )
    shots: set[int] = set()
    with_all = False
    for item in filter(None, (t.strip() for t in text.split(","))):
        if item == ALL_SHOTS:
            with_all = True
        elif item.isdigit() and int(item) >= 1:
            shots.add(int(item))
        else:
            raise DefectkitError(
                f"--shots {text}: {item!r} is not a number of images (1, 5, 10 ...) or 'all'"
            )
    if not shots and not with_all:
        raise DefectkitError(f"--shots {text}: no shot count")
    return [f"fewshot:{k}" for k in sorted(shots)] + ([protocol] if with_all else [])


def shot_label(protocol: str) -> str:
    """How ``--shots`` names a protocol: K for ``fewshot:K``, ``all`` for any other.

    >>> shot_label("fewshot:5"), shot_label("defectkit")
    ('5', 'all')
    """
    return protocol.split(":", 1)[1] if protocol.startswith("fewshot:") else ALL_SHOTS


@dataclass(frozen=True)
class Unit:
    """One part of the work: these rows on one category, split by ``protocol`` with ``seed``."""

    protocol: str
    seed: int
    category: str
    rows: tuple[str, ...]


@dataclass
class SuitePlan:
    """What a suite covers; every shard holds the whole plan and computes its own part of it."""

    categories: list[str]
    protocols: list[str]
    seeds: list[int]
    rows: list[str]
    shots: bool = False  # the protocols come from --shots (their run folders sit under shots-<K>/)

    def run_key(self, protocol: str, seed: int, category: str) -> str:
        """The run folder of (protocol, seed, category), relative to the suite folder.

        >>> SuitePlan(["wood"], ["fewshot:5"], [0, 1], [], shots=True).run_key("fewshot:5", 1, "wood")
        'shots-5/wood/seed-1'
        """
        parts = [f"shots-{shot_label(protocol)}"] if self.shots else []
        parts.append(category)
        if len(self.seeds) > 1:
            parts.append(f"seed-{seed}")
        return "/".join(parts)

    def units(self) -> list[Unit]:
        groups = row_groups(self.rows)
        return [
            Unit(p, s, c, g)
            for p in self.protocols
            for s in self.seeds
            for c in self.categories
            for g in groups
        ]

    def shard(self, index: int, count: int) -> list[Unit]:
        """The ``index``-th (1-based) of ``count`` contiguous parts of :meth:`units`, cut as
        ``numpy.array_split`` cuts: the first ``len(units) % count`` parts one unit longer.

        >>> plan = SuitePlan(["a", "b", "c"], ["defectkit"], [0], ["classifier"])
        >>> [[u.category for u in plan.shard(i, 2)] for i in (1, 2)]
        [['a', 'b'], ['c']]
        """
        parts = np.array_split(np.arange(len(units := self.units())), count)
        return [units[k] for k in parts[index - 1]]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def suite_record(
    template: BenchmarkConfig, plan: SuitePlan, shard: tuple[int, int] | None, units: list[Unit]
) -> dict:
    config = template.to_dict()
    return {
        "settings": {k: config[k] for k in SUITE_SETTINGS},
        "plan": plan.to_dict(),
        "shard": list(shard) if shard else None,
        "units": [dataclasses.asdict(u) for u in units],
        "config": config,
        "versions": versions(),
    }


def first_difference(a: dict, b: dict) -> str | None:
    """The first key whose value differs between two flat dicts (sorted keys), or None.

    >>> first_difference({"x": 1, "y": 2}, {"x": 1, "y": 3})
    'y'
    """
    return next((k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)), None)


def prepare_suite_folder(out: Path, record: dict, resume: bool, overwrite: bool) -> dict | None:
    """Check ``out`` for this suite (a run folder's rules, ``runner.prepare_output``); returns the
    earlier suite.json when resuming, else None."""
    earlier = prepare_output(out, SUITE_FILE, "suite", resume, overwrite, "settings")
    if earlier is not None:
        was = {**BenchmarkConfig(Path("."), "", out, []).to_dict(), **earlier["settings"]}
        check_same_settings(out / SUITE_FILE, "suite", was, record["settings"], SUITE_SETTINGS)
    return earlier


@dataclass
class SuiteResults:
    """Every finished unit of a suite, from one folder or from the shards' folders."""

    plan: SuitePlan
    settings: dict
    config: dict
    results: dict[str, dict[str, dict]]  # run key -> row -> result.json
    runs: dict[str, list[Path]]  # run key -> its run folder in each shard that ran rows of it
    sources: list[Path]

    def anomalous_train_images(self, key: str, category: str) -> int:
        """Defect images the split of a run put in train: K for ``fewshot:K``, all for the default split."""
        manifest = Manifest.load(self.runs[key][0] / "data" / category)  # the shards' splits are equal
        return sum(class_of(name) != GOOD for name in manifest.splits["train"])


def _read_suite(folder: Path) -> dict:
    record = load_json(folder / SUITE_FILE, "suite.json")
    if not (isinstance(record, dict) and {"settings", "plan", "units"} <= set(record)):
        raise DefectkitError(
            f"{folder / SUITE_FILE}: not a defectkit suite.json; pass the folders --out named"
        )
    return record


def collect(folders: list[Path]) -> SuiteResults:
    """Read the finished units of one suite folder or of its shards' folders: the same plan and
    settings (else an error naming the first difference), each unit once, none missing."""
    records = [_read_suite(Path(f)) for f in folders]
    first = records[0]
    for folder, record in zip(folders[1:], records[1:]):
        for part in ("settings", "plan"):
            key = first_difference(first[part], record[part])
            if key is not None:
                raise DefectkitError(
                    f"{folder / SUITE_FILE}: {part} {key}={record[part].get(key)!r}, but {folders[0]} has "
                    f"{first[part].get(key)!r}; only shards of one suite merge"
                )
    plan = SuitePlan(**first["plan"])
    found: dict[tuple[str, str], Path] = {}
    results: dict[str, dict[str, dict]] = {}
    runs: dict[str, list[Path]] = {}
    for folder, record in zip(folders, records):
        for u in (Unit(**{**u, "rows": tuple(u["rows"])}) for u in record["units"]):
            key = plan.run_key(u.protocol, u.seed, u.category)
            for row in u.rows:
                if (key, row) in found:
                    raise DefectkitError(
                        f"{folder}: {key} row {row} is also in {found[key, row]}; pass each shard once"
                    )
                found[key, row] = Path(folder)
                result_file = Path(folder) / key / "rows" / row / RESULT_FILE
                if not result_file.is_file():
                    raise DefectkitError(
                        f"{result_file}: missing; that shard did not finish (rerun it with --resume)"
                    )
                results.setdefault(key, {})[row] = load_json(result_file, "row result")
            if Path(folder) / key not in runs.setdefault(key, []):
                runs[key].append(Path(folder) / key)
    missing = [
        f"{plan.run_key(u.protocol, u.seed, u.category)} ({', '.join(u.rows)})"
        for u in plan.units()
        if any((plan.run_key(u.protocol, u.seed, u.category), r) not in found for r in u.rows)
    ]
    if missing:
        raise DefectkitError(f"{folders[0]}: the suite is not complete; missing {missing[0]}" + (
            f" and {len(missing) - 1} more units" if len(missing) > 1 else ""))  # fmt: skip
    _check_same_splits(runs)
    return SuiteResults(plan, first["settings"], first["config"], results, runs, [Path(f) for f in folders])


def _check_same_splits(runs: dict[str, list[Path]]) -> None:
    """Shards that ran rows of one run key made its split each: it must be the same split."""
    for folders in runs.values():
        hashes: dict[str | None, Path] = {}
        for folder in folders:
            run_file = folder / RUN_FILE
            manifest = load_json(run_file, "run.json").get("split_manifest", {}).get("sha256")
            hashes.setdefault(manifest, run_file)
        if len(hashes) > 1:
            a, b = list(hashes.values())[:2]
            raise DefectkitError(
                f"{b}: its split manifest differs from {a}'s; the shards split the data differently"
            )
