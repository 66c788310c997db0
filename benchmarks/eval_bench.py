"""Benchmark the `evaluate` command as users run it against a plain pycocotools script, side by side.

Headline (the whole user command, each run a fresh process):

- ``ours``: ``evaluate detection --gt G --pred P --iou-type bbox|segm --out R`` -- Python start,
  imports, reading and checking both files, faster-coco-eval, per-class AP, the confusion matrix
  and the full report written (metrics.json, report.md, pr_curves.png, confusion_matrix.png);
- ``masks``: ``evaluate masks --gt G --pred P --out R`` on the same files (IoU/Dice per image and
  class, report with its histogram);
- ``pycocotools``: a fresh ``python`` running the whole reference script: import pycocotools,
  ``COCO(G)``, ``loadRes(P)``, ``COCOeval`` evaluate / accumulate / summarize (the stats printed).

Both sides start the same way: ours as the console script installed beside this interpreter (what
a venv puts on PATH), pycocotools as this interpreter (``bench_common.console_script``), never
through a version manager's shim.

Per size, rounds of one run of every command, the order reversed every other round (a load change
on this shared machine hits both sides alike); after one untimed warm-up run of every command. The
ratio of a round is ours / pycocotools (masks: / the pycocotools segm script of the same round);
min / median / max over the rounds are printed, with the median wall times, CPU time ratio and the
peak RSS of each process (GNU time's ``%M``: the whole command, one process, no helpers).

Second table (``--library``, default on at the sizes in ``--library-sizes``): the library calls
alone, in forked children of this process, every side loading the same two files itself, with the
garbage collector disabled for all of them and faster-coco-eval in the mode our evaluator uses
without intervals (evaluate and accumulate fused, ``separate_eval=False``, one IoU thread):

- ``pycocotools``: ``COCO(G)``, ``loadRes(P)``, ``COCOeval`` evaluate / accumulate / summarize;
- ``faster-coco-eval``: the same calls with faster-coco-eval's ``COCO`` and ``COCOeval_faster``;
- ``ours (library)``: ``evaluate_detection(G, P, iou_type)``: reading + checks + faster-coco-eval
  + per-class AP, no report (no confusion matrix, no figures).

The data: ``defectkit.evaluation.synthetic.make_coco_case`` (every hard case of COCO evaluation),
192x240 images, generated once per size into ``--data-dir`` and reused (20,000 images take about a
minute to generate).

    python benchmarks/eval_bench.py            # 1,500 and 20,000 images, 5 rounds
    python benchmarks/eval_bench.py --quick    # 300 and 2,000 images, 3 rounds: a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import console_script
from defectkit.evaluation.detection import STAT_NAMES, evaluate_detection
from defectkit.evaluation.synthetic import make_coco_case
from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# The reference a user would write: everything in one fresh process, stats printed as JSON last.
PYCOCOTOOLS_SCRIPT = """
import json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt = COCO(sys.argv[1])
dt = gt.loadRes(sys.argv[2])
ev = COCOeval(gt, dt, sys.argv[3])
ev.evaluate()
ev.accumulate()
ev.summarize()
print(json.dumps([float(v) for v in ev.stats]))
"""
GOALS = {1500: 0.5, 20000: 0.25}  # issue 14: whole command vs whole pycocotools script


def dataset(n: int, data_dir: Path, size: tuple[int, int]) -> tuple[Path, Path]:
    """The generated ground truth and results files for ``n`` images (made once, then reused)."""
    gt_path = data_dir / f"gt_{n}_{size[0]}x{size[1]}_seed0.json"
    pred_path = data_dir / f"pred_{n}_{size[0]}x{size[1]}_seed0.json"
    if not (gt_path.is_file() and pred_path.is_file()):
        t0 = time.perf_counter()
        gt, preds = make_coco_case(n, size=size, seed=0)
        data_dir.mkdir(parents=True, exist_ok=True)
        for path, data in ((gt_path, gt), (pred_path, preds)):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(path)
        print(f"  generated {n} images in {time.perf_counter() - t0:.0f}s -> {data_dir}")
    return gt_path, pred_path


GNU_TIME = shutil.which("time") if Path("/usr/bin/time").is_file() else None


def run_measured(argv: list[str]) -> tuple[float, float, float, str]:
    """Run ``argv`` as a fresh process: (wall s, CPU s, peak RSS MB of that process, stdout).

    Peak RSS comes from GNU time's ``%M`` when /usr/bin/time exists (nan otherwise): a process
    started straight from this one would report this process's own peak too (Linux keeps the
    high-water mark across fork and exec), and this one holds the generated data. CPU time is
    ``wait4``'s (the command and anything it waited for). A failure stops the bench with its stderr.
    """
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        prefix = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] if GNU_TIME else []
        with open(Path(tmp) / "out", "w+") as out_file, open(Path(tmp) / "err", "w+") as err_file:
            t0 = time.perf_counter()
            proc = subprocess.Popen([*prefix, *argv], stdout=out_file, stderr=err_file, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            out_file.seek(0)
            err_file.seek(0)
            if proc.returncode != 0:
                raise SystemExit(
                    f"command failed ({proc.returncode}): {' '.join(argv)}\n{err_file.read()[-2000:]}"
                )
            peak = float(rss_file.read_text().split()[-1]) / 1024.0 if GNU_TIME else float("nan")
            return wall, usage.ru_utime + usage.ru_stime, peak, out_file.read()


def commands(gt: Path, pred: Path, out: Path) -> dict[str, list[str]]:
    ev = console_script("evaluate", "defectkit.evaluation.cli")
    return {
        "ours bbox": [*ev, "detection", "--gt", str(gt), "--pred", str(pred), "--iou-type", "bbox",
                      "--out", str(out / "bbox"), "--overwrite"],
        "ours segm": [*ev, "detection", "--gt", str(gt), "--pred", str(pred), "--iou-type", "segm",
                      "--out", str(out / "segm"), "--overwrite"],
        "ours masks": [*ev, "masks", "--gt", str(gt), "--pred", str(pred), "--out", str(out / "masks"),
                       "--overwrite"],
        "pycocotools bbox": [sys.executable, "-c", PYCOCOTOOLS_SCRIPT, str(gt), str(pred), "bbox"],
        "pycocotools segm": [sys.executable, "-c", PYCOCOTOOLS_SCRIPT, str(gt), str(pred), "segm"],
    }  # fmt: skip


def whole_commands(n: int, gt: Path, pred: Path, rounds: int, out: Path) -> list[dict]:
    """Rounds of every command at one size, order reversed every other round; the rows to print."""
    cmds = commands(gt, pred, out)
    names = list(cmds)
    runs: dict[str, list] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(run_measured(cmds[name]))
    # Stats of ours (metrics.json) against the reference script's printed stats, last round.
    rows = []
    for ours, ref in (("ours bbox", "pycocotools bbox"), ("ours segm", "pycocotools segm"),
                      ("ours masks", "pycocotools segm")):  # fmt: skip
        ratios = [o[0] / p[0] for o, p in zip(runs[ours], runs[ref])]
        cpu = [o[1] / p[1] for o, p in zip(runs[ours], runs[ref])]
        same = "-"
        if ours != "ours masks":
            iou_type = ours.split()[1]
            metrics = json.loads((out / iou_type / "metrics.json").read_text())[iou_type]
            ref_stats = np.asarray(json.loads(runs[ref][-1][3].strip().splitlines()[-1]))
            diff = float(np.abs(np.asarray([metrics[k] for k in STAT_NAMES]) - ref_stats).max())
            same = "bit-identical" if diff == 0 else f"max |diff| {diff:.1e}"
        rows.append(
            {
                "n": n,
                "case": ours.removeprefix("ours "),
                "ours_s": statistics.median(o[0] for o in runs[ours]),
                "ref_s": statistics.median(p[0] for p in runs[ref]),
                "ratios": ratios,
                "cpu_ratio": statistics.median(cpu),
                "ours_mb": max(o[2] for o in runs[ours]),
                "ref_mb": max(p[2] for p in runs[ref]),
                "stats": same,
            }
        )
    return rows


# -- second table: the library calls in forked children --------------------------------------------
def _library_child(method: str, gt: str, pred: str, iou_type: str, conn) -> None:
    gc.disable()  # the same for every side (our evaluator pauses it itself anyway)
    t0 = time.perf_counter()
    c0 = time.process_time()
    if method == "ours (library)":
        out = evaluate_detection(gt, pred, iou_type)[iou_type]
        stats = [out[k] for k in STAT_NAMES]
    else:
        coco_class, eval_class = (
            (COCO, COCOeval) if method == "pycocotools" else (FasterCOCO, COCOeval_faster)
        )
        kwargs = (
            {"separate_eval": False, "rle_iou_max_workers": 1, "print_function": lambda *a, **k: None}
            if method != "pycocotools"
            else {}
        )
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = coco_class(gt)
            ev = eval_class(coco_gt, coco_gt.loadRes(pred), iou_type, **kwargs)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = [float(v) for v in ev.stats[:12]]
    conn.send((time.perf_counter() - t0, time.process_time() - c0, stats))
    conn.close()


def library_calls(n: int, gt: Path, pred: Path, rounds: int) -> list[dict]:
    methods = ["pycocotools", "faster-coco-eval", "ours (library)"]
    ctx = mp.get_context("fork")
    rows = []
    for iou_type in ("bbox", "segm"):
        runs: dict[str, list] = {m: [] for m in methods}
        for r in range(rounds + 1):  # round 0: warm-up, not counted
            for m in methods if r % 2 == 0 else methods[::-1]:
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_library_child, args=(m, str(gt), str(pred), iou_type, child))
                proc.start()
                result = parent.recv()
                proc.join()
                if r:
                    runs[m].append(result)
        ref = runs["pycocotools"]
        for m in methods[1:]:
            diff = float(np.abs(np.asarray(runs[m][-1][2]) - np.asarray(ref[-1][2])).max())
            rows.append(
                {
                    "n": n,
                    "case": iou_type,
                    "method": m,
                    "ref_s": statistics.median(p[0] for p in ref),
                    "ratios": [o[0] / p[0] for o, p in zip(runs[m], ref)],
                    "cpu_ratio": statistics.median(o[1] / p[1] for o, p in zip(runs[m], ref)),
                    "stats": "bit-identical" if diff == 0 else f"max |diff| {diff:.1e}",
                }
            )
    return rows


def _spread(ratios: list[float]) -> str:
    return f"{min(ratios):.3f} / {statistics.median(ratios):.3f} / {max(ratios):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=None, help="image counts, comma-separated (default: 1500,20000)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per size (default: 5)")
    parser.add_argument("--quick", action="store_true", help="300 and 2,000 images, 3 rounds")
    parser.add_argument(
        "--library-sizes",
        default=None,
        help="sizes for the library-call table (default: the smallest size; 'none' to skip)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "defectkit-eval-bench",
        help="where the generated COCO files are kept between runs (default: %(default)s)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("300,2000" if args.quick else "1500,20000")).split(",")]
    rounds = args.rounds or (3 if args.quick else 5)
    lib_sizes = (
        []
        if args.library_sizes == "none"
        else [int(s) for s in args.library_sizes.split(",")]
        if args.library_sizes
        else [min(sizes)]
    )
    image_size = (192, 240)
    started = time.perf_counter()
    print(
        f"eval_bench: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start, {rounds} rounds"
    )
    files = {n: dataset(n, args.data_dir, image_size) for n in sorted(set(sizes) | set(lib_sizes))}
    for n, (gt, _) in files.items():
        data = json.loads(gt.read_text())
        print(
            f"  {n} images: {len(data['annotations'])} objects, {len(json.loads(files[n][1].read_text()))} results"
        )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up: one untimed run of every command (disk cache, compiled modules), smallest size.
        for argv in commands(*files[min(sizes)], Path(tmp) / "warm").values():
            run_measured(argv)
        for n in sizes:
            for path in files[n]:
                path.read_bytes()  # the page cache holds both files before the first timed run
            rows += whole_commands(n, *files[n], rounds, Path(tmp) / str(n))
    load_end = os.getloadavg()[0]

    print(
        "\nwhole command (fresh process each) vs the whole pycocotools script (fresh process): "
        f"ratio min / median / max over {rounds} rounds"
    )
    print(
        f"  {'images':>7} {'case':<6} {'ours s':>8} {'pycoco s':>9} {'ratio min/med/max':>22} {'CPU x':>6} "
        f"{'peak MB ours/pycoco':>20} {'goal':>6}  stats vs pycocotools"
    )
    for r in rows:
        goal = GOALS.get(r["n"])  # the goals are set at 1,500 and 20,000 images only
        met = "-" if goal is None else "met" if statistics.median(r["ratios"]) <= goal else "MISSED"
        print(
            f"  {r['n']:>7} {r['case']:<6} {r['ours_s']:>8.2f} {r['ref_s']:>9.2f} {_spread(r['ratios']):>22} "
            f"{r['cpu_ratio']:>6.3f} {r['ours_mb']:>9.0f} / {r['ref_mb']:<8.0f} {'<=' + str(goal) if goal else '-':>6} {met}  "
            f"{r['stats']}"
        )

    if lib_sizes:
        print(
            "\nlibrary calls (forked child each, files read by every side, GC off for all, "
            "faster-coco-eval fused as ours): ratio to pycocotools min / median / max"
        )
        print(
            f"  {'images':>7} {'case':<6} {'method':<18} {'pycoco s':>9} {'ratio min/med/max':>22} {'CPU x':>6}  stats"
        )
        for n in lib_sizes:
            for r in library_calls(n, *files[n], rounds):
                print(
                    f"  {r['n']:>7} {r['case']:<6} {r['method']:<18} {r['ref_s']:>9.2f} {_spread(r['ratios']):>22} "
                    f"{r['cpu_ratio']:>6.3f}  {r['stats']}"
                )
    print(
        f"\nload average {load_end:.1f} after the whole-command table, {os.getloadavg()[0]:.1f} at the end; "
        f"bench took {time.perf_counter() - started:.0f}s"
    )


if __name__ == "__main__":
    main()
