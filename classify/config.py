"""What a ``classify`` run is configured with: the options' vocabulary (architectures, freeze
choices, optimisers, losses), the course's presets and :class:`TrainConfig`.

Plain data, apart from the modules that build what these names stand for (``models``: the
torchvision ResNets; ``longtail``: the losses; ``train``: the optimisers), so that ``classify
--help`` lists every option and default without loading torch. tests/test_classify.py checks that
each name here has its builder there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from defectkit.core.errors import DefectkitError

ARCHITECTURES = ("resnet18", "resnet34", "resnet50")  # models.RESNETS holds their builders and weights
FREEZE_CHOICES = ("fc", "layer4", "none")  # models.TRAINABLE: what stays trainable for each
LOSSES = ("ce", "weighted-ce", "focal", "logit-adjusted")  # longtail.build_loss makes each
OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in every checkpoint (plain types only)."""

    data: str
    out: str
    arch: str = "resnet18"
    weights: str = "imagenet"  # imagenet | none | path to a state dict
    freeze: str = "fc"  # fc (train only the head) | layer4 (layer4 + head) | none
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    scheduler: str = "cosine"  # cosine | none
    epochs: int = 50
    batch: int = 32  # per process under torchrun
    image_size: int = 224
    augment: bool = False  # random rotation + colour jitter
    hflip: bool = False
    rotation: float = 15.0
    jitter: float = 0.2
    loss: str = "ce"
    beta: float = 0.999  # effective-number class weights (weighted-ce)
    focal_gamma: float = 2.0
    tau: float = 1.0  # logit-adjusted loss
    sampler: str = "random"  # random | balanced
    select: str = "loss"  # best checkpoint by val loss | acc
    limit_per_class: int = 0  # 0 = all training images
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA
    cache: str = "memory"  # memory | disk (also keep decoded images on disk between runs)
    cache_dir: str = ""
    decode_workers: int = 4
    loader_workers: int = 0
    eval_batch: int = 64
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"

    def check(self) -> None:
        choices = {
            "arch": ARCHITECTURES, "freeze": FREEZE_CHOICES, "optimizer": OPTIMIZERS, "loss": LOSSES,
            "scheduler": ("cosine", "none"), "sampler": ("random", "balanced"), "select": ("loss", "acc"),
            "cache": ("memory", "disk"),
        }  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise DefectkitError(
                    f"--{name.replace('_', '-')} {getattr(self, name)!r}: choose from {', '.join(allowed)}"
                )
        for name in ("epochs", "batch", "image_size", "eval_batch", "decode_workers"):
            if getattr(self, name) < 1:
                raise DefectkitError(
                    f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                )
        if self.lr <= 0:
            raise DefectkitError(f"--lr must be positive, got {self.lr}")
        if not 0.0 <= self.beta < 1.0:
            raise DefectkitError(f"--beta must be in [0, 1), got {self.beta}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})



_BASELINE = {
    "optimizer": "adam",
    "lr": 1e-3,
    "scheduler": "cosine",
    "epochs": 50,
    "freeze": "fc",
    "weight_decay": 0.0,
}

PRESETS: dict[str, dict] = {
    "baseline": dict(_BASELINE),
    "unfreeze-layer4": {**_BASELINE, "freeze": "layer4"},
    "augment": {**_BASELINE, "augment": True},
    "sgd": {**_BASELINE, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
}

PRESET_HELP = {
    "baseline": "Adam lr 1e-3, cosine schedule, 50 epochs, backbone frozen (only the new fc trains)",
    "unfreeze-layer4": "baseline with layer4 trained too",
    "augment": "baseline with random rotation and colour jitter in the train transform",
    "sgd": "baseline with SGD lr 0.01, momentum 0.9, weight decay 1e-4",
}
