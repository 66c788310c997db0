"""GPU check for the segment stage: fine-tune SAM vit_b (random weights: no download on the GPU
machine) on a generated 1024x1024 set through the project's own code, and print encoder images/s,
decoder steps/s and peak GPU memory.

Environment: GPU_CHECK_DEVICE (default cuda), GPU_CHECK_SMOKE=1 (vit_tiny, 256 px, a few steps: a
CPU smoke test of the same path), GPU_CHECK_STEPS (decoder steps, default 300), GPU_CHECK_MASK_LOSS
(full or points, default full: `segment train --mask-loss`), GPU_CHECK_IMAGES_PER_STEP (default 1).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from defectkit.convert import convert_category
from defectkit.core.imageio import read_image
from defectkit.sample import write_category
from defectkit.segment.embeddings import ImageEncoder
from defectkit.segment.models import build_sam
from defectkit.segment.train import TrainConfig, train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    smoke = os.environ.get("GPU_CHECK_SMOKE", "") not in ("", "0")
    device = torch.device(os.environ.get("GPU_CHECK_DEVICE", "cuda"))
    size, model_name, n_per_defect = (256, "vit_tiny", 2) if smoke else (1024, "vit_b", 8)
    steps_goal = int(os.environ.get("GPU_CHECK_STEPS", "12" if smoke else "300"))
    mask_loss = os.environ.get("GPU_CHECK_MASK_LOSS", "full")
    per_step = int(os.environ.get("GPU_CHECK_IMAGES_PER_STEP", "1"))
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/segment_check"))
    t0 = time.perf_counter()

    write_category(work / "data", "wood", size=(size, size), n_per_defect=n_per_defect, overwrite=True)
    convert_category(work / "data", "wood", work / "conv", to=("sam", "coco"), overwrite=True, progress=False)
    sam_dir = work / "conv" / "wood" / "sam"
    print(f"data: {size}x{size}, {time.perf_counter() - t0:.1f}s to generate and convert", flush=True)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)

    # 1. Encoder throughput: the pure forward pass (bf16 autocast on CUDA), batch of 8, after warm-up.
    model = build_sam(model_name, random_weights=True, device=device)
    encoder = ImageEncoder(model, cache=None)
    image = read_image(next((work / "data" / "wood" / "test" / "hole").glob("*.png")))
    batch = 8 if not smoke else 2
    encoder.encode_arrays([image] * batch)
    sync(device)
    reps = 4 if not smoke else 1
    t = time.perf_counter()
    for _ in range(reps):
        encoder.encode_arrays([image] * batch)
    sync(device)
    enc_rate = reps * batch / (time.perf_counter() - t)
    del model, encoder
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    # 2. Fine-tune through `segment train`'s code: cache fill, then decoder steps on cached embeddings.
    cache_dir = work / "cache"
    n_items = sum(1 for line in (sam_dir / "train.jsonl").read_text().splitlines() if '"box_xyxy"' in line)
    epochs = max(2, -(-steps_goal // max(1, -(-n_items // per_step))))
    cfg = TrainConfig(data=sam_dir, out=work / "run", model=model_name, random_weights=True, device=str(device),
                      epochs=epochs, batch=16, lr=1e-4, points=1, overwrite=True, validate=False,
                      mask_loss=mask_loss, images_per_step=per_step,
                      cache_dir=cache_dir, encode_batch=8, progress=False)
    t = time.perf_counter()
    summary = train(cfg)
    sync(device)
    total = time.perf_counter() - t
    hist = summary["history"]
    steps = sum(h["steps"] for h in hist[1:])  # first epoch excluded: warm-up (cudnn, allocator)
    secs = sum(h["time_s"] for h in hist[1:])
    n_cached = len(list((cache_dir).rglob("*.npy")))
    print(f"encoder: {enc_rate:.1f} images/s ({model_name}, {size}x{size}, batch {batch}, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'})")
    print(f"cache fill + training: {total:.1f}s for {n_cached} images, {sum(h['steps'] for h in hist)} decoder steps "
          f"in {len(hist)} epochs")
    print(f"decoder: {steps / secs:.2f} steps/s ({per_step} image(s), <=16 instances each, per step; "
          f"--mask-loss {mask_loss}; 1 point + box)")
    print(f"loss: first epoch {hist[0]['train_loss']:.4f} -> last epoch {hist[-1]['train_loss']:.4f}; "
          f"mask area ratio {hist[-1]['train_area_ratio']:.2f}")
    if device.type == "cuda":
        print(f"peak GPU memory (training): {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    ckpt = torch.load(work / "run" / "last.pt", map_location="cpu", weights_only=True)
    print(f"last.pt loads with weights_only=True: epoch {ckpt['epoch'] + 1}, {len(ckpt['mask_decoder'])} decoder tensors")
    print(f"total {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
