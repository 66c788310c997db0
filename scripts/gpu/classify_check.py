"""GPU check for classify (run by classify_check.sh): a short real fine-tune of a randomly initialised
ResNet-50 on a generated 1024x1024 set, through the project's own code, then figures:

  * the fine-tune itself (classify.train.train: decode once into the cache, train, validate,
    checkpoints, test score by the shared evaluator);
  * training throughput (images/s) and peak GPU memory on the cached images with the augment
    preset's transform, batch 64, bf16 autocast;
  * the classify benchmark (cached vs ImageFolder epoch) on this machine.

GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 shrinks everything for a CPU smoke test.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the classify benchmark is a script there, not a package

import classify_bench  # noqa: E402
import torch
from torch.utils.data import DataLoader, Subset

from defectkit.classify.data import IMAGENET_MEAN, IMAGENET_STD, CachedImages, ImageCache, scan_split, train_transform
from defectkit.classify.engine import train_one_epoch
from defectkit.classify.models import apply_freeze, build_model
from defectkit.classify.train import TrainConfig, train
from defectkit.convert import convert_category
from defectkit.core.torchio import resolve_device
from defectkit.sample import write_category

SMOKE = os.environ.get("GPU_CHECK_SMOKE", "") not in ("", "0")
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
SIZE = 128 if SMOKE else 1024
N_GOOD, N_PER_DEFECT = (6, 2) if SMOKE else (40, 8)
EPOCHS = 1 if SMOKE else 4
ARCH = "resnet18" if SMOKE else "resnet50"
IMAGE_SIZE = 64 if SMOKE else 224
THROUGHPUT_SAMPLES = 16 if SMOKE else 3072
BATCH = 8 if SMOKE else 64


def stamp(t0: float, text: str) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {text}", flush=True)


def main() -> int:
    t0 = time.perf_counter()
    dev = resolve_device(DEVICE)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    stamp(t0, f"torch {torch.__version__} on {name}; smoke={SMOKE}")
    workers = min(16, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="classify-gpu-") as tmp:
        tmp = Path(tmp)
        write_category(tmp / "mvtec", "wood", size=(SIZE, SIZE), n_train_good=N_GOOD, n_test_good=6,
                       n_per_defect=N_PER_DEFECT)  # fmt: skip
        convert_category(
            tmp / "mvtec", "wood", tmp / "converted", to=("classify",), progress=False, workers=workers
        )
        data = tmp / "converted" / "wood" / "classify"
        n = {split: len(list((data / split).rglob("*.png"))) for split in ("train", "val", "test")}
        stamp(t0, f"generated {SIZE}x{SIZE} data and converted: {n}")

        # 1. A real fine-tune through classify train (random init: no weights can be downloaded here).
        cfg = TrainConfig(
            data=str(data), out=str(tmp / "run"), arch=ARCH, weights="none", freeze="none", epochs=EPOCHS,
            batch=32 if not SMOKE else 8, image_size=IMAGE_SIZE, device=DEVICE, decode_workers=workers,
            select="acc", augment=True,
        )  # fmt: skip
        summary = train(cfg, progress=False)
        for h in json.loads((tmp / "run" / "history.json").read_text()):
            print(f"  epoch {h['epoch']}: train loss {h['train_loss']:.4f} acc {h['train_acc']:.3f}  val loss "
                  f"{h['val_loss']:.4f} acc {h['val_acc']:.3f}  {h['images_per_s']:.0f} img/s")  # fmt: skip
        test = summary["test"] or {}
        stamp(
            t0, f"fine-tune done: test acc {test.get('accuracy')}, balanced {test.get('balanced_accuracy')}"
        )

        # 2. Throughput and peak memory on the cached images (augment transform, bf16, batch 64).
        images = scan_split(data, "train")
        cached = ImageCache(IMAGE_SIZE, workers=workers).load(images.paths)
        ds = CachedImages(cached, images.labels, train_transform(augment=True))
        reps = -(-THROUGHPUT_SAMPLES // len(ds))
        loader = DataLoader(Subset(ds, list(range(len(ds))) * reps), batch_size=BATCH, shuffle=True,
                            num_workers=0 if SMOKE else 8, pin_memory=dev.type == "cuda", persistent_workers=not SMOKE)  # fmt: skip
        torch.manual_seed(0)
        model = build_model(ARCH, len(images.classes)).to(dev)
        if dev.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(apply_freeze(model, "none"), lr=1e-3)
        criterion = torch.nn.CrossEntropyLoss()
        model.train()
        train_one_epoch(
            model, criterion, optimizer, loader, dev, IMAGENET_MEAN, IMAGENET_STD, progress=False
        )  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
        rates = []
        for _ in range(2 if SMOKE else 3):
            start = time.perf_counter()
            train_one_epoch(
                model, criterion, optimizer, loader, dev, IMAGENET_MEAN, IMAGENET_STD, progress=False
            )
            if dev.type == "cuda":
                torch.cuda.synchronize()
            rates.append(len(loader.dataset) / (time.perf_counter() - start))
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
        stamp(t0, f"throughput {ARCH} {IMAGE_SIZE}px batch {BATCH} bf16 augment: median {statistics.median(rates):.0f} "
                  f"img/s over {len(rates)} epochs of {len(loader.dataset)}; peak GPU memory {peak:.2f} GiB")  # fmt: skip
        del model, optimizer, loader

        # 3. The benchmark on this machine: cached vs ImageFolder epochs, same model.
        bench = ["--data", str(data), "--device", DEVICE, "--arch", ARCH, "--image-size", str(IMAGE_SIZE),
                 "--batch", "32" if not SMOKE else "8", "--workers", "0" if SMOKE else "8",
                 "--freeze", "none", "--repeats", "2" if SMOKE else "3"]  # fmt: skip
        classify_bench.main(bench)
        stamp(t0, "done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
