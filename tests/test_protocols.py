"""Split protocols (docs/PROTOCOLS.md): each checked against its rule computed here from the folder
listing, read back from every format's own files; the default protocol against the output of the
code before protocols existed; and what a bad ``--protocol`` or an existing output does."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from defectkit.convert import Manifest, assign_splits, convert_category, flat_name, parse_protocol
from defectkit.core.errors import DefectkitError
from defectkit.core.layout import GOOD, SPLITS, class_of
from defectkit.sample import write_category
from test_convert_cli import run_cli  # convert-mvtec's main, with its exit code and output

SMALL = {
    "size": (64, 80),
    "n_train_good": 6,
    "n_test_good": 4,
    "n_per_defect": 5,
    "defects": ("hole", "scratch", "color"),
}
"""A small custom category: 15 defect images in 3 types (ceil(5/3) = 2 of each for training)."""


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    """``<root>/part`` written by defectkit.sample at 64x80 (returns the root)."""
    root = tmp_path_factory.mktemp("data")
    write_category(root, "part", **SMALL)
    return root


def listing(category: Path) -> dict[str, list[str]]:
    """Folder -> its image file names (``test/hole/000.png``), sorted: ``train/good`` and each ``test/*``."""
    folders = [category / "train" / GOOD, *sorted(p for p in (category / "test").iterdir() if p.is_dir())]
    return {
        f"{f.parent.name}/{f.name}": [f"{f.parent.name}/{f.name}/{p.name}" for p in sorted(f.iterdir())]
        for f in folders
    }


def written_splits(category_dir: Path, names: list[str]) -> dict[str, dict[str, set[str]]]:
    """Format -> split -> the source images that format's own files put in that split."""
    by_flat = {Path(flat_name(n)).stem: n for n in names}
    found: dict[str, dict[str, set[str]]] = {}
    for split in SPLITS:
        coco = json.loads((category_dir / "coco" / f"{split}.json").read_text())
        found.setdefault("coco", {})[split] = {im["file_name"] for im in coco["images"]}
        lines = (category_dir / "sam" / f"{split}.jsonl").read_text().splitlines()
        found.setdefault("sam", {})[split] = {json.loads(line)["file_name"] for line in lines}
        for fmt in ("yolo", "yolo-seg"):
            labels = (category_dir / fmt / "labels" / split).iterdir()
            found.setdefault(fmt, {})[split] = {by_flat[p.stem] for p in labels}
        images = (category_dir / "classify" / split).glob("*/*")
        found.setdefault("classify", {})[split] = {by_flat[p.stem] for p in images}
    return found


def check_every_format_follows(category_dir: Path, names: list[str]) -> Manifest:
    manifest = Manifest.load(category_dir)
    for fmt, splits in written_splits(category_dir, names).items():
        for split in SPLITS:
            assert splits[split] == set(manifest.splits[split]), (fmt, split)
    return manifest


def defects(names) -> list[str]:
    return sorted(n for n in names if class_of(n) != GOOD)


# --------------------------------------------------------------------------------- anomalydiffusion


@pytest.mark.parametrize("which", ["sample wood", "small part"])
def test_anomalydiffusion_split_is_the_rule_file_by_file(which, sample_root, part, tmp_path):
    root, category = (sample_root, "wood") if which == "sample wood" else (part, "part")
    folders = listing(root / category)
    # The rule, from the folder listing: the first ceil(n/3) of each defect type by file name train, the
    # rest and every good test image test; train/good stays on the training side.
    training_side, test = set(folders["train/good"]), set()
    for folder, names in folders.items():
        if folder == "test/good":
            test |= set(names)
        elif folder.startswith("test/"):
            first = math.ceil(len(names) / 3)
            training_side |= set(names[:first])
            test |= set(names[first:])

    summary = convert_category(
        root, category, tmp_path, to="all", protocol="anomalydiffusion", progress=False
    )
    all_names = [n for names in folders.values() for n in names]
    manifest = check_every_format_follows(summary.out, all_names)
    train, val = set(manifest.splits["train"]), set(manifest.splits["val"])
    assert set(manifest.splits["test"]) == test
    assert train | val == training_side and not train & val  # val is drawn from the training side
    for folder, names in folders.items():
        if folder.startswith("test/") and folder != "test/good":
            third = training_side & set(names)
            assert train & third, f"{folder}: no image left in train"
            assert len(val & third) >= (1 if len(third) >= 2 else 0), (
                f"{folder}: no val image to threshold on"
            )
    assert val & set(folders["train/good"]) and train & set(folders["train/good"])
    assert (manifest.protocol, manifest.protocol_params, manifest.test_frac) == ("anomalydiffusion", {}, None)
    assert manifest.citation == "hu2024anomalydiffusion"


