"""segment benchmark: SAM decoder fine-tuning and predict, each side measured in one run, with a
warm-up, repeats in alternating order, and min/median/max.

1. Fine-tuning epoch, cached vs uncached: `segment train`'s own `train()` (the timed part is the
   epoch, as `segment train` logs it) on the same images, model, prompts and decoder steps, once
   with the embedding cache warm and once with `--no-cache` (every image encoded inside the loop).
   Both sides run the same decoder work; they differ only in where the embedding comes from.
   Measured per training set-up: today's full-resolution loss (`--mask-loss full`), the
   point-sampled loss (`--mask-loss points`), and the point loss with the prompts of several images
   in one decoder call (`--images-per-step`). Goal: cached <= 1/20 of uncached on one H200 at
   vit_b (1024 input).
2. Validation mIoU per mask loss: `segment train` for `--miou-epochs` epochs on the sample (vit_tiny,
   random weights, default lr and loss) with 3 seeds per loss; the final and the best epoch's val
   mIoU. The point loss may be the default only if its mIoU holds within the seeds' noise.
3. Predict latency of our path (`Segmenter.segment_file`: read, check prompts, encode, decode,
   upscale; what `segment predict` runs per image) vs segment-anything's SamPredictor called directly
   on the same image file and box (cv2 read + set_image + predict). Goal: overhead <= 10%.
   Also shown: the cost of writing our outputs (mask PNG, overlay, COCO RLE) per image.

    python benchmarks/segment_bench.py                  # CPU: vit_tiny timings + mIoU (a few minutes)
    python benchmarks/segment_bench.py --device 0       # GPU 0: vit_b timings + mIoU
    python benchmarks/segment_bench.py --model vit_b --images 2 --skip-miou   # vit_b on a CPU (slow)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from segment_anything import SamPredictor

from defectkit.convert import convert_category
from defectkit.core.imageio import read_image
from defectkit.core.torchio import resolve_device
from defectkit.sample import write_category, write_sample
from defectkit.segment.embeddings import ImageEncoder
from defectkit.segment.models import build_sam
from defectkit.segment.predict import ImagePrompts, Segmenter, predict_folder
from defectkit.segment.train import TrainConfig, train


def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """``min / median / max`` of a list, for every figure this bench prints.

    >>> spread([3.0, 1.0, 2.0])
    '1.000 / 2.000 / 3.000'
    """
    return " / ".join(f"{v * scale:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def make_data(work: Path, n_images: int, image_size: int) -> tuple[Path, Path]:
    """The converted sample (``image_size`` 256: the bundled one; else wood generated at that size).
    Returns (the full sam/ folder, a copy whose train.jsonl holds the first ``n_images`` training
    images with defects)."""
    if image_size == 256:
        write_sample(work / "sample")
    else:
        write_category(work / "sample", "wood", size=(image_size, image_size))
    convert_category(work / "sample", "wood", work / "conv", to=("sam", "coco"), progress=False)
    sam = work / "conv" / "wood" / "sam"
    lines = [ln for ln in (sam / "train.jsonl").read_text().splitlines() if '"box_xyxy"' in ln][:n_images]
    cut = work / "bench_sam"
    cut.mkdir()
    (cut / "train.jsonl").write_text("\n".join(lines) + "\n")
    return sam, cut


def bench_epoch(args, work: Path, data: Path) -> dict[str, float]:
    setups = [("full", 1), ("points", 1), ("points", args.images_per_step)]
    setups = list(dict.fromkeys(setups))

    def epoch_time(no_cache: bool, mask_loss: str, per_step: int) -> float:
        cfg = TrainConfig(data=data, out=work / "epoch", model=args.model, random_weights=True, device=args.device,
                          epochs=1, batch=16, validate=False, no_cache=no_cache, cache_dir=work / "cache",
                          mask_loss=mask_loss, images_per_step=per_step, overwrite=True, progress=False)
        with contextlib.redirect_stdout(io.StringIO()):  # train's own log would drown the table
            return train(cfg)["history"][0]["time_s"]

    runs = [(setup, no_cache) for setup in setups for no_cache in ((False, True) if args.uncached else (False,))]
    for setup, no_cache in runs:  # warm-up: fills the cache, loads kernels (not timed)
        epoch_time(no_cache, *setup)
    times: dict = {run: [] for run in runs}
    for r in range(args.repeats):
        for run in runs if r % 2 == 0 else runs[::-1]:  # alternating order: load drifts hit all alike
            times[run].append(epoch_time(run[1], *run[0]))
    print(f"\n1. epoch over {args.images} images ({args.model}, {args.repeats} repeats, min / median / max seconds)")
    ratios = {}
    for setup in setups:
        cached, uncached = times[(setup, False)], times.get((setup, True))
        name = f"--mask-loss {setup[0]} --images-per-step {setup[1]}"
        if not uncached:
            print(f"  {name}: cached {spread(cached)} s (uncached not measured: --no-uncached)")
            continue
        # Ratio per repeat (cached and uncached of one round ran next to each other).
        per_round = [c / u for c, u in zip(cached, uncached)]
        ratio = statistics.median(per_round)
        ratios[name] = ratio
        print(f"  {name}: cached {spread(cached)} s, uncached {spread(uncached)} s")
        print(f"    cached / uncached {spread(per_round, digits=4)} (median 1/{1 / ratio:.1f}; "
              f"goal <= 1/20: {'met' if ratio <= 0.05 else 'NOT met'})")
    base = times[(setups[0], False)]
    for setup in setups[1:]:
        speedup = [b / t for b, t in zip(base, times[(setup, False)])]
        print(f"  cached epoch, full loss / --mask-loss {setup[0]} --images-per-step {setup[1]}: {spread(speedup, digits=2)}x")
    return ratios


def bench_miou(args, work: Path, sam_dir: Path) -> None:
    """Val mIoU after ``--miou-epochs`` epochs per mask loss, 3 seeds, vit_tiny (the README's table)."""
    runs = [(loss, seed) for seed in range(args.seeds) for loss in ("full", "points")]
    final: dict[str, list[float]] = {"full": [], "points": []}
    best: dict[str, list[float]] = {"full": [], "points": []}
    secs: dict[str, list[float]] = {"full": [], "points": []}
    for loss, seed in runs:
        cfg = TrainConfig(data=sam_dir, out=work / f"miou_{loss}_{seed}", model="vit_tiny", device=args.device,
                          epochs=args.miou_epochs, seed=seed, mask_loss=loss, cache_dir=work / "cache_tiny",
                          progress=False)
        with contextlib.redirect_stdout(io.StringIO()):
            history = train(cfg)["history"]
        final[loss].append(history[-1]["val_mean_iou"])
        best[loss].append(max(h["val_mean_iou"] for h in history))
        secs[loss].append(statistics.median(h["time_s"] for h in history))
    print(f"\n2. val mIoU on the sample, vit_tiny, {args.miou_epochs} epochs, seeds 0..{args.seeds - 1} "
          f"(min / median / max over seeds)")
    for loss in ("full", "points"):
        print(f"  --mask-loss {loss:6s}: final {spread(final[loss], digits=4)}  best epoch {spread(best[loss], digits=4)}  "
              f"epoch {spread(secs[loss], digits=2)} s   per seed final {[round(v, 4) for v in final[loss]]}")
    # Paired by seed (same data order, prompts and initial weights): the mean difference against its
    # standard error says whether the point loss stays within the seeds' noise.
    diffs = [p - f for p, f in zip(final["points"], final["full"])]
    mean = statistics.mean(diffs)
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("inf")
    verdict = "within the noise" if mean >= -2 * se else "LOWER beyond the noise"
    print(f"  points - full, paired by seed: mean {mean:+.4f}, standard error {se:.4f}: {verdict}")


def bench_predict(args, work: Path, data: Path) -> float:
    rec = json.loads((data / "train.jsonl").read_text().splitlines()[0])
    image_path, box = Path(rec["image"]), rec["instances"][0]["box_xyxy"]
    model = build_sam(args.model, random_weights=True, device=args.device)
    # fp32 like SamPredictor (no bf16 autocast on CUDA): the same arithmetic on both sides.
    ours = Segmenter(ImageEncoder(model, cache=None, amp=False))
    predictor = SamPredictor(model.sam)
    sync = torch.cuda.synchronize if model.sam.device.type == "cuda" else (lambda: None)

    def reference():
        image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
        predictor.set_image(image)
        return predictor.predict(box=np.array(box), multimask_output=False)

    def ours_fn():
        return ours.segment_file(image_path, boxes=[box])

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t

    # Same masks first: the comparison is only fair if both do the same work.
    m_ref = reference()[0][0]
    m_ours = ours_fn()[1][0]
    union = (m_ref | m_ours).sum()
    assert union == 0 or (m_ref & m_ours).sum() / union > 0.99, "our path and SamPredictor disagree"
    reference(), ours_fn()  # warm-up
    t_ref, t_ours = [], []
    for r in range(args.predict_repeats):
        pair = [(t_ref, reference), (t_ours, ours_fn)]
        for sink, fn in pair if r % 2 == 0 else pair[::-1]:
            sink.append(timed(fn))
    overheads = [o / f - 1 for o, f in zip(t_ours, t_ref)]
    overhead = statistics.median(overheads)
    print(f"\n3. predict one image + box ({args.model}, {len(t_ours)} alternating runs, min / median / max ms): "
          f"ours {spread(t_ours, 1000, 1)} vs SamPredictor {spread(t_ref, 1000, 1)}")
    print(f"  overhead {spread(overheads, 100, 1)} %   (goal <= 10%: {'met' if overhead <= 0.10 else 'NOT met'})")

    image = read_image(image_path)
    prompts = [ImagePrompts(image_path, 1, boxes=[box])]
    out = work / "pred"
    out.mkdir()
    writes = [timed(lambda: predict_folder(ours, image_path, prompts, out, progress=False)) for _ in range(args.repeats)]
    print(f"  with outputs written (mask PNG, overlay, RLE): {spread(writes, 1000, 1)} ms = "
          f"{statistics.median(writes) / statistics.median(t_ref):.2f} x SamPredictor (image {image.shape[1]}x{image.shape[0]})")
    return overhead


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, or a GPU: 0, cuda, cuda:1 (default: %(default)s)")
    p.add_argument("--model", default=None, help="registry model for the timings, random weights "
                   "(default: vit_b on a GPU, vit_tiny on the CPU, where a vit_b encode takes a minute)")
    p.add_argument("--images", type=int, default=6, help="training images in the timed epoch (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=256,
                   help="side of the images (256: the bundled sample; else generated wood) (default: %(default)s)")
    p.add_argument("--images-per-step", type=int, default=6,
                   help="images per decoder call in the batched set-up (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="alternating repeats of each epoch timing (default: %(default)s)")
    p.add_argument("--predict-repeats", type=int, default=15, help="alternating repeats of each predict timing (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per mask loss in the mIoU part (default: %(default)s)")
    p.add_argument("--miou-epochs", type=int, default=15, help="epochs per mIoU run (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--no-uncached", dest="uncached", action="store_false",
                   help="time cached epochs only (vit_b on a CPU: an uncached epoch takes minutes)")
    p.add_argument("--skip-epoch", action="store_true", help="leave out the epoch timings")
    p.add_argument("--skip-miou", action="store_true", help="leave out the mIoU runs")
    p.add_argument("--skip-predict", action="store_true", help="leave out the predict timings")
    args = p.parse_args()
    device = resolve_device(args.device)
    args.device = str(device)
    args.model = args.model or ("vit_b" if device.type == "cuda" else "vit_tiny")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DEFECTKIT_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="segment_bench_") as tmp:
        work = Path(tmp)
        sam_dir, data = make_data(work, args.images, args.image_size)
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
        load = f", load {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
        print(f"segment benchmark: {args.model} (random weights), {args.image_size}px images, torch {torch.__version__}, "
              f"{where}{load}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        if not args.skip_epoch:
            bench_epoch(args, work, data)
        if not args.skip_miou:
            bench_miou(args, work, sam_dir)
        if not args.skip_predict:
            bench_predict(args, work, data)


if __name__ == "__main__":
    main()
