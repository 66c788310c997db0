"""Benchmark: ``detect train`` against ultralytics' own trainer, as whole commands and as library calls.

Both sides train the same architecture (``--model``, random start from its yaml) on the same converted
sample with the same arguments: epochs, imgsz, batch 8, device cpu, seed 0, workers 0, plots off,
verbose off; ultralytics picks everything else (its defaults, identical on both sides: the trainer
prints the same argument list). What each side does:

- **command, ours**: the whole ``detect train --data D --model M --epochs E --imgsz S --batch 8
  --device cpu --seed 0 --project P --name N workers=0 plots=False verbose=False`` (the console
  script beside this interpreter) in a fresh process: interpreter start, imports, our checks of the
  arguments, data and model, ultralytics' trainer with our patches (private config folder, offline),
  exit.
- **command, ultralytics**: the whole ``yolo train data=D model=M epochs=E imgsz=S batch=8 device=cpu
  seed=0 project=P name=N workers=0 plots=False verbose=False`` (ultralytics' console script beside
  this interpreter) in a fresh process. Its environment gives it the settings our patches give
  ours: ``YOLO_CONFIG_DIR`` = our private config folder (so it reads the same settings.json, with
  sync and the integrations off, and finds the fonts there instead of downloading them),
  ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=false``, ``ULTRALYTICS_SAFE_LOAD=1``. On the CPU
  ultralytics runs no AMP check (the one that downloads a model), on either side.
- **library, ours**: ``defectkit.detect.train.train(data, model, **args)`` timed inside a fresh
  process (imports not counted).
- **library, ultralytics**: ``YOLO(model).train(data=data, **args)`` inside ``ultralytics_patched()``
  (the same offline settings and config folder), timed inside a fresh process.

Every child process gets the same environment (the variables above and ``DEFECTKIT_OFFLINE=1``) and
runs in a scratch folder, not the checkout. Each repeat runs the four sides back to back in an order
rotated by one each repeat, after an untimed warm-up round (one epoch each: label caches, page cache,
first imports from disk); the ratios ours / ultralytics are taken per repeat and printed as
min / median / max, with wall and CPU time, the load average before and after, and the machine.
CPU time: the whole process tree for the commands (rusage of the children waited for), the
training call's process time for the library sides.

    python benchmarks/detect_bench.py [--repeats 3] [--epochs 2] [--imgsz 128] [--model yolov8n.yaml]

YOLO-World is not compared: ultralytics' own trainer needs CLIP (a download) where ours reads the
embeddings file, so the reference cannot run offline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import torch
from bench_common import console_script, cpu_model, load, spread
from defectkit.convert import convert_category
from defectkit.detect._ultralytics import config_dir, ultralytics_patched
from defectkit.detect.data import load_data

from defectkit.sample import write_sample

BATCH, SEED, WORKERS = 8, 0, 0

CHILD = r"""
import json, os, sys, time
kind, data, model, project, name, epochs, imgsz, batch, seed, workers = sys.argv[1:11]
args = dict(epochs=int(epochs), imgsz=int(imgsz), batch=int(batch), device="cpu", seed=int(seed),
            project=project, name=name, workers=int(workers), plots=False, verbose=False)
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


