"""The plain training and inference steps (in the spirit of torchvision's
references/classification/train.py): one epoch of training, logits for a batch of cached images.
The device and torchrun set-up are the core's (``defectkit.core.torchio``)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from defectkit.classify.data import normalize_batch


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed torch's global RNG from (seed, epoch, rank): shuffling, sampling and augmentation of an
    epoch depend on nothing else, so a resumed run repeats exactly what an uninterrupted one does."""
    torch.manual_seed((seed * 1_000_003 + epoch) * 1_009 + rank)


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA (no loss scaling needed); nothing on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    amp: bool = True,
    progress: bool = True,
    desc: str = "train",
) -> dict:
    """One pass over ``loader``; returns the mean loss and accuracy over the samples seen (summed
    over all processes under torchrun)."""
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress)
    for images, targets in bar:
        images = normalize_batch(images.to(device, non_blocking=True), mean, std)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        loss = criterion(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = targets.numel()
        totals += torch.stack(
            [
                loss.detach().double() * n,
                (logits.argmax(1) == targets).sum().double(),
                torch.tensor(float(n), device=device, dtype=torch.float64),
            ]
        )
        bar.set_postfix(loss=f"{loss.item():.4f}")
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    loss_sum, correct, count = totals.tolist()
    return {"loss": loss_sum / max(count, 1.0), "acc": correct / max(count, 1.0)}


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch: int = 64,
    amp: bool = True,
    progress: bool = False,
    desc: str = "predict",
) -> torch.Tensor:
    """Logits (float32, on the CPU) for cached uint8 images (N, 3, H, W), in order."""
    was_training = model.training
    model.eval()
    out = []
    for start in tqdm(
        range(0, len(images), batch), desc=desc, unit="batch", leave=False, disable=not progress
    ):
        chunk = normalize_batch(images[start : start + batch].to(device, non_blocking=True), mean, std)
        with autocast(device, amp):
            out.append(model(chunk).float().cpu())
    model.train(was_training)
    n_out = getattr(getattr(model, "fc", None), "out_features", 0)
    return torch.cat(out) if out else torch.zeros((0, n_out))
