"""Bootstrap confidence intervals: every weighted recomputation equals rerunning the evaluator on the
image set with the drawn images duplicated, and the intervals reach the evaluators, reports and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from defectkit.evaluation import bootstrap
from defectkit.evaluation import evaluate_anomaly, evaluate_classification, evaluate_detection, evaluate_masks
from defectkit.evaluation.bootstrap import (
    coco_ap_resampled,
    indistinguishable_from_chance,
    intervals_overlap,
    pixel_metrics_resampled,
    resample_weights,
    weighted_auroc,
)
from defectkit.evaluation.cli import main
from defectkit.evaluation.coco_io import load_ground_truth, load_predictions
from defectkit.evaluation.detection import STAT_NAMES, run_coco_eval
from defectkit.evaluation.pixels import dense_pixel_entries
from defectkit.evaluation.ranking import auroc, descending_runs
from defectkit.evaluation.synthetic import make_coco_case


def test_resamples_are_seeded_draws_of_every_image():
    w = resample_weights(40, 200, seed=3)
    assert w.shape == (200, 40) and (w.sum(axis=1) == 40).all() and w.min() >= 0
    assert (w == resample_weights(40, 200, seed=3)).all()
    assert not (w == resample_weights(40, 200, seed=4)).all()
    # Each image is drawn once per resample on average (multinomial with equal chances).
    assert abs(w.mean() - 1.0) < 1e-12 and 0.8 < w.var() < 1.2


def test_weighted_image_auroc_equals_rerun_on_duplicated_images():
    rng = np.random.default_rng(0)
    labels = rng.random(60) < 0.4
    scores = np.round(rng.random(60) + 0.3 * labels, 1)  # ties
    weights = resample_weights(60, 8, seed=1)
    resampled = weighted_auroc(labels, scores, weights)
    for row, w in zip(resampled, weights):
        assert row == pytest.approx(auroc(np.repeat(labels, w), np.repeat(scores, w)), abs=1e-12)
    assert weighted_auroc(labels, scores, np.ones((1, 60), np.int32))[0] == pytest.approx(auroc(labels, scores), abs=1e-12)


def _maps(seed: int, n: int = 6, size=(12, 14), levels: int = 8):
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for i in range(n):
        mask = np.zeros(size, bool)
        if i % 2:
            mask[2:6, 3:8] = True
            mask[9:11, 10:13] = True
        masks.append(mask)
        maps.append(np.round((rng.random(size) * 0.7 + 0.4 * mask) * levels) / levels)
    return masks, maps


def test_pixel_metrics_resampled_equal_rerun_on_duplicated_images():
    masks, maps = _maps(1)
    entries = dense_pixel_entries(masks, maps)
    weights = resample_weights(len(masks), 5, seed=2)
    resampled = pixel_metrics_resampled(entries, weights, fpr_limit=0.3)
    for b, w in enumerate(weights):
        dup_masks = [m for m, k in zip(masks, w) for _ in range(k)]
        dup_maps = [s for s, k in zip(maps, w) for _ in range(k)]
        rerun = evaluate_anomaly([int(m.any()) for m in dup_masks], [s.max() for s in dup_maps], dup_masks, dup_maps)
        for name, values in resampled.items():
            if rerun[name] is None:
                assert np.isnan(values[b]), name
            else:
                assert values[b] == pytest.approx(rerun[name], abs=1e-9), name


def test_pixel_metrics_histograms_exact_below_max_bins():
    masks, maps = _maps(3)  # 8 levels: few distinct scores
    entries = dense_pixel_entries(masks, maps)
    weights = resample_weights(len(masks), 2100, seed=5)  # many resamples: the histogram path
    resampled = pixel_metrics_resampled(entries, weights, 0.3)
    for b in (0, 1):
        w = weights[b]
        dup_masks = [m for m, k in zip(masks, w) for _ in range(k)]
        dup_maps = [s for s, k in zip(maps, w) for _ in range(k)]
        rerun = evaluate_anomaly([int(m.any()) for m in dup_masks], [s.max() for s in dup_maps], dup_masks, dup_maps)
        for name, values in resampled.items():
            assert values[b] == pytest.approx(rerun[name], abs=1e-9) if rerun[name] is not None else np.isnan(values[b])


def test_pixel_metrics_binned_above_max_bins_stay_close():
    masks, maps = _maps(2, levels=1000)  # ~1,000 distinct scores, 64 bins
    entries = dense_pixel_entries(masks, maps)
    exact = evaluate_anomaly([int(m.any()) for m in masks], [s.max() for s in maps], masks, maps)
    # Enough resamples (all of every image once) that the per-image histograms are used, not the
    # per-entry sums.
    binned = pixel_metrics_resampled(entries, np.ones((2100, len(masks)), np.int32), 0.3, max_bins=64)
    for name, values in binned.items():
        assert values[0] == pytest.approx(exact[name], abs=0.02), name
    assert binned["pixel_auroc"][0] != exact["pixel_auroc"]  # the binned path did run
    # Given the exact values, the resamples are shifted by what the bins do to the whole set: a
    # resample drawing every image once then gives the exact value.
    centred = pixel_metrics_resampled(entries, np.ones((2100, len(masks)), np.int32), 0.3, max_bins=64, values=exact)
    for name, values in centred.items():
        assert values[0] == pytest.approx(exact[name], abs=1e-12), name


@pytest.mark.parametrize("packed", [False, True], ids=["spread scores", "scores packed in one key step"])
def test_pixel_bins_cut_where_the_counts_say(packed):
    """The bins are about equal-count for positives and negatives alike, also where the scores sit
    closer together than the fine score key resolves (then cut on the sorted scores)."""
    from defectkit.evaluation.bootstrap import _score_bins

    rng = np.random.default_rng(0)
    scores = rng.random(40_000)
    if packed:  # 1e-7 apart around 1.0 (one float32 key step there is ~5e-4), and one 0 far below
        scores = np.r_[1.0 + scores[1:] * 1e-7, 0.0]
    positives = rng.random(scores.size) < 0.05
    order, run_ends = descending_runs(scores)
    bins = _score_bins(scores, [positives, ~positives], [np.flatnonzero(positives), None], 64, lambda: (order, run_ends))
    assert (np.diff(bins[order]) >= 0).all()  # bins follow the scores, highest first
    per_bin = np.bincount(bins, minlength=bins.max() + 1)
    assert 40 <= per_bin.size <= 64
    assert per_bin.max() <= 2.2 * scores.size / 32  # no bin much above a negatives' share


@pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_ap_with_all_weights_one_is_the_evaluators(iou_type, backend):
    gt, preds = make_coco_case(40, seed=5)
    gt_data, _ = load_ground_truth(gt, iou_type)
    pred_data, _ = load_predictions(preds, gt_data, iou_type)
    result = run_coco_eval(gt_data, pred_data, iou_type, backend, keep_matches=True)
    ones = coco_ap_resampled(result.matches, np.ones((1, len(gt_data["images"])), np.int32))
    for name in ("AP", "AP50", "AP75"):
        assert ones[name][0] == pytest.approx(result.stats[STAT_NAMES.index(name)], abs=1e-9), name


def _duplicated(gt: dict, preds: list, weights: np.ndarray) -> tuple[dict, list]:
    """The image set of one resample: image i copied weights[i] times (copies next to each other in
    id order), with its objects and detections."""
    images, annotations, results = [], [], []
    by_image = {}
    for p in preds:
        by_image.setdefault(p["image_id"], []).append(p)
    anns = {}
    for a in gt["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    for img, w in zip(sorted(gt["images"], key=lambda i: i["id"]), weights):
        for _ in range(w):
            new_id = len(images) + 1
            images.append(dict(img, id=new_id))
            for a in anns.get(img["id"], []):
                annotations.append(dict(a, id=len(annotations) + 1, image_id=new_id))
            results += [dict(p, image_id=new_id) for p in by_image.get(img["id"], [])]
    return dict(gt, images=images, annotations=annotations), results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_ap_resampled_equals_rerun_on_duplicated_images(iou_type):
    gt, preds = make_coco_case(24, seed=9, many_dets_image=False)
    # Distinct scores: the rerun orders one image's copies after each other, the weighted sums each
    # detection's copies; the two orders agree unless one image holds equally scored detections.
    preds = [dict(p, score=p["score"] + 1e-6 * i) for i, p in enumerate(preds)]
    gt_data, _ = load_ground_truth(gt, iou_type)
    pred_data, _ = load_predictions(preds, gt_data, iou_type)
    matches = run_coco_eval(gt_data, pred_data, iou_type, keep_matches=True).matches
    weights = resample_weights(len(gt["images"]), 4, seed=11)
    resampled = coco_ap_resampled(matches, weights)
    for b, w in enumerate(weights):
        dup_gt, dup_preds = _duplicated(gt, preds, w)
        rerun = evaluate_detection(dup_gt, dup_preds, iou_type)[iou_type]
        for name in ("AP", "AP50", "AP75"):
            assert resampled[name][b] == pytest.approx(rerun[name], abs=1e-9), (b, name)


def test_coco_ap_resampled_across_kernel_chunks_equals_rerun(monkeypatch):
    """Resamples on both sides of the compiled kernel's chunk boundary (``_KERNEL_ROWS``), on two
    threads, against the rerun; and the kernel run as plain Python gives the same numbers."""
    gt, preds = make_coco_case(16, seed=3, many_dets_image=False)
    preds = [dict(p, score=p["score"] + 1e-6 * i) for i, p in enumerate(preds)]
    gt_data, _ = load_ground_truth(gt, "bbox")
    pred_data, _ = load_predictions(preds, gt_data, "bbox")
    matches = run_coco_eval(gt_data, pred_data, "bbox", keep_matches=True).matches
    weights = resample_weights(len(gt["images"]), bootstrap._KERNEL_ROWS + 3, seed=2)
    monkeypatch.setattr(bootstrap, "usable_cores", lambda: 2)
    resampled = coco_ap_resampled(matches, weights)
    for b in (0, bootstrap._KERNEL_ROWS - 1, bootstrap._KERNEL_ROWS, bootstrap._KERNEL_ROWS + 2):
        rerun = evaluate_detection(*_duplicated(gt, preds, weights[b]), "bbox")["bbox"]
        for name in ("AP", "AP50", "AP75"):
            assert resampled[name][b] == pytest.approx(rerun[name], abs=1e-9), (b, name)
    monkeypatch.setattr(bootstrap, "_compiled_precision_sums", lambda: bootstrap._precision_sums)
    with np.errstate(invalid="ignore"):  # numpy scalars warn at 0 / 0; the compiled kernel does not
        plain = coco_ap_resampled(matches, weights[:5])
    for name in ("AP", "AP50", "AP75"):
        np.testing.assert_allclose(plain[name], resampled[name][:5], rtol=0, atol=1e-12)


def test_warm_up_loads_the_compiled_kernel():
    bootstrap.warm_up_compiled().join(timeout=120)
    assert bootstrap._COMPILED is not None and hasattr(bootstrap._COMPILED, "signatures")


def test_detection_intervals_in_metrics_report_and_cli(tmp_path, capsys):
    gt, preds = make_coco_case(30, seed=4)
    m = evaluate_detection(gt, preds, "bbox", bootstrap=300, seed=1, out_dir=tmp_path / "r")["bbox"]
    assert set(m["ci"]) == {"AP", "AP50", "AP75"}
    for name, ci in m["ci"].items():
        assert ci["value"] == m[name] and ci["ci_low"] <= m[name] <= ci["ci_high"] and ci["ci_low"] < ci["ci_high"]
    assert m["bootstrap"] == {"resamples": 300, "seed": 1, "confidence": 0.95, "unit": "test image"}
    again = evaluate_detection(gt, preds, "bbox", bootstrap=300, seed=1)["bbox"]["ci"]
    assert again == m["ci"]  # seeded
    assert "95% confidence intervals" in (tmp_path / "r" / "report.md").read_text()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    argv = ["detection", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")]
    assert main([*argv, "--out", str(tmp_path / "c"), "--bootstrap", "200"]) == 0
    assert "[" in capsys.readouterr().out  # intervals printed after the values
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["bbox"]["ci"]["AP50"]["ci_low"] is not None
    assert main([*argv, "--out", str(tmp_path / "d")]) == 0  # default: no bootstrap
    assert "ci" not in json.loads((tmp_path / "d" / "metrics.json").read_text())["bbox"]


def test_masks_classification_anomaly_intervals():
    gt, preds = make_coco_case(20, size=(40, 56), seed=6)
    masks = evaluate_masks(gt, preds, pixel_metrics=True, bootstrap=200)
    assert set(masks["ci"]) == {
        "mean_iou", "mean_dice", "mean_image_iou", "mean_image_dice", "pixel_auroc", "aupro", "pixel_ap", "pixel_f1_max",
    }  # fmt: skip
    for name, ci in masks["ci"].items():
        assert ci["value"] == masks[name] and ci["ci_low"] <= ci["value"] <= ci["ci_high"], name
    cls = evaluate_classification(["a", "b", "a", "b"] * 10, ["a", "b", "b", "b"] * 10, ["a", "b"], bootstrap=300)
    assert cls["ci"]["accuracy"]["ci_low"] < 0.75 < cls["ci"]["accuracy"]["ci_high"]
    assert cls["ci"]["balanced_accuracy"]["value"] == cls["balanced_accuracy"]
    assert "ci" not in evaluate_classification(["a"], ["a"], ["a"])


def test_chance_and_ties_from_intervals():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(30, int), np.ones(30, int)]
    at_chance = evaluate_anomaly(labels, rng.random(60), bootstrap=500)["ci"]["image_auroc"]
    good = evaluate_anomaly(labels, labels + rng.random(60) * 0.8, bootstrap=500)["ci"]["image_auroc"]
    assert indistinguishable_from_chance(at_chance) and not indistinguishable_from_chance(good)
    assert not intervals_overlap(at_chance, good)
    assert intervals_overlap(good, evaluate_anomaly(labels, labels + rng.random(60) * 0.85, bootstrap=500)["ci"]["image_auroc"])


def test_anomaly_pixel_intervals_from_the_overlapped_scoring_equal_the_plain_calls():
    """evaluate_anomaly scores the exact pixel metrics on a second thread while it resamples: the
    intervals equal the two calls made one after the other, and contain the exact values."""
    from defectkit.evaluation.bootstrap import percentile_interval
    from defectkit.evaluation.pixels import pixel_metrics

    masks, maps = _maps(4, n=40, size=(40, 60), levels=100_000)  # many distinct scores: binned path
    labels = [int(m.any()) for m in masks]
    scores = [s.max() for s in maps]
    out = evaluate_anomaly(labels, scores, masks, maps, bootstrap=300, seed=1)
    entries = dense_pixel_entries(masks, maps)
    exact, _ = pixel_metrics(entries, 0.3)
    resampled = pixel_metrics_resampled(entries, resample_weights(len(masks), 300, seed=1), 0.3, values=exact)
    for name, rows in resampled.items():
        assert out["ci"][name] == percentile_interval(exact[name], rows), name
        assert out["ci"][name]["ci_low"] <= out[name] <= out["ci"][name]["ci_high"], name
