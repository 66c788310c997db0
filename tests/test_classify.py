"""classify: training learns, resume repeats an uninterrupted run, presets give the comparison table,
predictions are scored by the shared evaluator, bad input ends in one-line errors.

Everything runs on the converted bundled sample with small randomly initialised ResNet-18s at 32 px.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from defectkit.classify.cli import main
from defectkit.classify.train import TrainConfig, train

TINY = {"weights": "none", "arch": "resnet18", "image_size": 32, "eval_batch": 64, "decode_workers": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(converted) -> Path:
    return converted / "classify"


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, dict]:
    """A run that fits a 12-image subset (2 per class): the learning test and the scoring tests use it."""
    out = tmp_path_factory.mktemp("classify") / "run"
    cfg = TrainConfig(data=str(data), out=str(out), freeze="none", lr=3e-3, epochs=6, batch=12, limit_per_class=2,
                      select="acc", **TINY)  # fmt: skip
    summary = train(cfg, progress=False)
    return out, summary


def test_training_learns_a_subset(trained):
    out, summary = trained
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 7))
    # 6 classes: chance is 1/6. Fitting 12 images must get far above it.
    assert max(h["train_acc"] for h in history[-3:]) >= 0.75
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert set(history[-1]["val_recall"]) == set(summary["classes"])
    assert summary["classes"] == ["color", "combined", "good", "hole", "liquid", "scratch"]
    # Checkpoints are plain: weights_only loading works and carries what inference needs.
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(out / name, weights_only=True)
        assert ckpt["classes"] == summary["classes"] and ckpt["arch"] == "resnet18"
        assert ckpt["config"]["image_size"] == 32 and sum(ckpt["class_counts"]) == 12
    assert "optimizer" in torch.load(out / "last.pt", weights_only=True)
    assert (out / "curves.png").stat().st_size > 0


def test_end_of_training_test_report_matches_predictions(trained):
    out, summary = trained
    metrics = json.loads((out / "test" / "metrics.json").read_text())["classification"]
    records = json.loads((out / "test" / "predictions.json").read_text())
    assert len(records) == metrics["n_images"] > 0
    acc = sum(r["class"] == r["label"] for r in records) / len(records)
    assert metrics["accuracy"] == pytest.approx(acc) == pytest.approx(summary["test"]["accuracy"])
    assert (out / "test" / "confusion_matrix.png").is_file() and "recall" in (
        out / "test" / "report.md"
    ).read_text()


def test_val_cli_scores_with_the_evaluator(trained, data, tmp_path, capsys):
    out, _ = trained
    report = tmp_path / "val"
    assert (
        main(
            [
                "val",
                "--model",
                str(out / "best.pt"),
                "--data",
                str(data),
                "--split",
                "val",
                "--out",
                str(report),
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((report / "metrics.json").read_text())["classification"]
    rows = list(csv.DictReader((report / "predictions.csv").open()))
    assert len(rows) == metrics["n_images"]
    assert metrics["accuracy"] == pytest.approx(sum(r["class"] == r["label"] for r in rows) / len(rows))
    for r in rows:  # the image-level anomaly score
        assert float(r["defective"]) == pytest.approx(1 - float(r["p_good"]), abs=1e-5)
    assert (report / "confusion_matrix.png").is_file()
    printed = capsys.readouterr().out
    assert "balanced accuracy" in printed and "AUROC" in printed
    # good vs defect ranking by the defective score, from the evaluator
    ranking = json.loads((report / "defective.json").read_text())
    assert ranking["n_images"] == len(rows) and ranking["n_anomalous"] == sum(
        r["label"] != "good" for r in rows
    )


def test_predict_image_and_folder(trained, data, tmp_path, capsys):
    out, _ = trained
    image = next((data / "test" / "hole").iterdir())
    assert main(["predict", "--model", str(out / "best.pt"), "--source", str(image), "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out.strip())
    assert rec["file"] == str(image) and abs(sum(rec["probs"].values()) - 1) < 1e-4
    assert rec["class"] == max(rec["probs"], key=rec["probs"].get)
    assert rec["defective"] == pytest.approx(1 - rec["probs"]["good"], abs=1e-6)

    # A <class>/<image> folder: labels come from the layout and --report scores them.
    preds, report = tmp_path / "p.json", tmp_path / "report"
    assert main(["predict", "--model", str(out / "best.pt"), "--source", str(data / "test"), "--out", str(preds),
                 "--report", str(report), "--quiet"]) == 0  # fmt: skip
    records = json.loads(preds.read_text())
    assert len(records) == len(list((data / "test").rglob("*.png")))
    assert json.loads((report / "metrics.json").read_text())["classification"]["n_images"] == len(records)

    # Post-hoc logit adjustment uses the training prior stored in the checkpoint. Give "good" an
    # overwhelming prior: with tau = 5 it can no longer win, and tau = 0 changes nothing.
    plain = {r["file"]: r for r in records}
    ckpt = torch.load(out / "best.pt", weights_only=True)
    ckpt["class_counts"] = [1, 1, 10_000, 1, 1, 1]
    skewed = tmp_path / "skewed.pt"
    torch.save(ckpt, skewed)
    for tau, check in (
        ("0", lambda r: r["class"] == plain[r["file"]]["class"]),
        ("5", lambda r: r["class"] != "good"),
    ):
        adjusted = tmp_path / f"tau{tau}.json"
        assert main(["predict", "--model", str(skewed), "--source", str(data / "test"), "--out", str(adjusted),
                     "--posthoc-tau", tau, "--quiet"]) == 0  # fmt: skip
        assert all(check(r) for r in json.loads(adjusted.read_text()))


def _interrupt_after(monkeypatch, n_epochs: int) -> None:
    import defectkit.classify.train as train_module

    real = train_module.train_one_epoch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        if calls["n"] == n_epochs:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", flaky)


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(
    data, tmp_path, monkeypatch, capsys
):
    # Augmentation and the balanced sampler on: resume must repeat their random draws too.
    common = dict(
        freeze="layer4", epochs=2, batch=4, limit_per_class=1, augment=True, sampler="balanced", **TINY
    )
    straight = train(TrainConfig(data=str(data), out=str(tmp_path / "a"), **common), progress=False)
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(data=str(data), out=str(tmp_path / "b"), **common), progress=False)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 1
    assert "--resume" in _error(
        capsys, ["train", "--data", str(data), "--out", str(tmp_path / "b"), "--quiet"]
    )
    resumed = train(resume=tmp_path / "b" / "last.pt", progress=True)
    assert "resuming" in capsys.readouterr().out
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert b["epoch"] == 2 and [h["epoch"] for h in b["history"]] == [1, 2]
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"])


def test_experiments_write_the_comparison_table(data, tmp_path, capsys):
    from defectkit.classify.presets import PRESETS

    out = tmp_path / "exp"
    argv = ["experiments", "--data", str(data), "--out", str(out), "--epochs", "1", "--limit-per-class", "1",
            "--batch", "8", "--weights", "none", "--image-size", "32", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = (out / "report" / "report.md").read_text()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert report.startswith("# classify experiments on wood")
    header = next(line for line in report.splitlines() if line.startswith("| preset | epochs"))
    for column in ("train loss", "train acc", "val loss", "val acc", "best val", "test acc"):
        assert column in header
    assert header in printed  # the table is printed too, not only written
    for name in PRESETS:
        assert f"| {name} |" in report and f"| {name} |" in printed
        assert metrics[name]["epochs"] == 1 and 0.0 <= metrics[name]["test"]["accuracy"] <= 1.0
    assert metrics["sgd"]["best"] is not None and (out / "report" / "val_curves.png").is_file()
    # The presets really differ, and a command-line option (--epochs) applied to every one of them.
    configs = {name: torch.load(out / name / "last.pt", weights_only=True)["config"] for name in PRESETS}
    assert [c["optimizer"] for c in configs.values()] == ["adam", "adam", "adam", "sgd"]
    assert [c["freeze"] for c in configs.values()] == ["fc", "layer4", "fc", "fc"]
    assert [c["augment"] for c in configs.values()] == [False, False, True, False]
    assert all(c["scheduler"] == "cosine" and c["epochs"] == 1 for c in configs.values())
    # Again without --resume/--overwrite: refused before anything trains.
    assert "--resume" in _error(capsys, argv)
    # --resume on a finished comparison trains and scores nothing again and rewrites the same table.
    before = {name: (out / name / "summary.json").stat().st_mtime_ns for name in PRESETS}
    assert main([*argv, "--resume"]) == 0
    assert {name: (out / name / "summary.json").stat().st_mtime_ns for name in PRESETS} == before
    again = json.loads((out / "report" / "metrics.json").read_text())
    assert {k: v["test"]["accuracy"] for k, v in again.items()} == {
        k: v["test"]["accuracy"] for k, v in metrics.items()
    }


def test_presets_are_the_course_experiments():
    from defectkit.classify.presets import PRESETS

    def settings(name):
        c = TrainConfig(data="d", out="o", **PRESETS[name])
        return (c.weights, c.arch, c.optimizer, c.lr, c.momentum, c.weight_decay, c.scheduler, c.epochs,
                c.freeze, c.augment)  # fmt: skip

    baseline = ("imagenet", "resnet18", "adam", 1e-3, 0.9, 0.0, "cosine", 50, "fc", False)
    assert settings("baseline") == baseline
    assert settings("unfreeze-layer4") == baseline[:8] + ("layer4", False)
    assert settings("augment") == baseline[:9] + (True,)
    assert settings("sgd") == baseline[:2] + ("sgd", 0.01, 0.9, 1e-4) + baseline[6:]
    assert list(PRESETS) == ["baseline", "unfreeze-layer4", "augment", "sgd"]


# -- bad input -----------------------------------------------------------------------------------


def _folder(root: Path, split: str, cls: str, images: int, src: Path) -> None:
    (root / split / cls).mkdir(parents=True, exist_ok=True)
    for i in range(images):
        shutil.copy(src, root / split / cls / f"{i}.png")


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def png(data) -> Path:
    return next((data / "train" / "good").iterdir())


def test_bad_data_gives_one_line_errors(tmp_path, png, capsys):
    train_args = ["--weights", "none", "--epochs", "1", "--image-size", "32", "--quiet"]
    one = tmp_path / "one"
    _folder(one, "train", "good", 2, png)
    assert "only one class" in _error(
        capsys, ["train", "--data", str(one), "--out", str(tmp_path / "r1"), *train_args]
    )

    empty = tmp_path / "empty"
    _folder(empty, "train", "good", 2, png)
    (empty / "train" / "hole").mkdir()
    err = _error(capsys, ["train", "--data", str(empty), "--out", str(tmp_path / "r2"), *train_args])
    assert "empty class folder" in err and str(empty / "train" / "hole") in err

    broken = tmp_path / "broken"
    for cls in ("good", "hole"):
        _folder(broken, "train", cls, 2, png)
        _folder(broken, "val", cls, 1, png)
    (broken / "train" / "hole" / "bad.png").write_bytes(b"this is not a png")
    # With --overwrite, bad input must not cost the earlier run in --out.
    (tmp_path / "r3").mkdir()
    (tmp_path / "r3" / "history.json").write_text("[]")
    err = _error(
        capsys, ["train", "--data", str(broken), "--out", str(tmp_path / "r3"), "--overwrite", *train_args]
    )
    assert str(broken / "train" / "hole" / "bad.png") in err
    assert (tmp_path / "r3" / "history.json").read_text() == "[]"

    # A test class the model will not have fails before training, not after it.
    foreign = tmp_path / "foreign"
    for cls in ("good", "hole"):
        _folder(foreign, "train", cls, 2, png)
        _folder(foreign, "val", cls, 1, png)
    _folder(foreign, "test", "crack", 1, png)
    err = _error(capsys, ["train", "--data", str(foreign), "--out", str(tmp_path / "r4"), *train_args])
    assert "crack" in err and str(foreign / "test") in err and not (tmp_path / "r4" / "last.pt").exists()

    assert "no such folder" in _error(capsys, ["train", "--data", str(tmp_path / "nothing"), *train_args])


def test_tiny_category_with_empty_val_and_test_folders_from_convert(tmp_path, capsys):
    """convert-mvtec writes every class folder in every split; a defect type with 2 images gets no
    val/test image, and --test-frac 0 leaves test/ all empty. That trains (with a note); only an
    empty *train* class folder is the user's error."""
    from defectkit.convert import convert_category
    from defectkit.sample import write_category

    write_category(tmp_path / "mvtec", "tiny", size=(48, 48), n_train_good=3, n_test_good=3, n_per_defect=2,
                   defects=("hole", "scratch"))  # fmt: skip
    convert_category(
        tmp_path / "mvtec", "tiny", tmp_path / "conv", to=("classify",), test_frac=0.0, progress=False
    )
    data = tmp_path / "conv" / "tiny" / "classify"
    assert not any((data / "val" / "hole").iterdir()) and not any((data / "test").rglob("*.png"))

    args = ["--data", str(data), "--weights", "none", "--epochs", "1", "--image-size", "32", "--batch", "8"]
    assert main(["train", *args, "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert f"{data / 'val'} has no images of hole, scratch" in printed
    assert "not scored on a test split" in printed
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test"] is None and summary["classes"] == ["good", "hole", "scratch"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["val_recall"]["hole"] is None and history[0]["val_recall"]["good"] is not None
    assert not (tmp_path / "run" / "test").exists()

    (data / "train" / "crack").mkdir()
    err = _error(capsys, ["train", *args, "--out", str(tmp_path / "run2"), "--quiet"])
    assert "empty class folder" in err and str(data / "train" / "crack") in err


def test_checkpoint_class_mismatch_and_bad_checkpoints(trained, tmp_path, png, capsys):
    out, _ = trained
    other = tmp_path / "other"
    for cls in ("good", "crack", "dent"):
        _folder(other, "test", cls, 1, png)
    err = _error(
        capsys, ["val", "--model", str(out / "best.pt"), "--data", str(other), "--out", str(tmp_path / "v")]
    )
    assert "6 classes" in err and "3" in err
    assert "must end in .json or .csv" in _error(
        capsys,
        ["predict", "--model", str(out / "best.pt"), "--source", str(png), "--out", str(tmp_path / "p.txt")],
    )
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert "not a loadable checkpoint" in _error(
        capsys, ["predict", "--model", str(junk), "--source", str(png)]
    )


def test_weights_from_a_checkpoint_of_another_arch_fail_clearly(trained):
    from defectkit.classify.models import build_model
    from defectkit.core.errors import DefectkitError

    out, _ = trained
    with pytest.raises(DefectkitError, match="do not fit this architecture"):
        build_model("resnet50", 6, weights=str(out / "best.pt"))
    # Same architecture, other classes: the backbone loads, the head is new.
    model = build_model("resnet18", 3, weights=str(out / "best.pt"))
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], ckpt["model"]["layer1.0.conv1.weight"])
    assert model.fc.out_features == 3


