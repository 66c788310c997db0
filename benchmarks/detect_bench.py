"""Benchmark: ``detect train`` vs ultralytics' own ``YOLO(...).train`` with identical arguments.

Both train the same architecture on the same converted sample with the same arguments, each run in
a fresh Python process (so neither inherits the other's caches), alternating ours/theirs, several
repeats after one untimed warm-up each; the figure is the ratio of the median wall times of the ``train`` call. Also printed: the
time of our pre-training data check (``load_data``) on its own, the part our layer adds.

    python benchmarks/detect_bench.py [--repeats 5] [--epochs 2] [--imgsz 128] [--model yolov8n.yaml]

YOLO-World is not compared: ultralytics' own trainer needs CLIP (a download) where ours reads the
embeddings file, so the reference cannot run offline.
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
from pathlib import Path

from defectkit.convert import convert_category
from defectkit.detect.data import load_data
from defectkit.sample import write_sample

CHILD = r"""
import json, os, sys, time
kind, data, model, project, name, epochs, imgsz = sys.argv[1:8]
args = dict(epochs=int(epochs), imgsz=int(imgsz), batch=8, device="cpu", seed=0, project=project, name=name,
            workers=0, plots=False, verbose=False)
if kind == "ours":
    from defectkit.detect.train import train
    t, c = time.perf_counter(), time.process_time()
    train(data, model, **args)
else:
    from defectkit.detect._ultralytics import ultralytics_patched
    with ultralytics_patched():  # the same offline settings and config folder, so only the layer differs
        from ultralytics import YOLO
        t, c = time.perf_counter(), time.process_time()
        YOLO(model).train(data=data, **args)
print(json.dumps({"seconds": time.perf_counter() - t, "cpu": time.process_time() - c}))
"""


def run_child(kind: str, data: Path, model: str, project: Path, name: str, epochs: int, imgsz: int) -> dict:
    env = dict(os.environ, DEFECTKIT_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(data), model, str(project), name, str(epochs), str(imgsz)],
        capture_output=True,
        text=True,
        env=env,
        cwd=project.parent,  # not the checkout, where the bare folder names (convert, detect) would import
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--model", default="yolov8n.yaml")
    args = parser.parse_args()

    os.environ["DEFECTKIT_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory(prefix="detect-bench-") as tmp:
        tmp = Path(tmp)
        write_sample(tmp / "sample")
        convert_category(tmp / "sample", "wood", tmp / "converted", to=("yolo",), progress=False)
        data = tmp / "converted" / "wood" / "yolo" / "data.yaml"
        n_train = len(load_data(data).images("train"))
        checks = []
        for _ in range(5):
            t = time.perf_counter()
            load_data(data)
            checks.append(time.perf_counter() - t)

        for kind in ("ours", "theirs"):  # warm-up, untimed: label caches, file-system cache, kernel autotune
            run_child(kind, data, args.model, tmp / "runs", f"warmup-{kind}", 1, args.imgsz)
        times: dict[str, list[dict]] = {"ours": [], "theirs": []}
        for i in range(args.repeats):
            order = ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")  # alternate who goes first
            for kind in order:
                r = run_child(kind, data, args.model, tmp / "runs", f"{kind}{i}", args.epochs, args.imgsz)
                times[kind].append(r)
                print(
                    f"repeat {i + 1}/{args.repeats}  {kind:6s} wall {r['seconds']:7.2f} s  cpu {r['cpu']:7.2f} s",
                    flush=True,
                )

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in times[kind])

    print(
        f"\nmodel {args.model}, {n_train} train images, {args.epochs} epochs, imgsz {args.imgsz}, CPU, "
        f"{args.repeats} repeats (alternating, after one warm-up run each)"
    )
    for key, label in (("seconds", "wall"), ("cpu", "CPU time")):
        print(
            f"{label:8s}: detect train (ours) median {med('ours', key):7.2f} s | YOLO().train (ultralytics) median "
            f"{med('theirs', key):7.2f} s | ratio {med('ours', key) / med('theirs', key):.3f}x"
        )
    print("goal: wall ratio <= 1.05x (CPU time is less sensitive to other jobs on a shared machine)")
    print(
        f"our data check (load_data) median {statistics.median(checks) * 1000:.1f} ms = "
        f"{statistics.median(checks) / med('ours', 'seconds') * 100:.2f}% of a run"
    )


if __name__ == "__main__":
    main()
