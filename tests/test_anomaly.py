"""The anomaly stage on the bundled sample, offline, at 32-64 px with random-init backbones (PaDiM,
PatchCore) and a DRAEM of two one-step epochs: its numbers against anomalib's own, the split
discipline (good train images only, thresholds on val, never on test), maps at the image's own
resolution, the COCO results, the model files, the offline weight paths and the missing extra."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from defectkit.anomaly import MISSING_MESSAGE, AnomalyTrainConfig, _anomalib, anomalib_available
from defectkit.anomaly import train as train_module
from defectkit.anomaly.checkpoint import load_model
from defectkit.anomaly.data import ImageDataset, defect_masks, split_images, train_good_images
from defectkit.anomaly.predict import coco_results, predict, score_images
from defectkit.anomaly.train import train
from defectkit.anomaly.val import validate
from defectkit.convert import convert_category
from defectkit.evaluation import evaluate_anomaly, evaluate_detection
from defectkit.evaluation.coco_io import class_agnostic_ground_truth
from defectkit.evaluation.ranking import f1_max
from torch.utils.data import DataLoader

from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import write_png
from defectkit.core.layout import MANIFEST
from defectkit.sample import write_category

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(
        not anomalib_available(), reason='needs the anomaly extra: pip install -e ".[dev,anomaly]"'
    ),
]
SIZE = 64


def config(data: Path, out: Path, **options) -> AnomalyTrainConfig:
    return AnomalyTrainConfig(
        data=str(data), out=str(out), imgsz=SIZE, backbone_weights="none", device="cpu", **options
    )


@pytest.fixture(scope="module")
def padim_run(converted, tmp_path_factory) -> Path:
    return train(config(converted, tmp_path_factory.mktemp("padim") / "run"), progress=False)


@pytest.fixture(scope="module")
def padim_test(padim_run, converted, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("padim-test") / "report"
    return out, validate(padim_run, converted, "test", out, progress=False)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    """torchvision's resnet18 state dict in its official file format (torch.save of the state dict, as
    resnet18-f37072fd.pth), random weights."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-f37072fd.pth"
    torch.save(resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def patchcore_run(converted, resnet18_file, tmp_path_factory) -> Path:
    cfg = config(
        converted, tmp_path_factory.mktemp("patchcore") / "run", model="patchcore", backbone="resnet18"
    )
    return train(replace(cfg, backbone_weights=str(resnet18_file)), progress=False)


def test_padim_val_report_scores_and_coco_results(padim_run, padim_test, converted):
    out, metrics = padim_test
    anomaly = metrics["anomaly"]
    for key in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "pixel_f1_max"):
        assert anomaly[key] is not None and 0.0 <= anomaly[key] <= 1.0, (key, anomaly)
    assert anomaly["image_auroc"] > 0.5  # random-init PaDiM separates the sample's painted defects
    assert {"AP", "AP50", "per_class"} <= set(metrics["detection"]) and {"AP", "AP50"} <= set(metrics["segm"])
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "bbox" / "metrics.json").is_file() and (out / "segm" / "metrics.json").is_file()
    # scores.json: one record per test image, in manifest order, raw scores
    manifest = json.loads((converted / MANIFEST).read_text())
    records = json.loads((out / "scores.json").read_text())
    assert [r["file_name"] for r in records] == manifest["splits"]["test"]
    assert [r["image_id"] for r in records] == list(range(1, len(records) + 1))
    assert any(r["score"] > 1.0 for r in records)  # not min-max normalised into [0, 1]
    # predictions.json: a COCO results file pycocotools loads against the class-agnostic ground truth
    from pycocotools.coco import COCO

    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions and {p["category_id"] for p in predictions} == {1}
    gt = COCO()
    gt.dataset = class_agnostic_ground_truth(json.loads((converted / "coco" / "test.json").read_text()))
    gt.createIndex()
    dt = gt.loadRes(predictions)
    assert len(dt.getAnnIds()) == len(predictions)
    assert set(dt.getImgIds()) <= set(gt.getImgIds())
    # every instance is one component of its image's map at the pixel threshold, scored by its peak
    threshold = metrics["thresholds"]["pixel"]
    assert all(p["score"] >= threshold and p["area"] > 0 for p in predictions)


def test_a_map_that_is_the_ground_truth_scores_coco_ap_one(converted):
    """The instance rule (components of map >= threshold, peak as score, class defect) against the
    class-agnostic ground truth: a map equal to the defect masks gives box and mask AP 1."""
    images = split_images(converted, "test")
    maps = [mask.astype(np.float32) for mask in defect_masks(converted, "test", images)]
    results = coco_results([image.image_id for image in images], maps, 0.5)
    for iou_type in ("bbox", "segm"):
        scored = evaluate_detection(
            str(converted / "coco" / "test.json"), results, iou_type, class_agnostic=True
        )
        assert scored[iou_type]["AP"] == pytest.approx(1.0), iou_type


