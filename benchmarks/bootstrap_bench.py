"""What the bootstrap intervals add to scoring: 10 leaderboard-like rows on 1,000 test images, with and
without ``bootstrap=1000``, side by side.

What both sides do, per row, as ``defectkit benchmark`` scores it (the evaluator's calls, reading the
files and writing the full report; no model runs):

- 3 detection rows (yolo-world-ft / -zs / yolo-closed): ``evaluate_detection(gt, pred, "bbox",
  out_dir=...)`` with its confusion matrix;
- 2 instance-mask rows (sam-det, yolo-seg): ``evaluate_detection(..., "segm", out_dir=...)`` and
  ``evaluate_masks(..., pixel_metrics=True, out_dir=...)``;
- 2 SAM rows (sam-gt-base / -ft): ``evaluate_masks(..., pixel_metrics=True, out_dir=...)``;
- 1 classifier row: ``evaluate_classification(...)`` of 1,000 labels, 6 classes;
- 2 anomaly rows (padim, patchcore): ``evaluate_anomaly(labels, scores, masks, maps, out_dir=...)``
  with 96x120 maps;
- every row: the common image-AUROC column, ``evaluate_anomaly(labels, scores)``.

"with" passes ``bootstrap=1000, seed=0`` to every call (AP/AP50/AP75, mean IoU/Dice, pixel metrics,
accuracies, AUROCs). Data: ``make_coco_case`` (192x240 images, every hard case of COCO evaluation), a
different seed per row, written to JSON once. One warm-up round, then rounds of both sides in
alternating order (a load change hits both); per round the overhead is with / without - 1 over the
10 rows together, and per row; min / median / max over the rounds are printed with the load.

    python benchmarks/bootstrap_bench.py                  # 1,000 images, 5 rounds
    python benchmarks/bootstrap_bench.py --images 200 --rounds 3   # quick look
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from defectkit.evaluation import evaluate_anomaly, evaluate_classification, evaluate_detection, evaluate_masks
from defectkit.evaluation.synthetic import make_coco_case

GOAL = 0.05  # issue 13: the bootstrap on 1,000 test images and 10 rows adds under 5% to scoring
MAP_SIZE = (96, 120)


def coco_files(folder: Path, n_images: int, seed: int) -> tuple[str, str]:
    gt, preds = make_coco_case(n_images, size=(192, 240), seed=seed)
    gt_path, pred_path = folder / f"gt_{seed}.json", folder / f"pred_{seed}.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(preds))
    return str(gt_path), str(pred_path)


def anomaly_data(n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Labels, image scores, masks and score maps of a middling anomaly model (about a third defective)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_images) < 0.35).astype(int)
    masks, maps = [], []
    for label in labels:
        mask = np.zeros(MAP_SIZE, bool)
        if label:
            y, x = rng.integers(0, MAP_SIZE[0] - 20), rng.integers(0, MAP_SIZE[1] - 20)
            mask[y : y + rng.integers(4, 20), x : x + rng.integers(4, 20)] = True
        masks.append(mask)
        maps.append((rng.random(MAP_SIZE) + 0.8 * mask * rng.random(MAP_SIZE)).astype(np.float32))
    return labels, np.asarray([m.max() for m in maps], np.float64), masks, maps


def rows(folder: Path, n_images: int) -> dict[str, Callable[[int, Path], None]]:
    """Row name -> scoring call taking (bootstrap, out folder)."""
    rng = np.random.default_rng(0)
    image_labels = (rng.random(n_images) < 0.4).astype(int)

    def common(bootstrap: int) -> None:  # the image-AUROC column every row has
        evaluate_anomaly(image_labels, image_labels * 0.3 + rng.random(n_images), bootstrap=bootstrap, seed=0)

    def detection(gt: str, pred: str) -> Callable[[int, Path], None]:
        def score(bootstrap: int, out: Path) -> None:
            evaluate_detection(gt, pred, "bbox", out_dir=out, confusion_matrix=True, bootstrap=bootstrap, seed=0)
            common(bootstrap)

        return score

    def instance_masks(gt: str, pred: str) -> Callable[[int, Path], None]:
        def score(bootstrap: int, out: Path) -> None:
            evaluate_detection(gt, pred, "segm", out_dir=out / "segm", bootstrap=bootstrap, seed=0)
            evaluate_masks(gt, pred, pixel_metrics=True, out_dir=out / "masks", bootstrap=bootstrap, seed=0)
            common(bootstrap)

        return score

    def sam(gt: str, pred: str) -> Callable[[int, Path], None]:
        def score(bootstrap: int, out: Path) -> None:
            evaluate_masks(gt, pred, pixel_metrics=True, out_dir=out, bootstrap=bootstrap, seed=0)
            common(bootstrap)

        return score

    classes = [f"c{k}" for k in range(6)]
    y_true = rng.integers(0, 6, n_images)
    y_pred = np.where(rng.random(n_images) < 0.7, y_true, rng.integers(0, 6, n_images))

    def classifier(bootstrap: int, out: Path) -> None:
        evaluate_classification(y_true, y_pred, classes, out_dir=out, bootstrap=bootstrap, seed=0)
        common(bootstrap)

    def anomaly(seed: int) -> Callable[[int, Path], None]:
        labels, scores, masks, maps = anomaly_data(n_images, seed)

        def score(bootstrap: int, out: Path) -> None:
            evaluate_anomaly(labels, scores, masks, maps, out_dir=out, bootstrap=bootstrap, seed=0)

        return score

    files = {seed: coco_files(folder, n_images, seed) for seed in range(7)}
    return {
        "yolo-world-ft (bbox)": detection(*files[0]),
        "yolo-world-zs (bbox)": detection(*files[1]),
        "yolo-closed (bbox)": detection(*files[2]),
        "sam-det (segm+masks)": instance_masks(*files[3]),
        "yolo-seg (segm+masks)": instance_masks(*files[4]),
        "sam-gt-base (masks)": sam(*files[5]),
        "sam-gt-ft (masks)": sam(*files[6]),
        "classifier": classifier,
        "padim (anomaly)": anomaly(10),
        "patchcore (anomaly)": anomaly(11),
    }


def one_side(scorers: dict, bootstrap: int, out: Path) -> dict[str, float]:
    times = {}
    for name, score in scorers.items():
        gc.collect()
        t0 = time.perf_counter()
        score(bootstrap, out / name.split()[0])
        times[name] = time.perf_counter() - t0
    return times


_ONE_TIME = """
import sys, time
import numpy as np
from defectkit.evaluation import bootstrap
t0 = time.perf_counter()
if sys.argv[1] == "load":
    bootstrap.warm_up_compiled().join()
