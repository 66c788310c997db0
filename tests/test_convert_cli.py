"""convert-mvtec end to end: the reader's inputs (grayscale, non-square, JPEG masks, archives), the
split, the options, and every bad input (exit 2, one line naming the file)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from defectkit.convert import convert_category
from defectkit.convert.cli import main
from defectkit.convert.instances import extract_instances
from defectkit.core.layout import SPLITS, Manifest
from defectkit.core.atomic import DIR_MODE, FILE_MODE
from defectkit.core.errors import DefectkitError
from defectkit.core.rle import rle_to_mask
from defectkit.sample import write_category

SMALL = {
    "size": (64, 80),
    "n_train_good": 2,
    "n_test_good": 3,
    "n_per_defect": 3,
    "defects": ("hole", "scratch"),
}


@pytest.fixture
def part(tmp_path) -> Path:
    """A small custom category ``part`` (64x80, hole + scratch) under ``tmp_path/data``."""
    write_category(tmp_path / "data", "part", **SMALL)
    return tmp_path / "data"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def expect_error(capsys, needle: str, *argv) -> str:
    code, _, err = run_cli(capsys, *argv, "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert needle in lines[0], lines[0]
    return lines[0]


def coco_masks(category_dir: Path) -> dict[str, list[tuple[list[int], np.ndarray]]]:
    """file_name -> [(bbox, mask)] over all splits of a converted category."""
    found = {}
    for split in SPLITS:
        coco = json.loads((category_dir / "coco" / f"{split}.json").read_text())
        names = {im["id"]: im["file_name"] for im in coco["images"]}
        for name in names.values():
            found.setdefault(name, [])
        for ann in coco["annotations"]:
            found[names[ann["image_id"]]].append((ann["bbox"], rle_to_mask(ann["segmentation"])))
    return found


def test_grayscale_non_square_category(converted, sample_root, tmp_path):
    summary = convert_category(sample_root, "wood_gray", tmp_path, to=["coco", "yolo"], progress=False)
    coco = json.loads((tmp_path / "wood_gray" / "coco" / "train.json").read_text())
    assert {(im["width"], im["height"]) for im in coco["images"]} == {(256, 192)}
    assert all(rle_to_mask(a["segmentation"]).shape == (192, 256) for a in coco["annotations"])
    assert sum(summary.instances["train"].values()) == len(coco["annotations"]) > 0
    assert sorted(p.name for p in (tmp_path / "wood_gray").iterdir()) == ["coco", "split.json", "yolo"]


def test_noisy_jpeg_masks_match_the_png_masks(part, tmp_path):
    reference = convert_category(part, "part", tmp_path / "png", to="coco", progress=False, min_area=1)
    rng = np.random.default_rng(0)
    for png in sorted((part / "part" / "ground_truth").rglob("*_mask.png")):
        grey = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(np.int16)
        noisy = np.clip(grey + rng.integers(-40, 41, grey.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(png.with_suffix(".jpg")), noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])
        png.unlink()
    noisy = convert_category(part, "part", tmp_path / "jpg", to="coco", progress=False, min_area=4)
    assert noisy.warnings == []
    a, b = coco_masks(tmp_path / "png" / "part"), coco_masks(tmp_path / "jpg" / "part")
    assert a.keys() == b.keys()
    for name in a:
        union_a = np.any([m for _, m in a[name]], axis=0) if a[name] else None
        union_b = np.any([m for _, m in b[name]], axis=0) if b[name] else None
        if union_a is None:
            assert union_b is None
            continue
        assert (union_a & union_b).sum() / (union_a | union_b).sum() > 0.9, name
    assert sum(reference.images["test"].values()) == sum(noisy.images["test"].values())


def make_archive(path: Path, members: dict[str, Path]) -> Path:
    with tarfile.open(path, "w:xz") as tar:
        for arcname, folder in members.items():
            tar.add(folder, arcname=arcname)
    return path


def test_reads_category_and_whole_dataset_archives(part, tmp_path, capsys):
    folder_out = convert_category(part, "part", tmp_path / "from_folder", to="all", progress=False)
    one = make_archive(tmp_path / "part.tar.xz", {"part": part / "part"})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "license.txt").write_text("x")
    whole = make_archive(
        tmp_path / "mvtec_anomaly_detection.tar.xz",
        {"./license.txt": tmp_path / "other" / "license.txt", "./part": part / "part"},
    )
    for archive, out in ((one, tmp_path / "a"), (whole, tmp_path / "b")):
        code, stdout, _ = run_cli(capsys, "part", "--root", archive, "--out", out, "--quiet")
        assert code == 0 and "total" in stdout
        source = out / "part" / "source" / "part"
        assert Manifest.load(out / "part").source == str(source.resolve())
        assert (source / "ground_truth" / "hole" / "000_mask.png").read_bytes() == (
            part / "part" / "ground_truth" / "hole" / "000_mask.png"
        ).read_bytes()
        assert coco_masks(out / "part").keys() == coco_masks(folder_out.out).keys()
        for name, items in coco_masks(out / "part").items():
            ref = coco_masks(folder_out.out)[name]
            assert [b for b, _ in items] == [b for b, _ in ref]
        for img in (out / "part" / "yolo" / "images" / "train").iterdir():
            assert img.is_file() and img.stat().st_size > 0  # links resolve after the move into place
    expect_error(capsys, "no category 'wood' in this archive", "wood", "--root", one, "--out", tmp_path / "c")


def test_split_is_deterministic_and_seeded(part, tmp_path):
    a = convert_category(part, "part", tmp_path / "a", to="all", progress=False, seed=3)
    b = convert_category(part, "part", tmp_path / "b", to="all", progress=False, seed=3)
    c = convert_category(
        part, "part", tmp_path / "c", to="coco", progress=False, seed=4, val_frac=0.3, test_frac=0.3
    )
    ma, mb, mc = Manifest.load(a.out), Manifest.load(b.out), Manifest.load(c.out)
    assert ma.splits == mb.splits and ma.splits != mc.splits
    files_a = sorted(p.relative_to(a.out) for p in a.out.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b.out) for p in b.out.rglob("*") if p.is_file())
    for rel in files_a:
        if rel.suffix in (".txt", ".json", ".jsonl", ".yaml"):
            text_a = (a.out / rel).read_text().replace(str(tmp_path / "a"), "")
            assert text_a == (b.out / rel).read_text().replace(str(tmp_path / "b"), ""), rel
    everything = sorted(p.relative_to(part / "part").as_posix() for p in (part / "part").glob("t*/*/*.png"))
    for m in (ma, mc):
        listed = [n for s in SPLITS for n in m.splits[s]]
        assert sorted(listed) == everything and len(set(listed)) == len(listed)


def test_options_change_the_instances(part, tmp_path, capsys):
    base = convert_category(part, "part", tmp_path / "a", to="coco", progress=False)
    keep_all = convert_category(part, "part", tmp_path / "b", to="coco", progress=False, min_area=1)

    def total(summary):
        return sum(sum(v.values()) for v in summary.instances.values())

    assert base.dropped_small > 0 and total(keep_all) == total(base) + base.dropped_small
    merged = convert_category(part, "part", tmp_path / "c", to="coco", progress=False, merge_distance=8)
    assert total(merged) < total(base)  # the broken scratches became one instance each
    code, stdout, _ = run_cli(
        capsys, "part", "--root", part, "--out", tmp_path / "d", "--to", "coco,sam", "--to", "yolo", "--quiet"
    )
    assert code == 0 and sorted(p.name for p in (tmp_path / "d" / "part").iterdir()) == [
        "coco",
        "sam",
        "split.json",
        "yolo",
    ]
    for split in SPLITS:
        assert f"{split} img/inst" in stdout.splitlines()[1]


def test_images_are_linked_or_copied(part, tmp_path):
    linked = convert_category(part, "part", tmp_path / "a", to="classify", progress=False)
    copied = convert_category(part, "part", tmp_path / "b", to="classify", progress=False, copy=True)
    name = "test/hole/000.png"
    manifest = Manifest.load(linked.out)
    rel = Path("classify", manifest.split_of(name), "hole", "test_hole_000.png")
    src = part / "part" / name
    assert (linked.out / rel).samefile(src)  # a hard link (or a symlink) to the source file
    assert not (copied.out / rel).samefile(src) and not (copied.out / rel).is_symlink()
    assert (copied.out / rel).read_bytes() == src.read_bytes()
    # Outputs get the modes of a plain mkdir/open (umask), not tempfile's private 0700/0600:
    # others can read a converted data set and the generated sample.
    for path, mode in ((copied.out, DIR_MODE), (copied.out / "split.json", FILE_MODE), (src, FILE_MODE)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, (path, oct(path.stat().st_mode))


def test_connectivity_and_merge_on_a_known_mask():
    m = np.zeros((12, 12), bool)
    m[1, 1] = m[2, 2] = True  # touch only at a corner
    m[6:9, 3:5] = m[6:9, 7:9] = True  # a 2-pixel gap
    four, _ = extract_instances(m, connectivity=4, min_area=1)
    eight, _ = extract_instances(m, connectivity=8, min_area=1)
    merged, _ = extract_instances(m, merge_distance=3, min_area=1)
    assert len(four) == 4 and len(eight) == 3 and len(merged) == 2
    joined = next(i for i in merged if i.area == 12)
    assert joined.bbox == [3, 6, 6, 3] and all(m[y, x] for x, y in joined.points)


def test_overwrite_semantics(part, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(capsys, "part", "--root", part, "--out", out, "--to", "coco", "--quiet")[0] == 0
    marker = out / "part" / "coco" / "marker"
    marker.write_text("old")
    expect_error(
        capsys, f"{out / 'part'}: already exists; pass --overwrite", "part", "--root", part, "--out", out
    )
    assert marker.exists()
    assert (
        run_cli(capsys, "part", "--root", part, "--out", out, "--to", "yolo", "--overwrite", "--quiet")[0]
        == 0
    )
    assert sorted(p.name for p in (out / "part").iterdir()) == ["split.json", "yolo"]
    assert [p.name for p in out.iterdir()] == ["part"]  # no temporary folder left behind
    expect_error(capsys, "overlaps the source data", "part", "--root", part, "--out", part, "--overwrite")


def test_interrupted_run_leaves_the_previous_output(part, tmp_path, monkeypatch):
    from defectkit.convert import writers

    out = tmp_path / "out"
    convert_category(part, "part", out, to="all", progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupted(ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(writers.WRITERS, "sam", writers.Writer(writers.WRITERS["sam"].prepare, finish=interrupted))
    with pytest.raises(KeyboardInterrupt):
        convert_category(part, "part", out, to="all", progress=False, seed=5, overwrite=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in out.iterdir()] == ["part"]


def test_warnings_are_listed_and_strict_turns_them_into_errors(part, tmp_path, capsys):
    cat = part / "part"
    (cat / "ground_truth" / "hole" / "001_mask.png").unlink()  # a defect image without a mask
    shutil.copy(
        cat / "ground_truth" / "hole" / "000_mask.png", cat / "ground_truth" / "hole" / "099_mask.png"
    )
    empty = np.zeros((64, 80), np.uint8)
    empty[3, 3] = 100  # below the threshold: empty at 127
    cv2.imwrite(str(cat / "ground_truth" / "scratch" / "002_mask.png"), empty)
    code, stdout, _ = run_cli(
        capsys, "part", "--root", part, "--out", tmp_path / "a", "--to", "coco", "--quiet"
    )
    assert code == 0 and "3 warning(s):" in stdout
    assert "hole/001.png: defect image without a mask" in stdout
    assert "099_mask.png: mask without an image" in stdout
    assert "002_mask.png: empty mask" in stdout
    coco = json.loads((tmp_path / "a" / "part" / "coco" / "train.json").read_text())
    coco_all = [
        im["file_name"]
        for s in SPLITS
        for im in json.loads((tmp_path / "a" / "part" / "coco" / f"{s}.json").read_text())["images"]
    ]
    assert "test/hole/001.png" in coco_all and coco["images"]  # kept, with no instances
    line = expect_error(
        capsys, "defect image without a mask", "part", "--root", part, "--out", tmp_path / "b", "--strict"
    )
    assert line.endswith("[--strict]") and "kept with no instances" not in line, line
    (cat / "ground_truth" / "hole" / "099_mask.png").unlink()
    shutil.copy(
        cat / "ground_truth" / "hole" / "000_mask.png", cat / "ground_truth" / "hole" / "001_mask.png"
    )
    expect_error(
        capsys, "002_mask.png: empty mask", "part", "--root", part, "--out", tmp_path / "c", "--strict"
    )
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def _corrupt(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20 + b"IEND\xaeB`\x82")


def _flip_byte(path: Path) -> None:
    """Damage one byte of compressed pixel data, the way a bad disk or copy does: libpng would
    print "libpng error: ..." on stderr before our message."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _clashing_names(category: Path) -> None:
    (category / "test" / "hole_x").mkdir()
    shutil.copy(category / "test" / "hole" / "000.png", category / "test" / "hole_x" / "000.png")
    shutil.copy(category / "test" / "hole" / "000.png", category / "test" / "hole" / "x_000.png")