def test_model_pt_loads_with_weights_only(padim_run, patchcore_run):
    for run, fitted in ((padim_run, "model.gaussian.inv_covariance"), (patchcore_run, "model.memory_bank")):
        ckpt = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
        assert ckpt["format"] == "defectkit-anomaly-model"
        assert ckpt["state_dict"][fitted].numel() > 0  # the fitted Gaussian / memory bank is in the file
        assert {"image", "pixel", "image_rule"} <= set(ckpt["thresholds"])
        assert ckpt["config"]["imgsz"] == SIZE
        assert sorted(p.name for p in run.iterdir()) == ["model.pt", "summary.json"]  # no Lightning pickle


def test_image_auroc_equals_anomalib_engine_test(patchcore_run, converted, tmp_path):
    """Our evaluator on our raw scores vs anomalib's own Engine.test (its AUROC metric) and
    Engine.predict, on the same model file and the same test images."""
    from anomalib.engine import Engine
    from anomalib.metrics import AUROC, Evaluator

    ours = validate(patchcore_run, converted, "test", tmp_path / "ours", progress=False)["anomaly"][
        "image_auroc"
    ]
    ours_scores = [r["score"] for r in json.loads((tmp_path / "ours" / "scores.json").read_text())]
    module, _ = load_model(patchcore_run)
    module.evaluator = Evaluator(test_metrics=[AUROC(fields=["pred_score", "gt_label"], prefix="image_")])
    images = split_images(converted, "test")
    loader = DataLoader(
        ImageDataset(images, SIZE, defect_masks(converted, "test", images)), batch_size=4,
        collate_fn=_anomalib.image_batch,
    )  # fmt: skip
    engine = Engine(default_root_dir=tmp_path / "engine", enable_progress_bar=False)
    with _anomalib.quiet_lightning():
        theirs = engine.test(module, dataloaders=loader, verbose=False)[0]["image_AUROC"]
        predicted = torch.cat(
            [batch.pred_score.reshape(-1) for batch in engine.predict(module, dataloaders=loader)]
        )
    assert abs(ours - theirs) < 1e-6, (ours, theirs)
    np.testing.assert_allclose(ours_scores, predicted.double().numpy(), rtol=1e-6)


def test_thresholds_are_f1_max_on_val(padim_run, converted):
    module, ckpt = load_model(padim_run)
    images = split_images(converted, "val")
    masks = defect_masks(converted, "val", images)
    scores, maps = score_images(module, images, SIZE, torch.device("cpu"))
    labels = np.array([image.label for image in images])
    assert ckpt["thresholds"]["image"] == f1_max(labels, scores)[1]
    assert ckpt["thresholds"]["pixel"] == pytest.approx(
        evaluate_anomaly(labels, scores, masks, maps)["pixel_f1_threshold"]
    )
    assert ckpt["thresholds"]["val_image_f1"] == f1_max(labels, scores)[0]


