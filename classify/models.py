"""ResNet builders: a registry of torchvision architectures, their ImageNet weights (fetched through
``defectkit.core.weights.fetch`` into torchvision's own hub cache, so offline runs fail fast), a new head
for the data set's classes, and the freezing choices of the course."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import load_weights_only
from defectkit.core.weights import fetch

# config.ARCHITECTURES' names -> (builder, ImageNet weights). IMAGENET1K_V1 is what ``pretrained=True`` gave, i.e. what the
# course's transfer-learning results were measured with.
RESNETS: dict[str, tuple[Callable[..., models.ResNet], models.WeightsEnum]] = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
}

# What stays trainable for each --freeze choice (config.FREEZE_CHOICES) (every other parameter is frozen).
TRAINABLE: dict[str, tuple[str, ...] | None] = {
    "fc": ("fc",),  # the course's baseline: backbone frozen, only the new head learns
    "layer4": ("layer4", "fc"),  # the course's "unfreeze layer4" experiment
    "none": None,  # everything trains
}


def imagenet_weights_path(arch: str) -> Path:
    """Download (or find) the ImageNet state dict where torchvision itself caches it."""
    weights = RESNETS[arch][1]
    url = weights.url
    dest = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    return fetch(url, dest, hint="put it there, or pass --weights PATH (a state dict) or --weights none")


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    obj = load_weights_only(path, "weights file (use --weights imagenet|none|PATH)")
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # a defectkit checkpoint: fine-tune from it
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DefectkitError(
            f"{path}: not a state dict (expected a dict of tensors or a defectkit checkpoint)"
        )
    return obj


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every non-head tensor strictly; the head only when its shape matches ours."""
    own = model.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = [k for k in own if not k.startswith("fc.") and k not in body]
    unexpected = [k for k in body if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise DefectkitError(f"{source}: weights do not fit this architecture ({what}; check --arch)")
    for k, v in body.items():
        if own[k].shape != v.shape:
            raise DefectkitError(
                f"{source}: {k} has shape {tuple(v.shape)}, the model {tuple(own[k].shape)} (check --arch)"
            )
    head = {k: v for k, v in state.items() if k.startswith("fc.") and k in own and own[k].shape == v.shape}
    model.load_state_dict({**body, **head}, strict=False)


def build_model(arch: str, num_classes: int, weights: str = "none") -> nn.Module:
    """A torchvision ResNet with its fc replaced by ``num_classes`` outputs.

    ``weights``: ``"imagenet"`` (torchvision's ImageNet weights, fetched once), ``"none"`` (random
    init) or a path to a state dict / defectkit checkpoint of the same architecture.

    >>> build_model("resnet18", 6).fc.out_features
    6
    """
    if arch not in RESNETS:
        raise DefectkitError(f"unknown --arch {arch!r}; choose from {', '.join(RESNETS)}")
    builder = RESNETS[arch][0]
    model = builder(weights=None)
    if weights == "imagenet":
        path = imagenet_weights_path(arch)
        load_backbone(model, _state_dict_from_file(path), str(path))
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif weights == "none":
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        path = Path(weights)
        state = _state_dict_from_file(path)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        load_backbone(model, state, str(path))
    return model


def apply_freeze(model: nn.Module, freeze: str) -> list[nn.Parameter]:
    """Freeze per ``--freeze`` and return the parameters left to train."""
    if freeze not in TRAINABLE:
        raise DefectkitError(f"unknown --freeze {freeze!r}; choose from {', '.join(TRAINABLE)}")
    keep = TRAINABLE[freeze]
    for name, param in model.named_parameters():
        param.requires_grad = keep is None or name.split(".")[0] in keep
    return [p for p in model.parameters() if p.requires_grad]


def frozen_batchnorm_eval(model: nn.Module) -> None:
    """Put the BatchNorm layers whose parameters are frozen in eval mode.

    Why: a frozen backbone in train mode still drifts its running statistics towards the small
    defect set, so the "frozen" features would change under the head as it trains.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def check_classes(source: str, model_classes: Sequence[str], data_classes: Sequence[str], where: str) -> None:
    """One-line error when data and a checkpoint disagree about the classes."""
    if list(model_classes) != list(data_classes):
        raise DefectkitError(
            f"{source}: checkpoint has {len(model_classes)} classes ({', '.join(model_classes)}) but {where} has "
            f"{len(data_classes)} ({', '.join(data_classes)})"
        )
