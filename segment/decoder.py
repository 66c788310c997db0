"""Prompt encoder + mask decoder as one trainable module, and the fine-tuning losses.

``Sam.forward`` runs under ``torch.no_grad`` and re-encodes the image, so training calls the prompt
encoder and mask decoder directly on a (cached) image embedding. One decoder call takes the prompts
of one image, or of several images (``image_index`` says which image each prompt belongs to).

Two mask losses: at the original resolution (every pixel of ``Sam.postprocess_masks``' output), or
on a few thousand points sampled by uncertainty (Mask2Former's training loss, after PointRend),
where the low-resolution logits are read at each point by bilinear ``grid_sample``: the upsampled
mask is never materialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide


class PromptDecoder(torch.nn.Module):
    """SAM's prompt encoder and mask decoder on precomputed image embeddings (DDP-wrappable).

    ``forward`` returns low-resolution mask logits (B, M, 4h, 4w) and predicted IoUs (B, M), where
    B is the number of prompts and M is 1 (or 3 with ``multimask``). ``embedding`` is (1, C, h, w)
    for one image's prompts, or (K, C, h, w) with ``image_index`` (B,) naming each prompt's image.
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
        image_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=None)
        if image_index is not None:
            # segment-anything's MaskDecoder takes one image and repeats its embedding per prompt;
            # its only use of the embedding is ``repeat_interleave(image_embeddings, B) + dense``.
            # Several images: add each prompt's own embedding to its dense prompt embedding and
            # hand the decoder a zero that broadcasts, which is the same sum (SAM 2's MaskDecoder
            # offers this as ``repeat_image=False``). Tested equal to one call per image.
            dense = dense + embedding.index_select(0, image_index)
            embedding = embedding.new_zeros(1, embedding.shape[1], 1, 1)
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


def _mask_terms(logits: torch.Tensor, target: torch.Tensor, kind: str, max_pos_weight: float) -> dict[str, torch.Tensor]:
    """Dice and (weighted BCE | focal) per mask, (B,), on whatever the last axes hold: pixels or points."""
    dice = dice_loss(logits, target)
    if kind == "dice+bce":
        pixel = weighted_bce(logits, target, max_pos_weight)
    elif kind == "dice+focal":
        pixel = 20 * focal_loss(logits, target)  # SAM's paper weighs focal:dice 20:1
    else:
        raise ValueError(f"unknown loss {kind!r}")
    return {"dice_loss": dice, "pixel_loss": pixel}


def full_mask_terms(
    logits: torch.Tensor, target: torch.Tensor, kind: str = "dice+bce", max_pos_weight: float = 1000.0
) -> dict[str, torch.Tensor]:
    """The per-mask loss terms on every pixel at the original resolution, (B,) each.

    ``logits`` (B, H, W) float32 (``upscale_logits``), ``target`` (B, H, W) 0/1 of any dtype.
    Besides ``dice_loss`` and ``pixel_loss``: ``iou`` (the real IoU, no gradient; the IoU head's
    target), ``pred_area`` and ``true_area`` in pixels (the collapse guard's area ratio).
    """
    target = target.float()
    terms = _mask_terms(logits, target, kind, max_pos_weight)
    with torch.no_grad():
        terms["iou"] = hard_iou(logits, target)
        terms["pred_area"] = (logits > 0).flatten(1).sum(1).float()
        terms["true_area"] = target.flatten(1).sum(1)
    return terms


# ---------------------------------------------------------------- point-sampled loss
# After detectron2's PointRend (projects/PointRend/point_rend/point_features.py: point_sample,
# get_uncertain_point_coords_with_randomness) as Mask2Former uses them for its mask loss
# (mask2former/modeling/criterion.py, SetCriterion.loss_masks: 112*112 points, oversample 3,
# importance 0.75). No library offers these few lines for plain torch without detectron2.