def test_imagenet_weights_offline_fail_fast(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEFECTKIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached weights there
    err = _error(
        capsys,
        ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--weights", "imagenet", "--quiet"],
    )
    assert "resnet18-f37072fd.pth" in err and "DEFECTKIT_OFFLINE" in err and "--weights" in err


def test_help_explains_every_subcommand(capsys):
    for sub in ("train", "experiments", "val", "predict"):
        with pytest.raises(SystemExit) as exc:
            main([sub, "--help"])
        assert exc.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("--posthoc-tau", "--loss", "--sampler", "--freeze", "--resume", "effective number"):
        assert phrase in text


def test_long_tail_options_reach_the_training_config():
    from defectkit.classify.cli import build_parser, config_overrides
    from defectkit.classify.longtail import FocalLoss, LogitAdjustedLoss, build_loss

    cases = [
        (["--loss", "weighted-ce", "--beta", "0.99"], {"loss": "weighted-ce", "beta": 0.99}),
        (["--loss", "focal", "--focal-gamma", "1.5"], {"loss": "focal", "focal_gamma": 1.5}),
        (["--loss", "logit-adjusted", "--tau", "0.5"], {"loss": "logit-adjusted", "tau": 0.5}),
        (["--sampler", "balanced", "--loss", "ce"], {"sampler": "balanced", "loss": "ce"}),
    ]
    for argv, expected in cases:
        for command in ("train", "experiments"):
            args = build_parser().parse_args([command, "--data", "d", *argv])
            assert config_overrides(args) == expected
    cfg = TrainConfig(
        data="d", out="o", **config_overrides(build_parser().parse_args(["train", *cases[2][0]]))
    )
    criterion = build_loss(cfg.loss, [30, 10], beta=cfg.beta, gamma=cfg.focal_gamma, tau=cfg.tau)
    assert isinstance(criterion, LogitAdjustedLoss) and criterion.tau == 0.5
    assert isinstance(build_loss("focal", [3, 1], gamma=1.5), FocalLoss)
    assert (
        build_parser()
        .parse_args(["predict", "--model", "m", "--source", "s", "--posthoc-tau", "1"])
        .posthoc_tau
        == 1
    )
