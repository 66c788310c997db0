"""GPU check for `defectkit benchmark` (run through scripts/gpu/benchmark_check.sh).

Generates a 1024x1024 category, runs every row on device GPU_CHECK_DEVICE (default 0) with
random-start models (no weights can be downloaded there), and prints the leaderboard, each row's
training / inference cost, and where the report is. GPU_CHECK_SMOKE=1 shrinks everything for a
CPU smoke test.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from defectkit.cli import main
from defectkit.sample import write_category

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "0")
SMOKE = bool(os.environ.get("GPU_CHECK_SMOKE"))
WORK = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/benchmark_check"))


def main_check() -> None:
    size = 256 if SMOKE else 1024
    t0 = time.perf_counter()
    root = WORK / "data"
    write_category(root, "wood", size=(size, size), n_per_defect=4, seed=0, overwrite=True)
    print(f"data: {size}x{size} generated in {time.perf_counter() - t0:.1f}s")
    out = WORK / "run"
    argv = [
        "benchmark", "wood", "--root", str(root), "--out", str(out), "--overwrite", "--rows", "all",
        "--device", DEVICE, "--detector", "yolov8s-worldv2.yaml", "--closed-detector", "yolov8n.yaml",
        "--seg-detector", "yolov8n-seg.yaml", "--sam-model", "vit_tiny" if SMOKE else "vit_b",
        "--sam-random-weights", "--classifier-weights", "none", "--epochs", "1" if SMOKE else "2",
        "--imgsz", "64" if SMOKE else "640", "--batch", "8" if SMOKE else "16", "--gallery", "3", "--quiet",
    ]  # fmt: skip
    t0 = time.perf_counter()
    main(argv)
    wall = time.perf_counter() - t0
    board = json.loads((out / "report" / "leaderboard.json").read_text())
    print(
        f"\nbenchmark wall time: {wall:.1f}s on device {DEVICE!r} ({board['run']['versions'].get('gpu', 'no GPU')})"
    )
    print(f"{'row':14s} {'train s':>8s} {'infer ms/img':>13s} {'wall s':>7s}")
    for name, r in board["rows"].items():
        print(f"{name:14s} {r['train_s']:8.1f} {1000 * r['infer_s_per_image']:13.1f} {r['wall_s']:7.1f}")
    html = (out / "report" / "report.html").stat().st_size
    print(f"report.html: {html / 1e6:.1f} MB, self-contained; rows: {len(board['rows'])}")


if __name__ == "__main__":
    main_check()
