"""detect: train (YOLOv8 and YOLO-World, random start), predict, val, export and the input checks.

All offline on the CPU: tiny image size, one epoch, random weights and random text embeddings, so
the tests check the pipeline and its files, not the scores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from defectkit.core.errors import DefectkitError
from defectkit.detect import _ultralytics as ul
from defectkit.detect import embeddings as emb
from defectkit.detect import predict_images
from defectkit.detect.cli import main
from defectkit.detect.data import load_data

REPO = Path(__file__).resolve().parents[1]

CLASSES = ["color", "combined", "hole", "liquid", "scratch"]
FAST = ["workers=0", "plots=False", "warmup_epochs=0", "val=True"]


def _cli_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def data_yaml(converted) -> Path:
    return converted / "yolo" / "data.yaml"


@pytest.fixture(scope="module")
def yolov8_run(data_yaml, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("runs")
    main(
        [
            "train",
            "--data",
            str(data_yaml),
            "--model",
            "yolov8n.yaml",
            "--epochs",
            "1",
            "--imgsz",
            "64",
            "--batch",
            "8",
            "--device",
            "cpu",
            "--project",
            str(project),
            "--name",
            "v8",
            *FAST,
        ]
    )
    return project / "v8"


class _Crash(Exception):
    """Raised from a callback: the machine went down right after a checkpoint was written."""


def _crash(trainer):
    raise _Crash


@pytest.fixture(scope="module")
def world_run(data_yaml, tmp_path_factory) -> Path:
    """YOLO-World from a random start, 2 epochs: killed after epoch 1's checkpoint, then `detect train --resume`."""
    from defectkit.detect.train import train

    project = tmp_path_factory.mktemp("runs")
    args = {
        "epochs": 2,
        "imgsz": 64,
        "batch": 8,
        "device": "cpu",
        "project": project,
        "name": "world",
        "seed": 3,
    }
    with pytest.raises(_Crash):
        train(
            data_yaml,
            "yolov8s-worldv2.yaml",
            prompts="hole=a hole in wood",
            text_embeddings="random",
            callbacks={"on_model_save": [_crash]},
            workers=0,
            plots=False,
            warmup_epochs=0,
            **args,
        )
    run = project / "world"
    assert _ultralytics_ckpt(run / "weights" / "last.pt")["epoch"] == 0  # epoch 1 done, optimizer state kept
    assert (run / "text_embeddings.pt").is_file()  # saved as training starts, so resume finds it
    main(["train", "--project", str(project), "--name", "world", "--resume"])
    return run


def _ultralytics_ckpt(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)  # ultralytics' .pt: a pickled model


def test_yolov8_train_checkpoint_carries_class_names(yolov8_run):
    for name in ("best.pt", "last.pt"):
        model = _ultralytics_ckpt(yolov8_run / "weights" / name)["model"]
        assert list(model.names.values()) == CLASSES
    assert (yolov8_run / "results.csv").is_file()


def test_world_train_uses_the_embeddings_file_not_clip(world_run):
    # `clip` is not installed here, so reaching CLIP anywhere would have failed the run.
    used = emb.load(world_run / "text_embeddings.pt")  # weights_only=True inside
    assert used.names == CLASSES and used.prompts[2] == "a hole in wood" and used.model == "random"
    expected = emb.random_embeddings(CLASSES, seed=3).embeddings
    assert torch.equal(used.embeddings, expected)
    model = _ultralytics_ckpt(world_run / "weights" / "best.pt")["model"]
    assert list(model.names.values()) == CLASSES
    # the checkpoint carries the embeddings its head scores against, so predict needs no CLIP
    assert torch.allclose(model.txt_feats.float().reshape(len(CLASSES), -1), expected, atol=1e-2)


