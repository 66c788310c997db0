"""Each writer checked against the source masks, on the bundled sample converted with --to all."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from defectkit.convert.instances import DEFAULT_MIN_AREA
from defectkit.core.layout import SPLITS, Manifest, flat_name, label_name
from defectkit.core.imageio import read_image, read_mask
from defectkit.core.rle import rle_to_mask


def components(mask: np.ndarray, min_area: int = DEFAULT_MIN_AREA) -> list[np.ndarray]:
    """The reference instances, computed independently of convert: 8-connected components >= min_area."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [labels == i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]


def source_mask(manifest: Manifest, file_name: str) -> np.ndarray | None:
    p = Path(file_name)
    if p.parts[1] == "good":
        return None
    return read_mask(Path(manifest.source) / "ground_truth" / p.parts[1] / f"{p.stem}_mask.png")


def box_of(m: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(m)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_manifest_every_image_in_exactly_one_split(converted, sample_root):
    manifest = Manifest.load(converted)
    source = sample_root / "wood"
    all_images = sorted(p.relative_to(source).as_posix() for p in source.glob("t*/*/*.png"))
    listed = [n for s in SPLITS for n in manifest.splits[s]]
    assert sorted(listed) == all_images and len(set(listed)) == len(listed)
    assert all(n in manifest.splits["train"] for n in all_images if n.startswith("train/"))
    assert manifest.classes == ["color", "combined", "hole", "liquid", "scratch"]
    for split in SPLITS:  # stratified: every defect type in every split (4 images per type, 0.2/0.2)
        assert {Path(n).parts[1] for n in manifest.splits[split]} >= set(manifest.classes)


def test_yolo_boxes_equal_the_components(converted):
    manifest = Manifest.load(converted)
    data = yaml.safe_load((converted / "yolo" / "data.yaml").read_text())
    assert Path(data["path"]).is_absolute() and Path(data["path"]) == converted / "yolo"
    assert data["names"] == dict(enumerate(manifest.classes))
    n_checked = 0
    for split in SPLITS:
        images = sorted(p.name for p in (converted / "yolo" / "images" / split).iterdir())
        assert images == sorted(flat_name(n) for n in manifest.splits[split])
        for name in manifest.splits[split]:
            rows = (converted / "yolo" / "labels" / split / label_name(name)).read_text().split("\n")[:-1]
            mask = source_mask(manifest, name)
            if mask is None:
                assert rows == []
                continue
            h, w = mask.shape
            got = []
            for row in rows:
                k, cx, cy, bw, bh = row.split()
                assert manifest.classes[int(k)] == Path(name).parts[1]
                cx, cy, bw, bh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
                got.append(tuple(round(v) for v in (cx - bw / 2, cy - bh / 2, bw, bh)))
            assert sorted(got) == sorted(box_of(c) for c in components(mask)), name
            n_checked += len(got)
    assert n_checked > 30


def test_coco_annToMask_equals_instance_pixels(converted):
    from faster_coco_eval import COCO as FastCOCO
    from pycocotools.coco import COCO

    manifest = Manifest.load(converted)
    for split in SPLITS:
        path = converted / "coco" / f"{split}.json"
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("error")
            coco = COCO(str(path))
            fast = FastCOCO(str(path))
        assert len(fast.getAnnIds()) == len(coco.getAnnIds())
        assert coco.dataset["info"]["image_root"] == manifest.source
        ids = manifest.image_ids(split)
        assert {im["file_name"]: im["id"] for im in coco.dataset["images"]} == ids
        assert [c["name"] for c in coco.dataset["categories"]] == manifest.classes
        assert [c["id"] for c in coco.dataset["categories"]] == list(range(1, len(manifest.classes) + 1))
        for name, image_id in ids.items():
            img = coco.imgs[image_id]
            assert (img["height"], img["width"]) == read_image(Path(manifest.source) / name).shape[:2]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
            mask = source_mask(manifest, name)
            if mask is None:
                assert anns == []
                continue
            expected = components(mask)
            assert len(anns) == len(expected), name
            for ann in anns:
                m = coco.annToMask(ann).astype(bool)
                assert any((m == c).all() for c in expected), (
                    f"{name}: annotation {ann['id']} is no component"
                )
                assert ann["area"] == m.sum() and ann["iscrowd"] == 0
                assert ann["bbox"] == list(box_of(m))
                assert coco.cats[ann["category_id"]]["name"] == Path(name).parts[1]


def test_sam_points_lie_inside_their_instance(converted):
    manifest = Manifest.load(converted)
    n_points = 0
    for split in SPLITS:
        coco = json.loads((converted / "coco" / f"{split}.json").read_text())
        coco_ids = {im["file_name"]: im["id"] for im in coco["images"]}
        lines = [json.loads(x) for x in (converted / "sam" / f"{split}.jsonl").read_text().splitlines()]
        assert [line["file_name"] for line in lines] == manifest.splits[split]
        for line in lines:
            assert line["image_id"] == coco_ids[line["file_name"]]
            assert Path(line["image"]).is_file() and Path(line["image"]).is_absolute()
            mask = source_mask(manifest, line["file_name"])
            assert (mask is None) == (line["instances"] == [])
            for inst in line["instances"]:
                m = rle_to_mask(inst["mask"])
                assert m.shape == (line["height"], line["width"])
                x, y, w, h = box_of(m)
                assert inst["box_xyxy"] == [x, y, x + w, y + h]
                assert len(inst["points"]) == len(inst["point_labels"]) >= 1 and set(
                    inst["point_labels"]
                ) == {1}
                for px, py in inst["points"]:
                    assert m[py, px], f"{line['file_name']}: point {px},{py} outside its instance"
                    n_points += 1
    assert n_points > 30


def test_yolo_seg_polygons_rasterise_back_to_the_instances(converted):
    """The round trip as ultralytics does it (polygon2mask); rings included."""
    from ultralytics.data.utils import polygon2mask

    manifest = Manifest.load(converted)
    ious, ring_ious = [], []
    for split in SPLITS:
        for name in manifest.splits[split]:
            mask = source_mask(manifest, name)
            rows = (converted / "yolo-seg" / "labels" / split / label_name(name)).read_text().split("\n")[:-1]
            if mask is None:
                assert rows == []
                continue
            h, w = mask.shape
            expected = components(mask)
            assert len(rows) == len(expected)
            for row in rows:
                xy = np.array(row.split()[1:], float).reshape(-1, 2) * [w, h]
                back = polygon2mask((h, w), [xy.ravel()]).astype(bool)
                best = max(expected, key=lambda c: (c & back).sum())
                iou = (best & back).sum() / (best | back).sum()
                ious.append(iou)
                _, hier = cv2.findContours(best.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
                if (hier[0][:, 3] >= 0).any():
                    ring_ious.append(iou)
    assert ring_ious, "the sample has rings; none was found"
    assert min(ious) == pytest.approx(1.0) and min(ring_ious) == pytest.approx(1.0), (
        min(ious),
        min(ring_ious),
    )


def test_classify_folders_hold_each_split_image_once(converted):
    manifest = Manifest.load(converted)
    classes = sorted(["good", *manifest.classes])
    for split in SPLITS:
        root = converted / "classify" / split
        assert sorted(p.name for p in root.iterdir()) == classes
        files = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*"))
        assert files == sorted(f"{Path(n).parts[1]}/{flat_name(n)}" for n in manifest.splits[split])
        for n in manifest.splits[split][:3]:
            linked = root / Path(n).parts[1] / flat_name(n)
            assert linked.read_bytes() == (Path(manifest.source) / n).read_bytes()


def test_yolo_data_yaml_loads_in_ultralytics(converted):
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    for name in ("yolo", "yolo-seg"):
        data = check_det_dataset(str(converted / name / "data.yaml"))
        assert data["nc"] == 5 and data["names"][2] == "hole"
        images = sorted(str(p) for p in Path(data["val"]).iterdir())
        assert all(Path(p).is_file() for p in img2label_paths(images))
