"""classify: ``classify train`` against a plain torchvision script, as whole commands, and the epoch time
of the decoded-image cache against a torchvision ImageFolder inside one process (the library figures).

Both commands get the same converted category (``classify/{train,val,test}/<class>/*.png``), the same
model (torchvision ``--arch``, random init, its fc replaced by one output per class, seeded by
``torch.manual_seed(0)``), the same ``--freeze`` (frozen BatchNorm layers in eval mode), Adam at lr
1e-3 with no weight decay, cross-entropy, a cosine schedule stepped per epoch, the same epochs, batch,
loader workers, image size and device (bfloat16 autocast and channels-last on CUDA, as ours does).
What each side does:

- **command, ours**: the whole ``classify train --data D --weights none --freeze F --epochs E
  --image-size S --batch B --loader-workers W --device DEV --out O`` (the console script beside this
  interpreter, its other options at their defaults: ``classify train --help``) in a fresh process:
  interpreter start, imports, scan, decode and resize every train and val image once (4 threads), per
  epoch train, validate (batches of 64), save best.pt and last.pt, history.json; then curves.png, the
  best checkpoint scored on the test split by the shared evaluator (report.md, metrics.json,
  confusion-matrix PNG, predictions) and summary.json; exit.
- **command, torchvision**: the whole :data:`REFERENCE` script (``python -c``) in a fresh process:
  imports, ImageFolder with Resize((S, S)) + ToTensor + Normalize (ImageNet mean/std), so every image is
  decoded and resized every epoch; per epoch train, validate (batches of 64), save best.pt (by val
  loss) and last.pt (model, optimiser, schedule) with ``torch.save``, history.json; then the best
  model scored on the test split (accuracy); exit. It writes no plots and no evaluator report: those
  are part of what our command costs.
- **epoch, cached** / **epoch, ImageFolder** (library, in this process): ``train_one_epoch`` over the
  cached uint8 tensors vs over ImageFolder batches (uint8 too; both normalised on the device by the
  same code), the same model and optimiser.
- **data, cached** / **data, ImageFolder** (library, in this process): the loader alone, no model: the
  I/O path (its floor is ~0).

Every repeat runs all six sides back to back, in an order rotated by one each repeat, after an untimed
warm-up round (page cache, first imports from disk, allocator); the ratios ours / reference are taken
per repeat and printed as min / median / max, with wall and CPU time (the whole process tree for the
commands, this process for the library sides), the load average before and after, and the machine.
Plus the one-off cost of filling the cache (decode + resize once, in threads).

  python benchmarks/classify_bench.py                       # 2-core dev box: resnet18, frozen backbone
  python benchmarks/classify_bench.py --device cuda --arch resnet50 --freeze none --workers 8 --batch 32
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_common import console_script, cpu_model, cpu_seconds, load, spread
from defectkit.classify.data import IMAGENET_MEAN, IMAGENET_STD, CachedImages, ImageCache, scan_split
from defectkit.classify.engine import train_one_epoch
from defectkit.classify.models import apply_freeze, build_model
from defectkit.convert import convert_category
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from defectkit.core.torchio import resolve_device
from defectkit.sample import write_category

EVAL_BATCH = 64  # classify train's --eval-batch default: the reference validates and tests in batches of 64
SEED = 0

# The plain-torchvision training script: what a user writes without defectkit (see the module docstring).
REFERENCE = r"""
import json, sys
from pathlib import Path
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms

data, out, arch, freeze = sys.argv[1:5]
epochs, size, batch, workers, eval_batch, seed = map(int, sys.argv[5:11])
dev = torch.device(sys.argv[11])
out = Path(out)
out.mkdir(parents=True, exist_ok=True)
tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                         transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
train_ds = datasets.ImageFolder(f"{data}/train", tf)
classes = train_ds.classes


class Split(datasets.ImageFolder):  # val/test: the train classes, in their order; a class may be empty
    def find_classes(self, directory):
        return classes, {c: i for i, c in enumerate(classes)}


val_ds, test_ds = (Split(f"{data}/{s}", tf, allow_empty=True) for s in ("val", "test"))
train_dl = DataLoader(train_ds, batch_size=batch, shuffle=True, num_workers=workers)
val_dl = DataLoader(val_ds, batch_size=eval_batch, num_workers=workers)
test_dl = DataLoader(test_ds, batch_size=eval_batch, num_workers=workers)

torch.manual_seed(seed)
model = getattr(models, arch)(weights=None)
model.fc = nn.Linear(model.fc.in_features, len(classes))
keep = {"fc": ("fc",), "layer4": ("layer4", "fc"), "none": None}[freeze]
for name, p in model.named_parameters():
    p.requires_grad = keep is None or name.split(".")[0] in keep
model.to(dev)
if dev.type == "cuda":
    model.to(memory_format=torch.channels_last)
amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
criterion = nn.CrossEntropyLoss()


def evaluate(loader):
    model.eval()
    loss, correct, n = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            with amp:
                logits = model(x).float()
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return loss / max(n, 1), correct / max(n, 1)


