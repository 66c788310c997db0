"""Long-tail remedies: class weights from the effective number of samples, focal loss, logit
adjustment (at train time and post hoc) and a class-balanced sampler.

References: Cui et al., "Class-Balanced Loss Based on Effective Number of Samples" (CVPR 2019);
Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017); Menon et al., "Long-tail learning via
logit adjustment" (ICLR 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defectkit.classify.config import LOSSES


def effective_number_weights(counts: Sequence[int], beta: float = 0.999) -> np.ndarray:
    """Cui et al. class weights: ``(1 - beta) / (1 - beta**n_c)``, scaled to sum to the class count.

    beta -> 0 gives equal weights; beta -> 1 approaches inverse frequency.

    >>> effective_number_weights([100, 10], beta=0.0).round(3).tolist()
    [1.0, 1.0]
    >>> w = effective_number_weights([100, 10], beta=0.999); bool(w[1] > w[0]), round(float(w.sum()), 6)
    (True, 2.0)
    """
    counts = np.asarray(counts, dtype=np.float64)
    if np.any(counts <= 0):
        raise ValueError("every class needs at least one training image")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    effective = (1.0 - np.power(beta, counts)) / (1.0 - beta) if beta > 0 else np.ones_like(counts)
    weights = 1.0 / effective
    return weights * (len(counts) / weights.sum())


def log_prior(counts: Sequence[int]) -> torch.Tensor:
    """log of the training class frequencies, the prior that logit adjustment works with.

    >>> log_prior([3, 1]).exp().tolist()
    [0.75, 0.25]
    """
    counts_t = torch.as_tensor(list(counts), dtype=torch.float64)
    return (counts_t / counts_t.sum()).log().float()


class FocalLoss(nn.Module):
    """Multi-class focal loss: cross-entropy scaled by ``(1 - p_true)**gamma`` (gamma 0 = CE)."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        return (-((1.0 - log_p.exp()).clamp_min(0) ** self.gamma) * log_p).mean()


class LogitAdjustedLoss(nn.Module):
    """Menon et al.'s logit-adjusted cross-entropy: CE on ``logits + tau * log prior``.

    The model's raw logits then estimate the balanced (class-prior-free) posterior, so prediction
    uses them unchanged. With tau = 1 this is the Balanced Softmax of Ren et al. (2020).
    """

    def __init__(self, counts: Sequence[int], tau: float = 1.0):
        super().__init__()
        self.tau = tau
        self.register_buffer("offset", tau * log_prior(counts))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.offset, target)


def build_loss(
    name: str, counts: Sequence[int], *, beta: float = 0.999, gamma: float = 2.0, tau: float = 1.0
) -> nn.Module:
    """The training criterion for ``--loss`` given the training class counts."""
    if name == "ce":
        return nn.CrossEntropyLoss()
    if name == "weighted-ce":
        return nn.CrossEntropyLoss(
            weight=torch.as_tensor(effective_number_weights(counts, beta), dtype=torch.float32)
        )
    if name == "focal":
        return FocalLoss(gamma=gamma)
    if name == "logit-adjusted":
        return LogitAdjustedLoss(counts, tau=tau)
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")


def posthoc_adjust(logits: torch.Tensor, counts: Sequence[int], tau: float) -> torch.Tensor:
    """Menon et al.'s post-hoc logit adjustment: ``logits - tau * log prior`` (tau 0 = unchanged).

    For a model trained with plain CE, this moves decisions towards rare classes.

    >>> posthoc_adjust(torch.tensor([[1.0, 0.9]]), [9, 1], tau=1.0).argmax(1).item()
    1
    """
    if tau == 0:
        return logits
    return logits - tau * log_prior(counts).to(logits.device)


def balanced_sample_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Per-sample weights 1 / n_class, so a weighted sampler draws every class equally often.

    >>> balanced_sample_weights([0, 0, 0, 1], 2).tolist()
    [0.3333333432674408, 0.3333333432674408, 0.3333333432674408, 1.0]
    """
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    counts = torch.bincount(labels_t, minlength=num_classes).float()
    return 1.0 / counts[labels_t]
