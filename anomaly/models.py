"""The anomaly models by name (``BUILDERS``, like segment-anything's ``sam_model_registry``; their
defaults in ``config.MODEL_REGISTRY``): each builds anomalib's Lightning module for a run's configuration.

- ``padim``: PaDiM (Defard et al. 2020), a Gaussian per patch position over ImageNet CNN features;
- ``patchcore``: PatchCore (Roth et al. 2022), a coreset memory bank of patch features, nearest
  neighbour distance;
- ``draem``: DRAEM (Zavrtanik et al. 2021), a reconstruction autoencoder and a discriminative
  network trained from scratch on good images with synthetic anomalies pasted in: the "autoencoder
  trained on normal images" done the field's way;
- ``efficient_ad``: EfficientAD (Batzner et al. 2024), a student and an autoencoder trained to match
  a pre-trained teacher network on good images; needs the teacher's weights (anomalib's file) and
  a folder of ImageNet images for its penalty loss.

Backbone weights (``--backbone-weights``) for PaDiM and PatchCore: ``imagenet`` (timm's ImageNet
weights from the Hugging Face cache, downloaded when missing and the hub is reachable), ``none``
(random init: runs offline, and still separates the sample's defects) or a path to a timm /
torchvision state dict of the backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from defectkit.anomaly import _anomalib
from defectkit.anomaly.config import AnomalyTrainConfig


def _padim(cfg: AnomalyTrainConfig) -> nn.Module:
    return _anomalib.build_padim(cfg.backbone, cfg.layers, cfg.imgsz, cfg.n_features or None)


def _patchcore(cfg: AnomalyTrainConfig) -> nn.Module:
    return _anomalib.build_patchcore(cfg.backbone, cfg.layers, cfg.imgsz, cfg.coreset_ratio)


def _draem(cfg: AnomalyTrainConfig) -> nn.Module:
    return _anomalib.build_draem(cfg.anomaly_source, cfg.imgsz)


def _efficient_ad(cfg: AnomalyTrainConfig) -> nn.Module:
    return _anomalib.build_efficient_ad(cfg.imgsz, cfg.model_size, cfg.imagenet_dir)


BUILDERS: dict[str, Callable[[AnomalyTrainConfig], nn.Module]] = {
    "padim": _padim,
    "patchcore": _patchcore,
    "draem": _draem,
    "efficient_ad": _efficient_ad,
}  # one per config.MODEL_REGISTRY entry


def pretrained_weights(cfg: AnomalyTrainConfig) -> tuple[dict, str] | None:
    """The pre-trained state dict ``cfg`` asks for and where it came from: PaDiM's / PatchCore's
    backbone (``--backbone-weights``) or EfficientAD's teacher (``--teacher-weights``); None for
    ``--backbone-weights none`` and for DRAEM. ``imagenet`` is timm's file from the Hugging Face
    cache, the teacher anomalib's file from its cache, each downloaded when missing; offline either
    fails within seconds naming the file and the option that takes a local copy, so a run reads its
    weights before any slow step."""
    if cfg.model == "efficient_ad":
        path = (
            Path(cfg.teacher_weights)
            if cfg.teacher_weights
            else _anomalib.teacher_weights_file(cfg.model_size)
        )
        return _anomalib.read_state_dict(path, f"EfficientAD-{cfg.model_size} teacher state dict"), str(path)
    if not cfg.spec.backbone or cfg.backbone_weights == "none":
        return None
    if cfg.backbone_weights == "imagenet":
        path = _anomalib.imagenet_weights_file(cfg.backbone)
        source = f"{path} (timm's ImageNet weights)"
    else:
        path = Path(cfg.backbone_weights)
        source = str(path)
    return _anomalib.read_state_dict(path, f"{cfg.backbone} state dict"), source


def build_model(cfg: AnomalyTrainConfig, weights: tuple[dict, str] | None = None) -> nn.Module:
    """anomalib's module for ``cfg`` (resolved), with ``weights`` (from :func:`pretrained_weights`)
    loaded into its backbone or teacher; None keeps the random init, as for a model whose weights
    come from its model.pt."""
    _anomalib.require_anomalib()
    module = BUILDERS[cfg.spec.name](cfg)
    if weights is not None:
        state, source = weights
        if cfg.model == "efficient_ad":
            _anomalib.load_teacher(module, state, source)
        else:
            _anomalib.load_backbone(_anomalib.feature_extractor(module), state, source, cfg.backbone)
    return module