def _resize_mask(path: Path) -> None:
    cv2.imwrite(str(path), np.full((32, 32), 255, np.uint8))


BAD_INPUTS = [
    # (what, how to break the category, the file named in the error, the problem)
    (
        "corrupt image",
        lambda c: _corrupt(c / "test/hole/001.png"),
        "test/hole/001.png",
        "corrupt PNG",
    ),
    (
        "bit flip in image",
        lambda c: _flip_byte(c / "test/scratch/001.png"),
        "test/scratch/001.png",
        "corrupt PNG (CRC error in chunk IDAT",
    ),
    (
        "not an image",
        lambda c: (c / "test/hole/000.png").write_text("not a picture\n"),
        "test/hole/000.png",
        "not a readable image",
    ),
    ("truncated image", lambda c: _truncate(c / "train/good/000.png"), "train/good/000.png", "truncated PNG"),
    (
        "corrupt mask",
        lambda c: _corrupt(c / "ground_truth/scratch/000_mask.png"),
        "000_mask.png",
        "corrupt PNG",
    ),
    (
        "truncated mask",
        lambda c: _truncate(c / "ground_truth/hole/002_mask.png"),
        "002_mask.png",
        "truncated PNG",
    ),
    (
        "mask size",
        lambda c: _resize_mask(c / "ground_truth/hole/000_mask.png"),
        "000_mask.png",
        "mask is 32x32 but its image 000.png is 80x64",
    ),
    ("missing train/good", lambda c: shutil.rmtree(c / "train"), "part/train/good", "missing folder"),
    ("missing test", lambda c: shutil.rmtree(c / "test"), "part/test", "missing folder"),
    (
        "empty defect folder",
        lambda c: [p.unlink() for p in (c / "test/hole").iterdir()],
        "test/hole",
        "empty folder",
    ),
    ("flat name clash", _clashing_names, "test/hole_x/000.png", "clashes with test/hole/x_000.png"),
    (
        "empty image file",
        lambda c: (c / "test/scratch/000.png").write_bytes(b""),
        "test/scratch/000.png",
        "empty file",
    ),
]


