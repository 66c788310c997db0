"""``defectkit demo``: the whole pipeline on the bundled sample, end to end, on the CPU (1 epoch at
64 px): every demo row in the leaderboard, a report.html that needs nothing but itself, and numbers
that are the shared evaluator's."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import defectkit.leaderboard as leaderboard
from defectkit.cli import DEMO_EPOCHS, DEMO_EPOCHS_BY_FAMILY, DEMO_IMGSZ, main
from defectkit.evaluation import evaluate_anomaly, evaluate_detection
from defectkit.leaderboard import DEMO_ROWS
from defectkit.leaderboard.report import threshold_label
from defectkit.leaderboard.rows import resolve_rows
from defectkit.leaderboard.scoring import accuracy_at, choose_threshold, image_level
from defectkit.segment.train import LR_RANDOM_INIT
from replay import number_differences, replay_row

# The demo's SAM is vit_tiny, random weights: its untuned-SAM row is sam-gt-random, never "base SAM".
DEMO_RUN_ROWS = resolve_rows(DEMO_ROWS, random_sam=True)

def _run_cli(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def demo(sample_root, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "run"
    printed = _run_cli(
        ["demo", "--root", str(sample_root), "--out", str(out), "--fast", "--quiet", "--gallery", "3"]
    )
    return out, printed


def _leaderboard(out: Path) -> dict:
    return json.loads((out / "report" / "leaderboard.json").read_text())


def test_demo_ends_with_the_report_path_and_a_row_per_approach(demo):
    out, printed = demo
    assert f"report: {out / 'report' / 'report.html'}" in printed
    table = printed.split("report:", 1)[1]
    # Under the table: what acc@thr must beat (the sample's test split is 5 defective, 1 good).
    footer = " ".join(table.split())
    assert "calling every test image defective already scores 0.833 (5 of 6 are defective)" in footer
    for name in DEMO_RUN_ROWS:
        assert re.search(rf"^{re.escape(name)}\s", table, re.MULTILINE), (
            f"{name} missing from the printed table"
        )
    rows = _leaderboard(out)["rows"]
    assert list(rows) == DEMO_RUN_ROWS and "sam-gt-random" in rows and "sam-gt-base" not in rows
    for name, r in rows.items():
        assert r["device"] == "cpu" and r["train_s"] >= 0 and r["infer_s_per_image"] > 0, name
        assert (out / r["predictions"]["test"]).is_file() and (out / r["predictions"]["val"]).is_file()
        if name.startswith("sam-gt"):
            assert r["image_level"] is None  # prompted by the truth: no fair image-level score
        else:
            il = r["image_level"]
            assert il["n_test"] == len(r["scores"]["test"]) and 0 <= il["test_accuracy"]["value"] <= 1
    # Trained rows really trained: their checkpoints exist and carry the sha256 the report shows.
    for name in ("yolo-world-ft", "sam-gt-ft", "classifier"):
        ck = rows[name]["checkpoint"]
        assert hashlib.sha256((out / ck["path"]).read_bytes()).hexdigest() == ck["sha256"]
    # No --sam-lr: segment train picks its rate for random-start SAM (1e-4 collapses it to empty masks).
    sam_last = torch.load(out / "rows" / "sam-gt-ft" / "train" / "last.pt", weights_only=True)
    assert sam_last["train_config"]["lr"] == LR_RANDOM_INIT and "--lr" not in rows["sam-gt-ft"]["command"]
    # sam-det prompts SAM with the fine-tuned decoder only when it beat base SAM on val.
    tuned = rows["sam-gt-ft"]
    assert tuned["beat_base"] == (out / "rows" / "sam-gt-ft" / "train" / "best.pt").is_file()
    assert rows["sam-det"]["checkpoint"] == (tuned["checkpoint"] if tuned["beat_base"] else None)
    assert any(n.startswith("SAM: ") for n in rows["sam-det"]["notes"])


def test_numbers_are_the_shared_evaluators(demo):
    out, _ = demo
    rows = _leaderboard(out)["rows"]
    test_gt = out / "data" / "wood" / "coco" / "test.json"
    coco = json.loads(test_gt.read_text())
    labels = [
        int(not im["file_name"].startswith("test/good/"))
        for im in sorted(coco["images"], key=lambda i: i["id"])
    ]
    for name in ("yolo-world-ft", "sam-det", "classifier"):
        r = rows[name]
        expected = evaluate_anomaly(labels, r["scores"]["test"])["image_auroc"]
        assert r["image_level"]["test_auroc"]["value"] == pytest.approx(expected), name
    for name, iou_type, key in (("yolo-world-ft", "bbox", "box_AP"), ("sam-gt-ft", "segm", "segm_AP")):
        preds = json.loads((out / rows[name]["predictions"]["test"]).read_text())
        assert rows[name]["metrics"][key]["value"] == pytest.approx(
            evaluate_detection(str(test_gt), preds, iou_type)[iou_type]["AP"]
        )
    # The classifier's defective score is 1 - p(good) of its own checkpoint's prediction.
    val = json.loads((out / rows["classifier"]["predictions"]["val"]).read_text())
    assert [p["defective"] for p in val] == pytest.approx(rows["classifier"]["scores"]["val"])


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.refs += [v for k, v in attrs if k in ("src", "href", "srcset", "data") and v]


def test_report_html_is_self_contained_and_md_links_exist(demo):
    out, _ = demo
    report = out / "report"
    parser = _Links()
    parser.feed((report / "report.html").read_text(encoding="utf-8"))
    parser.close()
    assert parser.refs, "no images in the report"
    for ref in parser.refs:
        assert ref.startswith("data:image/png;base64,"), f"external reference {ref[:60]}"
        assert base64.b64decode(ref.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        parser.tags.get("table", 0) >= 5
        and parser.tags.get("link", 0) == 0
        and parser.tags.get("script", 0) == 0
    )
    md = (report / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(linked) == len(parser.refs)
    for name in linked:
        assert (report / name).is_file(), name
    # PR curves, confusion matrices, the ROC of the common column and the 3 gallery images.
    assert sum(n.startswith("gallery_") for n in linked) == 3
    assert {"yolo-world-ft_pr_curves.png", "classifier_confusion_matrix.png", "roc_image_level.png"} <= set(
        linked
    )


def test_run_records_how_to_reproduce_it(demo):
    out, _ = demo
    run = json.loads((out / "run.json").read_text())
    assert run["command"].startswith("defectkit demo --root") and "--fast" in run["command"]
    assert {"python", "torch", "ultralytics", "defectkit", "segment-anything"} <= set(run["versions"])
    manifest = Path(run["split_manifest"]["path"])
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == run["split_manifest"]["sha256"]
    md = (out / "report" / "report.md").read_text()
    assert run["split_manifest"]["sha256"] in md and "detect train --data" in md and "classify train" in md
    # Our checkpoints load without pickle (ultralytics' own .pt files are pickled models, as it writes them).
    rows = _leaderboard(out)["rows"]
    for name in ("sam-gt-ft", "classifier"):
        assert isinstance(torch.load(out / rows[name]["checkpoint"]["path"], weights_only=True), dict)


@pytest.mark.parametrize("row", DEMO_RUN_ROWS)
def test_recorded_commands_rebuild_each_rows_metrics(demo, row, tmp_path):
    """``defectkit benchmark --fast`` (the demo's rows): each row's commands in run.json, run in
    order with the console scripts from a folder holding only the converted data, the embedding
    cache and the row's checkpoints, rebuild every number of its metrics.json files (to 1e-9)."""
    out, _ = demo
    run = json.loads((out / "run.json").read_text())
    assert list(run["rows"]) == DEMO_RUN_ROWS
    assert run["data"]["commands"][0][0] == "convert-mvtec"
    entry = run["rows"][row]
    assert all(argv[0] in ("detect", "segment", "classify", "anomaly", "evaluate") for argv in entry["commands"])
    for path, before, after in replay_row(out, row, tmp_path / "replay"):
        assert path.startswith(f"rows/{row}/")
        assert not number_differences(before, after), (path, number_differences(before, after)[:5])
    if row == "sam-det":  # the same code path as the stage: segment predict --detector, nothing else
        assert entry["commands"][0][:2] == ["segment", "predict"] and "--detector" in entry["commands"][0]


def test_existing_run_needs_resume_or_overwrite(demo, tmp_path, capsys):
    out, _ = demo
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--root", str(out.parent), "--out", str(out), "--fast", "--quiet"])
    assert exc.value.code == 2
    assert "pass --resume to continue it or --overwrite" in capsys.readouterr().err
    stranger = tmp_path / "mine"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        main(["demo", "--root", str(out.parent), "--out", str(stranger), "--overwrite", "--quiet"])
    assert "not a defectkit benchmark run folder" in capsys.readouterr().err
    assert (stranger / "notes.txt").read_text() == "keep me"


def test_demo_defaults_write_the_sample_and_stay_small(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(cfg):
        seen["cfg"] = cfg
        report = Path(cfg.out) / "report"
        report.mkdir(parents=True)
        (report / "leaderboard.txt").write_text("approach  task\n")
        return report

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(leaderboard, "run_benchmark", fake_run)  # the name the CLI imports when it runs
    assert main(["demo"]) == 0
    cfg = seen["cfg"]
    assert (tmp_path / "datasets" / "sample" / "wood" / "train" / "good").is_dir()
    assert cfg.rows == list(DEMO_ROWS) and cfg.device == "cpu" and cfg.sam_model == "vit_tiny"
    assert (cfg.protocol, cfg.bootstrap, cfg.test_frac) == ("defectkit", 1000, 0.2)
    assert (
        cfg.detector.endswith(".yaml")
        and cfg.text_embeddings == "random"
        and cfg.classifier_weights == "none"
    )
    assert (cfg.epochs, cfg.imgsz, cfg.sam_lr, cfg.yolo_args) == (DEMO_EPOCHS, DEMO_IMGSZ, None, [])
    # the time goes to the rows that learn: the random-start detector gets few epochs
    assert {f: cfg.epochs_for(f) for f in DEMO_EPOCHS_BY_FAMILY} == DEMO_EPOCHS_BY_FAMILY
    assert DEMO_EPOCHS_BY_FAMILY["detector"] < DEMO_EPOCHS_BY_FAMILY["sam"]
    assert "report: runs/demo/report/report.html" in capsys.readouterr().out
    main(["demo", "--out", "p", "--protocol", " fewshot:3", "--bootstrap", "0"])  # the split protocol, as convert reads it
    assert (seen["cfg"].protocol, seen["cfg"].bootstrap) == ("fewshot:3", 0)
    main(["demo", "--out", "y", "--epochs-sam", "7"])  # one family's own option leaves the others' defaults
    assert seen["cfg"].epochs_for("sam") == 7 and seen["cfg"].epochs_for("classifier") == DEMO_EPOCHS_BY_FAMILY["classifier"]
    # A real run swaps in real weights; a .pt detector reads the data set's embeddings file, not random ones.
    main(["demo", "--detector", "yolov8s-worldv2.pt", "--epochs", "2", "--device", "0", "--out", "x",
          "--sam-lr", "5e-5", "--yolo-arg", "mosaic=0"])  # fmt: skip
    assert seen["cfg"].text_embeddings is None and seen["cfg"].epochs == 2
    assert {seen["cfg"].epochs_for(f) for f in DEMO_EPOCHS_BY_FAMILY} == {2}  # --epochs sets every family
    assert seen["cfg"].sam_lr == 5e-5 and seen["cfg"].yolo_args == ["mosaic=0"]
    assert seen["cfg"].ultralytics_device == "0" and seen["cfg"].torch_device == "cuda:0"
    # benchmark: pretrained models at full size, and with --fast the demo's small random-start ones.
    main(["benchmark", "wood", "--out", "b"])
    real = seen["cfg"]
    assert (real.detector, real.sam_model, real.classifier_weights) == (
        "yolov8s-worldv2.pt",
        "vit_b",
        "imagenet",
    )
    assert (real.epochs, real.imgsz, real.sam_lr, real.text_embeddings) == (30, 640, None, None)
    assert {real.epochs_for(f) for f in DEMO_EPOCHS_BY_FAMILY} == {30}
    main(["benchmark", "wood", "--out", "b2", "--epochs-detector", "50"])
    assert seen["cfg"].epochs_for("detector") == 50 and seen["cfg"].epochs_for("sam") == 30
    main(["benchmark", "wood", "--out", "c", "--fast", "--closed-detector", "mine.pt"])
    fast = seen["cfg"]
    assert (fast.detector, fast.sam_model, fast.classifier_weights) == (
        "yolov8s-worldv2.yaml",
        "vit_tiny",
        "none",
    )
    assert (fast.closed_detector, fast.epochs, fast.imgsz, fast.sam_lr) == ("mine.pt", 1, 64, None)


def test_random_baselines_are_named_and_described_as_such(demo):
    """vit_tiny SAM and random text embeddings: no row calls them SAM or YOLO-World as released, in
    leaderboard.json and in both reports."""
    out, _ = demo
    rows = _leaderboard(out)["rows"]
    assert rows["sam-gt-random"]["title"] == "SAM (random weights), ground-truth boxes"
    assert rows["sam-gt-ft"]["title"] == "SAM (fine-tuned from random weights), ground-truth boxes"
    assert rows["yolo-world-ft"]["title"] == "YOLO-World, fine-tuned (random text embeddings)"
    assert any("beat that random decoder" in n for n in rows["sam-gt-ft"]["notes"])
    assert any("random text embeddings, not CLIP's" in n for n in rows["yolo-world-ft"]["notes"])
    assert any("vit_tiny with random weights" in n for n in rows["sam-det"]["notes"] + rows["sam-gt-ft"]["notes"])
    md = (out / "report" / "report.md").read_text()
    html = (out / "report" / "report.html").read_text()
    for text in (md, html):
        assert "random weights, not SAM as released" in text and "random text embeddings, not CLIP" in text
        assert "SAM as released (an official checkpoint)" not in text  # sam-gt-base's description


def test_image_level_threshold_comes_from_val(demo):
    out, _ = demo
    r = _leaderboard(out)["rows"]["classifier"]
    val = json.loads((out / "data" / "wood" / "coco" / "val.json").read_text())
    labels = np.array(
        [
            int(not im["file_name"].startswith("test/good/"))
            for im in sorted(val["images"], key=lambda i: i["id"])
        ]
    )
    threshold = choose_threshold(labels, np.array(r["scores"]["val"]))
    assert r["image_level"]["threshold"] == pytest.approx(threshold)
    assert r["image_level"]["val_accuracy"] == pytest.approx(
        accuracy_at(labels, np.array(r["scores"]["val"]), threshold)
    )


def test_a_threshold_that_separates_nothing_reads_as_such(demo):
    """A row whose val scores are all equal gets no negative or made-up threshold: the report says
    the call is 'all defective' (or good) instead, in the table and in the gallery."""
    level = image_level([0, 1, 1], [0.0, 0.0, 0.0], [0, 1], [0.0, 0.0])
    assert level["threshold"] >= 0 and level["val_call"] == "all defective" and level["test_accuracy"] == 0.5
    assert threshold_label(level) == "none: all defective"
    out, _ = demo
    rows = _leaderboard(out)["rows"]
    md = (out / "report" / "report.md").read_text()
    for name, r in rows.items():
        il = r["image_level"]
        if il is None:
            continue
        assert il["threshold"] >= min(r["scores"]["val"]), name
        if il["val_call"] != "split":
            assert f"none: {il['val_call']}" in md, name
