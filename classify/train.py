"""``classify train``: fine-tune a torchvision ResNet on ``<data>/{train,val,test}/<class>/*.png``.

A plain loop: decode every image once into a cache, then per epoch train (with a progress bar),
step the cosine schedule, validate, keep ``best.pt`` (by val loss or accuracy) and ``last.pt`` (to
resume). At the end the best model is scored on the test split by the shared evaluator.
Runs on the CPU, one GPU, or several under ``torchrun`` (DistributedDataParallel).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler
from tqdm import tqdm

from defectkit.classify.checkpoint import read_checkpoint, save_checkpoint
from defectkit.classify.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CachedImages,
    ImageCache,
    ImageList,
    dataset_name,
    default_disk_cache,
    scan_split,
    split_has_images,
    train_transform,
)
from defectkit.classify.engine import predict_logits, seed_epoch, train_one_epoch
from defectkit.classify.config import TrainConfig
from defectkit.classify.longtail import balanced_sample_weights, build_loss
from defectkit.classify.metrics import classification_metrics
from defectkit.classify.models import (
    apply_freeze,
    build_model,
    check_classes,
    frozen_batchnorm_eval,
)
from defectkit.classify.val import validate
from defectkit.core.atomic import atomic_dir, atomic_savefig, atomic_write_json
from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import init_distributed
from defectkit.evaluation.plots import new_figure

OUTPUT_NAMES = ("last.pt", "best.pt", "history.json", "curves.png", "summary.json", "test")


def _disk_cache_dir(cfg: TrainConfig) -> Path | None:
    if cfg.cache != "disk":
        return None
    return Path(cfg.cache_dir) if cfg.cache_dir else default_disk_cache()


def image_cache(cfg: TrainConfig) -> ImageCache:
    """The decoded-image cache a run with ``cfg`` uses (empty until images are loaded)."""
    return ImageCache(cfg.image_size, disk_dir=_disk_cache_dir(cfg), workers=cfg.decode_workers)


def cache_fits(cache: ImageCache, cfg: TrainConfig) -> bool:
    """Whether ``cache`` holds images as a run with ``cfg`` needs them (same size and disk folder)."""
    return cache.size == cfg.image_size and cache.disk_dir == _disk_cache_dir(cfg)


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def limit_per_class(images: ImageList, limit: int) -> ImageList:
    """The first ``limit`` images of each class (all when limit is 0)."""
    if limit <= 0:
        return images
    seen = [0] * len(images.classes)
    keep = []
    for path, label in zip(images.paths, images.labels):
        if seen[label] < limit:
            seen[label] += 1
            keep.append((path, label))
    return ImageList([p for p, _ in keep], [lab for _, lab in keep], images.classes)


def val_metrics(model, images: torch.Tensor, labels: list[int], classes, cfg: TrainConfig, device) -> dict:
    """Val loss (plain cross-entropy on the raw logits, comparable across --loss choices), accuracy,
    balanced accuracy and per-class recall."""
    logits = predict_logits(
        model, images, device, IMAGENET_MEAN, IMAGENET_STD, batch=cfg.eval_batch, amp=cfg.amp
    )
    target = torch.as_tensor(labels, dtype=torch.long)
    metrics = classification_metrics(target, logits.argmax(1), classes)
    return {
        "loss": float(F.cross_entropy(logits, target)),
        "acc": float(metrics["accuracy"]),
        "balanced_acc": float(metrics["balanced_accuracy"]),
        "recall": {name: metrics["per_class"][name]["recall"] for name in classes},
    }


def curves_figure(history: list[dict], title: str):
    """Loss and accuracy per epoch, train vs val."""
    fig = new_figure(10, 4)
    epochs = [h["epoch"] for h in history]
    for i, key in enumerate(("loss", "acc")):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot(epochs, [h[f"train_{key}"] for h in history], marker=".", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], marker=".", label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse to write over an earlier run unless asked (checked before any slow work)."""
    present = [name for name in OUTPUT_NAMES if (out / name).exists()]
    if present and not overwrite:
        raise DefectkitError(
            f"{out}: already holds a run ({', '.join(present)}); pass --resume {out / 'last.pt'} or --overwrite"
        )


