"""``anomaly train``: fit an unsupervised model on the good images of the manifest's train split, then
choose its thresholds on the val split.

- **Training data**: the train split's images whose class is ``good``, nothing else (defect images in
  the train split are the supervised rows' data; an unsupervised model never sees them).
- **Training**: anomalib's Lightning module, run by a Lightning ``Trainer`` (see ``_anomalib.fit``):
  PaDiM and PatchCore in their one pass, DRAEM for ``--epochs`` epochs with ``last.pt`` written after
  each (``--resume`` continues from it; a finished run is left as it is).
- **Thresholds**: on the val split only, never on test, each the F1-max threshold of the rule
  ``score >= t`` (:func:`choose_thresholds`): the image threshold over val images' scores (defect vs
  good), the pixel threshold over every val pixel of the maps at the images' own resolution against
  the union of each image's COCO instance masks. With no defect in val, the threshold is just above
  the highest val value (no val image or pixel flagged), and the rule says so.

``RUN/`` then holds ``model.pt`` (``checkpoint`` module docstring), ``summary.json`` (the
configuration, the thresholds, the val scores' AUROC and the time taken) and, for DRAEM,
``history.json`` (the loss per epoch). ``last.pt`` is there while a run is unfinished: written after
every epoch but the last (which goes straight into ``model.pt``), removed once ``model.pt`` is written
(it only adds the optimiser states: 1.2 GB for DRAEM).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from defectkit.anomaly import _anomalib
from defectkit.anomaly.checkpoint import LAST_FILE, LAST_FORMAT, MODEL_FILE, read, save_last, save_model
from defectkit.anomaly.data import ImageDataset, defect_masks, split_images, train_good_images
from defectkit.anomaly.config import AnomalyTrainConfig
from defectkit.anomaly.models import build_model, pretrained_weights
from defectkit.anomaly.predict import score_images
from defectkit.evaluation.ranking import auroc, f1_max
from torch.utils.data import DataLoader

from defectkit.core.atomic import atomic_write_json
from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import parse_device

OUTPUT_NAMES = (MODEL_FILE, LAST_FILE, "summary.json", "history.json")
THRESHOLD_RULE = "F1-max on the val split (score >= t)"


def threshold_of(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float | None, str]:
    """(threshold, its F1 or None, the rule used): the F1-max threshold, or, with no positive,
    the smallest value above every score (nothing flagged).

    >>> threshold_of(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.6, 0.1]))
    (0.6, 1.0, 'F1-max on the val split (score >= t)')
    >>> t, f1, rule = threshold_of(np.array([0, 0]), np.array([0.3, 0.7]))
    >>> t > 0.7, f1, rule
    (True, None, 'no defect in the val split: just above its highest value')
    """
    best_f1, threshold = f1_max(labels, scores)
    if threshold is not None:
        return threshold, best_f1, THRESHOLD_RULE
    top = float(np.max(scores)) if np.size(scores) else 0.0
    return float(np.nextafter(top, np.inf)), None, "no defect in the val split: just above its highest value"


def choose_thresholds(
    labels: np.ndarray, scores: np.ndarray, masks: list[np.ndarray], maps: list[np.ndarray]
) -> dict:
    """The image and pixel thresholds from val labels, scores, masks and maps (same order, each map
    the size of its mask), with the F1 each reaches on val.

    >>> m = [np.array([[0, 1]], bool), np.array([[0, 0]], bool)]
    >>> s = [np.array([[0.1, 0.8]]), np.array([[0.2, 0.3]])]
    >>> t = choose_thresholds(np.array([1, 0]), np.array([0.8, 0.3]), m, s)
    >>> t["image"], t["pixel"], t["val_pixel_f1"]
    (0.8, 0.8, 1.0)
    """
    image, image_f1, image_rule = threshold_of(np.asarray(labels), np.asarray(scores, np.float64))
    flat_gt = np.concatenate([m.ravel() for m in masks])
    flat_maps = np.concatenate([np.asarray(s, np.float64).ravel() for s in maps])
    pixel, pixel_f1, pixel_rule = threshold_of(flat_gt, flat_maps)
    return {
        "image": image,
        "pixel": pixel,
        "val_image_f1": image_f1,
        "val_pixel_f1": pixel_f1,
        "image_rule": image_rule,
        "pixel_rule": pixel_rule,
        "split": "val",
        "n_images": int(np.size(labels)),
        "n_anomalous": int(np.sum(labels)),
    }


def _check_out(out: Path, overwrite: bool, resume: bool) -> None:
    present = [name for name in OUTPUT_NAMES if (out / name).exists()]
    if present and not (overwrite or resume):
        raise DefectkitError(
            f"{out}: already holds a run ({', '.join(present)}); pass --resume or --overwrite"
        )


def _clear_out(out: Path) -> None:
    """Remove an earlier run's outputs (only once data and model are ready: bad input given with
    --overwrite leaves the earlier run intact)."""
    for name in OUTPUT_NAMES:
        if (out / name).exists():
            (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)


def _stored_run(out: Path, cfg: AnomalyTrainConfig) -> tuple[str, dict | None]:
    """What ``--resume`` finds in ``out``: ("finished", model.pt), ("partial", last.pt) or
    ("none", None); a run made with other training options is an error, not silently continued."""
    for name, kind, state in ((MODEL_FILE, None, "finished"), (LAST_FILE, LAST_FORMAT, "partial")):
        path = out / name
        if not path.is_file():
            continue
        ckpt = read(path) if kind is None else read(path, kind)
        stored = AnomalyTrainConfig.from_dict(ckpt["config"]).training_options()
        differ = [k for k, v in cfg.training_options().items() if stored.get(k) != v]
        if differ:
            k = differ[0]
            raise DefectkitError(
                f"{path}: made with other options ({k}: {stored.get(k)!r}, now {cfg.training_options()[k]!r}); "
                "drop --resume and pass --overwrite to start again"
            )
        return state, ckpt
    return "none", None


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(
    config: AnomalyTrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> Path:
    """Train (or resume) the run ``config`` describes; returns its folder (``config.out``)."""
    cfg = config.resolved()
    cfg.check()
    out = Path(cfg.out)
    _check_out(out, overwrite, resume)
    state, stored = _stored_run(out, cfg) if resume else ("none", None)
    if state == "finished":
        if progress:
            print(f"{out}: already trained ({MODEL_FILE}); nothing to resume")
        return out
    device = parse_device(cfg.device)
    # The backbone weights first (offline, a missing `imagenet` file fails within seconds), then the
    # data, then the model (anomalib's import takes ~9 s), and only then is an earlier run replaced.
    weights = pretrained_weights(cfg) if stored is None else None
    started = time.perf_counter()
    train_images = train_good_images(cfg.data)
    val_images = split_images(cfg.data, "val")
    if not val_images:
        raise DefectkitError(
            f"{cfg.data}: the val split is empty; the thresholds are chosen on it (convert-mvtec --val-frac > 0)"
        )
    val_masks = defect_masks(cfg.data, "val", val_images)
    _seed(cfg.seed)
    module = build_model(cfg, weights)
    done, history = 0, []
    if stored is not None:
        _anomalib.load_module_state(module, stored["state_dict"], str(out / LAST_FILE))
        done, history = int(stored["epoch"]), list(stored.get("history", []))
        if progress:
            print(f"resuming {out} after epoch {done} of {cfg.epochs}")
    if stored is None:
        _clear_out(out)

    def epoch_done(epoch: int, states: dict) -> None:
        history.append({"epoch": epoch, **states["metrics"]})
        atomic_write_json(out / "history.json", history)
        if epoch < cfg.epochs:  # after the last epoch, model.pt follows at once and replaces it
            save_last(out / LAST_FILE, cfg, module, epoch, states, history)

    if done < cfg.epochs:
        _seed(cfg.seed + done)  # a resumed run draws new augmentations, not the first epochs' again
        dataset = ImageDataset(train_images, cfg.imgsz)
        loader = DataLoader(
            dataset, batch_size=cfg.batch, shuffle=not cfg.spec.one_pass, collate_fn=_anomalib.image_batch,
            generator=torch.Generator().manual_seed(cfg.seed + done),
        )  # fmt: skip
        _anomalib.fit(
            module, loader, epochs=cfg.epochs - done, device=device, progress=progress,
            resume=stored, epoch_done=None if cfg.spec.one_pass else epoch_done,
        )  # fmt: skip
    trained = time.perf_counter() - started

    dev = torch.device(device.torch)
    module.to(dev)
    val_loader = DataLoader(
        ImageDataset(val_images, cfg.imgsz, val_masks), batch_size=cfg.batch, collate_fn=_anomalib.image_batch
    )
    _anomalib.after_fit(module, val_loader, progress)  # EfficientAD's map quantiles, from the val good images
    val_scores, val_maps = score_images(
        module, val_images, cfg.imgsz, dev, batch=cfg.batch, progress=progress, desc="val"
    )
    labels = np.array([image.label for image in val_images])
    thresholds = choose_thresholds(labels, val_scores, val_masks, val_maps)
    save_model(out / MODEL_FILE, cfg, module, thresholds, cfg.epochs)
    # model.pt holds all a finished run needs; last.pt adds the optimiser states (DRAEM: 1.2 GB).
    (out / LAST_FILE).unlink(missing_ok=True)
    summary = {
        "config": asdict(cfg),
        "thresholds": thresholds,
        "val_image_auroc": auroc(labels, val_scores),
        "n_train_good": len(train_images),
        "train_seconds": trained,
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(out / "summary.json", summary)
    if progress:
        auc = summary["val_image_auroc"]
        print(
            f"{out}: {cfg.model} on {len(train_images)} good images; val image AUROC "
            f"{'n/a' if auc is None else f'{auc:.4f}'}; thresholds image {thresholds['image']:.6g} "
            f"pixel {thresholds['pixel']:.6g} ({thresholds['image_rule']})"
        )
    return out