def test_predict_writes_coco_results_pycocotools_loads(world_run, converted, tmp_path, capsys):
    from pycocotools.coco import COCO

    coco_json = converted / "coco" / "test.json"
    out = tmp_path / "pred.json"
    main(
        [
            "predict",
            "--model",
            str(world_run),
            "--source",
            str(converted / "yolo" / "images" / "test"),
            "--coco",
            str(coco_json),
            "--save-coco",
            str(out),
            "--save-txt",
            str(tmp_path / "txt"),
            "--save-images",
            str(tmp_path / "img"),
            "--conf",
            "0",
            "--device",
            "cpu",
        ]
    )
    results = json.loads(out.read_text())
    assert results, "a conf of 0 keeps every box"
    gt = COCO(str(coco_json))
    dt = gt.loadRes(str(out))
    assert set(dt.getImgIds()) <= set(gt.getImgIds())
    assert {r["category_id"] for r in results} <= set(range(1, len(CLASSES) + 1))
    n_images = len(gt.getImgIds())
    drawn = sorted((tmp_path / "img").glob("*.png"))
    assert len(drawn) == n_images
    from defectkit.core.imageio import read_image

    source = converted / "yolo" / "images" / "test" / drawn[0].name
    assert (read_image(drawn[0]) != read_image(source)).any()  # boxes and labels drawn on the image
    txt = sorted((tmp_path / "txt").glob("*.txt"))
    assert len(txt) == n_images and len(txt[0].read_text().splitlines()[0].split()) == 6
    assert "detections" in capsys.readouterr().out


def test_predict_images_api_ids_and_boxes(yolov8_run, converted):
    images = sorted((converted / "yolo" / "images" / "val").glob("*.png"))
    ids = {str(p): 100 + i for i, p in enumerate(images)}
    preds = predict_images(yolov8_run / "weights" / "best.pt", images, conf=0.0, device="cpu", image_ids=ids)
    assert preds and {p["image_id"] for p in preds} <= set(ids.values())
    for p in preds[:50]:
        _, _, w, h = p["bbox"]
        assert w >= 0 and h >= 0 and 0 <= p["score"] <= 1 and 1 <= p["category_id"] <= len(CLASSES)
    # the original MVTec images map to the ids of convert's COCO split file too
    from defectkit.detect.predict import coco_image_ids

    coco_ids, _ = coco_image_ids(converted / "coco" / "val.json")
    coco = json.loads((converted / "coco" / "val.json").read_text())
    originals = [Path(coco["info"]["image_root"]) / img["file_name"] for img in coco["images"]]
    preds = predict_images(
        yolov8_run / "weights" / "best.pt", originals, conf=0.0, device="cpu", image_ids=coco_ids
    )
    assert {p["image_id"] for p in preds} <= {img["id"] for img in coco["images"]} and preds
    default_ids = predict_images(yolov8_run / "weights" / "best.pt", images[:2], conf=0.0, device="cpu")
    assert {p["image_id"] for p in default_ids} <= {1, 2}
    # scores keep full precision: a weak model's tiny scores must not tie at 5 decimals
    assert any(p["score"] != round(p["score"], 5) for p in default_ids)


def test_predict_images_passes_ultralytics_predict_args(yolov8_run, converted):
    weights = yolov8_run / "weights" / "best.pt"
    images = sorted((converted / "yolo" / "images" / "val").glob("*.png"))[:3]
    preds = predict_images(weights, images, conf=0.0, device="cpu", max_det=2)
    per_image = [sum(p["image_id"] == i for p in preds) for i in (1, 2, 3)]
    assert preds and max(per_image) <= 2
    with pytest.raises(DefectkitError, match="max_dets.*not an ultralytics predict argument"):
        predict_images(weights, images, conf=0.0, device="cpu", max_dets=2)
    with pytest.raises(DefectkitError, match="'iou=3' .*invalid"):  # ultralytics' wording varies within 8.4
        predict_images(weights, images, conf=0.0, device="cpu", iou=3)
    with pytest.raises(DefectkitError, match="detect sets 'save' itself"):
        predict_images(weights, images, conf=0.0, device="cpu", save=True)