# ------------------------------------------------------------------------------------------ fewshot


@pytest.mark.parametrize("shots", [1, 4])
def test_fewshot_puts_exactly_k_anomalies_in_train(shots, part, tmp_path):
    folders = listing(part / "part")
    all_names = [n for names in folders.values() for n in names]
    summary = convert_category(
        part, "part", tmp_path, to="all", protocol=f"fewshot:{shots}", seed=2, progress=False
    )
    manifest = check_every_format_follows(summary.out, all_names)
    train, val, test = (set(manifest.splits[s]) for s in SPLITS)
    shot_names = set(defects(train))
    assert (
        len(shot_names) == shots and sum(summary.images["train"].get(c, 0) for c in manifest.classes) == shots
    )
    assert set(defects(val)) == shot_names  # val's anomalies are the K shots, no other labelled one
    assert test == {n for n in all_names if n.startswith("test/")} - shot_names
    good_train = set(folders["train/good"])
    assert (train - shot_names) | (val - shot_names) == good_train and not (train & val) - shot_names
    assert (manifest.protocol, manifest.protocol_params) == (f"fewshot:{shots}", {"shots": shots})
    assert manifest.split_of(min(shot_names)) == "train"


def test_fewshot_draw_is_seeded_and_nested(part):
    names = [n for ns in listing(part / "part").values() for n in ns]

    def shots(k: int, seed: int) -> list[str]:
        return defects(assign_splits(names, 0.2, seed=seed, protocol=f"fewshot:{k}")["train"])

    assert shots(4, 0) == shots(4, 0) and shots(4, 0) != shots(4, 1)
    assert {tuple(shots(1, seed)) for seed in range(6)} != {tuple(shots(1, 0))}  # seeds draw other images
    assert set(shots(1, 3)) <= set(shots(4, 3)) <= set(shots(10, 3))  # more labels add to the same draw
    every = assign_splits(names, 0.2, seed=0, protocol="fewshot:15")  # all 15 defect images: allowed
    assert defects(every["test"]) == [] and len(defects(every["train"])) == 15
    with pytest.raises(DefectkitError, match="K=16 is more than the 15 defect images"):
        assign_splits(names, protocol="fewshot:16")


# ---------------------------------------------------------------------------- the default protocol

OLD_MANIFEST_KEYS = ("category", "source", "seed", "val_frac", "test_frac", "classes", "splits")
# What the code before protocols existed (commit 8d1f256) wrote for these inputs: sha256 of every output
# file (its path, and its text with the absolute output and source folders replaced; images by name
# only, as they are the source's own bytes), and of assign_splits on a listing shaped like MVTec AD wood.
DEFAULT_OUTPUT_SHA256 = "04788915a6fe3464963e15f7537f4b187faa1f76ac2239e32b345fe4d8b47226"
DEFAULT_SPLIT_SHA256 = {
    (0.2, 0.2, 0): "1d061797ad7894f239ea473abff7ba97c09fe84f3f17c35b33814dc0cc3336be",
    (0.1, 0.3, 7): "279c64b369d82a28840338b9e9bcec66a713d56d7363e25d83cea3c0b54c7c4f",
}


