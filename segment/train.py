"""Fine-tune SAM's mask decoder (and optionally its prompt encoder) on defect masks.

A plain loop in the style of torchvision's references/classification/train.py:

1. build the model, freeze the image encoder, and fill the embedding cache (one encoder pass per
   image, ever);
2. score base SAM on the validation split (the bar a fine-tune must clear);
3. each epoch: one decoder call per step on the instances of one image (or of
   ``--images-per-step`` images) with jittered box prompts (plus sampled points), loss = Dice +
   weighted BCE (or focal) at full resolution or on uncertainty-sampled points (``--mask-loss``),
   plus MSE on the IoU head, AdamW with a per-step cosine schedule, bf16 autocast on CUDA; then
   validate;
4. ``best.pt`` is written only when the fine-tune beats base SAM (and its own earlier epochs);
   ``last.pt`` (with optimizer and scheduler) is written every epoch for ``--resume``.

Several GPUs: ``torchrun --nproc_per_node N -m defectkit.segment.cli train ...`` (DDP; each rank takes every
N-th step of the same shuffled order; rank 0 validates and writes).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from defectkit.core.atomic import atomic_savefig, atomic_write_text
from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import atomic_torch_save, init_distributed
from defectkit.evaluation.plots import new_figure
from defectkit.segment.data import SamImage, coco_json_for, read_sam_jsonl, split_jsonl
from defectkit.segment.decoder import (
    PointSampling,
    PromptDecoder,
    area_ratio,
    full_mask_terms,
    mask_loss_parts,
    point_mask_terms,
    prompts_to_model_frame,
    upscale_logits,
)
from defectkit.segment.embeddings import EmbeddingCache, ImageEncoder, default_cache_dir
from defectkit.segment.models import FINETUNE_FORMAT, LoadedSam, build_sam, load_finetuned, trainable_state
from defectkit.segment.predict import Segmenter
from defectkit.segment.prompts import jitter_boxes, sample_points
from defectkit.segment.val import score_split

SELECT_METRICS = ("mean_iou", "mean_dice", "segm_AP")
MASK_LOSSES = ("full", "points")

# Default learning rates (--lr). SAM's released decoder already segments: small steps keep what it
# knows. A decoder from random weights (vit_tiny, --random-weights) must first learn to localise at
# all: at 1e-4 it sat on empty masks for 15 epochs of the bundled sample (segment/README.md).
LR_PRETRAINED = 1e-4
LR_RANDOM_INIT = 3e-3


@dataclass
class TrainConfig:
    data: Path  # the sam/ folder from convert-mvtec
    out: Path = Path("runs/segment/train")
    model: str = "vit_b"
    checkpoint: Path | None = None
    random_weights: bool = False
    seed: int = 0
    epochs: int = 10
    batch: int = 16  # instances of one image per decoder call
    images_per_step: int = 1  # images whose prompts share one decoder call and optimizer step
    lr: float | None = None  # None: LR_PRETRAINED, or LR_RANDOM_INIT for random base weights
    weight_decay: float = 0.01
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    points: int = 0  # positive points sampled from each mask, added to the box
    neg_points: int = 0  # negative points from the box's background
    box_jitter: float = 0.05  # std of corner noise, as a fraction of the box side
    train_prompt_encoder: bool = False
    loss: str = "dice+bce"
    mask_loss: str = "full"  # "full": every pixel at the original resolution; "points": sampled points
    mask_points: int = PointSampling.num_points  # points per mask with mask_loss="points"
    max_pos_weight: float = 1000.0  # BCE foreground weight = background/foreground pixels, capped
    cache_dir: Path | None = None  # None: ~/.cache/defectkit/sam_embeddings
    no_cache: bool = False  # encode every image in the loop (slow; for comparison)
    val_split: str = "val"
    validate: bool = True
    select_metric: str = "mean_iou"
    amp: bool = True
    encode_batch: int = 4
    max_steps: int | None = None  # cap decoder steps per epoch
    progress: bool = True

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


# ---------------------------------------------------------------- setup helpers


def instance_batches(records: list[SamImage], batch: int) -> list[tuple[int, list[int]]]:
    """(record index, instance indices) per decoder call: an image's instances, ``batch`` at a time.

    >>> from defectkit.segment.data import SamInstance
    >>> rec = SamImage("a.png", "a.png", 1, 8, 8, [SamInstance("x", [0, 0, 1, 1], {})] * 5)
    >>> instance_batches([rec], 2)
    [(0, [0, 1]), (0, [2, 3]), (0, [4])]
    """
    out = []
    for i, rec in enumerate(records):
        idx = list(range(len(rec.instances)))
        out += [(i, idx[s : s + batch]) for s in range(0, len(idx), batch)]
    return out


def _set_trainable(sam, train_prompt_encoder: bool) -> list[torch.nn.Parameter]:
    sam.requires_grad_(False)
    sam.mask_decoder.requires_grad_(True)
    if train_prompt_encoder:
        sam.prompt_encoder.requires_grad_(True)
    return [p for p in sam.parameters() if p.requires_grad]


# ---------------------------------------------------------------- one epoch


def steps_per_epoch(n_items: int, images_per_step: int, world: int = 1) -> int:
    """Decoder steps each rank takes per epoch: the instance batches grouped ``images_per_step`` at
    a time, the groups shared among ``world`` ranks (the last rank pads by wrapping).

    >>> steps_per_epoch(14, 1), steps_per_epoch(14, 4), steps_per_epoch(14, 4, world=3)
    (14, 4, 2)
    """
    return math.ceil(math.ceil(n_items / images_per_step) / world)


def epoch_calls(n_items: int, images_per_step: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This rank's decoder calls of one epoch: indices into the instance batches, grouped.

    The same shuffled order on every rank (seeded by ``seed`` and ``epoch``), cut into groups of
    ``images_per_step``; each rank takes every ``world``-th group, padded by wrapping so that all
    ranks take the same number of steps. With one image per step the order is that of earlier
    releases, so runs reproduce.

    >>> epoch_calls(5, 2, seed=0, epoch=0)
    [[2, 4], [3, 0], [1]]
    >>> [len(epoch_calls(5, 2, 0, 0, rank=r, world=2)) for r in (0, 1)]
    [2, 2]
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_items)
    groups = [order[s : s + images_per_step].tolist() for s in range(0, n_items, images_per_step)]
    mine = groups[rank::world]
    steps = steps_per_epoch(n_items, images_per_step, world)
    return [mine[i % len(mine)] for i in range(steps)]


def _point_generator(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    """A torch generator for the loss points of one epoch on one rank (reproducible, and the same
    after --resume as in an uninterrupted run)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.default_rng([seed, epoch, rank, 2]).integers(2**62)))
    return gen