def child_env() -> dict[str, str]:
    """What ultralytics_patched() sets, as environment variables, for every child process."""
    return dict(
        os.environ,
        DEFECTKIT_OFFLINE="1",
        YOLO_CONFIG_DIR=str(config_dir()),
        YOLO_OFFLINE="1",
        YOLO_AUTOINSTALL="false",
        ULTRALYTICS_SAFE_LOAD="1",
    )


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process tree, stdout) of one fresh process."""
    w0, c0 = time.perf_counter(), cpu_children()
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=child_env(), cwd=cwd, timeout=1800, check=False
    )
    wall, cpu = time.perf_counter() - w0, cpu_children() - c0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}\n{proc.stdout[-3000:]}")
    return wall, cpu, proc.stdout


def command_ours(data: Path, model: str, project: Path, name: str, epochs: int, imgsz: int) -> list[str]:
    return [*console_script("detect"), "train", "--data", str(data), "--model", model, "--epochs", str(epochs),
            "--imgsz", str(imgsz), "--batch", str(BATCH), "--device", "cpu", "--seed", str(SEED),
            "--project", str(project), "--name", name,
            f"workers={WORKERS}", "plots=False", "verbose=False"]  # fmt: skip


def command_theirs(data: Path, model: str, project: Path, name: str, epochs: int, imgsz: int) -> list[str]:
    return [*console_script("yolo"), "train", f"data={data}", f"model={model}", f"epochs={epochs}",
            f"imgsz={imgsz}", f"batch={BATCH}", "device=cpu", f"seed={SEED}", f"project={project}",
            f"name={name}", f"workers={WORKERS}", "plots=False", "verbose=False"]  # fmt: skip


def library(
    kind: str, data: Path, model: str, project: Path, name: str, epochs: int, imgsz: int
) -> list[str]:
    return [sys.executable, "-c", CHILD, kind, str(data), model, str(project), name, str(epochs), str(imgsz),
            str(BATCH), str(SEED), str(WORKERS)]  # fmt: skip








def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--imgsz", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument("--model", default="yolov8n.yaml", help="(default: %(default)s)")
    args = parser.parse_args()

    os.environ["DEFECTKIT_OFFLINE"] = "1"
    # Once, untimed: seeds the private settings.json and fonts both sides read.
    with ultralytics_patched():
        pass
    print(f"python {platform.python_version()} {platform.machine()}, {cpu_model()}, "
          f"torch {torch.__version__}, ultralytics {version('ultralytics')}")  # fmt: skip
    print(f"before: {load()}", flush=True)
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
        project = tmp / "runs"

        def library_side(kind: str) -> Callable[[str, int], tuple[float, float]]:
            def side(name: str, epochs: int) -> tuple[float, float]:
                _, _, out = run(library(kind, data, args.model, project, name, epochs, args.imgsz), tmp)
                r = json.loads(out.strip().splitlines()[-1])
                return r["seconds"], r["cpu"]

            return side

        def command_side(build) -> Callable[[str, int], tuple[float, float]]:
            def side(name: str, epochs: int) -> tuple[float, float]:
                wall, cpu, _ = run(build(data, args.model, project, name, epochs, args.imgsz), tmp)
                return wall, cpu

            return side

        sides = {
            "command, detect train": command_side(command_ours),
            "command, yolo train": command_side(command_theirs),
            "library, train()": library_side("ours"),
            "library, YOLO().train": library_side("theirs"),
        }
        names = list(sides)
        wall: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, list[float]] = {k: [] for k in names}
        for repeat in range(-1, args.repeats):  # repeat -1 is the warm-up round (1 epoch each), not recorded
            order = names[repeat % len(names):] + names[: repeat % len(names)]
            for i, name in enumerate(order):
                w, c = sides[name](f"r{repeat + 1}-{i}", 1 if repeat < 0 else args.epochs)
                if repeat >= 0:
                    wall[name].append(w)
                    cpu[name].append(c)
            if repeat >= 0:
                times = "  ".join(f"{k} {wall[k][-1]:.2f}s" for k in order)
                print(f"repeat {repeat + 1}/{args.repeats}: {times}", flush=True)

    print(f"after: {load()}")
    print(f"\nmodel {args.model}, {n_train} train images, {args.epochs} epochs, imgsz {args.imgsz}, "
          f"batch {BATCH}, workers {WORKERS}, CPU; {args.repeats} repeats after a warm-up round, "
          "order rotated each repeat")  # fmt: skip
    print("seconds per side (wall | CPU):")
    for k in names:
        print(f"  {k:24s} wall {spread(wall[k])} | cpu {spread(cpu[k])}")
    print("ratio ours / ultralytics, per repeat (wall | CPU):")
    for label, ours, theirs in (("whole command", names[0], names[1]), ("library call", names[2], names[3])):
        ratios = [a / b for a, b in zip(wall[ours], wall[theirs])]
        cpu_ratios = [a / b for a, b in zip(cpu[ours], cpu[theirs])]
        print(f"  {label:14s} wall {spread(ratios, 3)} | cpu {spread(cpu_ratios, 3)}")
    check = statistics.median(checks)
    print(f"our data check (load_data) median {check * 1000:.1f} ms = "
          f"{check / statistics.median(wall[names[2]]) * 100:.2f}% of a library run")  # fmt: skip


if __name__ == "__main__":
    main()
