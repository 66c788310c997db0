"""Benchmark the shared evaluator against pycocotools and faster-coco-eval, side by side in one run.

For each size (default 1k and 5k images) and each of boxes and masks it times, in freshly forked
processes so no run warms another's caches:

- ``ours``: ``evaluation.evaluate_detection(gt, preds, iou_type)`` -- our default path: input
  checks, private copies, faster-coco-eval, per-class AP (no plots);
- ``ours+report``: the same with ``out_dir`` (confusion matrix, PR curves, report.md), for scale;
- ``pycocotools``: COCO + loadRes + COCOeval evaluate/accumulate/summarize (the reference);
- ``faster-coco-eval``: the same calls with faster-coco-eval;
- ``json floor``: only ``json.load`` of the two files the CLI would read.

Each is repeated (median reported); ratios are to pycocotools' median. Peak memory is the peak
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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.detection import STAT_NAMES, evaluate_detection
from evaluation.synthetic import make_coco_case

_DATA: dict = {}  # filled in the parent before forking; children read it copy-on-write


def _rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _run_library(lib: str, gt: dict, preds: list, iou_type: str) -> np.ndarray:
    if lib == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(preds), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:12], dtype=np.float64)


def _child(method: str, iou_type: str, conn) -> None:
    gt, preds, gt_path, pred_path = _DATA["gt"], _DATA["preds"], _DATA["gt_path"], _DATA["pred_path"]
    if method in ("pycocotools", "faster-coco-eval"):
        # Both libraries write into the dicts; give them fresh ones (outside the timed part).
        gt, preds = copy.deepcopy(gt), copy.deepcopy(preds)
    start_rss = _rss_kb()
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
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.send((wall, max(0, peak_kb - start_rss) / 1024.0, None if stats is None else stats.tolist()))
    conn.close()


def measure(method: str, iou_type: str, repeats: int) -> tuple[float, float, np.ndarray | None]:
    ctx = mp.get_context("fork")
    walls, peaks, stats = [], [], None
    for _ in range(repeats):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(method, iou_type, child))
        proc.start()
        wall, peak, st = parent.recv()
        proc.join()
        walls.append(wall)
        peaks.append(peak)
        stats = None if st is None else np.asarray(st)
    return statistics.median(walls), max(peaks), stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000", help="image counts, comma-separated (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method, median reported (default: %(default)s)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(192, 240), metavar=("H", "W"),
                        help="image height and width of the generated set (default: 192 240)")
    args = parser.parse_args()
    methods = ["json floor", "pycocotools", "faster-coco-eval", "ours", "ours+report"]
    print(f"eval_bench: {os.cpu_count()} CPUs, repeats={args.repeats}, images {args.image_size[0]}x{args.image_size[1]}")
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            t0 = time.perf_counter()
            gt, preds = make_coco_case(n, size=tuple(args.image_size), seed=0)
            _DATA.update(gt=gt, preds=preds, gt_path=Path(tmp) / "gt.json", pred_path=Path(tmp) / "pred.json")
            _DATA["gt_path"].write_text(json.dumps(gt))
            _DATA["pred_path"].write_text(json.dumps(preds))
            print(f"\n{n} images: {len(gt['annotations'])} objects, {len(preds)} results "
                  f"(generated in {time.perf_counter() - t0:.1f}s)")
            for iou_type in ("bbox", "segm"):
                rows = {m: measure(m, iou_type, args.repeats) for m in methods}
                ref_wall, _, ref_stats = rows["pycocotools"]
                print(f"  {iou_type}:")
                print(f"    {'method':<18}{'median s':>10}{'x pycoco':>10}{'peak MB':>10}  stats vs pycocotools")
                for m, (wall, peak, stats) in rows.items():
                    same = "-" if stats is None else (
                        "identical" if np.array_equal(stats, ref_stats) else f"max diff {np.abs(stats - ref_stats).max():.2e}")
                    print(f"    {m:<18}{wall:>10.3f}{wall / ref_wall:>10.3f}{peak:>10.1f}  {same}")
                summary.append((n, iou_type, rows["ours"][0] / ref_wall, rows["faster-coco-eval"][0] / ref_wall,
                                np.array_equal(rows["ours"][2], ref_stats)))
    print("\nsummary (ours = evaluate_detection without a report; goal: bbox <= 0.15x, segm <= 0.30x)")
    for n, iou_type, ours, fce, same in summary:
        goal = 0.15 if iou_type == "bbox" else 0.30
        print(f"  {n:>6} images {iou_type}: ours {ours:.3f}x pycocotools (faster-coco-eval {fce:.3f}x), "
              f"stats {'identical' if same else 'DIFFER'}, goal {'met' if ours <= goal else 'MISSED'}")


if __name__ == "__main__":
    main()