def output_digest(category_dir: Path) -> str:
    data = json.loads((category_dir / "split.json").read_text())
    digest = hashlib.sha256()
    for path in sorted(p for p in category_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(category_dir).as_posix()
        digest.update(rel.encode() + b"\0")
        if path.suffix == ".png":
            continue
        text = path.read_text()
        if rel == "split.json":  # the manifest as it was: the protocol fields are new
            text = json.dumps({k: data[k] for k in OLD_MANIFEST_KEYS}, indent=2) + "\n"
        text = text.replace(str(category_dir), "<OUT>").replace(data["source"], "<SOURCE>")
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()


def test_default_protocol_writes_what_it_wrote_before_protocols(tmp_path):
    write_category(tmp_path / "data", "part", size=(64, 80), n_train_good=3, n_test_good=4, n_per_defect=5,
                   defects=("hole", "scratch", "color"))  # fmt: skip
    default = convert_category(tmp_path / "data", "part", tmp_path / "a", to="all", progress=False, seed=3)
    named = convert_category(tmp_path / "data", "part", tmp_path / "b", to="all", progress=False, seed=3,
                             protocol="defectkit", test_frac=0.2)  # fmt: skip
    assert output_digest(default.out) == output_digest(named.out) == DEFAULT_OUTPUT_SHA256
    data = json.loads((default.out / "split.json").read_text())
    assert list(data) == [*OLD_MANIFEST_KEYS, "protocol", "protocol_params", "citation"]  # only appended
    assert (data["protocol"], data["protocol_params"], data["citation"]) == ("defectkit", {}, "defectkit")

    folders = {"good": 19, "hole": 10, "scratch": 21, "color": 8, "liquid": 10, "combined": 11}
    wood_like = [f"test/{d}/{i:03d}.png" for d, n in folders.items() for i in range(n)]
    wood_like += [f"train/good/{i:03d}.png" for i in range(247)]
    for (val_frac, test_frac, seed), expected in DEFAULT_SPLIT_SHA256.items():
        splits = assign_splits(wood_like, val_frac, test_frac, seed)
        assert hashlib.sha256(json.dumps(splits).encode()).hexdigest() == expected


def test_a_manifest_from_before_protocols_reads_as_defectkit(converted, tmp_path):
    data = json.loads((converted / "split.json").read_text())
    (tmp_path / "split.json").write_text(json.dumps({k: data[k] for k in OLD_MANIFEST_KEYS}))
    old = Manifest.load(tmp_path)
    assert (old.protocol, old.protocol_params, old.citation) == ("defectkit", {}, "defectkit")
    assert old.splits == Manifest.load(converted).splits


# ------------------------------------------------------------------ the CLI, existing outputs, errors


def test_cli_records_and_prints_the_protocol_and_guards_the_existing_output(part, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "part", "--root", part, "--out", out, "--to", "coco", "--quiet")
    assert code == 0 and "split protocol: defectkit, seed 0 (defectkit;" in stdout
    before = (out / "part" / "split.json").read_bytes()

    # An existing output is replaced only with --overwrite, whatever the protocol.
    code, _, err = run_cli(capsys, "part", "--root", part, "--out", out, "--protocol", "fewshot:3", "--quiet")
    assert code == 2 and "--overwrite" in err and (out / "part" / "split.json").read_bytes() == before
    # A bad K fails before anything is replaced, and names the category folder.
    code, _, err = run_cli(
        capsys, "part", "--root", part, "--out", out, "--protocol", "fewshot:99", "--overwrite"
    )
    assert code == 2 and err.strip() == (
        f"error: {part / 'part'}: --protocol fewshot:99: K=99 is more than the 15 defect images in test/"
    )
    assert (out / "part" / "split.json").read_bytes() == before
    assert [p.name for p in out.iterdir()] == ["part"]

    again = ("--protocol", "fewshot:3", "--seed", "1", "--to", "coco", "--overwrite", "--quiet")
    code, stdout, _ = run_cli(capsys, "part", "--root", part, "--out", out, *again)
    assert code == 0 and "split protocol: fewshot:3, seed 1 (pang2019devnet,ding2022dra,zhu2024ahl;" in stdout
    manifest = Manifest.load(out / "part")
    assert (manifest.protocol, manifest.protocol_params, manifest.seed) == ("fewshot:3", {"shots": 3}, 1)


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("fewshot:0", "K must be a positive integer"),
        ("fewshot:ten", "K must be a positive integer"),
        ("fewshot:", "K must be a positive integer"),
        ("fewshot:2.5", "K must be a positive integer"),
        ("FewShot:2", "unknown protocol"),
        ("anomalydiffusion:3", "anomalydiffusion takes no parameter"),
        ("", "unknown protocol"),
    ],
)
def test_bad_protocol_text_is_refused(spec, problem):
    with pytest.raises(DefectkitError, match=f"^--protocol {spec}: {problem}"):
        parse_protocol(spec)


def test_test_frac_is_refused_where_the_rule_fixes_the_test_set(part):
    names = [n for ns in listing(part / "part").values() for n in ns]
    with pytest.raises(DefectkitError, match="fixes the test set"):
        assign_splits(names, 0.2, 0.2, protocol="anomalydiffusion")
    assert assign_splits(names, 0.2, None, protocol="anomalydiffusion") == assign_splits(
        names, protocol="anomalydiffusion"
    )