def test_val_writes_evaluator_report_with_ultralytics_numbers(yolov8_run, data_yaml, tmp_path, capsys):
    out = tmp_path / "report"
    main(
        [
            "val",
            "--model",
            str(yolov8_run),
            "--data",
            str(data_yaml),
            "--split",
            "val",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--imgsz",
            "64",
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"AP", "AP50", "per_class"} <= set(metrics["bbox"])
    assert {"mAP50", "mAP50-95"} <= set(metrics["ultralytics"])
    assert metrics["run"]["split"] == "val" and metrics["run"]["images"] > 0
    report = (out / "report.md").read_text()
    assert "## COCO vs ultralytics" in report and "Why they differ" in report
    assert report.count("# ") >= 3 and "| mAP50-95 |" in report  # a section of the evaluator's report
    assert (out / "pr_curves.png").is_file() and (out / "predictions.json").is_file()
    assert "COCO mAP50-95" in capsys.readouterr().out


def test_val_refuses_an_existing_report_before_predicting(yolov8_run, data_yaml, tmp_path, capsys, monkeypatch):
    import defectkit.detect.val as val

    (tmp_path / "report").mkdir()

    def no_model(*args, **kwargs):
        raise AssertionError("the model was opened although the report folder exists")

    monkeypatch.setattr(val, "prepare_model", no_model)
    err = _cli_error(
        capsys, ["val", "--model", str(yolov8_run), "--data", str(data_yaml), "--out", str(tmp_path / "report")]
    )
    assert "already exists" in err


def test_zero_shot_val_sets_classes_from_the_embeddings_file(data_yaml, tmp_path):
    from defectkit.detect.val import validate

    file = tmp_path / "emb.pt"
    emb.random_embeddings(CLASSES, seed=1).save(file)
    metrics = validate(
        "yolov8s-worldv2.yaml",
        data_yaml,
        split="test",
        out=tmp_path / "zs",
        zero_shot=True,
        text_embeddings=str(file),
        imgsz=64,
        device="cpu",
        progress=False,
    )
    assert metrics["run"]["zero_shot"] and "AP" in metrics["bbox"]


def test_export_torchscript_and_clear_error_for_a_missing_exporter(yolov8_run, tmp_path, capsys, monkeypatch):
    import importlib.util

    weights = tmp_path / "best.pt"
    shutil.copy(yolov8_run / "weights" / "best.pt", weights)
    main(["export", "--model", str(weights), "--format", "torchscript", "--imgsz", "64", "--device", "cpu"])
    assert weights.with_suffix(".torchscript").is_file()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real_find_spec(name, *a)
    )
    err = _cli_error(capsys, ["export", "--model", str(weights), "--format", "onnx"])
    assert "onnx" in err and "pip install" in err


def test_export_onnx_bakes_the_world_prompts_in(world_run, tmp_path):
    import onnx  # the dev extra installs it
    weights = tmp_path / "world.pt"
    shutil.copy(world_run / "weights" / "best.pt", weights)
    main(["export", "--model", str(weights), "--format", "onnx", "--imgsz", "64", "--device", "cpu"])
    graph = onnx.load(str(weights.with_suffix(".onnx"))).graph
    (output,) = graph.output
    channels = output.type.tensor_type.shape.dim[1].dim_value
    assert channels == 4 + 5  # box + one score per defect class: the text embeddings are constants now
    assert not [i.name for i in graph.input if i.name != "images"]  # no text input left to feed


