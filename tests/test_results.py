"""The result model (``defectkit.core.results``): sv.Detections in memory, COCO results on disk, one
writer and one reader with full float precision and one bbox rule; and no other module of the
package writing COCO results by hand."""

from __future__ import annotations

import ast
import doctest
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

import defectkit.core.results as results_module
from defectkit.core.errors import DefectkitError
from defectkit.core.results import (
    coco_to_detections,
    detections_to_coco,
    read_coco_results,
    results_to_detections,
    write_coco_results,
)
from defectkit.core.rle import rle_to_mask

REPO = Path(__file__).resolve().parents[1]


def _masked(n: int = 2, h: int = 12, w: int = 16) -> sv.Detections:
    masks = np.zeros((n, h, w), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 7:11, 1:2] = True  # one pixel wide: a thin scratch
    return sv.Detections(
        xyxy=np.array([[0.0, 0.0, 16.0, 12.0], [0.5, 6.5, 3.25, 11.75]]),  # prompt boxes, not the masks'
        mask=masks,
        confidence=np.array([1 / 3, 2.5e-7]),
        class_id=np.array([0, 4]),
    )


def test_doctests():
    assert doctest.testmod(results_module).failed == 0


def test_masks_round_trip_through_a_file_at_full_precision(tmp_path):
    dets = _masked()
    path = write_coco_results(tmp_path / "r.json", detections_to_coco(dets, image_id=9))
    entries = read_coco_results(path)
    assert [e["category_id"] for e in entries] == [1, 5]
    assert [e["score"] for e in entries] == [1 / 3, 2.5e-7]  # not rounded: tiny scores still rank
    # The one bbox rule: a detection with a mask gets the mask's exact pixel box, not its xyxy.
    assert [e["bbox"] for e in entries] == [[3.0, 2.0, 6.0, 3.0], [1.0, 7.0, 1.0, 4.0]]
    assert [e["area"] for e in entries] == [18, 4]
    back = coco_to_detections(entries)[9]
    assert np.array_equal(back.mask, dets.mask) and back.class_id.tolist() == [0, 4]
    assert back.confidence.tolist() == [1 / 3, 2.5e-7]
    for e, m in zip(entries, dets.mask):
        assert np.array_equal(rle_to_mask(e["segmentation"]), m)


def test_boxes_keep_their_coordinates_and_images_are_grouped():
    dets = sv.Detections(xyxy=np.array([[10.123456789, 20.5, 30.0, 60.25]]), confidence=np.array([0.7]),
                         class_id=np.array([1]))  # fmt: skip
    entries = detections_to_coco(dets, 3) + detections_to_coco(sv.Detections.empty(), 4)
    assert entries == [{"image_id": 3, "category_id": 2, "bbox": [10.123456789, 20.5, 30.0 - 10.123456789, 39.75],
                        "score": 0.7}]  # fmt: skip
    grouped = coco_to_detections(entries, image_ids=[4, 3])
    assert list(grouped) == [4, 3] and len(grouped[4]) == 0
    assert np.allclose(grouped[3].xyxy, dets.xyxy, rtol=0, atol=1e-12)
    assert len(coco_to_detections(entries, image_ids=[5])[5]) == 0  # results of other images are left out


def test_a_detection_without_confidence_scores_one():
    dets = sv.Detections(xyxy=np.array([[0.0, 0.0, 2.0, 2.0]]), class_id=np.array([0]))
    assert detections_to_coco(dets, 1)[0]["score"] == 1.0


def test_reading_bad_files_is_a_one_line_error(tmp_path):
    cases = {
        "not_json.json": ("{", "not a readable JSON file"),
        "a_dict.json": ('{"image_id": 1}', "not a COCO results list"),
        "no_bbox.json": ('[{"image_id": 1, "score": 0.5}]', "entry 0 is not a COCO result"),
        "bad_bbox.json": ('[{"image_id": 1, "bbox": [1, 2, 3]}]', "entry 0: bbox [1, 2, 3] is not [x, y, w, h]"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DefectkitError) as exc:
            read_coco_results(tmp_path / name)
        assert str(exc.value).startswith(f"{tmp_path / name}: ") and message in str(exc.value), name
    mixed = [{"image_id": 1, "bbox": [0, 0, 1, 1], "segmentation": detections_to_coco(_masked(), 1)[0]["segmentation"]},
             {"image_id": 1, "bbox": [0, 0, 1, 1]}]  # fmt: skip
    with pytest.raises(DefectkitError, match="some results have a segmentation, some not"):
        results_to_detections(mixed)
    assert results_to_detections(mixed, masks=False).mask is None


def _hand_built_results(path: Path) -> list[int]:
    """Lines of dict literals that look like COCO results (an ``image_id`` and a ``score``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        and {"image_id", "score"} <= {k.value for k in node.keys if isinstance(k, ast.Constant)}
    ]


# Made-up detections for the evaluator's own tests and benchmarks (perturbed ground truth), not a
# stage's predictions.
NOT_PREDICTIONS = {"evaluation/synthetic.py"}


def test_only_the_result_model_writes_coco_results(tmp_path):
    folders = ("defectkit", "convert", "detect", "segment", "classify", "evaluation")
    offenders = [
        f"{path.relative_to(REPO)}:{line}"
        for folder in folders
        for path in sorted((REPO / folder).rglob("*.py"))
        if path.relative_to(REPO).as_posix() not in NOT_PREDICTIONS | {"defectkit/core/results.py"}
        for line in _hand_built_results(path)
    ]
    assert not offenders, "COCO results built by hand (use defectkit.core.results):\n" + "\n".join(offenders)
    # The check itself finds one.
    probe = tmp_path / "probe.py"
    probe.write_text('out.append({"image_id": i, "category_id": c, "score": round(s, 6), "bbox": b})\n')
    assert _hand_built_results(probe) == [1]