def train_one_epoch(
    cfg: TrainConfig,
    model: LoadedSam,
    decoder: torch.nn.Module,
    encoder: ImageEncoder,
    records: list[SamImage],
    items: list[tuple[int, list[int]]],
    optimizer: torch.optim.Optimizer,
    scheduler,
    params: list[torch.nn.Parameter],
    epoch: int,
    steps: int,
    rank: int = 0,
    world: int = 1,
) -> dict[str, float]:
    """One pass over this rank's share of the instance batches; returns mean loss parts and the
    predicted/true mask area ratio (watch it: near 0 means the decoder is collapsing to empty)."""
    sam, device = model.sam, model.sam.device
    calls = epoch_calls(len(items), cfg.images_per_step, cfg.seed, epoch, rank, world)[:steps]
    rng = np.random.default_rng([cfg.seed, epoch, rank, 1])
    points_rng = _point_generator(cfg.seed, epoch, rank, device) if cfg.mask_loss == "points" else None
    sampling = PointSampling(num_points=cfg.mask_points)
    img_size = sam.image_encoder.img_size
    decoder.train()
    # Running sums stay on the device: reading a value each step would wait for the GPU every step.
    sums: dict[str, torch.Tensor] = {}
    bar = tqdm(calls, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not (cfg.progress and rank == 0))
    for n_step, call in enumerate(bar):
        groups = [items[i] for i in call]
        embedded = encoder.embed_many([records[r].image for r, _ in groups], batch=len(groups))
        boxes, coords, labels, targets, image_index = [], [], [], [], []
        for g, ((rec_i, inst_idx), (_, original_size, _)) in enumerate(zip(groups, embedded)):
            rec = records[rec_i]
            insts = [rec.instances[j] for j in inst_idx]
            gt = np.stack([inst.mask() for inst in insts]).astype(np.uint8, copy=False)
            box = jitter_boxes(np.array([i.box_xyxy for i in insts]), cfg.box_jitter, rng, rec.width, rec.height)
            c = lab = None
            if cfg.points or cfg.neg_points:
                sampled = [sample_points(m, cfg.points, cfg.neg_points, rng, b) for m, b in zip(gt, box)]
                c, lab = np.stack([s[0] for s in sampled]), np.stack([s[1] for s in sampled])
            b, c, lab = prompts_to_model_frame(encoder.transform, original_size, device, box, c, lab)
            boxes.append(b), coords.append(c), labels.append(lab)
            targets.append(torch.from_numpy(gt).to(device, non_blocking=True))  # uint8: a quarter of float32's copy
            image_index += [g] * len(insts)
        b = torch.cat(boxes)
        c = torch.cat(coords) if coords[0] is not None else None
        lab = torch.cat(labels) if labels[0] is not None else None
        emb = torch.cat([e for e, _, _ in embedded])
        index = torch.tensor(image_index, device=device) if len(groups) > 1 else None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=encoder.amp):
            low_res, iou_pred = decoder(emb, b, c, lab, multimask=False, image_index=index)
        # The loss in float32 (bf16 logits lose the small differences Dice and BCE sum up).
        low_res = low_res[:, 0].float()
        terms, start = [], 0
        for target, (_, original_size, input_size) in zip(targets, embedded):
            part = low_res[start : start + len(target)]
            start += len(target)
            if cfg.mask_loss == "points":
                extent = (input_size[1] / img_size, input_size[0] / img_size)
                terms.append(point_mask_terms(part, target, extent, cfg.loss, cfg.max_pos_weight, sampling, points_rng))
            else:
                logits = upscale_logits(sam, part[:, None], input_size, original_size)[:, 0]
                terms.append(full_mask_terms(logits, target, cfg.loss, cfg.max_pos_weight))
        parts = mask_loss_parts(terms, iou_pred[:, 0])
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        for k, v in {**parts, "area_ratio": area_ratio(terms)}.items():
            sums[k] = sums[k] + v.detach() if k in sums else v.detach().clone()
        if not bar.disable and n_step % 10 == 0:
            bar.set_postfix(loss=f"{float(parts['loss']):.3f}", area=f"{float(sums['area_ratio']) / (n_step + 1):.2f}")
    return {k: float(v) / max(1, len(calls)) for k, v in sums.items()}


