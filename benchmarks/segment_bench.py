"""segment benchmark: two ratios, each measured side by side in one run (median of repeats).

1. Fine-tuning epoch with the embedding cache warm vs computing embeddings inside the loop (same
   data, model, prompts and decoder steps: `segment train` with and without `--no-cache`).
   Goal: cached <= 1/20 of uncached.
2. Predict latency of our path (`Segmenter.segment_file`: read, check prompts, encode, decode,
   upscale; what `segment predict` runs per image) vs segment-anything's SamPredictor called directly
   on the same image file and box (cv2 read + set_image + predict). Goal: overhead <= 10%.
   Also shown: the cost of writing our outputs (mask PNG, overlay, COCO RLE) per image.

    python benchmarks/segment_bench.py                          # vit_tiny, quick
    python benchmarks/segment_bench.py --model vit_b --images 2 # the real encoder size (slow on CPU)
"""

from __future__ import annotations

import argparse
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
from defectkit.sample import write_sample
from defectkit.segment.embeddings import ImageEncoder
from defectkit.segment.models import build_sam
from defectkit.segment.predict import ImagePrompts, Segmenter, predict_folder
from defectkit.segment.train import TrainConfig, train


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def make_data(work: Path, n_images: int) -> Path:
    """Converted sample, SAM JSONL cut to the first ``n_images`` training images that have defects."""
    write_sample(work / "sample")
    convert_category(work / "sample", "wood", work / "conv", to=("sam", "coco"), progress=False)
    sam = work / "conv" / "wood" / "sam"
    lines = [ln for ln in (sam / "train.jsonl").read_text().splitlines() if '"box_xyxy"' in ln][:n_images]
    cut = work / "bench_sam"
    cut.mkdir()
    (cut / "train.jsonl").write_text("\n".join(lines) + "\n")
    return cut


def bench_epoch(args, work: Path, data: Path) -> float:
    def epoch_time(no_cache: bool, name: str) -> float:
        """The timed part is the epoch itself (train_one_epoch), as `segment train` logs it."""
        cfg = TrainConfig(data=data, out=work / name, model=args.model, random_weights=True, device=args.device,
                          epochs=1, batch=16, validate=False, no_cache=no_cache, cache_dir=work / "cache",
                          overwrite=True, progress=False)
        return train(cfg)["history"][0]["time_s"]

    epoch_time(False, "warm")  # fill the cache (not timed)
    cached_all = [epoch_time(False, "cached") for _ in range(args.repeats)]
    uncached_all = [epoch_time(True, "uncached") for _ in range(args.uncached_repeats)]
    cached, uncached = statistics.median(cached_all), statistics.median(uncached_all)
    ratio = cached / uncached
    print(f"epoch over {args.images} images ({args.model}): cached {cached:.2f}s (runs {fmt(cached_all)}) vs "
          f"embeddings in the loop {uncached:.2f}s (runs {fmt(uncached_all)})")
    print(f"  cached / uncached = {ratio:.4f} = 1/{1 / ratio:.1f}   (goal <= 1/20: {'met' if ratio <= 0.05 else 'NOT met'})")
    return ratio


def bench_predict(args, work: Path, data: Path) -> float:
    rec = json.loads((data / "train.jsonl").read_text().splitlines()[0])
    image_path, box = Path(rec["image"]), rec["instances"][0]["box_xyxy"]
    model = build_sam(args.model, random_weights=True, device=args.device)
    # fp32 like SamPredictor (no bf16 autocast on CUDA): the same arithmetic on both sides.
    ours = Segmenter(ImageEncoder(model, cache=None, amp=False))
    predictor = SamPredictor(model.sam)

    def reference():
        image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
        predictor.set_image(image)
        return predictor.predict(box=np.array(box), multimask_output=False)

    def ours_fn():
        return ours.segment_file(image_path, boxes=[box])

    # Same masks first: the comparison is only fair if both do the same work.
    m_ref = reference()[0][0]
    m_ours = ours_fn()[1][0]
    union = (m_ref | m_ours).sum()
    assert union == 0 or (m_ref & m_ours).sum() / union > 0.99, "our path and SamPredictor disagree"
    reference(), ours_fn()  # warm-up
    # Interleave the two so load changes on the shared machine hit both alike.
    t_ref, t_ours = [], []
    for _ in range(args.predict_repeats):
        t_ref.append(median_time(reference, 1)[0])
        t_ours.append(median_time(ours_fn, 1)[0])
    ref, mine = statistics.median(t_ref), statistics.median(t_ours)
    overhead = mine / ref - 1
    print(f"predict one image + box ({args.model}, median of {len(t_ours)} interleaved runs): ours {mine * 1000:.1f} ms "
          f"vs SamPredictor {ref * 1000:.1f} ms")
    print(f"  overhead = {overhead * 100:+.1f}%   (goal <= 10%: {'met' if overhead <= 0.10 else 'NOT met'})")

    image = read_image(image_path)
    prompts = [ImagePrompts(image_path, 1, boxes=[box])]
    out = work / "pred"
    out.mkdir()
    write, _ = median_time(lambda: predict_folder(ours, image_path, prompts, out, progress=False), args.repeats)
    print(f"  with outputs written (mask PNG, overlay, RLE): {write * 1000:.1f} ms = {write / ref:.2f} x SamPredictor "
          f"(image {image.shape[1]}x{image.shape[0]})")
    return overhead


def fmt(values, scale: float = 1.0) -> str:
    return ", ".join(f"{v * scale:.2f}" for v in values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_tiny", help="registry model, random weights (default: %(default)s)")
    p.add_argument("--images", type=int, default=6, help="training images in the timed epoch (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="repeats of each cheap timing (default: %(default)s)")
    p.add_argument("--predict-repeats", type=int, default=15, help="interleaved repeats of each predict timing (default: %(default)s)")
    p.add_argument("--uncached-repeats", type=int, default=3, help="repeats of the uncached epoch (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--skip-epoch", action="store_true", help="only the predict benchmark")
    p.add_argument("--skip-predict", action="store_true", help="only the epoch benchmark")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DEFECTKIT_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="segment_bench_") as tmp:
        work = Path(tmp)
        data = make_data(work, args.images)
        where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} thread(s)"
        print(f"segment benchmark: {args.model} (random weights), torch {torch.__version__}, {where}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        if not args.skip_epoch:
            bench_epoch(args, work, data)
        if not args.skip_predict:
            bench_predict(args, work, data)


if __name__ == "__main__":
    main()
