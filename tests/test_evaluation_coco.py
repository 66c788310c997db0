"""COCO detection/segm evaluation: equal to pycocotools on the hard cases, and bad input caught."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from defectkit.core.errors import DefectkitError
from defectkit.core.rle import mask_to_rle
from defectkit.evaluation import evaluate_detection
from defectkit.evaluation.detection import STAT_NAMES, detection_confusion_matrix
from defectkit.evaluation.synthetic import make_coco_case


def pycocotools_stats(gt: dict, preds: list, iou_type: str, cat_ids=None) -> np.ndarray:
    """The reference: plain pycocotools on deep copies (it writes into the dicts)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, preds = copy.deepcopy(gt), copy.deepcopy(preds)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(preds)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


@pytest.fixture(scope="module")
def case():
    return make_coco_case(48, seed=7)


@pytest.fixture(scope="module")
def case_no_result_bbox():
    return make_coco_case(30, seed=11, result_bbox=False, many_dets_image=False)


def test_generated_case_holds_the_hard_cases(case):
    gt, preds = case
    gt_images = {a["image_id"] for a in gt["annotations"]}
    assert len(gt_images) < len(gt["images"])  # images without ground truth
    per_image = np.bincount([p["image_id"] for p in preds])
    assert per_image.max() > 100  # more than maxDets on one image
    scores = [p["score"] for p in preds]
    assert len(set(scores)) < len(scores) / 2  # plenty of exact ties
    assert 2 not in {p["category_id"] for p in preds}  # a class never detected
    assert 4 not in {a["category_id"] for a in gt["annotations"]}  # a class that never occurs ...
    assert 4 in {p["category_id"] for p in preds}  # ... but is predicted
    areas = np.array([a["area"] for a in gt["annotations"]])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any() and (areas >= 96**2).any()
    assert any(a["iscrowd"] for a in gt["annotations"])


@pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_stats_equal_pycocotools(case, iou_type, backend):
    gt, preds = case
    ours = evaluate_detection(gt, preds, iou_type, backend=backend)[iou_type]
    reference = pycocotools_stats(gt, preds, iou_type)
    np.testing.assert_allclose([ours[n] for n in STAT_NAMES], reference[:12], rtol=0, atol=1e-9)
    assert 0 < ours["AP"] < ours["AP50"] <= 1


def test_segm_results_without_bbox_equal_pycocotools(case_no_result_bbox):
    gt, preds = case_no_result_bbox
    ours = evaluate_detection(gt, preds, "segm")["segm"]
    np.testing.assert_allclose(
        [ours[n] for n in STAT_NAMES], pycocotools_stats(gt, preds, "segm")[:12], atol=1e-9
    )


def test_segm_area_from_result_bbox_quirk_is_followed(case):
    """pycocotools takes a segm result's area from its bbox when it has one; so do we."""
    gt, preds = case
    # Inflate every result box: the masks are unchanged, only the area ranges of results move.
    inflated = [dict(p, bbox=[p["bbox"][0], p["bbox"][1], p["bbox"][2] * 4, p["bbox"][3] * 4]) for p in preds]
    ours = evaluate_detection(gt, inflated, "segm")
    reference = pycocotools_stats(gt, inflated, "segm")
    np.testing.assert_allclose([ours["segm"][n] for n in STAT_NAMES], reference[:12], atol=1e-9)
    assert ours["segm"]["AP"] == pytest.approx(evaluate_detection(gt, preds, "segm")["segm"]["AP"], abs=1e-12)
    assert ours["segm"]["APs"] != evaluate_detection(gt, preds, "segm")["segm"]["APs"]
    assert any("takes its area" in q for q in ours["info"]["quirks"])


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_per_class_ap_equals_single_class_pycocotools(case, iou_type):
    gt, preds = case
    per_class = evaluate_detection(gt, preds, iou_type)[iou_type]["per_class"]
    assert list(per_class) == ["class1", "class2", "class3", "class4"]
    for name, values in per_class.items():
        cat_id = values["category_id"]
        ref = pycocotools_stats(gt, preds, iou_type, cat_ids=[cat_id])
        assert values["AP"] == pytest.approx(ref[0], abs=1e-9), name
        assert values["AP50"] == pytest.approx(ref[1], abs=1e-9), name
        assert values["AR100"] == pytest.approx(ref[8], abs=1e-9), name
    assert per_class["class2"]["AP"] == 0.0 and per_class["class2"]["n_pred"] == 0  # never detected
    assert per_class["class4"]["AP"] == -1.0 and per_class["class4"]["n_gt"] == 0  # never occurs


@pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])
def test_no_predictions_gives_zeros_not_a_crash(case, backend, tmp_path):
    gt, _ = case
    out = evaluate_detection(gt, [], "segm", backend=backend, out_dir=tmp_path / "r")
    stats = [out["segm"][n] for n in STAT_NAMES]
    assert all(s in (0.0, -1.0) for s in stats) and out["segm"]["AP"] == 0.0
    assert out["segm"]["per_class"]["class1"]["AP"] == 0.0
    assert (tmp_path / "r" / "report.md").is_file()


def test_ground_truth_without_info_and_inputs_not_mutated(case, tmp_path):
    gt, preds = case
    assert "info" not in gt
    gt_before, preds_before = json.dumps(gt), json.dumps(preds)
    evaluate_detection(gt, preds, "segm", confusion_matrix=True)
    assert json.dumps(gt) == gt_before and json.dumps(preds) == preds_before


def test_report_files_and_metrics_schema(case, tmp_path):
    gt, preds = case
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    out_dir = tmp_path / "eval"
    result = evaluate_detection(tmp_path / "gt.json", tmp_path / "pred.json", "bbox", out_dir=out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "confusion_matrix.png",
        "metrics.json",
        "pr_curves.png",
        "report.md",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    metrics = json.loads((out_dir / "metrics.json").read_text())
    for name in STAT_NAMES:
        assert isinstance(metrics["bbox"][name], float)
        assert metrics["bbox"][name] == pytest.approx(result["bbox"][name])
    assert set(metrics["bbox"]["per_class"]["class1"]) >= {"AP", "AP50"}
    cm = metrics["bbox"]["confusion_matrix"]
    assert cm["labels"][-1] == "background" and len(cm["matrix"]) == 5
    assert (out_dir / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"
    report = (out_dir / "report.md").read_text()
    assert "| AP50 |" in report and "![" in report and "pycocotools" in report


def test_confusion_matrix_hand_checked():
    box = lambda x: [x, 0, 10, 10]
    gt = {
        "images": [{"id": 1, "height": 50, "width": 200}, {"id": 2, "height": 50, "width": 200}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": box(0), "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": box(50), "area": 100, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": box(100), "area": 100, "iscrowd": 0},
        ],
    }
    preds = [
        {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": box(1)},  # a found as a
        {"image_id": 1, "category_id": 1, "score": 0.8, "bbox": box(0)},  # duplicate: background
        {"image_id": 1, "category_id": 1, "score": 0.7, "bbox": box(50)},  # b taken for a
        {"image_id": 1, "category_id": 2, "score": 0.1, "bbox": box(100)},  # below conf 0.25: ignored
        {"image_id": 2, "category_id": 2, "score": 0.6, "bbox": box(0)},  # image without objects
    ]
    matrix, cat_ids = detection_confusion_matrix(gt, preds, "bbox", 0.5, 0.25)
    assert cat_ids == [1, 2]
    #                      pred a  pred b  missed
    assert matrix.tolist() == [
        [1, 0, 0],  # true a
        [1, 0, 1],  # true b (one taken for a, one missed)
        [1, 1, 0],
    ]  # background (false detections)


def _tiny_gt():
    gt, preds = make_coco_case(4, seed=3, many_dets_image=False)
    return gt, preds


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda gt, p: p[0].update(image_id=999), "image ids not in"),
        (lambda gt, p: p[0].update(category_id=77), "category ids not in"),
        (lambda gt, p: [d.update(category_id=d["category_id"] - 1) for d in p], "shifted by one"),
        (lambda gt, p: gt["annotations"][0].update(id=0), "annotation id 0"),
        (lambda gt, p: gt["annotations"][0].pop("area"), "has no 'area'"),
        (lambda gt, p: gt["annotations"][1].pop("iscrowd"), "has no 'iscrowd'"),
        (
            lambda gt, p: p[0].update(segmentation=mask_to_rle(np.zeros((10, 12), bool))),
            "mask size 10x12 differs",
        ),
        (
            lambda gt, p: gt["annotations"][0].update(segmentation=mask_to_rle(np.zeros((9, 9), bool))),
            "differs",
        ),
        (lambda gt, p: p[0].pop("bbox"), "carry a 'bbox'"),
        (lambda gt, p: p[0].pop("score"), "score"),
        (lambda gt, p: gt.pop("categories"), "no 'categories'"),
    ],
)
def test_bad_input_is_caught_before_scoring(mutate, message):
    gt, preds = _tiny_gt()
    mutate(gt, preds)
    with pytest.raises(DefectkitError, match=message):
        evaluate_detection(gt, preds, "segm")


