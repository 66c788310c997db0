"""classify's parts: long-tail losses and sampler, the decoded-image cache, freezing. Fast: no training."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from defectkit.classify import data as data_module
from defectkit.classify.data import ImageCache, scan_split, train_transform
from defectkit.classify.longtail import (
    FocalLoss,
    LogitAdjustedLoss,
    balanced_sample_weights,
    build_loss,
    effective_number_weights,
    posthoc_adjust,
)
from defectkit.classify.models import apply_freeze, build_model, frozen_batchnorm_eval
from defectkit.core.imageio import write_png


def test_effective_number_weights_follow_cui_et_al():
    counts = [400, 40, 4]
    w = effective_number_weights(counts, beta=0.99)
    expected = (1 - 0.99) / (1 - 0.99 ** np.array(counts, float))
    np.testing.assert_allclose(w, expected / expected.sum() * 3)
    assert w[2] > w[1] > w[0]
    np.testing.assert_allclose(effective_number_weights(counts, beta=0.0), [1, 1, 1])
    # beta -> 1 tends to inverse frequency
    near = effective_number_weights(counts, beta=0.999999)
    inverse = 1 / np.array(counts, float)
    np.testing.assert_allclose(near, inverse / inverse.sum() * 3, rtol=1e-3)


def test_losses_reduce_to_cross_entropy_where_they_should():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 4), torch.randint(0, 4, (16,))
    ce = F.cross_entropy(logits, target)
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, target), ce)
    assert FocalLoss(gamma=2.0)(logits, target) < ce  # down-weights easy examples
    counts = [50, 10, 5, 1]
    la = LogitAdjustedLoss(counts, tau=1.0)(logits, target)
    prior = torch.tensor(counts, dtype=torch.float) / sum(counts)
    assert torch.allclose(la, F.cross_entropy(logits + prior.log(), target), atol=1e-6)
    weighted = build_loss("weighted-ce", counts, beta=0.999)
    w = torch.tensor(effective_number_weights(counts, 0.999), dtype=torch.float)
    assert torch.allclose(weighted(logits, target), F.cross_entropy(logits, target, weight=w))


def test_posthoc_adjustment_favours_rare_classes():
    logits = torch.tensor([[2.0, 1.5]])
    assert posthoc_adjust(logits, [90, 10], tau=0.0).argmax(1).item() == 0
    assert posthoc_adjust(logits, [90, 10], tau=1.0).argmax(1).item() == 1


def test_balanced_sampler_draws_classes_equally():
    labels = [0] * 90 + [1] * 9 + [2] * 1
    weights = balanced_sample_weights(labels, 3)
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(weights, 30_000, replacement=True, generator=g)
    per_class = torch.bincount(torch.tensor(labels)[draws], minlength=3).float() / 30_000
    assert torch.allclose(per_class, torch.full((3,), 1 / 3), atol=0.02)


def _write_images(folder: Path, n: int, size=(40, 50)) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        write_png(p, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        paths.append(p)
    return paths


def test_cache_decodes_once_and_disk_cache_follows_file_changes(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "img", 3)
    calls = []
    real = data_module.decode_resized
    monkeypatch.setattr(data_module, "decode_resized", lambda p, s: calls.append(p) or real(p, s))

    cache = ImageCache(16, disk_dir=tmp_path / "cache", workers=2)
    batch = cache.load(paths)
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.uint8
    cache.load(paths)  # memory hit
    assert len(calls) == 3
    fresh = ImageCache(16, disk_dir=tmp_path / "cache")
    assert torch.equal(fresh.load(paths), batch) and len(calls) == 3  # disk hit: no decoding
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3

    # A changed file (new bytes, new mtime) is decoded again; another size too.
    write_png(paths[0], np.zeros((40, 50, 3), np.uint8))
    os.utime(paths[0], ns=(1, 1))
    again = ImageCache(16, disk_dir=tmp_path / "cache").load(paths)
    assert len(calls) == 4 and again[0].sum() == 0
    assert ImageCache(8, disk_dir=tmp_path / "cache").load(paths[:1]).shape == (1, 3, 8, 8)
    assert len(calls) == 5


def test_augment_transform_works_on_uint8_and_changes_images():
    img = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    assert train_transform(False) is None
    torch.manual_seed(0)
    out = train_transform(True)(img)
    assert out.dtype == torch.uint8 and out.shape == img.shape and not torch.equal(out, img)


def test_val_split_may_miss_a_class_but_not_add_one(tmp_path):
    for cls, n in (("good", 2), ("hole", 2)):
        _write_images(tmp_path / "train" / cls, n)
    _write_images(tmp_path / "val" / "good", 1)
    classes = scan_split(tmp_path, "train").classes
    val = scan_split(tmp_path, "val", classes)
    assert val.labels == [0] and val.classes == ["good", "hole"]
    _write_images(tmp_path / "val" / "crack", 1)
    with pytest.raises(Exception, match="crack"):
        scan_split(tmp_path, "val", classes)


@pytest.mark.parametrize("freeze, trainable", [("fc", {"fc"}), ("layer4", {"layer4", "fc"}), ("none", None)])
def test_freeze_choices(freeze, trainable):
    model = build_model("resnet18", 3)
    params = apply_freeze(model, freeze)
    names = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    if trainable is None:
        assert len(params) == len(list(model.parameters()))
    else:
        assert names == trainable
    model.train()
    frozen_batchnorm_eval(model)
    # The frozen backbone's BatchNorm keeps its statistics; trainable ones update them.
    assert model.bn1.training is (freeze == "none")
    assert model.layer4[0].bn1.training is (freeze != "fc")


def test_imagenet_weights_come_from_torchvisions_hub_cache(tmp_path, monkeypatch):
    """With the file where torchvision caches it, --weights imagenet loads it (no download) and
    replaces only the 1000-class head."""
    from torchvision.models import ResNet18_Weights, resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("DEFECTKIT_OFFLINE", "1")
    reference = resnet18(weights=None)
    cached = tmp_path / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    model = build_model("resnet18", 6, weights="imagenet")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert model.fc.out_features == 6


def test_the_option_vocabulary_matches_what_builds_it():
    """classify.config (plain data, read by `classify --help`) names exactly what models, longtail
    and train build: an architecture or loss added on one side only fails here, not mid-run."""
    from defectkit.classify import config
    from defectkit.classify.longtail import build_loss
    from defectkit.classify.models import RESNETS, TRAINABLE
    from defectkit.classify.train import build_optimizer

    assert tuple(RESNETS) == config.ARCHITECTURES and tuple(TRAINABLE) == config.FREEZE_CHOICES
    for name in config.LOSSES:
        assert isinstance(build_loss(name, [3, 1]), torch.nn.Module)
    params = [torch.nn.Parameter(torch.zeros(1))]
    kinds = {type(build_optimizer(config.TrainConfig("d", "o", optimizer=name), params)) for name in config.OPTIMIZERS}
    assert len(kinds) == len(config.OPTIMIZERS)
    assert set(config.PRESETS) == set(config.PRESET_HELP)