# ---------------------------------------------------------------- checkpoints and logs


def finetune_checkpoint(
    model: LoadedSam, cfg: TrainConfig, epoch: int, metrics: dict, base_metrics: dict
) -> dict:
    """The deployable checkpoint: trained weights + model config, plain types only."""
    return {
        "format": FINETUNE_FORMAT,
        "version": 1,
        "config": model.config(),
        "train_config": cfg.as_dict(),
        "epoch": epoch,
        "metrics": metrics,
        "base_metrics": base_metrics,
        **trainable_state(model.sam, cfg.train_prompt_encoder),
    }


def write_history(out: Path, history: list[dict]) -> None:
    """``results.csv``: one row per epoch (losses, area ratio, validation metrics, lr, time)."""
    keys = sorted({k for h in history for k in h})
    lines = [",".join(keys)] + [",".join(f"{h.get(k, '')}" for k in keys) for h in history]
    atomic_write_text(out / "results.csv", "\n".join(lines) + "\n")


def plot_history(out: Path, history: list[dict], base: dict, select: str) -> None:
    """``curves.png``: training losses and the validation metric against base SAM's (end of run)."""
    epochs = [h["epoch"] for h in history]
    fig = new_figure(10, 4)  # a plain Figure: no pyplot, no backend choice, nothing left open
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for k in ("loss", "dice_loss", "pixel_loss", "iou_mse"):
        ax1.plot(epochs, [h[f"train_{k}"] for h in history], marker="o", label=k.replace("_", " "))
    ax1.set_xlabel("epoch"), ax1.set_title("training loss"), ax1.legend()
    if any(f"val_{select}" in h for h in history):
        ax2.plot(epochs, [h.get(f"val_{select}", float("nan")) for h in history], marker="o", label="fine-tuned")
        if select in base:
            ax2.axhline(base[select], color="gray", linestyle="--", label="base SAM")
        ax2.set_xlabel("epoch"), ax2.set_title(f"validation {select}"), ax2.legend()
    fig.tight_layout()
    atomic_savefig(fig, out / "curves.png", dpi=100)