@pytest.mark.parametrize("what,breaker,names,problem", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_stops_with_one_line_naming_the_file(part, tmp_path, capfd, what, breaker, names, problem):
    """capfd, not capsys: it also sees what the C decoders (libpng, libjpeg, OpenCV's log) print."""
    breaker(part / "part")
    line = expect_error(capfd, problem, "part", "--root", part, "--out", tmp_path / "out")
    assert names in line
    assert not (tmp_path / "out").exists()  # nothing at all is left behind, not even OUT/


def test_unknown_missing_and_unreadable_sources(part, tmp_path, capsys, monkeypatch):
    line = expect_error(capsys, "unknown category 'prat'", "prat", "--root", part, "--out", tmp_path)
    assert "bottle, cable" in line and "zipper" in line
    line = expect_error(
        capsys, "https://www.mvtec.com/company/research/datasets/mvtec-ad", "bottle", "--root", part
    )
    assert str(part / "bottle") in line
    monkeypatch.setenv("DEFECTKIT_DATA_ROOT", str(tmp_path / "nowhere"))
    expect_error(capsys, f"{tmp_path / 'nowhere'}: not found; download MVTec AD category 'wood'", "wood")
    expect_error(capsys, "unknown format (choose from", "part", "--root", part, "--to", "voc")
    expect_error(
        capsys,
        "--val-frac 0.6 + --test-frac 0.5",
        "part",
        "--root",
        part,
        "--val-frac",
        "0.6",
        "--test-frac",
        "0.5",
    )
    # Running as root makes chmod useless, so refuse the listing the way the OS would.
    real_iterdir = Path.iterdir

    def refuse(self):
        if self.name == "scratch" and self.parent.name == "test":
            raise PermissionError(13, "Permission denied")
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refuse)
    expect_error(
        capsys,
        "test/scratch: cannot read folder (permission denied)",
        "part",
        "--root",
        part,
        "--out",
        tmp_path / "x",
    )
    with pytest.raises(DefectkitError):
        convert_category(part, "part", tmp_path / "y", progress=False)