print(time.perf_counter() - t0)
"""


def one_time_cost(repeats: int = 5) -> list[float]:
    """Seconds a fresh process spends before its first interval, besides scoring: importing numba
    and loading the compiled COCO AP from numba's cache (warm: the bench itself compiled it). Each
    repeat is two fresh processes, with and without the load; the difference is the cost."""
    costs = []
    for r in range(repeats):
        out = {}
        for what in ("load", "none") if r % 2 == 0 else ("none", "load"):
            done = subprocess.run([sys.executable, "-c", _ONE_TIME, what], capture_output=True, text=True, check=True)
            out[what] = float(done.stdout.split()[-1])
        costs.append(out["load"] - out["none"])
    return costs


def spread(values: list[float]) -> str:
    return f"{min(values):+.1%} / {statistics.median(values):+.1%} / {max(values):+.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="test images per row (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of both sides (default: %(default)s)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    args = parser.parse_args()
    print(
        f"bootstrap_bench: {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start, "
        f"{args.images} test images, 10 rows, {args.resamples} resamples, {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scorers = rows(Path(tmp), args.images)
        print(f"  data generated in {time.perf_counter() - t0:.0f}s")
        one_side(scorers, 0, Path(tmp) / "warm")  # warm-up: imports, page cache, allocator
        one_side(scorers, args.resamples, Path(tmp) / "warm")
        runs: dict[int, list[dict[str, float]]] = {0: [], args.resamples: []}
        for r in range(args.rounds):
            for b in (0, args.resamples) if r % 2 == 0 else (args.resamples, 0):
                runs[b].append(one_side(scorers, b, Path(tmp) / f"r{r}_{b}"))
    without, with_ci = runs[0], runs[args.resamples]
    print("\nper row: scoring s without -> with (median), overhead min / median / max over rounds")
    for name in scorers:
        over = [w[name] / o[name] - 1 for w, o in zip(with_ci, without)]
        print(
            f"  {name:<24} {statistics.median(o[name] for o in without):6.2f} -> "
            f"{statistics.median(w[name] for w in with_ci):6.2f}   {spread(over)}"
        )
    totals = [(sum(w.values()), sum(o.values())) for w, o in zip(with_ci, without)]
    over = [w / o - 1 for w, o in totals]
    print(
        f"\nall 10 rows: {statistics.median(o for _, o in totals):.2f} s without, "
        f"{statistics.median(w for w, _ in totals):.2f} s with; overhead {spread(over)} "
        f"(goal < {GOAL:.0%}: {'met' if statistics.median(over) < GOAL else 'NOT met'})"
    )
    costs = one_time_cost()
    base = statistics.median(o for _, o in totals)
    print(
        f"once per process, before the first interval (numba's import and the cached kernel's load; "
        f"`defectkit benchmark` does it on a background thread while its models train): "
        f"{min(costs):.2f} / {statistics.median(costs):.2f} / {max(costs):.2f} s, "
        f"{statistics.median(costs) / base:.1%} of the 10 rows' scoring"
    )
    print(f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