def _prepare_out(cfg: TrainConfig) -> None:
    out = cfg.out
    if cfg.resume:
        if not (out / "last.pt").is_file():
            raise DefectkitError(f"{out / 'last.pt'}: nothing to resume (no such file)")
        return
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise DefectkitError(f"{out}: already exists; pass --resume to continue it or --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------- the run


def train(cfg: TrainConfig) -> dict:
    """Run a fine-tune; returns a summary (best/base metrics, paths, whether the fine-tune beat base)."""
    if cfg.loss not in ("dice+bce", "dice+focal"):
        raise DefectkitError(f"--loss {cfg.loss}: use dice+bce or dice+focal")
    if cfg.mask_loss not in MASK_LOSSES:
        raise DefectkitError(f"--mask-loss {cfg.mask_loss}: use {' or '.join(MASK_LOSSES)}")
    if cfg.images_per_step < 1 or cfg.mask_points < 1:
        raise DefectkitError("--images-per-step and --mask-points must be at least 1")
    if cfg.select_metric not in SELECT_METRICS:
        raise DefectkitError(f"--select-metric {cfg.select_metric}: use one of {', '.join(SELECT_METRICS)}")
    distributed = init_distributed(cfg.device)
    rank, world, device = distributed.rank, distributed.world, distributed.device
    say = print if rank == 0 else (lambda *a, **k: None)

    # Data and model are checked before --out is touched: a bad input leaves no empty run folder.
    records = [r for r in read_sam_jsonl(split_jsonl(cfg.data, "train")) if r.instances]
    items = instance_batches(records, cfg.batch)
    if not items:
        raise DefectkitError(f"{split_jsonl(cfg.data, 'train')}: no defect instances to train on")
    val_records, coco_val = [], None
    if cfg.validate:
        val_records = read_sam_jsonl(split_jsonl(cfg.data, cfg.val_split))
        coco_val = coco_json_for(cfg.data, cfg.val_split)
    model = build_sam(cfg.model, cfg.checkpoint, random_weights=cfg.random_weights, seed=cfg.seed, device=device)
    if cfg.lr is None:
        cfg = dataclasses.replace(cfg, lr=LR_RANDOM_INIT if model.random_init else LR_PRETRAINED)
    if rank == 0:
        _prepare_out(cfg)
    distributed.barrier()

    cache = None if cfg.no_cache else EmbeddingCache(cfg.cache_dir or default_cache_dir(), model.identity, model.spec.img_size)
    encoder = ImageEncoder(model, cache, amp=cfg.amp)
    if cache is not None:
        # Fill the cache once, batched; this rank's images (and rank 0's validation images).
        paths = sorted({str(records[i].image) for i, _ in items[rank::world]})
        if rank == 0:
            paths += sorted({str(r.image) for r in val_records if r.instances} - set(paths))
        t0 = time.perf_counter()
        step = max(1, cfg.encode_batch)
        for s in tqdm(range(0, len(paths), step), desc="encode", unit="batch", disable=not (cfg.progress and rank == 0)):
            encoder.embed_many(paths[s : s + step], batch=step)
        say(f"embeddings: {encoder.hits} cached, {encoder.misses} computed in {time.perf_counter() - t0:.1f}s ({cache.dir})")

    params = _set_trainable(model.sam, cfg.train_prompt_encoder)
    decoder = PromptDecoder(model.sam)
    steps = steps_per_epoch(len(items), cfg.images_per_step, world)
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    where = "at full resolution" if cfg.mask_loss == "full" else f"on {cfg.mask_points} sampled points per mask"
    say(f"{steps} decoder steps per epoch ({cfg.images_per_step} image(s) each), AdamW lr {cfg.lr:g} (cosine), "
        f"loss {cfg.loss} {where}, foreground weight <= {cfg.max_pos_weight:g}")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * steps, eta_min=cfg.lr * 0.01)
    train_decoder: torch.nn.Module = decoder
    if world > 1:
        # Prompt-encoder parts a box prompt never touches (point and mask embeddings) are unused.
        train_decoder = DistributedDataParallel(
            decoder, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    segmenter = Segmenter(encoder)
    start_epoch, history, base_metrics, best_score = 0, [], {}, -math.inf
    if cfg.resume:
        state = load_finetuned(cfg.out / "last.pt")
        if state["config"]["identity"] != model.identity:
            raise DefectkitError(
                f"{cfg.out / 'last.pt'}: trained from {state['config']['identity']}, not {model.identity}; "
                f"resume with the same --model/--checkpoint"
            )
        model.sam.mask_decoder.load_state_dict(state["mask_decoder"])
        if cfg.train_prompt_encoder and "prompt_encoder" in state:
            model.sam.prompt_encoder.load_state_dict(state["prompt_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.T_max = cfg.epochs * steps  # --epochs may have grown
        start_epoch, history = state["epoch"] + 1, state["history"]
        base_metrics, best_score = state["base_metrics"], state["best_score"]
        say(f"resumed {cfg.out / 'last.pt'} after epoch {start_epoch} of {cfg.epochs}")
    elif cfg.validate and rank == 0:
        base_metrics = val_metrics(segmenter, val_records, coco_val, cfg.progress)
        say("base SAM on " + cfg.val_split + ": " + format_metrics(base_metrics))
    if start_epoch >= cfg.epochs:
        say(f"nothing to do: already trained {start_epoch} epochs (raise --epochs to continue)")

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        stats = train_one_epoch(cfg, model, train_decoder, encoder, records, items, optimizer, scheduler,
                                params, epoch, steps, rank, world)
        row = {"epoch": epoch + 1, "steps": steps, "lr": scheduler.get_last_lr()[0],
               "time_s": round(time.perf_counter() - t0, 3),
               **{f"train_{k}": round(v, 5) for k, v in stats.items()}}
        note = ""
        if rank == 0:
            metrics = {}
            if cfg.validate:
                metrics = val_metrics(segmenter, val_records, coco_val, False)
                row.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
                score = metrics[cfg.select_metric]
                if score > best_score and score > base_metrics.get(cfg.select_metric, -math.inf):
                    best_score = score
                    atomic_torch_save(finetune_checkpoint(model, cfg, epoch, metrics, base_metrics), cfg.out / "best.pt")
                    note = "  -> best.pt"
            history.append(row)
            last = finetune_checkpoint(model, cfg, epoch, metrics, base_metrics)
            last.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        history=history, best_score=best_score)
            atomic_torch_save(last, cfg.out / "last.pt")
            write_history(cfg.out, history)
            say(f"epoch {epoch + 1}/{cfg.epochs} loss {stats['loss']:.4f} (dice loss {stats['dice_loss']:.3f} "
                f"pixel loss {stats['pixel_loss']:.3f} iou-mse {stats['iou_mse']:.4f}) mask area x{stats['area_ratio']:.2f}"
                + (f" | val {format_metrics(metrics)}" if metrics else "") + note)
            if stats["area_ratio"] < 0.2:
                say("warning: predicted masks cover under 20% of the true area: the decoder is collapsing "
                    "toward empty masks (try a higher --max-pos-weight or a lower --lr)")
            elif stats["area_ratio"] > 5:
                say(f"note: predicted masks cover {stats['area_ratio']:.0f}x the true area: the decoder does not "
                    "outline the defects yet (more epochs, or a lower --max-pos-weight)")
        distributed.barrier()

    summary = {"out": str(cfg.out), "base": base_metrics, "history": history, "beat_base": None}
    if rank == 0 and history:
        plot_history(cfg.out, history, base_metrics, cfg.select_metric)
    if rank == 0 and cfg.validate and history:
        best = cfg.out / "best.pt"
        summary["beat_base"] = best.is_file()
        if best.is_file():
            summary["best"] = load_finetuned(best)["metrics"]
            say(f"best.pt: {cfg.select_metric} {summary['best'][cfg.select_metric]:.4f} vs base SAM "
                f"{base_metrics[cfg.select_metric]:.4f}")
        else:
            say(f"the fine-tuned decoder never beat base SAM on {cfg.val_split} ({cfg.select_metric} "
                f"{base_metrics[cfg.select_metric]:.4f}); no best.pt written - use base SAM (last.pt kept for --resume)")
    if world > 1:
        dist.destroy_process_group()
    return summary


def val_metrics(segmenter: Segmenter, records, coco_json, progress: bool) -> dict:
    """The validation scores of one epoch (as classify's ``val_metrics``), decoder in eval mode."""
    was_training = segmenter.decoder.training
    segmenter.decoder.eval()
    try:
        return score_split(segmenter, records, coco_json, progress)
    finally:
        segmenter.decoder.train(was_training)


def format_metrics(m: dict) -> str:
    return (f"IoU {m['mean_iou']:.4f} Dice {m['mean_dice']:.4f} segm AP {m['segm_AP']:.4f} "
            f"AP50 {m['segm_AP50']:.4f} area x{m['area_ratio']:.2f}")