history, best = [], None
for epoch in range(epochs):
    model.train()
    for m in model.modules():  # a frozen BatchNorm keeps its running statistics
        if isinstance(m, nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in train_dl:
        x, y = x.to(dev), y.to(dev)
        with amp:
            logits = model(x)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    scheduler.step()
    val_loss, val_acc = evaluate(val_dl)
    history.append({"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n,
                    "val_loss": val_loss, "val_acc": val_acc})
    if best is None or val_loss < best:
        best = val_loss
        torch.save(model.state_dict(), out / "best.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch + 1}, out / "last.pt")
    (out / "history.json").write_text(json.dumps(history))
    print(f"epoch {epoch + 1}/{epochs} train loss {loss_sum / n:.4f} val loss {val_loss:.4f} "
          f"acc {val_acc:.3f}")
model.load_state_dict(torch.load(out / "best.pt", weights_only=True))
print(f"test acc {evaluate(test_dl)[1]:.3f}")
"""


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


def command_ours(args: argparse.Namespace, data: Path, dev: torch.device, out: Path) -> list[str]:
    return console_script("classify", "defectkit.classify.cli") + ["train", "--data", str(data), "--arch", args.arch, "--weights", "none",
                   "--freeze", args.freeze, "--epochs", str(args.epochs),
                   "--image-size", str(args.image_size), "--batch", str(args.batch),
                   "--loader-workers", str(args.workers), "--eval-batch", str(EVAL_BATCH),
                   "--seed", str(SEED), "--device", str(dev), "--out", str(out)]  # fmt: skip


def command_reference(args: argparse.Namespace, data: Path, dev: torch.device, out: Path) -> list[str]:
    return [sys.executable, "-c", REFERENCE, str(data), str(out), args.arch, args.freeze, str(args.epochs),
            str(args.image_size), str(args.batch), str(args.workers), str(EVAL_BATCH), str(SEED),
            str(dev)]  # fmt: skip


def run_command(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} ... failed:\n{done.stderr[-3000:]}")




def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), cpu_seconds()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - w0, cpu_seconds() - c0








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
    parser.add_argument("--arch", default="resnet18", choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument(
        "--freeze", default="fc", choices=("fc", "layer4", "none"),
        help="fc = the course's baseline (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--image-size", type=int, default=224, help="(default: %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="(default: %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers, the same for both (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each command (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="(default: %(default)s)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    dev = resolve_device(args.device)
    print(f"python {platform.python_version()} {platform.machine()}, {cpu_model()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {dev}")  # fmt: skip
    print(f"before: {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="classify-bench-") as tmp:
        tmp = Path(tmp)
        data = (args.data or make_data(tmp, args.n_good, args.n_per_defect)).resolve()
        images = scan_split(data, "train")
        n_val, n_test = (len(scan_split(data, s, images.classes).paths) for s in ("val", "test"))
        print(f"data: {len(images.paths)} train, {n_val} val, {n_test} test images in {len(images.classes)} "
              f"classes from {data}")  # fmt: skip

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

        run_out = tmp / "run"  # each command's --out, removed after it (untimed)
        sides: dict[str, Callable[[], object]] = {
            "command, classify train": lambda: run_command(command_ours(args, data, dev, run_out), tmp),
            "command, torchvision": lambda: run_command(command_reference(args, data, dev, run_out), tmp),
            "epoch, cached": lambda: epoch(ours),
            "epoch, ImageFolder": lambda: epoch(ref),
            "data, cached": lambda: data_only(ours),
            "data, ImageFolder": lambda: data_only(ref),
        }
        names = list(sides)
        wall: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, list[float]] = {k: [] for k in names}
        for repeat in range(-1, args.repeats):  # repeat -1 is the warm-up round, not recorded
            order = names[repeat % len(names):] + names[: repeat % len(names)]
            for name in order:
                w, c = timed(sides[name])
                shutil.rmtree(run_out, ignore_errors=True)
                if repeat >= 0:
                    wall[name].append(w)
                    cpu[name].append(c)
            if repeat >= 0:
                times = "  ".join(f"{k} {wall[k][-1]:.2f}s" for k in order)
                print(f"repeat {repeat + 1}/{args.repeats}: {times}", flush=True)
    print(f"after: {load()}")

    n = len(images.paths)
    print(f"\nmodel {args.arch} freeze={args.freeze} size {args.image_size} batch {args.batch} workers "
          f"{args.workers} device {dev}; commands train {args.epochs} epochs; {args.repeats} repeats after a "
          "warm-up round, order rotated each repeat")  # fmt: skip
    print("seconds per side (wall | CPU):")
    for k in names:
        print(f"  {k:24s} wall {spread(wall[k], 3)} | cpu {spread(cpu[k], 3)}")
    print("ratio ours / reference, per repeat (wall | CPU):")
    pairs = (("whole command", names[0], names[1]), ("training epoch", names[2], names[3]),
             ("data only", names[4], names[5]))  # fmt: skip
    for label, a, b in pairs:
        ratios = [x / y for x, y in zip(wall[a], wall[b])]
        cpu_ratios = [x / y for x, y in zip(cpu[a], cpu[b])]
        print(f"  {label:14s} wall {spread(ratios, 4)} | cpu {spread(cpu_ratios, 4)}")
    print(f"one-off cache fill: {build:.2f} s ({n / build:.1f} img/s)")
    data_share = statistics.median(wall["data, cached"]) / statistics.median(wall["epoch, cached"])
    print(f"model share of the cached epoch (medians): {1 - data_share:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