def test_errors_name_the_file(tmp_path):
    gt, preds = _tiny_gt()
    preds[0]["image_id"] = 12345
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    with pytest.raises(DefectkitError, match=r"pred\.json: predictions name image ids .* 12345"):
        evaluate_detection(tmp_path / "gt.json", tmp_path / "pred.json", "bbox")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DefectkitError, match=r"bad\.json: not valid JSON"):
        evaluate_detection(tmp_path / "bad.json", [], "bbox")
    with pytest.raises(DefectkitError, match="COCO dataset, not a COCO results list"):
        evaluate_detection(tmp_path / "gt.json", tmp_path / "gt.json", "bbox")


def test_cli_detection(tmp_path, capsys):
    from defectkit.evaluation.cli import main

    gt, preds = _tiny_gt()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    out = tmp_path / "out"
    args = [
        "detection",
        "--gt",
        str(tmp_path / "gt.json"),
        "--pred",
        str(tmp_path / "pred.json"),
        "--iou-type",
        "segm",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "AP50" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["segm"]["AP"] >= 0
    with pytest.raises(SystemExit) as exc:  # an existing report is kept unless --overwrite
        main(args)
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--backend", "pycocotools"]) == 0
    preds[0]["category_id"] = 99
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    with pytest.raises(SystemExit) as exc:
        main(args + ["--overwrite"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pred.json" in err and err.count("\n") == 1


def test_converted_sample_ground_truth_scores_perfectly_as_predictions(converted, tmp_path):
    """The contract with convert: its coco/<split>.json passes our checks, and predicting exactly
    the ground truth scores 1.0 for boxes and masks (APs etc. are -1 only where a range is empty)."""
    gt_path = converted / "coco" / "test.json"
    gt = json.loads(gt_path.read_text())
    preds = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "score": 1.0,
            "bbox": a["bbox"],
            "segmentation": a["segmentation"],
        }
        for a in gt["annotations"]
    ]
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    for iou_type in ("bbox", "segm"):
        out = evaluate_detection(gt_path, tmp_path / "pred.json", iou_type, out_dir=tmp_path / iou_type)[
            iou_type
        ]
        assert out["AP"] == 1.0 and out["AP50"] == 1.0 and out["AR100"] == 1.0
        assert all(v["AP"] in (1.0, -1.0) for v in out["per_class"].values())
        cm = np.asarray(out["confusion_matrix"]["matrix"])
        assert cm[-1].sum() == 0 and cm[:, -1].sum() == 0 and np.trace(cm) == len(preds)


def test_masks_stay_rle_no_dense_copy_in_memory():
    """Scoring masks (stats, per class, confusion matrix) never holds the masks decoded: the peak
    Python allocation stays far below what one dense bool copy of every mask would take."""
    import tracemalloc

    gt, preds = make_coco_case(40, size=(320, 320), seed=2, many_dets_image=False)
    dense_bytes = (len(gt["annotations"]) + len(preds)) * 320 * 320
    tracemalloc.start()
    try:
        evaluate_detection(gt, preds, "segm", confusion_matrix=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < dense_bytes / 10, (peak, dense_bytes)


def test_numpy_typed_predictions_score_like_plain_ones():
    """Predictors often hand over numpy scalars and arrays; they score exactly like plain JSON."""
    gt, preds = _tiny_gt()
    as_numpy = [
        dict(p, image_id=np.int64(p["image_id"]), category_id=np.int32(p["category_id"]),
             score=np.float64(p["score"]), bbox=np.asarray(p["bbox"]))
        for p in preds
    ]  # fmt: skip
    for iou_type in ("bbox", "segm"):
        a = evaluate_detection(gt, as_numpy, iou_type, confusion_matrix=True)[iou_type]
        b = evaluate_detection(gt, preds, iou_type, confusion_matrix=True)[iou_type]
        assert [a[n] for n in STAT_NAMES] == [b[n] for n in STAT_NAMES]
        assert a["confusion_matrix"] == b["confusion_matrix"]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_class_agnostic_equals_pycocotools_on_collapsed_categories(case, iou_type):
    """class_agnostic is pycocotools on the data with one category. (pycocotools' own useCats=0
    differs by 1e-4 here: it gathers detections class by class, so equal scores sort in another order.)"""
    gt, preds = case
    ours = evaluate_detection(gt, preds, iou_type, class_agnostic=True)
    assert ours["info"]["class_agnostic"] is True
    assert list(ours[iou_type]["per_class"]) == ["defect"]
    collapsed_gt = dict(gt, categories=[{"id": 1, "name": "defect"}])
    collapsed_gt["annotations"] = [dict(a, category_id=1) for a in gt["annotations"]]
    collapsed_preds = [dict(p, category_id=1) for p in preds]
    reference = pycocotools_stats(collapsed_gt, collapsed_preds, iou_type)
    np.testing.assert_allclose([ours[iou_type][n] for n in STAT_NAMES], reference[:12], rtol=0, atol=1e-9)
    per_class = evaluate_detection(gt, preds, iou_type)[iou_type]
    assert ours[iou_type]["AP50"] != per_class["AP50"]  # the collapse changes the numbers on this case


def test_class_agnostic_still_catches_unknown_categories_and_leaves_inputs(case):
    from defectkit.evaluation.coco_io import class_agnostic_ground_truth

    gt, preds = case
    before = copy.deepcopy(gt)
    agnostic = class_agnostic_ground_truth(gt)
    assert gt == before  # not changed in place
    assert {a["category_id"] for a in agnostic["annotations"]} == {1}
    assert agnostic["images"] == gt["images"] and len(agnostic["annotations"]) == len(gt["annotations"])
    shifted = [dict(p, category_id=p["category_id"] - 1) for p in preds]  # 0-based slip
    with pytest.raises(DefectkitError, match="shifted by one"):
        evaluate_detection(gt, shifted, "bbox", class_agnostic=True)


def test_cli_detection_class_agnostic(tmp_path, capsys):
    from defectkit.evaluation.cli import main

    gt, preds = _tiny_gt()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    args = ["detection", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"), "--out"]
    assert main([*args, str(tmp_path / "a"), "--class-agnostic"]) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["info"]["class_agnostic"] is True and list(metrics["bbox"]["per_class"]) == ["defect"]
    assert "Class-agnostic" in (tmp_path / "a" / "report.md").read_text()
