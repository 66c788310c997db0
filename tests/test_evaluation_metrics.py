"""Masks, anomaly, classification metrics and the Report builder: hand-checked small cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import write_png
from defectkit.evaluation import Report, evaluate_anomaly, evaluate_classification, evaluate_masks
from defectkit.evaluation.anomaly import aupro, pro_curve
from defectkit.evaluation.ranking import auroc, roc_curve, trapezoid_up_to


# -- masks ----------------------------------------------------------------------------------------
def _pair():
    gt = np.zeros((4, 6), bool)
    gt[1:3, 1:4] = True  # 6 pixels
    pred = np.zeros((4, 6), bool)
    pred[1:3, 2:5] = True  # 6 pixels, 4 shared
    return gt, pred


def test_mask_iou_dice_hand_checked():
    gt, pred = _pair()
    empty = np.zeros_like(gt)
    m = evaluate_masks([gt, empty, empty], [pred, empty, gt])
    first, both_empty, false_alarm = m["per_image"]
    # tp 4, fp 2, fn 2: IoU 4/8, Dice 8/12, precision = recall = 4/6
    assert first["iou"] == pytest.approx(0.5) and first["dice"] == pytest.approx(2 / 3)
    assert first["precision"] == pytest.approx(2 / 3) and first["recall"] == pytest.approx(2 / 3)
    assert both_empty["iou"] is None and both_empty["precision"] is None  # left out of means
    assert false_alarm["iou"] == 0.0 and false_alarm["precision"] == 0.0 and false_alarm["recall"] is None
    # pooled: tp 4, fp 2 + 6, fn 2 -> IoU 4/14, Dice 8/18
    assert m["per_class"]["defect"]["iou"] == pytest.approx(4 / 14)
    assert m["mean_iou"] == pytest.approx(4 / 14) and m["mean_dice"] == pytest.approx(8 / 18)
    assert m["pixel_precision"] == pytest.approx(4 / 12) and m["pixel_recall"] == pytest.approx(4 / 6)
    assert m["mean_image_iou"] == pytest.approx(0.25)  # mean of 0.5 and 0.0


def test_mask_label_maps_per_class():
    gt = np.array([[1, 1, 2, 2, 0]])
    pred = np.array([[1, 2, 2, 0, 0]])
    m = evaluate_masks([gt], [pred], class_names=["hole", "scratch"])
    assert m["per_class"]["hole"]["iou"] == pytest.approx(1 / 2)  # tp 1, fn 1
    assert m["per_class"]["scratch"]["iou"] == pytest.approx(1 / 3)  # tp 1, fp 1, fn 1
    assert m["mean_iou"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert m["per_image"][0]["tp"] == 2 and m["per_image"][0]["fp"] == 1 and m["per_image"][0]["fn"] == 2


def test_mask_folders_match_mvtec_names(tmp_path):
    gt, pred = _pair()
    write_png(tmp_path / "gt" / "hole" / "000_mask.png", gt)
    write_png(tmp_path / "gt" / "scratch" / "001_mask.png", gt)
    write_png(tmp_path / "pred" / "hole" / "000.png", pred)
    write_png(tmp_path / "pred" / "scratch" / "001.png", gt)
    m = evaluate_masks(tmp_path / "gt", tmp_path / "pred", out_dir=tmp_path / "rep")
    assert m["per_class"]["hole"]["iou"] == pytest.approx(0.5) and m["per_class"]["scratch"]["iou"] == 1.0
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["masks"]["mean_iou"] == pytest.approx(
        0.75
    )
    write_png(tmp_path / "gt" / "hole" / "002_mask.png", gt)
    with pytest.raises(DefectkitError, match="no prediction for 1 ground-truth mask"):
        evaluate_masks(tmp_path / "gt", tmp_path / "pred")
    m = evaluate_masks(tmp_path / "gt", tmp_path / "pred", allow_missing=True)
    assert m["per_class"]["hole"]["fn"] == 2 + 6
    write_png(tmp_path / "pred" / "hole" / "002.png", np.zeros((5, 5), bool))
    with pytest.raises(DefectkitError, match="002.png: mask is 5x5 but the ground truth"):
        evaluate_masks(tmp_path / "gt", tmp_path / "pred")
    # Flat folders through the CLI: --classes names their one class.
    from defectkit.evaluation.cli import main

    write_png(tmp_path / "flat_gt" / "000_mask.png", gt)
    write_png(tmp_path / "flat_pred" / "000.png", pred)
    main(["masks", "--gt", str(tmp_path / "flat_gt"), "--pred", str(tmp_path / "flat_pred"),
          "--classes", "crack", "--out", str(tmp_path / "flat")])  # fmt: skip
    flat = json.loads((tmp_path / "flat" / "metrics.json").read_text())["masks"]
    assert list(flat["per_class"]) == ["crack"] and flat["mean_iou"] == pytest.approx(0.5)


def test_mask_coco_rle_equals_dense_arrays():
    """COCO input (counted on RLEs, instances merged per class) agrees with the decoded masks."""
    from defectkit.evaluation.synthetic import make_coco_case

    gt, preds = make_coco_case(6, size=(64, 80), seed=5, many_dets_image=False, crowd=False)
    m = evaluate_masks(gt, preds, score_threshold=0.5)
    from defectkit.core.rle import rle_to_mask

    names = {c["id"]: c["name"] for c in gt["categories"]}
    for cat_id, name in names.items():
        tp = fp = fn = 0
        for img in gt["images"]:
            g = np.zeros((64, 80), bool)
            p = np.zeros((64, 80), bool)
            for a in gt["annotations"]:
                if a["image_id"] == img["id"] and a["category_id"] == cat_id:
                    g |= rle_to_mask(a["segmentation"])
            for d in preds:
                if d["image_id"] == img["id"] and d["category_id"] == cat_id and d["score"] >= 0.5:
                    p |= rle_to_mask(d["segmentation"])
            tp += int((g & p).sum())
            fp += int((p & ~g).sum())
            fn += int((g & ~p).sum())
        got = m["per_class"][name]
        assert (got["tp"], got["fp"], got["fn"]) == (tp, fp, fn), name


def test_mask_shape_mismatch_is_an_error():
    with pytest.raises(DefectkitError, match="mask 0"):
        evaluate_masks([np.zeros((3, 3), bool)], [np.zeros((3, 4), bool)])
    with pytest.raises(DefectkitError, match="2 ground-truth masks but 1"):
        evaluate_masks([np.zeros((3, 3), bool)] * 2, [np.zeros((3, 3), bool)])


# -- anomaly --------------------------------------------------------------------------------------
def test_auroc_hand_checked_with_ties():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs won 1+0, 1+1 -> 3/4
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
    assert auroc([0, 1, 0, 1], [0.2, 0.5, 0.5, 0.9]) == 0.875
    assert auroc([0, 1], [0.3, 0.3]) == 0.5
    assert auroc([1, 1], [0.1, 0.2]) is None


def test_auroc_equals_pairwise_count_on_random_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = rng.integers(0, 20, 300).astype(float)  # many ties
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (
        pos.size * neg.size
    )
    assert auroc(labels, scores) == pytest.approx(pairwise, abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, scores)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids (np.trapezoid needs numpy 2)
    assert area == pytest.approx(pairwise, abs=1e-12)  # the curve agrees


def test_trapezoid_interpolates_the_limit():
    assert trapezoid_up_to(np.array([0, 0.2, 0.6]), np.array([0.0, 1.0, 1.0]), 0.4) == pytest.approx(
        0.1 + 0.2
    )


def _brute_force_aupro(masks, maps, limit):
    """Independent definition: sweep every threshold, PRO = mean region overlap, FPR over ok pixels."""
    import cv2

    regions = []
    for i, m in enumerate(masks):
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        regions += [(i, lab == k) for k in range(1, n)]
    ok = np.concatenate([~m.ravel() for m in masks])
    flat = np.concatenate([s.ravel() for s in maps])
    points = [(0.0, 0.0)]
    for t in np.unique(flat)[::-1]:
        fpr = (flat[ok] >= t).sum() / ok.sum()
        pro = np.mean([(maps[i][r] >= t).mean() for i, r in regions])
        points.append((fpr, pro))
    points.append((1.0, 1.0))
    x, y = np.array(points).T
    return trapezoid_up_to(x, y, limit) / limit


def test_aupro_hand_checked():
    # One region of 2 pixels, 2 ok pixels. Scores: region 0.9 and 0.2, ok pixels 0.3 and 0.1.
    gt = [np.array([[0, 1, 1, 0]], bool)]
    maps = [np.array([[0.1, 0.9, 0.2, 0.3]])]
    # Curve: (0,0) -> (0,0.5) at 0.9 -> (0.5,0.5) at 0.3 -> (0.5,1) at 0.2 -> (1,1).
    # Up to FPR 0.3: PRO is 0.5 on [0, 0.3] -> area 0.15, normalised 0.5.
    assert aupro(gt, maps, 0.3) == pytest.approx(0.5)
    # Up to FPR 1: 0.5*0.5 + 1*0.5 = 0.75
    assert aupro(gt, maps, 1.0) == pytest.approx(0.75)
    assert aupro(gt, [np.array([[0.1, 0.9, 0.8, 0.3]])]) == 1.0


def test_aupro_equals_brute_force_with_several_regions():
    rng = np.random.default_rng(1)
    masks, maps = [], []
    for i in range(4):
        m = np.zeros((24, 24), bool)
        if i:
            m[2:6, 3:9] = True
            m[15:22, 14:16] = True  # two regions of different sizes per image
        masks.append(m)
        maps.append(np.round(rng.random((24, 24)) + 0.6 * m, 2))  # rounded: ties
    for limit in (0.3, 0.05, 1.0):
        assert aupro(masks, maps, limit) == pytest.approx(_brute_force_aupro(masks, maps, limit), abs=1e-9)
    fpr, pro = pro_curve(masks, maps)
    assert fpr[0] == 0 and fpr[-1] == 1 and np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)


def test_evaluate_anomaly_and_report(tmp_path):
    gt = [np.zeros((8, 8), bool), np.zeros((8, 8), bool)]
    gt[1][2:4, 2:4] = True
    maps = [np.full((8, 8), 0.1), np.where(gt[1], 0.9, 0.2)]
    m = evaluate_anomaly([0, 1], [0.2, 0.7], gt, maps, out_dir=tmp_path / "a")
    assert m["image_auroc"] == 1.0 and m["pixel_auroc"] == 1.0 and m["aupro"] == 1.0 and m["n_regions"] == 1
    assert (tmp_path / "a" / "roc_curves.png").is_file()
    assert evaluate_anomaly([0, 0], [0.1, 0.2])["image_auroc"] is None
    with pytest.raises(DefectkitError, match="score map is 8x9"):
        evaluate_anomaly([0, 1], [0.2, 0.7], gt, [maps[0], np.zeros((8, 9))])
    with pytest.raises(DefectkitError, match="0 \\(good\\) or 1"):
        evaluate_anomaly([0, 2], [0.2, 0.7])


def test_cli_anomaly_npz_and_csv(tmp_path, capsys):
    from defectkit.evaluation.cli import main

    gt = np.zeros((3, 6, 6), bool)
    gt[2, 1:3, 1:3] = True
    np.savez(
        tmp_path / "s.npz",
        image_labels=np.array([0, 0, 1]),
        image_scores=np.array([0.1, 0.5, 0.4]),
        gt_masks=gt,
        score_maps=gt * 0.8 + 0.1,
    )
    assert main(["anomaly", "--input", str(tmp_path / "s.npz"), "--out", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())["anomaly"]
    assert metrics["image_auroc"] == 0.5 and metrics["aupro"] == 1.0
    (tmp_path / "s.csv").write_text("image,label,score\na.png,good,0.1\nb.png,hole,0.9\nc.png,0,0.3\n")
    assert main(["anomaly", "--input", str(tmp_path / "s.csv"), "--out", str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "metrics.json").read_text())["anomaly"]["image_auroc"] == 1.0


# -- classification -------------------------------------------------------------------------------
def test_classification_hand_checked(tmp_path):
    names = ["good", "hole", "scratch"]
    y_true = ["good", "good", "hole", "hole", "hole", "scratch"]
    y_pred = ["good", "hole", "hole", "hole", "good", "hole"]
    m = evaluate_classification(y_true, y_pred, names, out_dir=tmp_path / "c")
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 1, 0]]
    assert m["per_class"]["hole"] == pytest.approx(
        {"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3}
    )
    assert m["per_class"]["scratch"]["precision"] is None and m["per_class"]["scratch"]["f1"] == 0.0
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert (tmp_path / "c" / "confusion_matrix.png").is_file()
    with pytest.raises(DefectkitError, match="'crack' is not one of the classes"):
        evaluate_classification(["crack"], ["good"], names)


def test_classification_probs_and_cli_csv(tmp_path):
    from defectkit.evaluation.cli import main

    (tmp_path / "p.csv").write_text(
        "image,true,pred,prob_good,prob_hole\n"
        "a,good,good,0.9,0.1\nb,hole,hole,0.2,0.8\nc,hole,good,0.6,0.4\nd,good,good,0.7,0.3\n"
    )
    assert main(["classification", "--input", str(tmp_path / "p.csv"), "--out", str(tmp_path / "o")]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())["classification"]
    assert m["accuracy"] == 0.75 and m["class_names"] == ["good", "hole"]
    assert m["per_class"]["hole"]["auroc"] == 1.0  # 0.8, 0.4 vs 0.1, 0.3
    (tmp_path / "p.json").write_text(
        json.dumps({"class_names": ["a", "b"], "y_true": [0, 1], "y_pred": [1, 1]})
    )
    assert main(["classification", "--input", str(tmp_path / "p.json"), "--out", str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "metrics.json").read_text())["classification"]["accuracy"] == 0.5


# -- report ---------------------------------------------------------------------------------------
def test_report_writes_everything_atomically(tmp_path):
    from defectkit.evaluation.plots import new_figure

    fig = new_figure()
    fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
    r = (
        Report("demo")
        .add_text("hello")
        .add_table(["a", "b"], [["x", 0.123456], ["y", None]])
        .add_image("curve", fig, "a line")
        .add_metrics("m", {"v": np.float32(0.5), "n": float("nan")})
    )
    out = r.write(tmp_path / "rep")
    md = (out / "report.md").read_text()
    assert (
        md.startswith("# demo")
        and "| x | 0.1235 |" in md
        and "| y | n/a |" in md
        and "![a line](curve.png)" in md
    )
    assert json.loads((out / "metrics.json").read_text()) == {"m": {"v": 0.5, "n": None}}
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    # a failing write leaves the previous report untouched
    bad = Report("broken").add_metrics("m", {"v": 1})
    bad.images["x.png"] = None  # not bytes: writing fails midway
    with pytest.raises(TypeError):
        bad.write(tmp_path / "rep")
    assert (tmp_path / "rep" / "report.md").read_text() == md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]
    with pytest.raises(DefectkitError, match="already exists"):
        r.write(tmp_path / "rep", overwrite=False)
