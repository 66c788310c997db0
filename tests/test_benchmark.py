"""``defectkit benchmark``: the rows the demo does not run (zero-shot and closed-set YOLO, YOLO-seg),
an interrupted run continued with ``--resume`` (finished rows loaded, the interrupted row's training
continued from its last.pt), and the checks that keep a resumed leaderboard comparable."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import defectkit.detect.train as detect_train
import defectkit.leaderboard.rows as rows_module
from defectkit.cli import main
from defectkit.leaderboard.rows import resolve_rows
from defectkit.leaderboard.scoring import accuracy_at, choose_threshold, image_level, rank_errors
from replay import number_differences, replay_row

ROWS = ["yolo-world-zs", "yolo-closed", "yolo-seg"]


def _argv(sample_root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "benchmark", "wood", "--root", str(sample_root), "--out", str(out), "--rows", ",".join(ROWS),
        "--device", "cpu", "--detector", "yolov8s-worldv2.yaml", "--closed-detector", "yolov8n.yaml",
        "--seg-detector", "yolov8n-seg.yaml", "--epochs", "2", "--imgsz", "64", "--batch", "8", "--gallery", "2",
        "--yolo-arg", "mosaic=0", "--quiet", *extra,
    ]  # fmt: skip


def _replace_row(mp: pytest.MonkeyPatch, name: str, run) -> None:
    mp.setitem(rows_module.ROWS, name, dataclasses.replace(rows_module.ROWS[name], run=run))


@pytest.fixture(scope="module")
def interrupted_then_resumed(sample_root, tmp_path_factory) -> dict:
    """A benchmark Ctrl-C'd after the first of two training epochs of its last row (YOLO-seg), then
    continued with --resume."""
    out = tmp_path_factory.mktemp("bench") / "run"
    state: dict = {"out": out, "resumed_epochs": []}
    real_train = detect_train.train

    def ctrl_c_after_first_epoch(data, model=None, **kw):
        if "yolo-seg" in str(data):

            def stop(trainer):  # runs after the epoch's last.pt is saved
                raise KeyboardInterrupt

            kw["callbacks"] = {"on_fit_epoch_end": [stop]}
        return real_train(data, model, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(detect_train, "train", ctrl_c_after_first_epoch)
        with pytest.raises(SystemExit) as exc:
            main(_argv(sample_root, out))
        state["interrupt_code"] = exc.value.code
    state["after_interrupt"] = {
        name: (out / "rows" / name / "result.json").stat().st_mtime_ns
        for name in ROWS
        if (out / "rows" / name / "result.json").is_file()
    }
    state["report_after_interrupt"] = (out / "report").exists()

    def must_not_run(ctx, row_dir):
        raise AssertionError(f"{row_dir.name} was finished and must not be redone")

    def count_epochs(data, model=None, **kw):
        state["resume_arg"] = kw.get("resume")
        kw["callbacks"] = {
            "on_train_epoch_start": [lambda trainer: state["resumed_epochs"].append(trainer.epoch)]
        }
        return real_train(data, model, **kw)

    with pytest.MonkeyPatch.context() as mp:
        for name in state["after_interrupt"]:
            _replace_row(mp, name, must_not_run)
        mp.setattr(detect_train, "train", count_epochs)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(_argv(sample_root, out, "--resume")) == 0
    state["printed"] = printed.getvalue()
    return state


def test_interrupted_benchmark_resumes_without_redoing_finished_rows(interrupted_then_resumed):
    s = interrupted_then_resumed
    out = s["out"]
    assert s["interrupt_code"] == 130 and not s["report_after_interrupt"]
    assert sorted(s["after_interrupt"]) == ["yolo-closed", "yolo-world-zs"]
    for name, mtime in s["after_interrupt"].items():
        assert (out / "rows" / name / "result.json").stat().st_mtime_ns == mtime
    # The interrupted row continued its own training from last.pt: only the second epoch ran again.
    assert Path(s["resume_arg"]) == out / "rows" / "yolo-seg" / "train" / "weights" / "last.pt"
    assert s["resumed_epochs"] == [1]
    board = json.loads((out / "report" / "leaderboard.json").read_text())
    assert list(board["rows"]) == ROWS
    assert len(board["run"]["commands"]) == 2 and board["run"]["commands"][1].endswith("--resume")
    for name in ROWS:
        assert name in s["printed"]


def test_benchmark_rows_score_their_own_task(interrupted_then_resumed):
    out = interrupted_then_resumed["out"]
    rows = json.loads((out / "report" / "leaderboard.json").read_text())["rows"]
    assert rows["yolo-world-zs"]["train_s"] == 0 and rows["yolo-world-zs"]["checkpoint"] is None
    assert rows["yolo-world-zs"]["notes"]  # random weights: says the numbers mean nothing
    assert rows["yolo-closed"]["task"] == "detection" and "box_AP" in rows["yolo-closed"]["metrics"]
    # --yolo-arg reached ultralytics' training settings and the recorded command.
    train_args = yaml.safe_load((out / "rows" / "yolo-closed" / "train" / "args.yaml").read_text())
    assert train_args["mosaic"] == 0 and rows["yolo-closed"]["command"].endswith("mosaic=0")
    seg = rows["yolo-seg"]
    assert seg["task"] == "segmentation" and {"mask_mIoU", "segm_AP"} <= set(seg["metrics"])
    # YOLO-seg masks are at the image's own size (retina masks), so they score against the RLE ground truth.
    preds = json.loads((out / seg["predictions"]["test"]).read_text())
    for p in preds[:20]:
        assert p["segmentation"]["size"] == [256, 256]
    html = (out / "report" / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 2 * len(ROWS) + 2


@pytest.mark.parametrize("row", ROWS)
def test_recorded_commands_rebuild_each_rows_metrics(interrupted_then_resumed, row, tmp_path):
    """run.json's commands for a row, run in order with the console scripts from a folder holding
    only the data, the cache and the row's checkpoints, rebuild its metrics.json files (to 1e-9);
    for yolo-seg, from the checkpoint of a training that was interrupted and resumed."""
    out = interrupted_then_resumed["out"]
    recorded = json.loads((out / "run.json").read_text())["rows"]
    assert list(recorded) == ROWS
    rebuilt = replay_row(out, row, tmp_path / "replay")
    # COCO AP per class and class-agnostic, plus the mask union for masks
    assert len(rebuilt) == (3 if row == "yolo-seg" else 2)
    for path, before, after in rebuilt:
        assert path.startswith(f"rows/{row}/")
        assert not number_differences(before, after), (path, number_differences(before, after)[:5])


def test_resume_refuses_other_settings(interrupted_then_resumed, sample_root, capsys):
    out = interrupted_then_resumed["out"]
    argv = _argv(sample_root, out, "--resume")
    argv[argv.index("--epochs") + 1] = "3"
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "this run used epochs=2, not 3" in capsys.readouterr().err


def test_unknown_row_is_named(sample_root, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "benchmark",
                "wood",
                "--root",
                str(sample_root),
                "--out",
                str(tmp_path / "r"),
                "--rows",
                "sam-gt,yolo-closed",
            ]
        )
    err = capsys.readouterr().err
    assert "--rows sam-gt: unknown row" in err and "sam-gt-ft" in err
    assert not (tmp_path / "r").exists()


def test_bad_training_settings_fail_before_any_work(sample_root, tmp_path, capsys):
    base = ["benchmark", "wood", "--root", str(sample_root), "--out", str(tmp_path / "r"), "--quiet"]
    for extra, message in (
        (["--yolo-arg", "learning_rate=3"], "'learning_rate' is not an ultralytics"),
        (["--sam-lr", "0"], "--sam-lr must be above 0"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([*base, *extra])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_rows_pull_in_what_they_need():
    assert resolve_rows(["classifier", "sam-det"]) == ["yolo-world-ft", "sam-det", "classifier"]


def test_threshold_and_rank_errors():
    labels, scores = np.array([0, 0, 1, 1, 1]), np.array([0.1, 0.45, 0.4, 0.8, 0.9])
    t = choose_threshold(labels, scores)
    assert accuracy_at(labels, scores, t) == 0.8  # one error is the best any threshold can do here
    # Scores that are not probabilities: the same decisions after any monotone rescaling.
    assert accuracy_at(labels, 100 * scores, choose_threshold(labels, 100 * scores)) == 0.8
    m = image_level(labels, scores, [0, 1], [0.3, 0.2])
    assert m["test_auroc"] == 0.0 and m["test_accuracy"] == 0.5
    # Every val image scored the same (an untrained detector's one box): the threshold is that very
    # score, so every image is called defective, the larger class; not "all good" by a rounding.
    same = 0.0024926685728132725
    m = image_level([0, 1, 1, 1, 1, 1], [same] * 6, [0, 1, 1], [same] * 3)
    assert m["val_call"] == "all defective" and m["threshold"] <= same
    assert m["val_accuracy"] == pytest.approx(5 / 6) and m["test_accuracy"] == pytest.approx(2 / 3)
    errors = rank_errors(labels, scores)
    assert errors.argmax() in (1, 2) and errors[3] == errors[4] == 0


def test_missing_data_fails_fast_and_leaves_no_run_folder(tmp_path, capsys):
    out = tmp_path / "runs" / "benchmark" / "wood"  # parents it made go too
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "benchmark",
                "wood",
                "--root",
                str(tmp_path / "nowhere"),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
    assert exc.value.code == 2
    assert f"{tmp_path / 'nowhere'}: not found" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # so the same command works once the data is there


def test_world_rows_without_embeddings_say_what_to_pass(sample_root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["benchmark", "wood", "--root", str(sample_root), "--out", str(out), "--rows", "yolo-world-zs"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--device", "cpu", "--quiet"])  # a .pt detector: CLIP embeddings, none offline
    assert exc.value.code == 2
    assert "--text-embeddings" in capsys.readouterr().err
    assert not out.exists()


def test_anomaly_rows_are_skipped_with_one_line_without_the_extra(monkeypatch):
    """Without anomalib, the anomaly rows drop out of a run with one line saying how to install it;
    the other rows stay."""
    import defectkit.leaderboard.rows_anomaly as rows_anomaly

    monkeypatch.setattr(rows_anomaly, "anomalib_available", lambda: False)
    kept, skipped = rows_module.runnable_rows(["classifier", "padim", "draem"])
    assert kept == ["classifier"]
    assert skipped == [f"skipping padim, draem: {rows_anomaly.MISSING_MESSAGE}"]
    assert 'pip install "defectkit[anomaly]"' in skipped[0]
