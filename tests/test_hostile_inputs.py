"""Hostile inputs, in one list: each must end with ``error: <file>: <problem>`` and exit status 2 (no
traceback, no hang, nothing half-written), or with the right number.

Each case is one row of a parametrised table: ``(id, command builder)``. A builder gets a temporary
folder and the converted sample, writes the bad input, and returns the argv of a console script and
the text the one-line error must contain.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from defectkit.anomaly.cli import main as anomaly_main
from defectkit.classify.cli import main as classify_main
from defectkit.cli import main as defectkit_main
from defectkit.convert.cli import main as convert_main
from defectkit.core.imageio import read_mask, write_png
from defectkit.detect.cli import main as detect_main
from defectkit.evaluation import evaluate_detection
from defectkit.evaluation.cli import main as evaluate_main
from defectkit.segment.cli import main as segment_main

MAINS = {
    "anomaly": anomaly_main,
    "convert-mvtec": convert_main,
    "defectkit": defectkit_main,
    "detect": detect_main,
    "evaluate": evaluate_main,
    "classify": classify_main,
    "segment": segment_main,
}


def run_cli(capsys, command: str, *argv) -> tuple[int, str, str]:
    try:
        code = MAINS[command]([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------ inputs the cases are made of


def coco_gt(tmp: Path, *, bbox=(2.0, 2.0, 4.0, 4.0), area=16.0, size=(16, 16)) -> Path:
    """One image, one class, one box (and its mask): ground truth a perfect prediction scores 1.0 on."""
    h, w = size
    mask = np.zeros((h, w), np.uint8)
    mask[2:6, 2:6] = 1
    from defectkit.core.rle import mask_to_rle

    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
        "categories": [{"id": 1, "name": "hole"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": list(bbox), "area": area, "iscrowd": 0,
             "segmentation": mask_to_rle(mask)}
        ],
    }
    path = tmp / "gt.json"
    path.write_text(json.dumps(data))
    return path


def results(tmp: Path, **fields) -> Path:
    det = {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [2.0, 2.0, 4.0, 4.0]}
    det.update(fields)
    path = tmp / "pred.json"
    path.write_text(json.dumps([det]))
    return path


GARBAGE_RLE = {"size": [16, 16], "counts": "garbage!!"}
SHORT_RLE = {"size": [16, 16], "counts": "04"}  # 4 pixels of a 256-pixel image


def detection(tmp, gt, pred, iou="bbox", *extra):
    return ("evaluate", "detection", "--gt", gt, "--pred", pred, "--iou-type", iou, "--out", tmp / "eval", *extra)


# ------------------------------------------------------------------------------------- the cases

CASES = {
    # evaluate: COCO results and ground truth
    "garbage RLE in results, segm": lambda t, c: (
        detection(t, coco_gt(t), results(t, segmentation=GARBAGE_RLE), "segm"), "alphabet"),
    "garbage RLE in results, segm, pycocotools": lambda t, c: (
        detection(t, coco_gt(t), results(t, segmentation=GARBAGE_RLE), "segm", "--backend", "pycocotools"),
        "alphabet"),
    "garbage RLE in results, masks": lambda t, c: (
        ("evaluate", "masks", "--gt", coco_gt(t), "--pred", results(t, segmentation=GARBAGE_RLE),
         "--out", t / "eval"), "alphabet"),
    "RLE counts that do not cover the image": lambda t, c: (
        detection(t, coco_gt(t), results(t, segmentation=SHORT_RLE), "segm"), "add up to 4 pixels"),
    "ground-truth bbox with negative width": lambda t, c: (
        detection(t, coco_gt(t, bbox=(6.0, 2.0, -4.0, 4.0)), results(t)), "negative width"),
    "ground-truth area NaN": lambda t, c: (
        detection(t, coco_gt(t, area=float("nan")), results(t)), "'area'"),
    "prediction bbox NaN": lambda t, c: (
        detection(t, coco_gt(t), results(t, bbox=[float("nan"), 2.0, 4.0, 4.0])), "not finite"),
    "prediction bbox negative height": lambda t, c: (
        detection(t, coco_gt(t), results(t, bbox=[2.0, 2.0, 4.0, -4.0])), "negative width or height"),
    "classification CSV with a NaN probability": lambda t, c: (
        ("evaluate", "classification", "--input", write_text(
            t / "cls.csv", "true,pred,prob_good,prob_hole\ngood,good,nan,0.1\nhole,hole,0.2,0.8\n"),
         "--out", t / "eval"), "not a finite number"),
    "classification JSON whose labels are not classes": lambda t, c: (
        ("evaluate", "classification", "--input", write_text(
            t / "cls.json", json.dumps({"y_true": ["a"], "y_pred": ["b"], "class_names": ["a"]})),
         "--out", t / "eval"), "cls.json"),
    "anomaly --fpr-limit outside (0, 1]": lambda t, c: (
        ("evaluate", "anomaly", "--input", write_text(t / "scores.csv", "label,score\n0,0.1\n1,0.9\n"),
         "--fpr-limit", "0", "--out", t / "eval"), "fpr_limit must be in (0, 1]"),
    "masks --pixel-metrics --fpr-limit outside (0, 1]": lambda t, c: (
        ("evaluate", "masks", "--gt", coco_gt(t), "--pred", results(t), "--pixel-metrics", "--fpr-limit", "1.5",
         "--out", t / "eval"), "fpr_limit must be in (0, 1]"),
    "anomaly .npz holding an object array": lambda t, c: (
        ("evaluate", "anomaly", "--input", object_npz(t / "scores.npz"), "--out", t / "eval"), "scores.npz"),
    # checkpoints: any text file given as a model
    "text file as classify --model": lambda t, c: (
        ("classify", "val", "--model", write_text(t / "model.pt", "hello\n"), "--data", c / "classify",
         "--out", t / "val"), "not a loadable checkpoint"),
    "text file as segment --finetuned": lambda t, c: (
        ("segment", "predict", "--image", first_image(c), "--box", "1,1,20,20", "--model", "vit_tiny",
         "--finetuned", write_text(t / "best.pt", "hello\n"), "--out", t / "pred"), "best.pt"),
    "empty file as segment --checkpoint": lambda t, c: (
        ("segment", "predict", "--image", first_image(c), "--box", "1,1,20,20", "--model", "vit_tiny",
         "--checkpoint", write_text(t / "sam.pth", ""), "--out", t / "pred"), "empty"),
    "text file as detect --model": lambda t, c: (
        ("detect", "predict", "--model", write_text(t / "model.pt", "hello\n"), "--source", first_image(c),
         "--save-coco", t / "preds.json"), "model.pt: not a loadable YOLO checkpoint"),
    "text file as detect --text-embeddings": lambda t, c: (
        ("detect", "train", "--data", c / "yolo" / "data.yaml", "--model", "yolov8s-worldv2.yaml",
         "--text-embeddings", write_text(t / "emb.pt", "hello\n"), "--project", t / "runs"),
        "emb.pt: not a loadable text-embeddings file"),
    # detect predict: images ultralytics would open itself (OSError, or pi_heif for a text file)
    "detect predict on a truncated .png": lambda t, c: (
        ("detect", "predict", "--model", "yolov8n.yaml", "--source", truncated(first_image(c), t / "cut.png"),
         "--save-coco", t / "preds.json", "--quiet"), "cut.png"),
    "detect predict on a text file named .png": lambda t, c: (
        ("detect", "predict", "--model", "yolov8n.yaml", "--source", write_text(t / "notes.png", "hello\n"),
         "--save-coco", t / "preds.json", "--quiet"), "notes.png"),
    # segment: the SAM prompts convert-mvtec wrote, edited by hand
    "garbage RLE in sam/train.jsonl": lambda t, c: (
        ("segment", "train", "--data", edited_sam(t, c, mask={"size": None, "counts": "garbage!!"}),
         "--model", "vit_tiny", "--epochs", "1", "--out", t / "train"), "train.jsonl:1"),
    "sam/train.jsonl point outside the image": lambda t, c: (
        ("segment", "train", "--data", edited_sam(t, c, points=[[-40.0, 3.0]]), "--model", "vit_tiny",
         "--epochs", "1", "--out", t / "train"), "outside"),
    "segment predict --box nan,0,5,5": lambda t, c: (
        ("segment", "predict", "--image", first_image(c), "--box", "nan,0,5,5", "--model", "vit_tiny",
         "--out", t / "pred"), "not finite"),
    # classify: a resumed run keeps its own folder and options
    "classify train --resume A/last.pt --out B": lambda t, c: (
        ("classify", "train", "--resume", fake_last(t / "A"), "--out", t / "B"), "drop --out"),
    "classify train --resume with --epochs": lambda t, c: (
        ("classify", "train", "--resume", fake_last(t / "A"), "--epochs", "3"), "drop --epochs"),
    "detect train with a last batch of 1 image at a small size": lambda t, c: (
        ("detect", "train", "--data", c / "yolo" / "data.yaml", "--model", "yolov8n.yaml", "--epochs", "1",
         "--imgsz", "32", "--batch", str(len(list((c / "yolo" / "images" / "train").iterdir())) - 1),
         "--device", "cpu", "--project", t / "runs"), "last batch of 1 image"),
    # anomaly: the checks come before anomalib is imported (these rows run without the extra too)
    "anomaly train --model draem without --anomaly-source": lambda t, c: (
        ("anomaly", "train", "--data", c, "--model", "draem", "--out", t / "run"), "needs --anomaly-source"),
    "anomaly train --anomaly-source a folder with no image": lambda t, c: (
        ("anomaly", "train", "--data", c, "--model", "draem", "--anomaly-source", c / "coco", "--out", t / "run"),
        "no images in this folder"),
    "anomaly train --data a folder that was not converted": lambda t, c: (
        ("anomaly", "train", "--data", t, "--backbone-weights", "none", "--out", t / "run"), "split.json"),
    "text file as anomaly --backbone-weights": lambda t, c: (
        ("anomaly", "train", "--data", c, "--backbone-weights", write_text(t / "r18.pth", "hello\n"),
         "--out", t / "run"), "r18.pth: not a loadable resnet18 state dict"),
    "text file as anomaly val --model": lambda t, c: (
        ("anomaly", "val", "--model", write_text(t / "model.pt", "hello\n"), "--data", c, "--out", t / "val"),
        "model.pt: not a loadable anomaly model"),
    "anomaly predict --source that does not exist": lambda t, c: (
        ("anomaly", "predict", "--model", t / "run", "--source", t / "missing.png", "--out", t / "pred"),
        "missing.png: no such file or folder"),
    # output paths
    "convert-mvtec --out is a file": lambda t, c: (
        ("convert-mvtec", "wood", "--root", c.parent.parent / "sample", "--out",
         write_text(t / "out", "x"), "--quiet"), "is a file"),
    "defectkit sample --out is a file": lambda t, c: (
        ("defectkit", "sample", "--out", write_text(t / "out", "x")), "is a file"),
    "convert-mvtec --out on a read-only file system": lambda t, c: (
        ("convert-mvtec", "wood", "--root", c.parent.parent / "sample", "--out", "/proc/defectkit-out",
         "--quiet"), "/proc"),
    # split protocols: the error names the category folder
    "convert-mvtec --protocol fewshot:0": lambda t, c: (
        ("convert-mvtec", "wood", "--root", c.parent.parent / "sample", "--out", t / "out", "--protocol",
         "fewshot:0", "--quiet"), "wood: --protocol fewshot:0: K must be a positive integer"),
    "convert-mvtec --protocol fewshot:K with K over the defect images": lambda t, c: (
        ("convert-mvtec", "wood", "--root", c.parent.parent / "sample", "--out", t / "out", "--protocol",
         "fewshot:100000", "--quiet"), "wood: --protocol fewshot:100000: K=100000 is more than the"),
    "convert-mvtec --protocol no-such-protocol": lambda t, c: (
        ("convert-mvtec", "wood", "--root", c.parent.parent / "sample", "--out", t / "out", "--protocol",
         "no-such-protocol", "--quiet"), "unknown protocol (choose from defectkit, anomalydiffusion, fewshot:K)"),
    "convert-mvtec --protocol anomalydiffusion --test-frac 0.3": lambda t, c: (
        ("convert-mvtec", "wood", "--root", c.parent.parent / "sample", "--out", t / "out", "--protocol",
         "anomalydiffusion", "--test-frac", "0.3", "--quiet"), "fixes the test set"),
    # benchmark suites: shards, category lists, merges
    "defectkit benchmark --shard 3/2": lambda t, c: (
        (*_classifier_benchmark(t, c), "--shard", "3/2"), "--shard 3/2: i must be 1..n"),
    "defectkit benchmark --shard 0/2": lambda t, c: (
        (*_classifier_benchmark(t, c), "--shard", "0/2"), "--shard 0/2: i must be 1..n"),
    "defectkit benchmark --shard x": lambda t, c: (
        (*_classifier_benchmark(t, c), "--shard", "x"), "--shard x: expected i/n"),
    "defectkit benchmark with an unknown category in the list": lambda t, c: (
        ("defectkit", "benchmark", "wood,nosuch", "--root", c.parent.parent / "sample", "--out", t / "run",
         "--fast", "--rows", "classifier"), "nosuch: unknown category 'nosuch'"),
    "defectkit benchmark --repeats 0": lambda t, c: (
        (*_classifier_benchmark(t, c), "--repeats", "0"), "--repeats 0: must be at least 1"),
    "defectkit benchmark --shots 1,x": lambda t, c: (
        (*_classifier_benchmark(t, c), "--shots", "1,x"), "'x' is not a number of images"),
    "defectkit benchmark --shots with K over the defect images": lambda t, c: (
        ("defectkit", "benchmark", "wood", "--root", c.parent.parent / "sample", "--out", t / "suite", "--fast",
         "--rows", "classifier", "--shots", "100000", "--quiet"), "fewshot:100000: K=100000 is more than"),
    "defectkit benchmark merge of runs with different settings": lambda t, c: (
        ("defectkit", "benchmark", "merge", suite_json(t / "a", epochs=1), suite_json(t / "b", epochs=2), "--out",
         t / "merged"), "settings epochs=2, but"),
    # the sample writer
    "defectkit sample --size 0": lambda t, c: (("defectkit", "sample", "--out", t / "s", "--size", "0"), "16..4096"),
    "defectkit sample --size 100000": lambda t, c: (
        ("defectkit", "sample", "--out", t / "s", "--size", "100000"), "16..4096"),
    "defectkit sample --n-per-defect -1": lambda t, c: (
        ("defectkit", "sample", "--out", t / "s", "--n-per-defect", "-1"), "at least 1"),
}


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def truncated(image: Path, path: Path) -> Path:
    """The first half of ``image``'s bytes (a download or copy cut short)."""
    data = image.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def object_npz(path: Path) -> Path:
    np.savez(path, image_labels=np.array([0, 1]), image_scores=np.array([{"x": 1}, 2], dtype=object))
    return path