@dataclass(frozen=True)
class PointSampling:
    """Points per mask for the point-sampled loss, Mask2Former's defaults: ``oversample`` x
    ``num_points`` uniform candidates, the ``importance`` share of the most uncertain ones kept,
    the rest drawn uniformly anew."""

    num_points: int = 112 * 112
    oversample: float = 3.0
    importance: float = 0.75


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``maps`` (B, H, W) at ``coords`` (B, P, 2), xy in [0, 1] of the map's
    extent -> (B, P). Pixel centres sit at (i + 0.5) / size (``align_corners=False``) and the edge
    pixels extend to the border, as ``F.interpolate`` (hence ``Sam.postprocess_masks``) resizes.

    >>> m = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    >>> point_sample(m, torch.tensor([[[0.25, 0.25], [0.75, 0.75], [0.5, 0.25], [0.0, 0.0]]])).tolist()
    [[0.0, 3.0, 0.5, 0.0]]
    """
    grid = 2.0 * coords.unsqueeze(2) - 1.0  # (B, P, 1, 2) in grid_sample's [-1, 1]
    out = F.grid_sample(maps.unsqueeze(1), grid.to(maps.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, 0, :, 0]


def nearest_labels(target: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """The value of the pixel each point falls in: ``target`` (B, H, W), ``coords`` (B, P, 2) xy in
    [0, 1] -> (B, P) float. The target keeps its full resolution: a one-pixel scratch is read as is.

    >>> t = torch.tensor([[[0, 1], [1, 1]]], dtype=torch.uint8)
    >>> nearest_labels(t, torch.tensor([[[0.1, 0.1], [0.9, 0.1], [0.4, 0.6], [1.0, 1.0]]])).tolist()
    [[0.0, 1.0, 1.0, 1.0]]
    """
    h, w = target.shape[-2:]
    x = (coords[..., 0] * w).long().clamp_(0, w - 1)
    y = (coords[..., 1] * h).long().clamp_(0, h - 1)
    return target.flatten(1).gather(1, y * w + x).float()


def uncertain_points(
    low_res: torch.Tensor, extent: tuple[float, float], sampling: PointSampling, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points to compute the loss on, chosen from the (detached) low-res logits (B, h, w).

    ``extent`` (x, y): the share of the low-res map the image covers (SAM pads the resized image
    to a square at the bottom and right). Points are xy in [0, 1] of the image. Returns the chosen
    points (B, num_points, 2), the uniform candidates (B, oversample * num_points, 2) and the
    candidates' logits: uniform draws, so they also estimate the IoU and the area of the mask.

    Uncertainty is -|logit| (PointRend's ``calculate_uncertainty``): the most uncertain points lie
    on the predicted boundary, where the loss is informative.

    >>> low = torch.linspace(-8, 8, 32).expand(1, 32, 32)   # logit 0 on the vertical line x = 0.5
    >>> pts, cand, _ = uncertain_points(low, (1.0, 1.0), PointSampling(64, 3.0, 0.75), torch.Generator().manual_seed(0))
    >>> pts.shape, cand.shape, bool((pts[0, :48, 0] - 0.5).abs().max() < 0.2)
    (torch.Size([1, 64, 2]), torch.Size([1, 192, 2]), True)
    """
    b, device = low_res.shape[0], low_res.device
    n_candidates = max(sampling.num_points, int(sampling.num_points * sampling.oversample))
    n_uncertain = int(sampling.importance * sampling.num_points)
    scale = torch.tensor(extent, dtype=torch.float32, device=device)
    candidates = torch.rand(b, n_candidates, 2, device=device, generator=generator)
    cand_logits = point_sample(low_res, candidates * scale)
    idx = torch.topk(-cand_logits.abs(), k=n_uncertain, dim=1).indices
    chosen = candidates.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
    fresh = torch.rand(b, sampling.num_points - n_uncertain, 2, device=device, generator=generator)
    return torch.cat([chosen, fresh], dim=1), candidates, cand_logits


def point_mask_terms(
    low_res: torch.Tensor,
    target: torch.Tensor,
    extent: tuple[float, float],
    kind: str = "dice+bce",
    max_pos_weight: float = 1000.0,
    sampling: PointSampling = PointSampling(),
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The per-mask loss terms of ``full_mask_terms`` on uncertainty-sampled points, (B,) each.

    ``low_res`` (B, h, w) float logits of the decoder (padded square frame), ``target`` (B, H, W)
    0/1 at the original resolution, ``extent`` as in ``uncertain_points``. A point's prediction is
    the bilinear value of the low-res logits (what ``postprocess_masks`` would give at that spot
    up to its two-step resize), its target the full-resolution pixel it falls in. The weighted
    BCE's foreground weight is the background/foreground ratio among the points (capped), so both
    still weigh the same in total. ``iou`` and ``pred_area`` are estimated on the uniform
    candidates (no gradient); ``true_area`` is exact.
    """
    with torch.no_grad():
        coords, candidates, cand_logits = uncertain_points(low_res.detach(), extent, sampling, generator)
    scale = torch.tensor(extent, dtype=torch.float32, device=low_res.device)
    logits = point_sample(low_res, coords * scale)
    labels = nearest_labels(target, coords)
    terms = _mask_terms(logits, labels, kind, max_pos_weight)
    with torch.no_grad():
        h, w = target.shape[-2:]
        terms["iou"] = hard_iou(cand_logits, nearest_labels(target, candidates))
        terms["pred_area"] = (cand_logits > 0).float().mean(1) * (h * w)
        terms["true_area"] = target.flatten(1).sum(1).float()
    return terms


def mask_loss_parts(terms: list[dict[str, torch.Tensor]], iou_pred: torch.Tensor) -> dict[str, torch.Tensor]:
    """Batch means of the per-mask terms (of one or several images, in ``iou_pred``'s order) plus
    the MSE of SAM's IoU head (B,) against the real IoU; their sum is ``"loss"``."""
    cat = {k: torch.cat([t[k] for t in terms]) for k in terms[0]}
    iou_mse = F.mse_loss(iou_pred.float(), cat["iou"], reduction="none")
    parts = {"dice_loss": cat["dice_loss"].mean(), "pixel_loss": cat["pixel_loss"].mean(), "iou_mse": iou_mse.mean()}
    parts["loss"] = parts["dice_loss"] + parts["pixel_loss"] + parts["iou_mse"]
    return parts


def area_ratio(terms: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Predicted / true mask area over a batch (0-d, no gradient): near 0 means collapse to empty."""
    pred = sum(t["pred_area"].sum() for t in terms)
    true = sum(t["true_area"].sum() for t in terms)
    return pred / true.clamp(min=1)

