"""Benchmark the shared evaluator against pycocotools and faster-coco-eval, side by side in one run.

For each size (default 1k and 5k images) and each of boxes and masks it times, in freshly forked
processes so no run warms another's caches:

- ``ours``: ``evaluation.evaluate_detection(gt, preds, iou_type)`` -- our default path: input
  checks, private copies, faster-coco-eval, per-class AP (no plots);
- ``ours+report``: the same with ``out_dir`` (confusion matrix, PR curves, report.md), for scale;
- ``pycocotools``: COCO + loadRes + COCOeval evaluate/accumulate/summarize (the reference);
- ``faster-coco-eval``: the same calls with faster-coco-eval;
- ``json floor``: only ``json.load`` of the two files the CLI would read.

Methods run round-robin, one of each per round, rounds repeated; the ratio is the median of
the per-round ratios to pycocotools (robust to load changes on a shared machine). CPU time (all threads of the child) is
shown too: it is steadier than wall time on a loaded machine. Peak memory is the peak
resident set of the child process above its size at the start (the data are already loaded), so
a dense copy of every mask (images x masks x H x W bytes) would show at once. Stats of every
method are compared with pycocotools'.

    python benchmarks/eval_bench.py                # 1k and 5k images, 3 repeats (a few minutes)
    python benchmarks/eval_bench.py --sizes 200 --repeats 2   # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

# Both libraries are imported before forking: no method pays the import.
from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from defectkit.evaluation.detection import STAT_NAMES, evaluate_detection
from defectkit.evaluation.synthetic import make_coco_case

_DATA: dict = {}  # filled in the parent before forking; children read it copy-on-write


def _rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _run_library(lib: str, gt: dict, preds: list, iou_type: str) -> np.ndarray:
    coco_class, eval_class = (COCO, COCOeval) if lib == "pycocotools" else (FasterCOCO, COCOeval_faster)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_class()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = eval_class(coco_gt, coco_gt.loadRes(preds), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:12], dtype=np.float64)


def _child(method: str, iou_type: str, conn) -> None:
    gt, preds, gt_path, pred_path = _DATA["gt"], _DATA["preds"], _DATA["gt_path"], _DATA["pred_path"]
    if method != "json floor":
        # Every method gets fresh copies made here, outside the timed part: the libraries write
        # into the dicts, and reading the parent's objects for the first time in a forked child
        # would charge copy-on-write page faults to whichever method touches them first.
        gt, preds = copy.deepcopy(gt), copy.deepcopy(preds)
    start_rss = _rss_kb()
    c0 = time.process_time()  # CPU of all threads of this child: steadier than wall under load
    t0 = time.perf_counter()
    if method == "ours":
        out = evaluate_detection(gt, preds, iou_type)[iou_type]
        stats = np.array([out[n] for n in STAT_NAMES])
    elif method == "ours+report":
        with tempfile.TemporaryDirectory() as tmp:
            out = evaluate_detection(gt, preds, iou_type, out_dir=Path(tmp) / "r")[iou_type]
        stats = np.array([out[n] for n in STAT_NAMES])
    elif method == "json floor":
        with open(gt_path) as fh:
            json.load(fh)
        with open(pred_path) as fh:
            json.load(fh)
        stats = None
    else:
        stats = _run_library(method, gt, preds, iou_type)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.send((wall, cpu, max(0, peak_kb - start_rss) / 1024.0, None if stats is None else stats.tolist()))
    conn.close()


def run_once(method: str, iou_type: str) -> tuple[float, float, float, np.ndarray | None]:
    """One timed run of ``method`` in a freshly forked child: (wall s, CPU s, peak MB, stats)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(method, iou_type, child))
    proc.start()
    wall, cpu, peak, stats = parent.recv()
    proc.join()
    return wall, cpu, peak, None if stats is None else np.asarray(stats)


def measure_round_robin(methods: list[str], iou_type: str, repeats: int) -> dict[str, dict]:
    """Run every method once per round, rounds repeated: a load change on this shared machine hits
    all methods of a round alike, so the per-round ratios to pycocotools are what we report (median)."""
    runs: dict[str, list] = {m: [] for m in methods}
    for _ in range(repeats):
        for m in methods:
            runs[m].append(run_once(m, iou_type))
    ref = runs["pycocotools"]
    out = {}
    for m, rs in runs.items():
        out[m] = {
            "wall": statistics.median(r[0] for r in rs),
            "ratio": statistics.median(r[0] / p[0] for r, p in zip(rs, ref)),
            "cpu_ratio": statistics.median(r[1] / p[1] for r, p in zip(rs, ref)),
            "peak": max(r[2] for r in rs),
            "stats": rs[-1][3],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="1000,5000", help="image counts, comma-separated (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="rounds of every method, median reported (default: %(default)s)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(192, 240),
        metavar=("H", "W"),
        help="image height and width of the generated set (default: 192 240)",
    )
    args = parser.parse_args()
    methods = ["json floor", "pycocotools", "faster-coco-eval", "ours", "ours+report"]
    print(
        f"eval_bench: {os.cpu_count()} CPUs, repeats={args.repeats}, images {args.image_size[0]}x{args.image_size[1]}"
    )
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            t0 = time.perf_counter()
            gt, preds = make_coco_case(n, size=tuple(args.image_size), seed=0)
            _DATA.update(gt=gt, preds=preds, gt_path=Path(tmp) / "gt.json", pred_path=Path(tmp) / "pred.json")
            _DATA["gt_path"].write_text(json.dumps(gt))
            _DATA["pred_path"].write_text(json.dumps(preds))
            print(
                f"\n{n} images: {len(gt['annotations'])} objects, {len(preds)} results "
                f"(generated in {time.perf_counter() - t0:.1f}s)"
            )
            for iou_type in ("bbox", "segm"):
                rows = measure_round_robin(methods, iou_type, args.repeats)
                ref_stats = rows["pycocotools"]["stats"]
                print(f"  {iou_type}:")
                print(
                    f"    {'method':<18}{'median s':>10}{'x pycoco':>10}{'CPU x':>8}{'peak MB':>10}  stats vs pycocotools"
                )
                for m, r in rows.items():
                    stats = r["stats"]
                    same = (
                        "-"
                        if stats is None
                        else (
                            "identical"
                            if np.array_equal(stats, ref_stats)
                            else f"max diff {np.abs(stats - ref_stats).max():.2e}"
                        )
                    )
                    print(
                        f"    {m:<18}{r['wall']:>10.3f}{r['ratio']:>10.3f}{r['cpu_ratio']:>8.3f}{r['peak']:>10.1f}  {same}"
                    )
                ours_stats = rows["ours"]["stats"]
                summary.append(
                    (
                        n,
                        iou_type,
                        rows["ours"]["ratio"],
                        rows["ours"]["cpu_ratio"],
                        rows["faster-coco-eval"]["ratio"],
                        float(np.abs(ours_stats - ref_stats).max()),
                    )
                )
    print("\nsummary (ours = evaluate_detection without a report; goal: bbox <= 0.15x, segm <= 0.30x)")
    for n, iou_type, ours, ours_cpu, fce, diff in summary:
        goal = 0.15 if iou_type == "bbox" else 0.30
        same = "bit-identical" if diff == 0 else f"max |diff| {diff:.1e}"
        print(
            f"  {n:>6} images {iou_type}: ours {ours:.3f}x pycocotools wall, {ours_cpu:.3f}x CPU "
            f"(faster-coco-eval {fce:.3f}x wall), stats {same}, goal {'met' if ours <= goal else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