def edited_sam(tmp: Path, converted: Path, **instance_fields) -> Path:
    """A copy of the converted sam/ (and coco/ beside it) whose first instance in train.jsonl carries
    ``instance_fields`` (a ``size`` of None means the image's own size)."""
    data = tmp / "data"
    (data / "sam").mkdir(parents=True)
    shutil.copytree(converted / "coco", data / "coco")
    for src in (converted / "sam").iterdir():
        lines = src.read_text().splitlines()
        if src.name == "train.jsonl":
            record = json.loads(lines[0])
            for key, value in instance_fields.items():
                if isinstance(value, dict) and value.get("size", 0) is None:
                    value = dict(value, size=[record["height"], record["width"]])
                record["instances"][0][key] = value
                if key == "points":
                    record["instances"][0]["point_labels"] = [1] * len(value)
            lines[0] = json.dumps(record)
        (data / "sam" / src.name).write_text("\n".join(lines) + "\n")
    return data / "sam"


def fake_last(run: Path) -> Path:
    """A last.pt path (the option checks come before the file is read)."""
    run.mkdir(parents=True, exist_ok=True)
    return write_text(run / "last.pt", "")


def _classifier_benchmark(tmp: Path, category_dir: Path) -> tuple:
    """The start of a cheap ``defectkit benchmark`` on the sample (the classifier row, --fast) that
    the suite rows finish with the option under test."""
    root = category_dir.parent.parent / "sample"
    return ("defectkit", "benchmark", "wood", "--root", root, "--out", tmp / "run", "--fast", "--rows", "classifier")


