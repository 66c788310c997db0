"""Average precision and F1-max (image level, and pixel level through evaluate_anomaly), checked against
scikit-learn's average_precision_score / precision_recall_curve, an independent implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from defectkit.evaluation import evaluate_anomaly, evaluate_masks
from defectkit.evaluation.cli import main
from defectkit.evaluation.ranking import auroc, average_precision, f1_max, ranked_counts
from defectkit.evaluation.synthetic import make_coco_case
from pycocotools import mask as mask_utils

metrics = pytest.importorskip("sklearn.metrics")  # the dev extra has it; the package does not need it


def sklearn_f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 and its threshold from sklearn's PR curve (the highest threshold among equal F1)."""
    precision, recall, thresholds = metrics.precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]  # last point has no threshold
    best = f1.max()
    return float(best), float(thresholds[np.flatnonzero(f1 == best)].max())


@pytest.mark.parametrize("seed", range(6))
def test_ranking_metrics_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    labels = rng.random(n) < rng.uniform(0.05, 0.6)
    labels[0] = True  # at least one positive
    levels = int(rng.integers(2, 12))  # few distinct scores: many ties
    scores = np.round(rng.random(n) * levels) / levels + labels * rng.uniform(0, 0.3)
    assert average_precision(labels, scores) == pytest.approx(metrics.average_precision_score(labels, scores), abs=1e-12)
    f1, threshold = f1_max(labels, scores)
    ref_f1, ref_threshold = sklearn_f1_max(labels, scores)
    assert f1 == pytest.approx(ref_f1, abs=1e-12)
    assert threshold == ref_threshold
    predicted = scores >= threshold
    tp = int((predicted & labels).sum())
    assert f1 == pytest.approx(2 * tp / (predicted.sum() + labels.sum()), abs=1e-12)  # the threshold reaches it
    if not labels.all():
        assert auroc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_f1_max_threshold_is_a_score_from_the_data_and_the_highest_of_equal_f1():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # t=0.9: F1 = 2/3; t=0.7: 2*2/(3+2) = 0.8; t=0.1: 2*2/(4+2) = 2/3.
    assert f1_max(labels, scores) == (pytest.approx(0.8), 0.7)
    # One positive: F1 1.0 at t=0.9, 2/3 at t=0.5.
    assert f1_max(np.array([1, 0, 0]), np.array([0.9, 0.5, 0.5])) == (1.0, 0.9)
    # Two thresholds with the same F1 (2/3): one TP alone (t=0.9) or both TP with 2 FP (t=0.2) -> the highest.
    tied = f1_max(np.array([1, 0, 0, 1]), np.array([0.9, 0.5, 0.5, 0.2]))
    assert tied == (pytest.approx(2 / 3), 0.9)


def test_undefined_without_positives():
    assert f1_max(np.zeros(3, bool), np.array([0.1, 0.2, 0.3])) == (None, None)
    assert average_precision(np.zeros(3, bool), np.array([0.1, 0.2, 0.3])) is None
    assert f1_max(np.zeros(0, bool), np.zeros(0)) == (None, None)


def test_ranked_counts_are_the_predictions_at_each_distinct_threshold():
    rng = np.random.default_rng(3)
    labels = rng.random(200) < 0.3
    scores = rng.integers(0, 7, 200).astype(float)
    thresholds, tps, fps = ranked_counts(labels, scores)
    assert np.all(np.diff(thresholds) < 0)
    for t, tp, fp in zip(thresholds, tps, fps):
        predicted = scores >= t
        assert (tp, fp) == ((predicted & labels).sum(), (predicted & ~labels).sum())


def random_maps(seed: int, n_images: int = 5, size: tuple[int, int] = (24, 32)):
    """Ground-truth masks (some images good, some with two regions) and score maps with many ties."""
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for i in range(n_images):
        mask = np.zeros(size, bool)
        if i % 3:  # every third image is good
            y, x = rng.integers(0, size[0] - 6), rng.integers(0, size[1] - 8)
            mask[y : y + rng.integers(2, 6), x : x + rng.integers(2, 8)] = True
            mask[-3:, :4] = True  # a second region
        masks.append(mask)
        maps.append(np.round(rng.random(size) * 0.8 + 0.5 * mask * rng.random(size), 1))  # 1 decimal: ties
    return masks, maps


@pytest.mark.parametrize("seed", range(3))
def test_pixel_ap_and_f1_max_match_sklearn_on_flattened_pixels(seed, tmp_path):

    masks, maps = random_maps(seed)
    labels = [int(m.any()) for m in masks]
    m = evaluate_anomaly(labels, [float(s.max()) for s in maps], masks, maps, out_dir=tmp_path)
    flat_gt = np.concatenate([x.ravel() for x in masks])
    flat_scores = np.concatenate([x.ravel() for x in maps])
    assert m["pixel_ap"] == pytest.approx(metrics.average_precision_score(flat_gt, flat_scores), abs=1e-12)
    ref_f1, ref_threshold = sklearn_f1_max(flat_gt, flat_scores)
    assert m["pixel_f1_max"] == pytest.approx(ref_f1, abs=1e-12)
    assert m["pixel_f1_threshold"] == ref_threshold
    assert m["pixel_auroc"] == pytest.approx(metrics.roc_auc_score(flat_gt, flat_scores), abs=1e-12)
    report = (tmp_path / "report.md").read_text()
    assert "pixel AP" in report and "pixel F1-max" in report


