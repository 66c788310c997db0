"""What the leaderboard's 95% intervals cost: the benchmark's scoring of 10 rows on 1,000 test images,
with ``--bootstrap 0`` and with the default 1,000 resamples.

The scoring is what ``defectkit benchmark`` runs for each row once its predictions exist, with the
same calls and options (rows.coco_row / rows.evaluate_mask_union / runner.finish_row):

- 5 box rows: ``evaluate_detection(bbox, confusion matrix, report written)`` and the common column
  (``scoring.image_level`` + ``scoring.image_level_intervals``: image AUROC and the accuracy at the
  val threshold);
- 5 mask rows: ``evaluate_detection(segm, ...)``, ``evaluate_masks(score >= 0.25, pixel metrics,
  report written)`` and the common column.

Data: ``evaluation.synthetic.make_coco_case`` (1,000 images of 192x240, every hard case of COCO
evaluation) as ground truth; each row's results are its predictions with the scores redrawn by a
row-seeded factor (10 different rankings of the same boxes and masks). Val is the first 200 images.
Rounds alternate the order of the two settings (a load change on this shared machine hits both);
one untimed warm-up round first. Printed: per round the seconds of each setting and the overhead
(with / without - 1), then min / median / max.

    python benchmarks/leaderboard_bootstrap_bench.py               # 1,000 images, 10 rows, 3 rounds
    python benchmarks/leaderboard_bootstrap_bench.py --images 300 --rounds 2   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from defectkit.evaluation import evaluate_detection, evaluate_masks
from defectkit.evaluation.synthetic import make_coco_case
from defectkit.leaderboard.scoring import image_level, image_level_intervals, max_score_per_image

MASK_SCORE_THRESHOLD = 0.25  # BenchmarkConfig.mask_score_threshold


def row_predictions(preds: list[dict], row: int) -> list[dict]:
    """One row's results: the same boxes and masks, scores scaled by a row-seeded factor in [0.5, 1]."""
    rng = np.random.default_rng(row)
    factors = rng.uniform(0.5, 1.0, len(preds))
    return [{**p, "score": float(p["score"] * f)} for p, f in zip(preds, factors)]


def score_row(gt: dict, preds: list[dict], masks: bool, bootstrap: int, out: Path) -> None:
    """A finished row's scoring, as the benchmark runs it."""
    iou_type = "segm" if masks else "bbox"
    evaluate_detection(
        gt, preds, iou_type, out_dir=out / "eval", confusion_matrix=True, bootstrap=bootstrap, seed=0
    )
    if masks:
        evaluate_masks(gt, preds, score_threshold=MASK_SCORE_THRESHOLD, out_dir=out / "eval_masks", pixel_metrics=True,
                       bootstrap=bootstrap, seed=0)  # fmt: skip
    ids = [im["id"] for im in gt["images"]]
    defective = {a["image_id"] for a in gt["annotations"]}
    labels = np.array([int(i in defective) for i in ids])
    scores = np.array(max_score_per_image(ids, preds))
    val, test = slice(0, 200), slice(200, None)
    level = image_level(labels[val], scores[val], labels[test], scores[test])
    if bootstrap > 0:
        image_level_intervals(labels[test], scores[test], level["threshold"], bootstrap, seed=0)


def score_all(gt: dict, rows: list[tuple[list[dict], bool]], bootstrap: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for k, (preds, masks) in enumerate(rows):
            score_row(gt, preds, masks, bootstrap, Path(tmp) / f"row{k}")
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="test images (default: %(default)s)")
    parser.add_argument(
        "--rows", type=int, default=10, help="rows, half box rows, half mask rows (default: %(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: %(default)s)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples (default: %(default)s)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    gt, preds = make_coco_case(args.images, size=(192, 240), seed=0)
    rows = [(row_predictions(preds, k), k >= args.rows // 2) for k in range(args.rows)]
    print(
        f"{args.images} images, {len(preds)} results per row, {args.rows} rows; generated in {time.perf_counter() - t0:.1f}s"
    )
    settings = (0, args.bootstrap)
    for b in settings:  # warm-up: imports, fonts, caches
        score_all(gt, rows[:2], b)
    overheads = []
    for r in range(args.rounds):
        times = {b: score_all(gt, rows, b) for b in (settings if r % 2 == 0 else settings[::-1])}
        overheads.append(times[args.bootstrap] / times[0] - 1)
        print(f"round {r + 1}: --bootstrap 0 {times[0]:.2f}s, --bootstrap {args.bootstrap} {times[args.bootstrap]:.2f}s, "
              f"overhead {100 * overheads[-1]:+.1f}%")  # fmt: skip
    print(f"overhead min / median / max: {100 * min(overheads):+.1f}% / {100 * statistics.median(overheads):+.1f}% / "
          f"{100 * max(overheads):+.1f}%")  # fmt: skip


if __name__ == "__main__":
    main()
