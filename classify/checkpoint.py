"""Checkpoints as plain dicts (tensors, numbers, strings, lists), loadable with ``weights_only=True``.

``best.pt`` holds the model and everything needed to use it (architecture, classes, class counts,
image size, normalisation, the training config); ``last.pt`` adds the optimiser and scheduler state
and the epoch count that ``--resume`` continues from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from defectkit.classify.models import build_model
from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import atomic_torch_save, load_weights_only

KIND = "defectkit-classify"
VERSION = 1
REQUIRED = ("arch", "classes", "class_counts", "image_size", "mean", "std", "config", "model", "epoch")


def save_checkpoint(path: str | Path, **fields: Any) -> Path:
    """Write ``{"kind", "version", **fields}`` atomically."""
    return atomic_torch_save({"kind": KIND, "version": VERSION, **fields}, path)


def read_checkpoint(path: str | Path) -> dict:
    """Load and check a classify checkpoint; one-line DefectkitError for anything else."""
    path = Path(path)
    ckpt = load_weights_only(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise DefectkitError(f"{path}: not a classify checkpoint (written by 'classify train')")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise DefectkitError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The trained model (eval mode, on ``device``) and its checkpoint dict."""
    ckpt = read_checkpoint(path)
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        model = build_model(ckpt["arch"], len(ckpt["classes"]), weights="none")
    try:
        model.load_state_dict(ckpt["model"], assign=True)
    except RuntimeError as exc:
        raise DefectkitError(
            f"{path}: weights do not fit {ckpt['arch']} ({str(exc).splitlines()[0]})"
        ) from None
    return model.to(device).eval(), ckpt