def test_offline_hub_name_fails_at_once_with_advice(data_yaml, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEFECTKIT_OFFLINE", "1")
    monkeypatch.setenv("DEFECTKIT_CACHE", str(tmp_path / "cache"))
    err = _cli_error(capsys, ["train", "--data", str(data_yaml), "--model", "yolov8s-worldv2.pt"])
    assert "yolov8s-worldv2.pt" in err and "--model" in err and "releases/download" in err
    # inside the context ultralytics runs with the private config: no analytics sync, fonts on disk
    with ul.ultralytics_patched():
        from ultralytics.utils import SETTINGS, checks

        assert SETTINGS["sync"] is False and SETTINGS.file_path == ul.user_config_dir() / "settings.json"
        # check_font looks in (and would download into) checks.USER_CONFIG_DIR: the font is there already
        assert checks.USER_CONFIG_DIR == ul.user_config_dir() and (ul.user_config_dir() / "Arial.ttf").is_file()


_FRESH_USER = """
import os, sys
import defectkit.detect._ultralytics as ul
from defectkit.detect.cli import main
ul.ASSETS_URL = "http://127.0.0.1:9/assets"  # nothing listens there: the download is refused at once
with ul.ultralytics_patched():
    import ultralytics.utils as u  # the first import of ultralytics, inside the context
    print("ultralytics-offline", os.environ["YOLO_OFFLINE"], u.ONLINE, "private-weights",
          u.WEIGHTS_DIR == ul.weights_dir(), "sync", u.SETTINGS["sync"])
print("after", os.environ.get("YOLO_OFFLINE"), os.environ.get("YOLO_CONFIG_DIR"))
main(["train", "--data", sys.argv[1], "--model", "yolov8s-worldv2.pt"])
"""


def _env_without(*names: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


def test_without_offline_variable_nothing_waits_on_the_network(data_yaml, tmp_path):
    """A first run (fresh cache) with DEFECTKIT_OFFLINE unset: ultralytics' DNS probe and update check are off,
    its weights folder is the private one, and a hub name that cannot be downloaded fails, with advice.
    The environment is set only while the context lasts."""
    env = _env_without(
        "DEFECTKIT_OFFLINE", "YOLO_OFFLINE", "YOLO_CONFIG_DIR", DEFECTKIT_CACHE=str(tmp_path / "cache")
    )
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_USER, str(data_yaml)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a guard against a hang, not a timing check
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "ultralytics-offline 1 False private-weights True sync False" in proc.stdout
    assert "after None None" in proc.stdout
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and "could not be downloaded" in err
    assert "--model /path/to/yolov8s-worldv2.pt" in err


def test_world_without_embeddings_file_says_how_to_make_one(data_yaml, capsys):
    err = _cli_error(
        capsys, ["train", "--data", str(data_yaml), "--model", "yolov8s-worldv2.yaml", "--epochs", "1"]
    )
    assert "detect embed" in err and "random" in err


def test_embed_random_file_and_prompt_checks(data_yaml, tmp_path, capsys):
    out = tmp_path / "e.pt"
    main(
        [
            "embed",
            "--data",
            str(data_yaml),
            "--random",
            "--seed",
            "5",
            "--out",
            str(out),
            "--prompts",
            "scratch=a thin light scratch",
        ]
    )
    table = emb.load(out)
    assert table.prompts[-1] == "a thin light scratch" and torch.allclose(
        table.embeddings.norm(dim=1), torch.ones(5)
    )
    assert "already exists" in _cli_error(
        capsys, ["embed", "--data", str(data_yaml), "--random", "--out", str(out)]
    )
    with pytest.raises(DefectkitError, match="prompts"):
        emb.resolve(str(out), CLASSES, data_yaml.parent, prompts_spec="scratch=something else")
    with pytest.raises(DefectkitError, match="not a class"):
        emb.parse_prompts("dent=a dent", CLASSES)
    if __import__("importlib").util.find_spec("clip") is None:
        assert "CLIP is not installed" in _cli_error(
            capsys, ["embed", "--data", str(data_yaml), "--out", str(tmp_path / "c.pt")]
        )


# --- bad input: a clear error before training starts ---------------------------------------------------------


@pytest.fixture()
def data_copy(converted, tmp_path) -> Path:
    """A private copy of the converted data set (split.json + yolo/), with the yaml's path pointing at it."""
    root = tmp_path / "wood"
    root.mkdir()
    shutil.copy(converted / "split.json", root / "split.json")
    shutil.copytree(converted / "yolo", root / "yolo")
    cfg = yaml.safe_load((root / "yolo" / "data.yaml").read_text())
    cfg["path"] = str(root / "yolo")
    (root / "yolo" / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root / "yolo" / "data.yaml"


def _edit_yaml(path: Path, **changes) -> None:
    cfg = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))


def test_val_ground_truth_is_converts_coco_file_with_ids_through_the_manifest(data_copy, converted):
    from defectkit.core.layout import Manifest
    from defectkit.detect.val import ground_truth

    gt, ids = ground_truth(load_data(converted / "yolo" / "data.yaml", splits=("val",)), "val")
    assert gt == json.loads((converted / "coco" / "val.json").read_text())
    manifest = Manifest.load(converted)
    by_id = {img["id"]: img["file_name"] for img in gt["images"]}
    assert len(ids) == len(gt["images"])
    for path, image_id in ids.items():  # the YOLO copy of each image carries its COCO image's id
        assert Path(path).name == Path(by_id[image_id].replace("/", "_")).name
        assert manifest.file_name("val", image_id) == by_id[image_id]
    # a YOLO data set that convert-mvtec did not write (no split.json / coco/ beside it): a clear error
    (data_copy.parent.parent / "split.json").unlink()
    with pytest.raises(DefectkitError, match="detect val needs convert-mvtec output"):
        ground_truth(load_data(data_copy, splits=("val",)), "val")


def test_names_that_disagree_with_labels(data_copy, capsys):
    _edit_yaml(data_copy, names=dict(enumerate(["hole", "combined", "color", "liquid", "scratch"])))
    err = _cli_error(capsys, ["train", "--data", str(data_copy), "--model", "yolov8n.yaml"])
    assert "data.yaml" in err and "disagree" in err


def test_missing_and_empty_splits(data_copy):
    _edit_yaml(data_copy, val=None)
    with pytest.raises(DefectkitError, match="no 'val' split"):
        load_data(data_copy)
    _edit_yaml(data_copy, val="images/val")
    for img in (data_copy.parent / "images" / "val").iterdir():
        img.unlink()
    with pytest.raises(DefectkitError, match="val split is empty"):
        load_data(data_copy)
    _edit_yaml(data_copy, val="images/nowhere")
    with pytest.raises(DefectkitError, match="does not exist"):
        load_data(data_copy)


def test_label_class_that_contradicts_the_image_folder(data_copy):
    label = data_copy.parent / "labels" / "train" / "test_hole_000.txt"
    if not label.is_file() or not label.read_text().strip():
        label = next(
            p for p in sorted((data_copy.parent / "labels").rglob("test_hole_*.txt")) if p.read_text().strip()
        )
    values = label.read_text().splitlines()[0].split()
    label.write_text(" ".join(["0", *values[1:]]) + "\n")  # 0 = color, on a hole image
    with pytest.raises(DefectkitError, match=r"class 0 \(color\) on a 'hole' image") as exc:
        load_data(data_copy, splits=("train", "val", "test"))
    assert label.name in str(exc.value)


def test_class_id_out_of_range(data_copy):
    label = next(
        p for p in sorted((data_copy.parent / "labels" / "train").glob("*.txt")) if p.read_text().strip()
    )
    label.write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DefectkitError, match=r"class id 7 out of range") as exc:
        load_data(data_copy)
    assert label.name in str(exc.value)