def test_no_threshold_and_no_training_image_comes_from_test(padim_run, converted, sample_root, tmp_path):
    """The same run on a copy whose test images are noise and whose test ground truth is empty gives
    the same model and thresholds: test is never read when fitting."""
    manifest = json.loads((converted / MANIFEST).read_text())
    source = tmp_path / "source"
    shutil.copytree(sample_root / "wood", source)
    rng = np.random.default_rng(1)
    for name in manifest["splits"]["test"]:
        write_png(source / name, rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    data = tmp_path / "converted"
    shutil.copytree(converted, data)
    (data / MANIFEST).write_text(json.dumps({**manifest, "source": str(source)}))
    test_gt = json.loads((data / "coco" / "test.json").read_text())
    (data / "coco" / "test.json").write_text(json.dumps({**test_gt, "annotations": []}))
    assert all(image.file_name.split("/")[1] == "good" for image in train_good_images(data))

    again = train(config(data, tmp_path / "run"), progress=False)
    original = torch.load(padim_run / "model.pt", weights_only=True)
    changed = torch.load(again / "model.pt", weights_only=True)
    assert changed["thresholds"] == original["thresholds"]
    for key in ("model.gaussian.mean", "model.gaussian.inv_covariance", "model.idx"):
        assert torch.equal(changed["state_dict"][key], original["state_dict"][key]), key


def test_maps_come_back_at_each_images_own_resolution(sample_root, tmp_path):
    """wood_gray is 192x256 (grayscale, not square): maps are at 192x256 although the model sees 64x64."""
    convert_category(sample_root, "wood_gray", tmp_path / "converted", to=("coco",), progress=False)
    data = tmp_path / "converted" / "wood_gray"
    run = train(config(data, tmp_path / "run"), progress=False)
    image = sample_root / "wood_gray" / "test" / "hole" / "000.png"
    records = predict(run, [image], tmp_path / "pred", category_dir=data, progress=False)
    assert records[0]["file_name"] == "test/hole/000.png"
    anomaly_map = np.load(tmp_path / "pred" / records[0]["map"])
    assert anomaly_map.shape == (192, 256) and anomaly_map.dtype == np.float16
    assert (tmp_path / "pred" / records[0]["overlay"]).is_file()
    # the split's own image id, from the manifest (test/hole/000.png in coco/test.json)
    test_ids = {
        img["file_name"]: img["id"] for img in json.loads((data / "coco" / "test.json").read_text())["images"]
    }
    assert records[0]["image_id"] == test_ids["test/hole/000.png"]


def test_backbone_weights_path_is_loaded_and_a_wrong_file_is_named(patchcore_run, resnet18_file, tmp_path):
    module, _ = load_model(patchcore_run)
    state = torch.load(resnet18_file, weights_only=True)
    assert torch.equal(
        _anomalib.feature_extractor(module).state_dict()["conv1.weight"], state["conv1.weight"]
    )
    wrong = tmp_path / "resnet34.pth"
    from torchvision.models import resnet34

    torch.save(resnet34().state_dict(), wrong)
    cfg = replace(config(Path("unused"), tmp_path / "run", model="patchcore", backbone="resnet18"),
                  backbone_weights=str(wrong)).resolved()  # fmt: skip
    from defectkit.anomaly.models import build_model, pretrained_weights

    with pytest.raises(DefectkitError, match=r"resnet34.pth: not a resnet18 state dict"):
        build_model(cfg, pretrained_weights(cfg))


def test_imagenet_weights_come_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """`--backbone-weights imagenet` reads timm's file (safetensors, random weights here) from the
    Hugging Face cache, laid out as huggingface_hub writes it, without any network."""
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    snapshot = tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("0123abcd")
    weights = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file(weights, str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    from defectkit.anomaly.models import build_model, pretrained_weights

    cfg = replace(config(Path("unused"), tmp_path / "run"), backbone_weights="imagenet").resolved()
    module = build_model(cfg, pretrained_weights(cfg))
    loaded = _anomalib.feature_extractor(module).state_dict()
    assert torch.equal(loaded["layer1.0.conv1.weight"], weights["layer1.0.conv1.weight"])


def _run_anomaly(argv: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from defectkit.anomaly.cli import main; main()", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


def test_offline_imagenet_weights_fail_fast_naming_the_file_and_the_option(converted, tmp_path):
    """No cached file and a hub that cannot be reached (the network is blocked here; HF_ENDPOINT at a
    closed local port makes it so anywhere): one line naming the file and --backbone-weights PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEFECTKIT_OFFLINE", "HF_HUB_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    proc = _run_anomaly(
        ["train", "--data", str(converted), "--out", str(tmp_path / "run"), "--imgsz", "64"], env, tmp_path
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "models--timm--resnet18.a1_in1k" in lines[0] and "model.safetensors" in lines[0]
    assert "--backbone-weights PATH" in lines[0] and "unreachable" in lines[0]
    assert not (tmp_path / "run").exists()
    # DEFECTKIT_OFFLINE refuses at once, with the same advice
    with pytest.raises(DefectkitError, match=r"DEFECTKIT_OFFLINE is set; .*--backbone-weights PATH"):
        _anomalib.imagenet_weights_file("resnet18")


def test_without_anomalib_the_commands_say_how_to_install_it(converted, tmp_path, monkeypatch):
    """An anomalib that fails to import (as when the extra is missing): one line, exit 2; and the
    stage's modules themselves import without it (the CLI loads them all before failing)."""
    fake = tmp_path / "fake" / "anomalib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: anomalib is missing')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")]),
    }
    argv = ["train", "--data", str(converted), "--out", str(tmp_path / "run"), "--backbone-weights", "none"]
    proc = _run_anomaly(argv, env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: {MISSING_MESSAGE}", proc.stderr
    assert not (tmp_path / "run").exists()
    monkeypatch.setitem(sys.modules, "anomalib", None)
    assert anomalib_available() is False


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny category (64x64; 4 good train images, 3 val and 3 test images with both classes) for DRAEM,
    whose network is the same size at any input."""
    root = tmp_path_factory.mktemp("tiny")
    write_category(root / "src", "tiny", size=(64, 64), n_train_good=2, n_test_good=4, n_per_defect=3,
                   defects=("hole", "scratch"))  # fmt: skip
    convert_category(root / "src", "tiny", root / "converted", to=("coco",), progress=False)
    return root / "converted" / "tiny"


def test_draem_resumes_from_last_pt_and_never_writes_into_the_current_folder(tiny, tmp_path, monkeypatch):
    """Two one-step epochs at 32 px: stopped after the first, resumed from last.pt (weights_only), the
    finished run left alone by a second --resume; the Perlin source creates no ./datasets/dtd."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = AnomalyTrainConfig(
        data=str(tiny),
        out=str(tmp_path / "run"),
        model="draem",
        anomaly_source="perlin",
        epochs=2,
        imgsz=32,
        device="cpu",
    )
    real_save_last = train_module.save_last

    def save_then_stop(*args, **kwargs):
        real_save_last(*args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C right after epoch 1's last.pt

    monkeypatch.setattr(train_module, "save_last", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and last["optimizers"] and not (tmp_path / "run" / "model.pt").exists()

    monkeypatch.setattr(train_module, "save_last", real_save_last)
    run = train(cfg, resume=True, progress=False)
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert (run / "model.pt").is_file() and not (run / "last.pt").exists()
    stamp = (run / "model.pt").stat().st_mtime_ns
    train(cfg, resume=True, progress=False)  # finished: nothing new
    assert (run / "model.pt").stat().st_mtime_ns == stamp
    assert list(cwd.iterdir()) == [], list(cwd.iterdir())
    metrics = validate(run, tiny, "test", tmp_path / "val", progress=False)
    assert metrics["anomaly"]["image_auroc"] is not None and metrics["anomaly"]["n_images"] == 3

    empty = tmp_path / "no-textures"
    empty.mkdir()
    with pytest.raises(DefectkitError, match="no images"):
        replace(cfg, anomaly_source=str(empty)).resolved().check()
    with pytest.raises(DefectkitError, match="--anomaly-source"):
        replace(cfg, anomaly_source="").resolved().check()


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """EfficientAD-S's teacher in anomalib's file format (the state dict of its patch description
    network, as in efficientad_pretrained_weights/pretrained_teacher_small.pth), random weights."""
    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel, EfficientAdModelSize

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "pretrained_teacher_small.pth"
    torch.save(EfficientAdModel(model_size=EfficientAdModelSize.S).teacher.state_dict(), path)
    return path


def test_efficient_ad_trains_with_a_teacher_file_and_fails_fast_without_one(
    teacher_file, tmp_path, monkeypatch
):
    """Two good train images at 256 px (EfficientAD's smallest input) and a val split of one good
    image: the map quantiles come from it, and with no defect in val the thresholds sit just above it."""
    write_category(tmp_path / "src", "one", size=(64, 64), n_train_good=1, n_test_good=3, n_per_defect=2,
                   defects=("hole",))  # fmt: skip
    convert_category(tmp_path / "src", "one", tmp_path / "converted", to=("coco",), progress=False)
    data = tmp_path / "converted" / "one"
    assert len(train_good_images(data)) == 2 and [i.label for i in split_images(data, "val")] == [0]
    imagenet = tmp_path / "imagenette"
    rng = np.random.default_rng(0)
    for name in ("n01440764/0.png", "n01440764/1.png", "n02102040/0.png"):
        write_png(imagenet / name, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # an empty anomalib cache
    cfg = AnomalyTrainConfig(
        data=str(data), out=str(tmp_path / "run"), model="efficient_ad", imagenet_dir=str(imagenet), epochs=1,
        device="cpu",
    )  # fmt: skip
    offline = r"efficientad_pretrained_weights.zip: .*DEFECTKIT_OFFLINE.*--teacher-weights PATH"
    with pytest.raises(DefectkitError, match=offline):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()

    run = train(replace(cfg, teacher_weights=str(teacher_file)), progress=False)
    ckpt = torch.load(run / "model.pt", weights_only=True)
    teacher = torch.load(teacher_file, weights_only=True)
    assert all(torch.equal(ckpt["state_dict"][f"model.teacher.{k}"], v) for k, v in teacher.items())
    assert float(ckpt["state_dict"]["model.quantiles.qb_st"]) != 0.0  # set from the val good image
    assert ckpt["thresholds"]["image_rule"].startswith("no defect in the val split")
    image = split_images(data, "test")[0].path
    record = predict(run, [image], tmp_path / "pred", progress=False)[0]
    anomaly_map = np.load(tmp_path / "pred" / record["map"])
    assert anomaly_map.shape == (64, 64)  # back at the image's size from the model's 256 px


def test_every_configured_model_has_a_builder():
    """anomaly.config (plain data, read by `anomaly --help`) and anomaly.models name the same models."""
    from defectkit.anomaly.config import MODEL_REGISTRY
    from defectkit.anomaly.models import BUILDERS

    assert list(BUILDERS) == list(MODEL_REGISTRY)
    assert all(spec.name == name for name, spec in MODEL_REGISTRY.items())