def test_pixel_metrics_undefined_without_defect_pixels():

    good = [np.zeros((8, 8), bool)] * 2
    m = evaluate_anomaly([0, 0], [0.1, 0.2], good, [np.full((8, 8), 0.3), np.full((8, 8), 0.4)])
    assert m["pixel_ap"] is None and m["pixel_f1_max"] is None and m["pixel_auroc"] is None


def decoded_score_maps(gt: dict, preds: list):
    """The definition, drawn pixel by pixel: the highest score of the masks covering a pixel (0
    elsewhere), and the union of every ground-truth mask."""
    masks, maps = [], []
    for img in sorted(gt["images"], key=lambda i: i["id"]):
        h, w = img["height"], img["width"]
        gt_mask = np.zeros((h, w), bool)
        for a in gt["annotations"]:
            if a["image_id"] == img["id"]:
                gt_mask |= mask_utils.decode(a["segmentation"]).astype(bool)
        score_map = np.zeros((h, w))
        for p in preds:
            if p["image_id"] == img["id"]:
                score_map = np.where(mask_utils.decode(p["segmentation"]).astype(bool), np.maximum(score_map, p["score"]), score_map)
        masks.append(gt_mask)
        maps.append(score_map)
    return masks, maps


@pytest.mark.parametrize("seed", [3, 4])
def test_masks_pixel_metrics_equal_the_drawn_score_maps(seed):

    gt, preds = make_coco_case(10, size=(40, 56), seed=seed, many_dets_image=False)
    ours = evaluate_masks(gt, preds, pixel_metrics=True, fpr_limit=0.3)
    masks, maps = decoded_score_maps(gt, preds)
    dense = evaluate_anomaly([int(m.any()) for m in masks], [float(s.max()) for s in maps], masks, maps)
    for key in ("pixel_auroc", "aupro", "pixel_ap", "pixel_f1_max", "pixel_f1_threshold"):
        assert ours[key] == pytest.approx(dense[key], abs=1e-9), key
    flat_gt = np.concatenate([m.ravel() for m in masks])
    flat_scores = np.concatenate([s.ravel() for s in maps])
    assert ours["pixel_ap"] == pytest.approx(metrics.average_precision_score(flat_gt, flat_scores), abs=1e-9)
    assert 0.5 < ours["pixel_auroc"] < 1 and 0 < ours["aupro"] < 1


def test_masks_pixel_metrics_only_for_scored_input(tmp_path):

    m = evaluate_masks([np.array([[1, 0]], bool)], [np.array([[1, 1]], bool)], pixel_metrics=True)
    assert m["pixel_ap"] is None and m["pixel_auroc"] is None


def test_masks_pixel_metrics_read_polygons_and_uncompressed_rle_too(tmp_path, capsys):

    image = {"id": 1, "file_name": "a.png", "height": 12, "width": 10}
    square = [[1.0, 1.0, 6.0, 1.0, 6.0, 5.0, 1.0, 5.0]]  # a polygon
    gt = {
        "images": [image, dict(image, id=2, file_name="b.png")],
        "categories": [{"id": 1, "name": "hole"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": square, "area": 20.0, "bbox": [1, 1, 5, 4], "iscrowd": 0}
        ],
    }
    blob = np.zeros((12, 10), np.uint8)
    blob[2:9, 3:8] = 1
    compressed = mask_utils.encode(np.asfortranarray(blob))
    # Uncompressed RLE: list counts, runs from the first pixel (column-major), background first.
    flat = blob.ravel(order="F")
    changes = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))  # run boundaries
    uncompressed = {"size": [12, 10], "counts": np.diff(np.r_[0, changes]).tolist()}
    preds = [
        {"image_id": 1, "category_id": 1, "score": 0.8, "segmentation": uncompressed},
        {"image_id": 2, "category_id": 1, "score": 0.3, "segmentation": dict(compressed, counts=compressed["counts"].decode())},
    ]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    argv = ["masks", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--pixel-metrics"]) == 0
    assert "pixel_ap" in capsys.readouterr().out
    ours = json.loads((tmp_path / "o" / "metrics.json").read_text())["masks"]
    gt_masks = [mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(square, 12, 10))).astype(bool), np.zeros((12, 10), bool)]
    maps = [blob * 0.8, blob * 0.3]
    dense = evaluate_anomaly([1, 0], [0.8, 0.3], gt_masks, maps)
    for key in ("pixel_auroc", "aupro", "pixel_ap", "pixel_f1_max"):
        assert ours[key] == pytest.approx(dense[key], abs=1e-9), key
    assert "pixel AP" in (tmp_path / "o" / "report.md").read_text()
    assert main([*argv, "--overwrite"]) == 0  # without the option: not computed
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["masks"]["pixel_ap"] is None