def test_model_of_the_wrong_task(data_yaml, capsys):
    err = _cli_error(capsys, ["train", "--data", str(data_yaml), "--model", "yolov8n-cls.yaml"])
    assert "'classify' model" in err
    err = _cli_error(capsys, ["train", "--data", str(data_yaml), "--model", "yolov8n-seg.yaml"])
    assert "polygon labels" in err and "yolo-seg" in err


def test_a_weights_file_of_another_tool_is_refused_before_opening(converted, tmp_path, capsys):
    pth = tmp_path / "sam_decoder.pth"
    torch.save({"w": torch.zeros(2)}, pth)
    image = next((converted / "yolo" / "images" / "test").iterdir())
    argv = ["predict", "--model", str(pth), "--source", str(image), "--save-coco", str(tmp_path / "p.json")]
    err = _cli_error(capsys, argv)
    assert err.startswith(f"error: {pth}: not a model file") and err.count("\n") == 1
    assert not (tmp_path / "p.json").exists()


def test_unknown_passthrough_argument(data_yaml, capsys):
    err = _cli_error(
        capsys, ["train", "--data", str(data_yaml), "--model", "yolov8n.yaml", "learning_rate=3"]
    )
    assert "learning_rate" in err and "not an ultralytics training argument" in err


def test_bad_passthrough_value_and_device(data_yaml, capsys):
    err = _cli_error(capsys, ["train", "--data", str(data_yaml), "--model", "yolov8n.yaml", "lr0=abc"])
    assert "lr0=abc" in err and "invalid type" in err
    err = _cli_error(capsys, ["train", "--data", str(data_yaml), "--model", "yolov8n.yaml", "epochs=3"])
    assert "--epochs" in err
    err = _cli_error(
        capsys, ["train", "--data", str(data_yaml), "--model", "yolov8n.yaml", "--device", "gpu"]
    )
    assert "--device gpu: not a device" in err
    if not torch.cuda.is_available():
        err = _cli_error(
            capsys, ["predict", "--model", "m.pt", "--source", ".", "--save-coco", "x", "--device", "0"]
        )
        assert "--device 0: no CUDA GPU" in err


