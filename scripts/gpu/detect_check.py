"""GPU check for detect: fine-tune YOLO-World v2 (s, random start) on a generated 1024x1024 defect set.

Prints images/s for every epoch (training pass only, timed with ultralytics' epoch callbacks after a
CUDA sync), peak GPU memory (torch.cuda.max_memory_allocated), then scores the result with
``detect val`` (shared evaluator + ultralytics' mAP) and exports ONNX with the embeddings baked in
when onnx is installed. Everything goes through defectkit's own code, offline.

Environment: GPU_CHECK_DEVICE (default 0), GPU_CHECK_SMOKE=1 (tiny sizes, for a CPU smoke test),
GPU_CHECK_EPOCHS, GPU_CHECK_N_PER_DEFECT.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DEFECTKIT_OFFLINE", "1")

import torch

from defectkit.convert import convert_category
from defectkit.sample import write_category
from defectkit.detect.export import export
from defectkit.detect.train import train
from defectkit.detect.val import validate

SMOKE = os.environ.get("GPU_CHECK_SMOKE", "") not in ("", "0")
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "0")
SIZE = 256 if SMOKE else 1024
IMGSZ = 64 if SMOKE else 640
EPOCHS = int(os.environ.get("GPU_CHECK_EPOCHS", "1" if SMOKE else "30"))
N_PER_DEFECT = int(os.environ.get("GPU_CHECK_N_PER_DEFECT", "2" if SMOKE else "16"))
BATCH = 8 if SMOKE else 16
CUDA = DEVICE != "cpu" and torch.cuda.is_available()


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def main() -> None:
    t_all = time.perf_counter()
    print(
        f"torch {torch.__version__}, device {DEVICE}"
        + (f" ({torch.cuda.get_device_name(0)})" if CUDA else "")
        + f", smoke={SMOKE}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="detect_gpu_"))
    t = time.perf_counter()
    write_category(
        tmp / "sample",
        "wood",
        size=(SIZE, SIZE),
        n_per_defect=N_PER_DEFECT,
        n_train_good=10,
        n_test_good=6,
        seed=0,
    )
    convert_category(tmp / "sample", "wood", tmp / "converted", to=("yolo", "coco"), progress=False)
    data = tmp / "converted" / "wood" / "yolo" / "data.yaml"
    print(
        f"data: {SIZE}x{SIZE}, {N_PER_DEFECT} per defect type, written and converted in {time.perf_counter() - t:.1f} s"
    )

    epochs: list[tuple[int, int, float]] = []
    state: dict = {}

    def on_epoch_start(trainer):
        sync()
        state["t"] = time.perf_counter()

    def on_epoch_end(trainer):
        sync()
        dt = time.perf_counter() - state["t"]
        n = len(trainer.train_loader.dataset)
        epochs.append((trainer.epoch + 1, n, dt))
        print(
            f"epoch {trainer.epoch + 1}/{EPOCHS}: {n} images in {dt:.2f} s = {n / dt:.1f} images/s",
            flush=True,
        )

    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    run = train(
        data,
        "yolov8s-worldv2.yaml",
        epochs=EPOCHS,
        imgsz=IMGSZ,
        batch=BATCH,
        device=DEVICE,
        seed=0,
        project=tmp / "runs",
        name="world",
        text_embeddings="random",
        workers=0 if SMOKE else 8,
        plots=False,
        callbacks={"on_train_epoch_start": [on_epoch_start], "on_train_epoch_end": [on_epoch_end]},
    )
    train_s = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30 if CUDA else float("nan")
    steady = [n / dt for _, n, dt in epochs[1:]] or [n / dt for _, n, dt in epochs]
    which = f"epochs 2..{EPOCHS}" if len(epochs) > 1 else "epoch 1"
    print(f"train: {train_s:.1f} s for {EPOCHS} epochs (incl. ultralytics' per-epoch val and final val)")
    print(f"images/s ({which}, median): {statistics.median(steady):.1f}")
    print(f"peak GPU memory (torch.cuda.max_memory_allocated): {peak:.2f} GiB")

    t = time.perf_counter()
    metrics = validate(
        run / "weights" / "best.pt", data, split="test", out=tmp / "report", device=DEVICE, progress=False
    )
    print(
        f"detect val (test): COCO mAP50-95 {metrics['bbox']['AP']:.4f} mAP50 {metrics['bbox']['AP50']:.4f} | "
        f"ultralytics mAP50-95 {metrics['ultralytics']['mAP50-95']:.4f} mAP50 {metrics['ultralytics']['mAP50']:.4f} "
        f"({time.perf_counter() - t:.1f} s)"
    )
    if importlib.util.find_spec("onnx") is not None:
        t = time.perf_counter()
        onnx_file = export(
            run / "weights" / "best.pt",
            format="onnx",
            imgsz=IMGSZ,
            text_embeddings=str(run / "text_embeddings.pt"),
            device=DEVICE,
        )
        print(
            f"onnx export (prompts baked in): {onnx_file.name}, {onnx_file.stat().st_size / 2**20:.1f} MiB "
            f"({time.perf_counter() - t:.1f} s)"
        )
    else:
        print("onnx export: skipped (onnx not installed)")
    print(f"total {time.perf_counter() - t_all:.1f} s")


if __name__ == "__main__":
    main()
