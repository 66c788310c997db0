"""anomaly: ``anomaly train`` + ``anomaly val`` against the same model through anomalib's own Engine
(fit, then test), on the same images at the same size. Goal: at most 1.05x the Engine's wall time.

Both sides get the same generated category (``defectkit.sample.write_category``, converted by
convert-mvtec), the same model (PaDiM by default, random-init backbone: offline), the same input size,
and the same images: fit on the manifest's train/good images, validate on its val split, test on its
test split. The Engine side is what an anomalib user writes: the model with anomalib's default
components (normalisation, thresholding, evaluator; its visualiser off unless ``--engine-visualizer``,
since defectkit's val writes no per-image overlays), ``Engine().fit`` then ``Engine().test``, fed the
same images by the same DataLoaders.

Three ratios (ours / Engine; lower is better), each over ``--repeats`` runs after a warm-up, the
order alternated between repeats, min / median / max:

  * commands: ``anomaly train`` then ``anomaly val`` (two processes, as a user runs them) vs one
    process running the Engine script (imports included on both sides);
  * library, one process each: ``train()`` + ``validate()`` vs the Engine script;
  * library, in this process (imports warm): ``train()`` + ``validate()`` vs ``Engine.fit`` + ``test``.

  python benchmarks/anomaly_bench.py                                 # 128 px, 24 good train images
  python benchmarks/anomaly_bench.py --size 256 --n-good 60 --model patchcore --backbone resnet18
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from anomalib.engine import Engine
from anomalib.models import Padim, Patchcore
from torch.utils.data import DataLoader

from defectkit.anomaly import _anomalib
from defectkit.anomaly.data import ImageDataset, defect_masks, split_images, train_good_images
from defectkit.anomaly.config import AnomalyTrainConfig
from defectkit.anomaly.train import train
from defectkit.anomaly.val import validate
from defectkit.convert import convert_category
from defectkit.sample import write_category

ENGINE_MODELS = {"padim": Padim, "patchcore": Patchcore}


def make_data(root: Path, size: int, n_good: int, n_per_defect: int) -> Path:
    """A generated category of ``size`` px images, converted (coco/ and split.json)."""
    write_category(root / "mvtec", "wood", size=(size, size), n_train_good=n_good, n_test_good=6,
                   n_per_defect=n_per_defect)  # fmt: skip
    convert_category(root / "mvtec", "wood", root / "converted", to=("coco",), progress=False)
    return root / "converted" / "wood"


def loaders(data: Path, size: int, batch: int) -> dict[str, DataLoader]:
    """The images both sides see: train/good for fitting, the val and test splits with their masks."""
    out = {"train": DataLoader(ImageDataset(train_good_images(data), size), batch_size=batch,
                               collate_fn=_anomalib.image_batch)}  # fmt: skip
    for split in ("val", "test"):
        images = split_images(data, split)
        out[split] = DataLoader(
            ImageDataset(images, size, defect_masks(data, split, images)), batch_size=batch,
            collate_fn=_anomalib.image_batch,
        )  # fmt: skip
    return out


def run_engine(args: argparse.Namespace, data: Path, root: Path) -> float:
    """anomalib's way: the model with its default components, Engine.fit (train + val), Engine.test.
    Returns the test image AUROC anomalib reports."""
    kwargs = {"backbone": args.backbone} if args.backbone else {}
    model_class = ENGINE_MODELS[args.model]
    model = model_class(
        pre_trained=False, pre_processor=model_class.configure_pre_processor((args.size, args.size)),
        visualizer=args.engine_visualizer, **kwargs,
    )  # fmt: skip
    data_loaders = loaders(data, args.size, args.batch)
    engine = Engine(
        default_root_dir=root, enable_progress_bar=False, logger=False, accelerator="cpu", devices=1
    )
    with _anomalib.quiet_lightning():
        engine.fit(model, train_dataloaders=data_loaders["train"], val_dataloaders=data_loaders["val"])
        result = engine.test(model, dataloaders=data_loaders["test"], verbose=False)
    return float(result[0]["image_AUROC"])


def run_ours(args: argparse.Namespace, data: Path, root: Path) -> float:
    """defectkit's library calls: train() then validate() on the test split. Returns its image AUROC."""
    cfg = AnomalyTrainConfig(
        data=str(data), out=str(root / "run"), model=args.model, backbone=args.backbone or "",
        backbone_weights="none", imgsz=args.size, batch=args.batch, device="cpu",
    )  # fmt: skip
    run = train(cfg, overwrite=True, progress=False)
    return float(
        validate(run, data, "test", root / "report", batch=args.batch, progress=False)["anomaly"][
            "image_auroc"
        ]
    )