def test_resume_without_checkpoint(tmp_path, capsys):
    err = _cli_error(
        capsys, ["train", "--data", "x.yaml", "--project", str(tmp_path), "--name", "nope", "--resume"]
    )
    assert "last.pt" in err and "no checkpoint" in err


def test_resume_continues_an_interrupted_run(world_run, capsys):
    rows = (world_run / "results.csv").read_text().strip().splitlines()[1:]
    assert [int(float(r.split(",")[0])) for r in rows] == [1, 2]  # epoch 1 before the crash, epoch 2 resumed
    err = _cli_error(capsys, ["train", "--project", str(world_run.parent), "--name", "world", "--resume"])
    assert "nothing to resume" in err
    err = _cli_error(
        capsys, ["train", "--project", str(world_run.parent), "--name", "world", "lr0=0.1", "--resume"]
    )
    assert "run's own arguments" in err and "lr0=" in err


class _NotAModel:
    """Stands for arbitrary pickled code in a .pt file."""


def test_checkpoints_load_weights_only(tmp_path, capsys):
    bad = tmp_path / "evil.pt"
    torch.save({"model": _NotAModel()}, bad)
    err = _cli_error(
        capsys, ["predict", "--model", str(bad), "--source", str(tmp_path), "--save-coco", "x.json"]
    )
    assert "evil.pt" in err and "not a YOLO model" in err


# --- ultralytics contained: patches applied by the stage functions, undone after them -----------------------


def _patch_state() -> dict:
    """What the patch context changes, as seen from outside it."""
    import ultralytics.engine.trainer as trainer_module
    import ultralytics.utils as utils
    from ultralytics.nn.tasks import WorldModel
    from ultralytics.utils import checks, dist, events

    return {
        "env": {
            k: os.environ.get(k)
            for k in ("YOLO_CONFIG_DIR", "YOLO_OFFLINE", "YOLO_AUTOINSTALL", "ULTRALYTICS_SAFE_LOAD")
        },
        "weights_dir": utils.WEIGHTS_DIR,
        "check_amp": trainer_module.check_amp,
        "get_text_pe": WorldModel.get_text_pe,
        "settings": dict(utils.SETTINGS),
        "settings_file": (utils.SETTINGS.file_path, utils.SETTINGS.file),
        "config_dirs": (checks.USER_CONFIG_DIR, dist.USER_CONFIG_DIR),
        "flags": (checks.ONLINE, checks.AUTOINSTALL, events.events.enabled),
    }


def test_stage_functions_apply_the_patches_and_undo_them(yolov8_run, converted, monkeypatch):
    import defectkit.detect.predict as predict

    with ul.ultralytics_patched():
        import ultralytics  # noqa: F401  (imported with the private environment)
    before = _patch_state()
    seen = {}
    open_model = predict.open_model

    def recording_open_model(*args, **kwargs):  # what ultralytics looks like while the stage runs
        import ultralytics.engine.trainer as trainer_module
        from ultralytics.utils import SETTINGS

        seen.update(
            check_amp=trainer_module.check_amp.__name__,
            yolo_config_dir=os.environ["YOLO_CONFIG_DIR"],
            settings=(SETTINGS["sync"], SETTINGS.file_path),
        )
        return open_model(*args, **kwargs)

    monkeypatch.setattr(predict, "open_model", recording_open_model)
    images = sorted((converted / "yolo" / "images" / "val").glob("*.png"))[:2]
    assert predict_images(yolov8_run / "weights" / "best.pt", images, conf=0.0, device="cpu")
    assert seen == {
        "check_amp": "_check_amp_offline",
        "yolo_config_dir": str(ul.config_dir()),
        "settings": (False, ul.user_config_dir() / "settings.json"),
    }
    assert _patch_state() == before
    # YOLO-World: get_text_pe answers from the table while the context lasts (CLIP is not installed here)
    with ul.ultralytics_patched(text_embeddings=emb.random_embeddings(CLASSES, seed=1)):
        from ultralytics.nn.tasks import WorldModel

        assert WorldModel.get_text_pe.__qualname__ == "_use_text_embeddings.<locals>.get_text_pe"
        with ul.ultralytics_patched():  # nesting changes nothing
            assert WorldModel.get_text_pe.__qualname__ == "_use_text_embeddings.<locals>.get_text_pe"
    assert _patch_state() == before