def suite_json(folder: Path, **settings) -> Path:
    """A shard's folder holding only its suite.json (merge reads the settings before any result)."""
    folder.mkdir(parents=True)
    plan = {"categories": ["wood"], "protocols": ["defectkit"], "seeds": [0], "rows": ["classifier"], "shots": False}
    write_text(folder / "suite.json", json.dumps({"settings": settings, "plan": plan, "units": []}))
    return folder


def first_image(converted: Path) -> Path:
    return sorted((converted / "yolo" / "images" / "test").glob("*.png"))[0]


@pytest.fixture
def sample_converted(converted, sample_root, tmp_path) -> Path:
    """The converted sample, laid out as ``<tmp>/converted/wood`` beside ``<tmp>/sample`` (for --root)."""
    link_root = tmp_path / "data"
    (link_root / "converted").mkdir(parents=True)
    (link_root / "sample").symlink_to(sample_root)
    (link_root / "converted" / "wood").symlink_to(converted)
    return link_root / "converted" / "wood"


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_gets_one_line_error(case, capsys, tmp_path, sample_converted):
    work = tmp_path / "work"
    work.mkdir()
    (command, *argv), needle = CASES[case](work, sample_converted)
    before = sorted(p.name for p in work.iterdir())
    code, _, err = run_cli(capsys, command, *argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert sorted(p.name for p in work.iterdir()) == before, "a failed command left output behind"


# ------------------------------------------------------------------ cases that need more than argv


def test_garbage_rle_returns_quickly_instead_of_hanging(tmp_path):
    """pycocotools' merge() loops for minutes on garbage counts; the check refuses them first. The
    subprocess timeout only guards the suite against a hang (it is not a timing assertion)."""
    gt, pred = coco_gt(tmp_path), results(tmp_path, segmentation=GARBAGE_RLE)
    proc = subprocess.run(
        [sys.executable, "-m", "defectkit.evaluation", "masks", "--gt", str(gt), "--pred", str(pred),
         "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "alphabet" in proc.stderr


def test_a_perfect_prediction_scores_one(tmp_path):
    """The reference the refused boxes are about: the same ground truth, valid, scores AP 1."""
    out = evaluate_detection(coco_gt(tmp_path), results(tmp_path), iou_type="bbox")
    assert out["bbox"]["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "name, values, dtype, expected_pixels",
    [
        ("0/1 label mask, 8-bit", (0, 1), np.uint8, 4),
        ("0/1 label mask, 16-bit", (0, 1), np.uint16, 4),
        ("0/65535 mask, 16-bit", (0, 65535), np.uint16, 4),
        ("pure red RGB mask (grey 76)", (0, (255, 0, 0)), np.uint8, 4),
        ("0/255 mask", (0, 255), np.uint8, 4),
    ],
)
def test_masks_in_other_conventions_keep_their_defects(tmp_path, name, values, dtype, expected_pixels):
    background, defect = values
    colour = isinstance(defect, tuple)
    mask = np.zeros((8, 8, 3) if colour else (8, 8), dtype)
    mask[2:4, 2:4] = defect
    path = tmp_path / "m.png"
    if dtype == np.uint16:
        import cv2

        cv2.imwrite(str(path), mask)
    else:
        write_png(path, mask)
    assert int(read_mask(path).sum()) == expected_pixels, name


def _convert_argv(sample_root: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", "from defectkit.convert.cli import main; raise SystemExit(main())",
            "wood", "--root", str(sample_root), "--out", str(out), "--to", "all", "--quiet"]


def test_sigterm_leaves_nothing_and_a_rerun_cleans_what_kill_9_left(sample_root, tmp_path):
    out = tmp_path / "out"
    # SIGTERM mid-conversion: the handler unwinds, the temporary folder goes.
    proc = subprocess.Popen(_convert_argv(sample_root, out), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(".wood.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0:  # it was still running: it must have cleaned up after itself
        assert proc.returncode == 143 and "Traceback" not in err, err
        assert not list(out.glob(".wood.*")) and not (out / "wood").exists()
    # kill -9 cannot be handled: what it leaves is removed by the next run.
    stale = out / f".wood.tmp-{dead_pid()}-abcd"
    (stale / "yolo").mkdir(parents=True)
    done = subprocess.run(_convert_argv(sample_root, out) + ["--overwrite"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert not stale.exists() and (out / "wood" / "split.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["wood"]


def dead_pid() -> int:
    """A pid that belongs to no process (a child that has exited and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_overwrite_onto_a_file_leaves_no_old_copy(sample_root, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "wood").write_text("not a folder")
    code, _, err = run_cli(capsys, "convert-mvtec", "wood", "--root", sample_root, "--out", out, "--to", "coco",
                           "--overwrite", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["wood"] and (out / "wood").is_dir()



# ------------------------------------------------------------------ the benchmark's run folder


def _benchmark_argv(sample_root: Path, out: Path, *extra) -> list:
    return ["benchmark", "wood", "--root", sample_root, "--out", out, "--fast", "--rows", "classifier", "--quiet",
            *extra]


def _config_the_cli_makes(monkeypatch, capsys, argv) -> dict:
    """The BenchmarkConfig `defectkit benchmark` builds for ``argv``, as run.json stores it (not run)."""
    import defectkit.leaderboard as leaderboard

    seen = {}

    def capture(cfg):
        seen["cfg"] = cfg
        raise KeyboardInterrupt  # stop the CLI here: nothing runs, nothing is written

    with monkeypatch.context() as mp:
        mp.setattr(leaderboard, "run_benchmark", capture)
        run_cli(capsys, "defectkit", *argv)
    return seen["cfg"].to_dict()


@pytest.mark.parametrize("broken", ["run.json", "rows/classifier/result.json"])
def test_benchmark_resume_with_a_corrupt_json_is_a_one_line_error(broken, sample_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = _benchmark_argv(sample_root, out, "--resume")
    config = _config_the_cli_makes(monkeypatch, capsys, argv)
    (out / "rows" / "classifier").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"config": config}, default=str))
    (out / broken).write_text('{"config": {"root": ')  # cut off mid-write by hand
    code, _, err = run_cli(capsys, "defectkit", *argv)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert broken.split("/")[-1] in err and "not valid JSON" in err


def test_benchmark_with_a_bad_sam_checkpoint_writes_nothing(sample_root, tmp_path, capsys):
    out = tmp_path / "run"
    bad = write_text(tmp_path / "sam.pth", "not weights\n")
    argv = ["benchmark", "wood", "--root", sample_root, "--out", out, "--fast", "--rows", "sam-gt-base",
            "--sam-checkpoint", bad, "--quiet"]
    code, _, err = run_cli(capsys, "defectkit", *argv)
    assert code == 2 and "sam.pth" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
