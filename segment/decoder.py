"""Prompt encoder + mask decoder as one trainable module, and the fine-tuning losses.

``Sam.forward`` runs under ``torch.no_grad`` and re-encodes the image, so training calls the prompt
encoder and mask decoder directly on a (cached) image embedding. The decoder takes one image's
prompts per call; all instances of that image go through as one batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide


class PromptDecoder(torch.nn.Module):
    """SAM's prompt encoder and mask decoder on a precomputed image embedding (DDP-wrappable).

    ``forward`` returns low-resolution mask logits (B, M, 4h, 4w) and predicted IoUs (B, M), where
    B is the number of prompts for this one image and M is 1 (or 3 with ``multimask``).
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder

    def forward(
        self,
        embedding: torch.Tensor,
        boxes: torch.Tensor | None,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=None)
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )


def prompts_to_model_frame(
    transform: ResizeLongestSide,
    original_size: tuple[int, int],
    device: torch.device,
    boxes: np.ndarray | None = None,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Pixel prompts of the original image -> tensors in the encoder's resized frame (as SamPredictor).

    boxes (B, 4) xyxy; point_coords (B, N, 2) xy; point_labels (B, N) with 1/0 (-1: no point).
    """
    b = c = lab = None
    if boxes is not None:
        b = torch.as_tensor(transform.apply_boxes(np.asarray(boxes, np.float64), original_size),
                            dtype=torch.float, device=device)
    if point_coords is not None:
        c = torch.as_tensor(transform.apply_coords(np.asarray(point_coords, np.float64), original_size),
                            dtype=torch.float, device=device)
        lab = torch.as_tensor(np.asarray(point_labels), dtype=torch.int, device=device)
    return b, c, lab


def upscale_logits(sam: Sam, low_res: torch.Tensor, input_size, original_size) -> torch.Tensor:
    """Low-res logits -> logits at the original image size (Sam.postprocess_masks, in float32)."""
    return sam.postprocess_masks(low_res.float(), tuple(input_size), tuple(original_size))


# ---------------------------------------------------------------- losses


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per mask, (B,): 1 - 2|P∩T| / (|P| + |T|). Indifferent to how sparse T is.

    >>> t = torch.zeros(1, 8, 8); t[0, :2, :2] = 1
    >>> float(dice_loss(t * 40 - 20, t)) < 0.01, float(dice_loss(-t * 40 + 20, t)) > 0.98
    (True, True)
    """
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return 1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, max_pos_weight: float) -> torch.Tensor:
    """BCE per mask, (B,), with the foreground weighted by background/foreground pixel ratio (capped).

    Thin scratches cover <1% of an image: unweighted BCE rewards an empty mask, the collapse
    fine-tuned SAM decoders are known for on small defects. With the full ratio, foreground and
    background weigh the same in total, so an empty mask costs as much as a full one (a cap of 20
    still collapsed every run on the bundled sample, see segment/README.md).

    >>> t = torch.zeros(1, 10, 10); t[0, 0, 0] = 1
    >>> empty, full = torch.full_like(t, -20.0), torch.full_like(t, 20.0)
    >>> round(float(weighted_bce(empty, t, 1000)), 2), round(float(weighted_bce(full, t, 1000)), 2)
    (10.0, 10.0)
    """
    t = target.flatten(1)
    pos = t.sum(1, keepdim=True)
    pos_weight = ((t.shape[1] - pos) / pos.clamp(min=1)).clamp(1, max_pos_weight)
    weight = torch.where(t > 0, pos_weight, torch.ones_like(t))
    loss = F.binary_cross_entropy_with_logits(logits.flatten(1), t, weight=weight, reduction="none")
    return loss.sum(1) / weight.sum(1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.75, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss per mask, (B,); ``alpha`` weighs the (sparse) foreground."""
    x, t = logits.flatten(1), target.flatten(1)
    p = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return (a_t * ce * (1 - p_t) ** gamma).mean(1)


def hard_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded masks (logit > 0) with the targets, (B,); empty vs empty counts 1.

    >>> logits = torch.tensor([[[5.0, 5.0, -5.0, -5.0]], [[-1.0, -1.0, -1.0, -1.0]]])
    >>> target = torch.tensor([[[1.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]])
    >>> hard_iou(logits, target).tolist()
    [0.5, 1.0]
    """
    p = (logits > 0).flatten(1)
    t = target.flatten(1) > 0.5
    inter = (p & t).sum(1).float()
    union = (p | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def segmentation_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, kind: str = "dice+bce",
    max_pos_weight: float = 1000.0,
) -> dict[str, torch.Tensor]:
    """Dice + (weighted BCE | focal) on the masks plus MSE of SAM's IoU head against the real IoU.

    ``logits`` (B, H, W) float32 at the original resolution; ``iou_pred`` (B,); ``target`` (B, H, W) 0/1.
    Returns the parts, each a loss (lower is better), and their sum under ``"loss"`` (batch means):
    ``dice_loss`` (1 - soft Dice), ``pixel_loss`` (the weighted BCE or the focal term) and
    ``iou_mse`` (the IoU head's squared error).
    """
    dice = dice_loss(logits, target)
    if kind == "dice+bce":
        pixel = weighted_bce(logits, target, max_pos_weight)
    elif kind == "dice+focal":
        pixel = 20 * focal_loss(logits, target)  # SAM's paper weighs focal:dice 20:1
    else:
        raise ValueError(f"unknown loss {kind!r}")
    iou_true = hard_iou(logits.detach(), target)
    iou_mse = F.mse_loss(iou_pred.float(), iou_true, reduction="none")
    parts = {"dice_loss": dice.mean(), "pixel_loss": pixel.mean(), "iou_mse": iou_mse.mean()}
    parts["loss"] = parts["dice_loss"] + parts["pixel_loss"] + parts["iou_mse"]
    return parts