def test_unsupported_ultralytics_version_is_a_one_line_error(yolov8_run, converted, tmp_path, capsys, monkeypatch):
    import ultralytics

    with ul.ultralytics_patched():
        pass
    before = _patch_state()
    monkeypatch.setattr(ultralytics, "__version__", "8.3.99")
    image = next((converted / "yolo" / "images" / "val").glob("*.png"))
    argv = ["predict", "--model", str(yolov8_run), "--source", str(image), "--save-coco", str(tmp_path / "p.json")]
    err = _cli_error(capsys, argv)
    assert err == (
        "error: ultralytics 8.3.99 is not supported: defectkit needs ultralytics>=8.4.140,<8.5 "
        "(pip install 'ultralytics>=8.4.140,<8.5')\n"
    )
    assert _patch_state() == before and not (tmp_path / "p.json").exists()
    monkeypatch.setattr(ultralytics, "__version__", "8.5.0")
    with pytest.raises(DefectkitError, match=r"ultralytics 8\.5\.0 is not supported.*>=8\.4\.140,<8\.5"):
        with ul.ultralytics_patched():
            pass
    monkeypatch.setattr(ultralytics, "__version__", "8.4.139")  # below the tested minimum
    with pytest.raises(DefectkitError, match=r"ultralytics 8\.4\.139 is not supported"):
        with ul.ultralytics_patched():
            pass
    monkeypatch.setattr(ultralytics, "__version__", "8.4.140")
    with ul.ultralytics_patched():
        pass


def test_a_missing_patch_point_is_an_error_not_a_skipped_patch(monkeypatch):
    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils import events

    with ul.ultralytics_patched():
        pass
    before = _patch_state()
    monkeypatch.delattr(trainer_module, "check_amp")
    with pytest.raises(DefectkitError) as exc:
        with ul.ultralytics_patched():
            pass
    message = str(exc.value)
    assert "ultralytics.engine.trainer.check_amp is missing" in message and ">=8.4.140,<8.5" in message
    assert "\n" not in message
    monkeypatch.undo()
    assert _patch_state() == before  # what was applied before the check failed is undone
    monkeypatch.setattr(events, "events", object())  # an events object without 'enabled'
    with pytest.raises(DefectkitError, match=r"ultralytics\.utils\.events\.events\.enabled is missing"):
        with ul.ultralytics_patched():
            pass


def test_pyproject_bounds_ultralytics_to_the_supported_range():
    text = (REPO / "pyproject.toml").read_text()
    assert re.findall(r'"ultralytics([^"]*)"', text) == [ul.SUPPORTED_RANGE]
    import ultralytics

    ul.check_version(ultralytics.__version__)  # the installed one, which the tests run on, is in it


_USER_FIRST = """
import json, os, sys
from pathlib import Path
import ultralytics  # the user's own ultralytics, imported before defectkit: its config is $YOLO_CONFIG_DIR
from ultralytics.utils import SETTINGS
from defectkit.detect.cli import main

user = Path(os.environ["YOLO_CONFIG_DIR"])
def snapshot():
    return {str(p): [p.read_bytes().hex(), p.stat().st_mtime_ns] for p in sorted(user.rglob("*")) if p.is_file()}
files, values, path = snapshot(), dict(SETTINGS), SETTINGS.file_path
weights, image, out = sys.argv[1:4]
try:
    main(["predict", "--model", weights, "--source", image, "--save-coco", out, "--conf", "0", "--device", "cpu"])
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print(json.dumps({
    "settings_file": str(path),
    "sync_before": values["sync"],
    "files_unchanged": snapshot() == files,
    "n_files": len(files),
    "values_restored": dict(SETTINGS) == values,
    "path_restored": SETTINGS.file_path == path,
    "env_restored": os.environ["YOLO_CONFIG_DIR"] == str(user),
}))
"""