def _clear_out(out: Path) -> None:
    """Remove an earlier run's outputs; called only once data and model are ready, so bad input
    given with --overwrite leaves the earlier run intact."""
    for name in OUTPUT_NAMES:
        if not (out / name).exists():
            continue
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _is_better(select: str, row: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if select == "acc":  # ties broken by the lower val loss
        return (row["val_acc"], -row["val_loss"]) > (best["val_acc"], -best["val_loss"])
    return row["val_loss"] < best["val_loss"]


def train(
    cfg: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str | None = None,
    cache: ImageCache | None = None,
) -> dict:
    """Train (or resume) a run and return its summary (also written to ``<out>/summary.json``).

    With ``resume`` (a ``last.pt``) the configuration comes from the checkpoint and training goes on
    from the epoch after the saved one; ``device`` may still be changed. ``cache``: decoded images
    to share between runs on the same data (``classify experiments``); used when its image size
    and disk folder match this run's.
    """
    ckpt = None
    if resume is not None:
        ckpt = read_checkpoint(resume)
        if "optimizer" not in ckpt:
            raise DefectkitError(f"{resume}: has no optimiser state; resume from last.pt, not best.pt")
        cfg = TrainConfig.from_dict(ckpt["config"])
        cfg.out = str(Path(resume).parent)
    if cfg is None:
        raise ValueError("train() needs a config or a checkpoint to resume")
    if device is not None:
        cfg.device = device
    cfg.check()
    out = Path(cfg.out)
    distr = init_distributed(cfg.device)
    dev = distr.device
    show = progress and distr.main
    if ckpt is None and distr.main:
        _check_out(out, overwrite)

    # Data: scanned now, decoded once below (an unreadable file is named before training starts).
    train_list = limit_per_class(scan_split(cfg.data, cfg.train_split), cfg.limit_per_class)
    classes = train_list.classes
    counts = train_list.class_counts()
    if ckpt is not None:
        check_classes(str(resume), ckpt["classes"], classes, f"{Path(cfg.data) / cfg.train_split}")
    val_list = scan_split(cfg.data, cfg.val_split, classes)
    if split_has_images(Path(cfg.data) / cfg.test_split):  # a foreign test class fails now, not at the end
        scan_split(cfg.data, cfg.test_split, classes)
    unseen = [c for c, n in zip(classes, val_list.class_counts()) if n == 0]
    if unseen and show:  # convert-mvtec gives tiny defect types no val image: not an error
        print(f"note: {Path(cfg.data) / cfg.val_split} has no images of {', '.join(unseen)}; "
              "their val recall is not measured")  # fmt: skip

    # Model first: missing weights fail before any decoding.
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, len(classes), weights="none" if ckpt is not None else cfg.weights)
    params = apply_freeze(model, cfg.freeze)
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    criterion = build_loss(cfg.loss, counts, beta=cfg.beta, gamma=cfg.focal_gamma, tau=cfg.tau).to(dev)
    optimizer = build_optimizer(cfg, params)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        if cfg.scheduler == "cosine"
        else None
    )
    start_epoch, history, best = 0, [], None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, history, best = int(ckpt["epoch"]), list(ckpt["history"]), ckpt.get("best")
        if show:
            print(f"resuming {out} after epoch {start_epoch} of {cfg.epochs}")
    if cache is None or not cache_fits(cache, cfg):
        cache = image_cache(cfg)
    train_images = cache.load(train_list.paths, progress=show, desc="decode train")
    val_images = cache.load(val_list.paths, progress=show, desc="decode val")
    if ckpt is None and distr.main:
        _clear_out(out)
    train_model = model
    if distr.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )

    dataset = CachedImages(
        train_images, train_list.labels, train_transform(cfg.augment, cfg.hflip, cfg.rotation, cfg.jitter)
    )
    sampler = None
    if cfg.sampler == "balanced":  # with replacement; under torchrun each process draws its share
        weights = balanced_sample_weights(train_list.labels, len(classes))
        sampler = WeightedRandomSampler(
            weights, num_samples=math.ceil(len(dataset) / distr.world), replacement=True
        )
    elif distr.world > 1:
        sampler = DistributedSampler(
            dataset, num_replicas=distr.world, rank=distr.rank, shuffle=True, seed=cfg.seed
        )
    loader = DataLoader(
        dataset, batch_size=cfg.batch, shuffle=sampler is None, sampler=sampler,
        num_workers=cfg.loader_workers, pin_memory=dev.type == "cuda",
    )  # fmt: skip

    meta = {
        "arch": cfg.arch, "classes": classes, "class_counts": counts, "image_size": cfg.image_size,
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "config": asdict(cfg),
    }  # fmt: skip
    for epoch in range(start_epoch, cfg.epochs):
        seed_epoch(cfg.seed, epoch, distr.rank)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        model.train()
        frozen_batchnorm_eval(model)
        lr = optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        stats = train_one_epoch(
            train_model, criterion, optimizer, loader, dev, IMAGENET_MEAN, IMAGENET_STD,
            amp=cfg.amp, progress=show, desc=f"epoch {epoch + 1}/{cfg.epochs}",
        )  # fmt: skip
        seconds = time.perf_counter() - start
        if scheduler is not None:
            scheduler.step()
        if distr.main:
            val = val_metrics(model, val_images, val_list.labels, classes, cfg, dev)
            row = {
                "epoch": epoch + 1, "lr": lr, "train_loss": stats["loss"], "train_acc": stats["acc"],
                "val_loss": val["loss"], "val_acc": val["acc"], "val_balanced_acc": val["balanced_acc"],
                "val_recall": val["recall"], "seconds": seconds,
                "images_per_s": len(dataset) / seconds if seconds > 0 else 0.0,
            }  # fmt: skip
            history.append(row)
            if _is_better(cfg.select, row, best):
                best = {"epoch": row["epoch"], "val_loss": row["val_loss"], "val_acc": row["val_acc"]}
                save_checkpoint(
                    out / "best.pt",
                    **meta,
                    model=model.state_dict(),
                    epoch=epoch + 1,
                    history=history,
                    best=best,
                )
            save_checkpoint(
                out / "last.pt", **meta, model=model.state_dict(), epoch=epoch + 1, history=history, best=best,
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict() if scheduler is not None else {},
            )  # fmt: skip
            atomic_write_json(out / "history.json", history)
            if show:
                tqdm.write(
                    f"epoch {epoch + 1}/{cfg.epochs}  lr {lr:.2e}  train loss {stats['loss']:.4f} acc {stats['acc']:.3f}  "
                    f"val loss {val['loss']:.4f} acc {val['acc']:.3f} bal {val['balanced_acc']:.3f}  {seconds:.1f}s"
                )
        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    summary: dict = {}
    if distr.main:
        summary = finish(cfg, out, classes, history, best, cache, dev, progress=show)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return summary