def options(args: argparse.Namespace) -> list[str]:
    out = ["--model", args.model, "--size", str(args.size), "--batch", str(args.batch)]
    out += ["--backbone", args.backbone] if args.backbone else []
    out += ["--engine-visualizer"] if args.engine_visualizer else []
    return out


def commands(args: argparse.Namespace, data: Path, root: Path) -> list[list[str]]:
    run, report = root / "cli-run", root / "cli-report"
    train_cmd = ["anomaly", "train", "--data", str(data), "--model", args.model, "--out", str(run),
                 "--imgsz", str(args.size), "--batch", str(args.batch), "--backbone-weights", "none",
                 "--device", "cpu", "--overwrite", "--quiet"]  # fmt: skip
    train_cmd += ["--backbone", args.backbone] if args.backbone else []
    val_cmd = ["anomaly", "val", "--model", str(run), "--data", str(data), "--split", "test", "--out", str(report),
               "--batch", str(args.batch), "--device", "cpu", "--overwrite", "--quiet"]  # fmt: skip
    return [train_cmd, val_cmd]


def timed_processes(argvs: list[list[str]]) -> float:
    start = time.perf_counter()
    for argv in argvs:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f}  median {statistics.median(values):.3f}  max {max(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="a converted category (default: generate one)")
    parser.add_argument(
        "--size", type=int, default=128, help="image and model input size (default: %(default)s)"
    )
    parser.add_argument(
        "--n-good", type=int, default=24, help="generated train/good images (default: %(default)s)"
    )
    parser.add_argument(
        "--n-per-defect", type=int, default=4, help="generated images per defect (default: %(default)s)"
    )
    parser.add_argument(
        "--model", choices=tuple(ENGINE_MODELS), default="padim", help="(default: %(default)s)"
    )
    parser.add_argument("--backbone", default="", help="timm backbone (default: the model's)")
    parser.add_argument("--batch", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="(default: %(default)s)")
    parser.add_argument("--engine-visualizer", action="store_true", help="keep anomalib's visualiser on (it writes "
                        "an image per test image; defectkit's val writes none)")  # fmt: skip
    parser.add_argument(
        "--once", choices=("engine", "ours"), help=argparse.SUPPRESS
    )  # one side, in a subprocess
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.once:  # a child process: one side, once, its AUROC printed for the parent
        run = run_engine if args.once == "engine" else run_ours
        print(json.dumps({"image_auroc": run(args, args.data, args.root)}))
        return 0

    env_threads = os.environ.get("OMP_NUM_THREADS", "")
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-") as tmp:
        root = Path(tmp)
        data = args.data or make_data(root, args.size, args.n_good, args.n_per_defect)
        print(f"data: {len(train_good_images(data))} good train images, {len(split_images(data, 'val'))} val, "
              f"{len(split_images(data, 'test'))} test, {args.size} px; model {args.model} "
              f"{args.backbone or '(default backbone)'}, random init; torch threads {torch.get_num_threads()} "
              f"{'(OMP_NUM_THREADS=' + env_threads + ')' if env_threads else ''}")  # fmt: skip
        child = [sys.executable, __file__, *options(args), "--data", str(data)]
        sides: dict[str, Callable[[], float]] = {
            "commands": lambda: timed_processes(commands(args, data, root)),
            "library process": lambda: timed_processes(
                [[*child, "--once", "ours", "--root", str(root / "lib")]]
            ),
            "engine process": lambda: timed_processes(
                [[*child, "--once", "engine", "--root", str(root / "eng")]]
            ),
            "library in-process": lambda: timed(lambda: run_ours(args, data, root / "in-lib")),
            "engine in-process": lambda: timed(lambda: run_engine(args, data, root / "in-eng")),
        }
        aurocs = {
            "ours": run_ours(args, data, root / "check"),
            "engine": run_engine(args, data, root / "check-eng"),
        }
        print(
            f"test image AUROC: ours {aurocs['ours']:.6f}, anomalib Engine {aurocs['engine']:.6f} (normalised scores)"
        )
        for fn in sides.values():  # warm-up: caches, first imports from disk
            fn()
        times: dict[str, list[float]] = {name: [] for name in sides}
        order = list(sides)
        for repeat in range(args.repeats):
            for name in order if repeat % 2 == 0 else order[::-1]:  # alternate the order between repeats
                times[name].append(sides[name]())
    print(f"{args.repeats} repeats after a warm-up, seconds and ratios (ours / Engine; goal <= 1.05x):")
    for name, values in times.items():
        print(f"  {name:20s} {spread(values)} s")
    pairs = {"commands / engine process": ("commands", "engine process"),
             "library process / engine process": ("library process", "engine process"),
             "library / engine, in-process": ("library in-process", "engine in-process")}  # fmt: skip
    for label, (ours, theirs) in pairs.items():
        ratios = [a / b for a, b in zip(times[ours], times[theirs])]
        print(f"  {label:34s} {spread(ratios)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