def test_polygon_round_trip_on_random_blobs():
    """Random blobs with holes and thin parts: the YOLO-seg polygon rasterises back to the component."""
    from ultralytics.data.utils import polygon2mask

    from defectkit.convert.writers import yolo_polygon_line

    rng = np.random.default_rng(1)
    ious = []
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(20, 90, 2))
        m = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), float(rng.uniform(0.6, 3))) > 0.55
        _, labels = cv2.connectedComponents(m.view(np.uint8), connectivity=8)
        for inst in extract_instances(m, min_area=1)[0]:
            xy = np.array(yolo_polygon_line(0, inst.polygon, w, h).split()[1:], float) * np.tile(
                [w, h], len(inst.polygon) // 2
            )
            back = polygon2mask((h, w), [xy]).astype(bool)
            x, y = inst.points[0]
            comp = labels == labels[y, x]
            ious.append((comp & back).sum() / (comp | back).sum())
    assert len(ious) > 300 and min(ious) > 0.99 and np.mean(ious) > 0.999


# ------------------------------------------------------------------ --workers: decoding threads


def tree_bytes(folder: Path) -> dict[str, bytes | str]:
    """Every file's bytes (read through links) and every folder, by path relative to ``folder``."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
    }


def test_output_is_the_same_bytes_for_any_number_of_workers(sample_root, tmp_path, capsys):
    out = tmp_path / "out"  # the same folder each time: absolute paths in the files are the same
    trees, printed = {}, {}
    for workers in ("1", "2"):
        code, stdout, err = run_cli(
            capsys, "wood", "--root", sample_root, "--out", out, "--to", "all", "--merge-distance", "4",
            "--overwrite", "--quiet", "--workers", workers,
        )
        assert code == 0, err
        trees[workers], printed[workers] = tree_bytes(out / "wood"), stdout
    assert len(trees["1"]) > 100 and any(name.endswith(".jsonl") for name in trees["1"])
    assert trees["2"] == trees["1"]
    assert printed["2"] == printed["1"]  # counts, dropped components and warnings, in the same order


def test_workers_decode_on_that_many_threads(sample_root, tmp_path, monkeypatch):
    import threading

    import defectkit.convert.pipeline as pipeline

    seen: list[tuple[str, str]] = []
    decode = pipeline.decode_image

    def recording_decode(folder, src, *args, **kwargs):
        time.sleep(0.005)  # lets the other thread take the next image
        seen.append((threading.current_thread().name, src.file_name))
        return decode(folder, src, *args, **kwargs)

    monkeypatch.setattr(pipeline, "decode_image", recording_decode)
    convert_category(sample_root, "wood", tmp_path, ["coco"], progress=False, workers=2)
    threads = {name for name, _ in seen}
    assert len(threads) == 2 and all(name.startswith("convert-decode") for name in threads), threads
    assert len(seen) == len({f for _, f in seen})  # each image decoded once


def test_a_bad_image_on_a_thread_is_the_same_one_line_error(part, tmp_path, capsys):
    category = part / "part"
    _flip_byte(category / "train" / "good" / "000.png")  # the first image: a decoding thread's
    _truncate(category / "test" / "scratch" / "002.png")  # a later one: the first in order is named
    lines = []
    for workers in ("2", "1"):
        out = tmp_path / f"out{workers}"
        lines.append(expect_error(capsys, "000.png: corrupt PNG", "part", "--root", part, "--out", out,
                                  "--workers", workers))
        assert not out.exists()  # nothing half-written, and no output folder the run had to create
    assert lines[0] == lines[1]
    expect_error(capsys, "--workers 0: must be at least 1", "part", "--root", part, "--out", tmp_path / "o",
                 "--workers", "0")


@pytest.mark.parametrize("signal_to", ["SIGTERM to the command", "Ctrl-C to its process group"])
def test_interrupt_while_threads_decode_stops_them_and_leaves_nothing(part, tmp_path, signal_to):
    # Enough work that the run is still decoding when the signal comes: 150 links to one
    # 1024x1024 noise PNG (poorly compressed, tens of ms to decode each).
    good = part / "part" / "train" / "good"
    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), np.uint8)
    cv2.imwrite(str(good / "big000.png"), noise)
    for i in range(1, 150):
        os.link(good / "big000.png", good / f"big{i:03d}.png")
    out = tmp_path / "out"
    argv = [sys.executable, "-c", "from defectkit.convert.cli import main; raise SystemExit(main())",
            "part", "--root", str(part), "--out", str(out), "--workers", "2", "--quiet"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    # Decoding has begun once the first image's label file is written (after its record came in).
    while proc.poll() is None and time.monotonic() < deadline:
        if list(out.glob(".part.tmp-*/yolo/labels/*/*.txt")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it was seen decoding"
    if signal_to.startswith("SIGTERM"):
        proc.send_signal(signal.SIGTERM)  # `timeout`, `docker stop`: the command alone
    else:
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (143 if signal_to.startswith("SIGTERM") else 130), err
    assert "Traceback" not in err and err.strip() in ("terminated", "interrupted"), err
    assert not out.exists()  # the temporary folder went, and the --out folder the run created