def finish(
    cfg: TrainConfig, out: Path, classes, history, best, cache: ImageCache, dev, progress: bool
) -> dict:
    """Curves, the test score of the best checkpoint (shared evaluator), summary.json."""
    if history:
        atomic_savefig(
            curves_figure(history, f"{cfg.arch} on {dataset_name(cfg.data)}"), out / "curves.png", dpi=110
        )
    last = history[-1] if history else {}
    summary = {
        "out": str(out), "arch": cfg.arch, "classes": list(classes), "epochs": len(history),
        "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
        "val_loss": last.get("val_loss"), "val_acc": last.get("val_acc"),
        "val_balanced_acc": last.get("val_balanced_acc"), "select": cfg.select, "best": best,
        "test": None,
    }  # fmt: skip
    test_dir = Path(cfg.data) / cfg.test_split
    # No test split, or only empty class folders (convert-mvtec --test-frac 0): nothing to score.
    has_test = split_has_images(test_dir)
    if not has_test and progress:
        print(f"note: {test_dir} has no images; best.pt is not scored on a test split")
    if has_test and (out / "best.pt").is_file():
        with atomic_dir(out / "test", overwrite=True) as tmp:
            test = validate(
                out / "best.pt", cfg.data, cfg.test_split, tmp, device=str(dev), cache=cache,
                batch=cfg.eval_batch, progress=progress,
            )  # fmt: skip
        summary["test"] = {
            "accuracy": test["accuracy"], "balanced_accuracy": test["balanced_accuracy"],
            "recall": {name: test["per_class"][name]["recall"] for name in classes},
            "defective_auroc": (test.get("defective") or {}).get("image_auroc"),
        }  # fmt: skip
    atomic_write_json(out / "summary.json", summary)
    if progress:
        t = summary["test"]
        tail = f"  test acc {t['accuracy']:.3f} balanced {t['balanced_accuracy']:.3f}" if t else ""
        print(f"{out}: best epoch {best['epoch'] if best else '-'} (by val {cfg.select}){tail}")
    return summary


def load_history(out: str | Path) -> list[dict]:
    return json.loads((Path(out) / "history.json").read_text())
