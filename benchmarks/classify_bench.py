"""classify: epoch time with the decoded-image cache vs a plain torchvision ImageFolder that decodes
every PNG every epoch. Same model, optimiser, data, batch size and loader workers; one run, the two
loaders alternated, several repeats, medians.

Printed ratios (ours / reference; lower is better):
  * training epoch: train_one_epoch over the cached uint8 tensors vs over ImageFolder batches
    (both uint8, both normalised on the device by the same code);
  * data only: iterating the loader without the model, i.e. the I/O path alone (its floor is ~0);
plus the one-off cost of filling the cache (decode + resize once, in threads).

  python benchmarks/classify_bench.py                       # 2-core dev box: resnet18, frozen backbone
  python benchmarks/classify_bench.py --device cuda --arch resnet50 --freeze none --workers 8 --batch 32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from defectkit.classify.data import IMAGENET_MEAN, IMAGENET_STD, CachedImages, ImageCache, scan_split
from defectkit.classify.engine import train_one_epoch
from defectkit.classify.models import apply_freeze, build_model
from defectkit.convert import convert_category
from defectkit.core.torchio import resolve_device
from defectkit.sample import write_category


def make_data(root: Path, n_good: int, n_per_defect: int) -> Path:
    """A generated 1024x1024 category, converted by the project's converter; returns classify/."""
    write_category(root / "mvtec", "wood", size=(1024, 1024), n_train_good=n_good, n_test_good=4,
                   n_per_defect=n_per_defect, progress=True)  # fmt: skip
    convert_category(root / "mvtec", "wood", root / "converted", to=("classify",), progress=False)
    return root / "converted" / "wood" / "classify"


def reference_loader(data: Path, size: int, batch: int, workers: int) -> DataLoader:
    tf = transforms.Compose([transforms.Resize((size, size)), transforms.PILToTensor()])
    ds = datasets.ImageFolder(str(data / "train"), transform=tf)
    return DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help="an existing classify/ folder (default: generate 1024x1024 images)"
    )
    parser.add_argument(
        "--n-good", type=int, default=12, help="generated train/good images (default: %(default)s)"
    )
    parser.add_argument(
        "--n-per-defect", type=int, default=4, help="generated images per defect type (default: %(default)s)"
    )
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--freeze", default="fc", help="fc = the course's baseline (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers, the same for both (default: %(default)s)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    dev = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="classify-bench-") as tmp:
        data = args.data or make_data(Path(tmp), args.n_good, args.n_per_defect)
        images = scan_split(data, "train")
        print(f"data: {len(images.paths)} train images in {len(images.classes)} classes from {data}")

        start = time.perf_counter()
        cached = ImageCache(args.image_size, workers=8).load(images.paths)
        build = time.perf_counter() - start
        ours = DataLoader(
            CachedImages(cached, images.labels),
            batch_size=args.batch,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        )
        ref = reference_loader(data, args.image_size, args.batch, args.workers)
        assert ref.dataset.classes == images.classes  # same classes, same order

        torch.manual_seed(0)
        model = build_model(args.arch, len(images.classes), weights="none").to(dev)
        optimizer = torch.optim.Adam(apply_freeze(model, args.freeze), lr=1e-3)
        criterion = torch.nn.CrossEntropyLoss()

        def epoch(loader):
            model.train()
            train_one_epoch(
                model, criterion, optimizer, loader, dev, IMAGENET_MEAN, IMAGENET_STD, progress=False
            )

        def data_only(loader):
            for x, _ in loader:
                x.to(dev)

        epoch(ours)  # warm-up: allocator, kernels, worker start
        epoch(ref)
        times = {"epoch ours": [], "epoch ref": [], "data ours": [], "data ref": []}
        for _ in range(args.repeats):
            times["epoch ours"].append(timed(lambda: epoch(ours)))
            times["epoch ref"].append(timed(lambda: epoch(ref)))
            times["data ours"].append(timed(lambda: data_only(ours)))
            times["data ref"].append(timed(lambda: data_only(ref)))
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(images.paths)
    print(f"model {args.arch} freeze={args.freeze} size {args.image_size} batch {args.batch} workers {args.workers} "
          f"device {dev} threads {torch.get_num_threads()}; {args.repeats} repeats, medians")  # fmt: skip
    print(f"one-off cache fill: {build:.2f} s ({n / build:.1f} img/s)")
    print(f"training epoch: cached {med['epoch ours']:.3f} s vs ImageFolder {med['epoch ref']:.3f} s "
          f"-> ratio {med['epoch ours'] / med['epoch ref']:.3f}x (goal <= 0.2x)")  # fmt: skip
    print(f"data only:      cached {med['data ours']:.4f} s vs ImageFolder {med['data ref']:.3f} s "
          f"-> ratio {med['data ours'] / med['data ref']:.4f}x")  # fmt: skip
    print(f"model share of the cached epoch: {1 - med['data ours'] / med['epoch ours']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