def test_the_users_settings_file_is_never_written(yolov8_run, converted, tmp_path):
    user, cache = tmp_path / "user-config", tmp_path / "cache"
    user.mkdir()  # a user's config folder exists (ultralytics < 8.4.178 falls back to /tmp for a missing one)
    image = next((converted / "yolo" / "images" / "val").glob("*.png"))
    env = _env_without("YOLO_CONFIG_DIR", YOLO_CONFIG_DIR=str(user), YOLO_OFFLINE="1", DEFECTKIT_CACHE=str(cache))
    argv = [str(yolov8_run / "weights" / "best.pt"), str(image), str(tmp_path / "p.json")]
    proc = subprocess.run(
        [sys.executable, "-c", _USER_FIRST, *argv], check=False, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["settings_file"] == str(user / "Ultralytics" / "settings.json") and report["n_files"] >= 1
    assert report["sync_before"] is True  # the user's value differs from ours, so ours had to go elsewhere
    assert report["files_unchanged"] and report["values_restored"] and report["path_restored"]
    assert report["env_restored"]
    private = json.loads((cache / "ultralytics" / "Ultralytics" / "settings.json").read_text())
    assert private["sync"] is False and private["weights_dir"] == str(cache / "ultralytics" / "weights")
    assert json.loads((tmp_path / "p.json").read_text())


_DDP_WORKER = """
import json, runpy, sys
script = sys.argv[1]
try:  # the script ultralytics' DDP launcher starts in each worker (under torch.distributed.run)
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    print("stopped", exc.code)
import ultralytics.engine.trainer as trainer_module
from ultralytics.nn.tasks import WorldModel
print(json.dumps({"check_amp": trainer_module.check_amp.__name__, "get_text_pe": WorldModel.get_text_pe.__qualname__}))
"""


def test_ddp_workers_apply_the_patches_and_leave_them(data_yaml, tmp_path):
    """The worker script ultralytics generates (utils/dist.py: it imports ultralytics first, then unpickles the
    trainer class) is run in a new process: the trainer applies the patches, trains with the embeddings
    file and no CLIP, and leaves them when its run ends."""
    during = tmp_path / "during.json"

    def record_and_stop(trainer):  # pickled by value into the worker with the trainer's callbacks
        import json as _json
        import os as _os

        import ultralytics.engine.trainer as _trainer
        from ultralytics.nn.tasks import WorldModel as _World

        state = {
            "check_amp": _trainer.check_amp.__name__,
            "get_text_pe": _World.get_text_pe.__qualname__,
            "yolo_config_dir": _os.environ["YOLO_CONFIG_DIR"],
            "class": f"{type(trainer).__module__}.{type(trainer).__qualname__}",
        }
        with open(during, "w") as f:
            _json.dump(state, f)
        raise SystemExit(0)  # the patched state is what this test is about, not the epoch

    table = emb.random_embeddings(CLASSES, seed=2)
    with ul.ultralytics_patched():
        from ultralytics.utils.dist import ddp_cleanup, generate_ddp_file

        with emb.training_embeddings(table, tmp_path / "emb.pt") as trainer_class:
            args = {"model": "yolov8s-worldv2.yaml", "data": str(data_yaml), "epochs": 1, "imgsz": 32, "batch": 4}
            args.update(device="cpu", workers=0, plots=False, val=False, project=str(tmp_path / "runs"), name="ddp")
            trainer = trainer_class(overrides=args)
            trainer.model = trainer.get_model(cfg="yolov8s-worldv2.yaml", weights=None)
            trainer.add_callback("on_train_start", record_and_stop)
            script = generate_ddp_file(trainer)
            assert Path(script).parent == ul.user_config_dir() / "DDP"  # never the user's config folder
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", _DDP_WORKER, script], check=False, capture_output=True, text=True, timeout=600
                )
            finally:
                ddp_cleanup(trainer, script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(during.read_text()) == {
        "check_amp": "_check_amp_offline",
        "get_text_pe": "_use_text_embeddings.<locals>.get_text_pe",
        "yolo_config_dir": str(ul.config_dir()),
        "class": "defectkit.detect.embeddings.FileTextWorldTrainer",
    }
    lines = proc.stdout.strip().splitlines()
    assert "stopped 0" in lines
    assert json.loads(lines[-1]) == {"check_amp": "check_amp", "get_text_pe": "WorldModel.get_text_pe"}
    assert (tmp_path / "runs" / "ddp" / emb.RUN_FILE).is_file()  # the worker's trainer read the file
