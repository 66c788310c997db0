"""``evaluate``: score predictions with the shared evaluator and write metrics.json + report.md + plots.

evaluate detection --gt coco/test.json --pred predictions.json --iou-type bbox --out runs/eval
evaluate masks --gt ground_truth/ --pred predicted_masks/ --out runs/eval_masks
evaluate classification --input predictions.csv --out runs/eval_cls
evaluate anomaly --input scores.npz --out runs/eval_anomaly
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from defectkit.evaluation.coco_io import load_json
from defectkit.evaluation.report import format_value

from defectkit.core.errors import DefectkitError, cli_entry
from defectkit.core.malloc import keep_freed_memory


def _resamples(text: str) -> int:
    """--bootstrap: a count of resamples, 0 for none."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of resamples, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"the number of resamples cannot be negative, got {value}")
    return value


def _print_table(rows: list[tuple[str, object]], intervals: dict | None = None) -> None:
    """One metric a line; with bootstrap ``intervals``, each known interval after its value."""
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        ci = (intervals or {}).get(key)
        bounds = f"  [{format_value(ci['ci_low'])}, {format_value(ci['ci_high'])}]" if ci and ci["ci_low"] is not None else ""
        print(f"{key:<{width}}  {format_value(value)}{bounds}")


def _detection(args: argparse.Namespace) -> int:
    from defectkit.evaluation.detection import STAT_NAMES, evaluate_detection

    out = evaluate_detection(
        args.gt,
        args.pred,
        args.iou_type,
        backend=args.backend,
        out_dir=args.out,
        overwrite=args.overwrite,
        conf_threshold=args.conf,
        iou_threshold=args.iou,
        confusion_matrix=True,
        class_agnostic=args.class_agnostic,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    metrics = out[args.iou_type]
    _print_table([(name, metrics[name]) for name in STAT_NAMES], metrics.get("ci"))
    print(f"wrote {args.out}/report.md")
    return 0


def _masks(args: argparse.Namespace) -> int:
    from defectkit.evaluation.masks import evaluate_masks

    out = evaluate_masks(
        args.gt,
        args.pred,
        class_names=[args.classes] if args.classes else None,
        out_dir=args.out,
        overwrite=args.overwrite,
        score_threshold=args.score_threshold,
        allow_missing=args.allow_missing,
        threshold=args.threshold,
        progress=True,
        pixel_metrics=args.pixel_metrics,
        fpr_limit=args.fpr_limit,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    shown = ["mean_iou", "mean_dice", "pixel_precision", "pixel_recall", "n_images"]
    if args.pixel_metrics and out["source"] == "coco":
        shown[4:4] = ["pixel_auroc", "aupro", "pixel_ap", "pixel_f1_max"]
    _print_table([(k, out[k]) for k in shown], out.get("ci"))
    print(f"wrote {args.out}/report.md")
    return 0


@contextmanager
def errors_name(path: Path):
    """Prefix the input file to errors about its content (the evaluator sees only arrays)."""
    try:
        yield
    except DefectkitError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise DefectkitError(f"{path}: {exc}") from None


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts; errors name the file."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DefectkitError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DefectkitError(f"{path}: cannot read CSV ({exc})") from None


def read_classification_file(path: Path, classes: list[str] | None):
    """(y_true, y_pred, class_names, probs or None) from a CSV or JSON file (see --help)."""
    if path.suffix.lower() == ".json":
        data = load_json(path, "classification")
        if not isinstance(data, dict) or not {"y_true", "y_pred"} <= set(data):
            raise DefectkitError(
                f"{path}: expected a JSON object with 'y_true', 'y_pred' (and 'class_names', 'probs')"
            )
        names = classes or data.get("class_names")
        if not names:
            names = sorted({str(v) for v in data["y_true"] + data["y_pred"]})
        return data["y_true"], data["y_pred"], names, data.get("probs")
    rows = read_csv_rows(path)
    if not rows or not {"true", "pred"} <= set(rows[0]):
        raise DefectkitError(
            f"{path}: expected a CSV with a header holding 'true' and 'pred' columns and one row per image"
        )
    y_true = [r["true"] for r in rows]
    y_pred = [r["pred"] for r in rows]
    names = classes or sorted(set(y_true) | set(y_pred))
    prob_cols = [f"prob_{n}" for n in names]
    probs = None
    if all(c in rows[0] for c in prob_cols):
        try:
            probs = [[float(r[c]) for c in prob_cols] for r in rows]
        except (TypeError, ValueError):
            raise DefectkitError(f"{path}: a prob_<class> cell is not a number") from None
        for line, row in enumerate(probs, start=2):
            if not all(math.isfinite(v) for v in row):  # float() reads 'nan': AUROC would be made up
                raise DefectkitError(f"{path}: line {line}: a prob_<class> cell is not a finite number")
    return y_true, y_pred, names, probs


def _classification(args: argparse.Namespace) -> int:
    from defectkit.evaluation.classification import evaluate_classification

    classes = args.classes.split(",") if args.classes else None
    y_true, y_pred, names, probs = read_classification_file(args.input, classes)
    with errors_name(args.input):
        out = evaluate_classification(
            y_true, y_pred, names, probs=probs, out_dir=args.out, overwrite=args.overwrite,
            bootstrap=args.bootstrap, seed=args.seed,
        )
    _print_table(
        [
            ("accuracy", out["accuracy"]),
            ("balanced_accuracy", out["balanced_accuracy"]),
            ("images", out["n_images"]),
        ],
        out.get("ci"),
    )
    print(f"wrote {args.out}/report.md")
    return 0


def read_anomaly_file(path: Path):
    """(labels, scores, gt_masks or None, score_maps or None) from an .npz or .csv file (see --help)."""
    if path.suffix.lower() == ".npz":
        try:
            data = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DefectkitError(f"{path}: no such file") from None
        except (OSError, ValueError) as exc:
            raise DefectkitError(f"{path}: not a readable .npz ({exc})") from None
        with data:
            missing = {"image_labels", "image_scores"} - set(data.files)
            if missing:
                raise DefectkitError(f"{path}: missing arrays {sorted(missing)} (has {data.files})")
            try:  # arrays load lazily: an object array (a pickle) is refused here, never run
                masks = data["gt_masks"] if "gt_masks" in data.files else None
                maps = data["score_maps"] if "score_maps" in data.files else None
                return data["image_labels"], data["image_scores"], masks, maps
            except (OSError, ValueError) as exc:
                raise DefectkitError(f"{path}: not a readable .npz of numeric arrays ({exc})") from None
    rows = read_csv_rows(path)
    if not rows or not {"label", "score"} <= set(rows[0]):
        raise DefectkitError(
            f"{path}: expected a CSV with 'label' and 'score' columns (and optionally 'image')"
        )
    labels, scores = [], []
    for i, r in enumerate(rows, start=2):
        label = r["label"].strip().lower()
        labels.append(0 if label in ("0", "good", "normal", "ok") else 1 if label else -1)
        try:
            scores.append(float(r["score"]))
        except ValueError:
            raise DefectkitError(f"{path}: line {i}: score {r['score']!r} is not a number") from None
        if labels[-1] < 0:
            raise DefectkitError(f"{path}: line {i}: empty label")
    return np.array(labels), np.array(scores), None, None


def _anomaly(args: argparse.Namespace) -> int:
    from defectkit.evaluation.anomaly import evaluate_anomaly

    labels, scores, masks, maps = read_anomaly_file(args.input)
    with errors_name(args.input):
        out = evaluate_anomaly(
            labels, scores, masks, maps, fpr_limit=args.fpr_limit, out_dir=args.out, overwrite=args.overwrite,
            bootstrap=args.bootstrap, seed=args.seed,
        )
    _print_table(
        [(k, out[k]) for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "pixel_f1_max", "n_images")],
        out.get("ci"),
    )
    print(f"wrote {args.out}/report.md")
    return 0


def add_bootstrap_options(p: argparse.ArgumentParser) -> None:
    """``--bootstrap N`` and ``--seed``: every command that reports the evaluator's metrics (here and in
    the stages' ``val``) offers its intervals the same way."""
    p.add_argument(
        "--bootstrap",
        type=_resamples,
        default=0,
        metavar="N",
        help="add 95%% confidence intervals from N resamples of the test images (1000 is usual; "
        "default: %(default)s = off, which keeps the command as fast as a plain evaluation)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate",
        description="Score predictions with defectkit's shared evaluator. Every command writes OUT/metrics.json, "
        "OUT/report.md and its plots, atomically (the folder appears complete or not at all). "
        "Schema of metrics.json: evaluation/README.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--out", type=Path, required=True, help="report folder to write (metrics.json, report.md, PNGs)"
        )
        p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
        add_bootstrap_options(p)

    p = sub.add_parser(
        "detection",
        help="COCO mAP of boxes or instance masks",
        description="COCO evaluation of a COCO results file (list of {image_id, category_id, score, bbox"
        "[, segmentation RLE]}) against COCO ground truth: the 12 COCO stats, AP/AP50 per class, "
        "precision-recall curves and a confusion matrix with background. Inputs are checked first "
        "(unknown or shifted-by-one ids, annotation id 0, missing area/iscrowd, wrong mask sizes).",
    )
    p.add_argument(
        "--gt", type=Path, required=True, help="COCO ground-truth JSON (e.g. <converted>/coco/test.json)"
    )
    p.add_argument(
        "--pred", type=Path, required=True, help="COCO results JSON written by detect/segment predict"
    )
    p.add_argument(
        "--iou-type",
        choices=("bbox", "segm"),
        default="bbox",
        help="score boxes or masks (default: %(default)s)",
    )
    p.add_argument(
        "--backend",
        choices=("faster-coco-eval", "pycocotools"),
        default="faster-coco-eval",
        help="COCO implementation; both give identical numbers, faster-coco-eval is several times faster "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--conf",
        type=float,
        default=0.25,
        help="confusion matrix only: ignore detections scored below this (default: %(default)s)",
    )
    p.add_argument(
        "--iou",
        type=float,
        default=0.5,
        help="confusion matrix only: IoU needed to match a detection to an object (default: %(default)s)",
    )
    p.add_argument(
        "--class-agnostic",
        action="store_true",
        help="collapse every ground-truth category into one ('defect', id 1) and count every prediction "
        "as it before scoring: only localisation is scored, to compare class-unaware anomaly models "
        "with detectors fairly",
    )
    common(p)
    p.set_defaults(func=_detection)

    p = sub.add_parser(
        "masks",
        help="IoU, Dice, pixel precision/recall of masks",
        description="Per-image and per-class IoU, Dice, pixel precision and recall. --gt/--pred are either two "
        "folders of mask PNGs (matched by relative path; '000_mask.png' matches '000.png'; a subfolder is a "
        "class, as in MVTec's ground_truth/<defect>/) or a COCO ground-truth JSON and a COCO results JSON "
        "(instance masks are merged per image and class).",
    )
    p.add_argument(
        "--gt", type=Path, required=True, help="ground-truth mask folder, or COCO ground-truth JSON"
    )
    p.add_argument("--pred", type=Path, required=True, help="predicted mask folder, or COCO results JSON")
    p.add_argument(
        "--classes",
        default=None,
        metavar="NAME",
        help="PNG folders: the class of the masks lying directly in --gt/--pred, not in a class "
        "subfolder (default: defect); COCO input takes its class names from the ground truth",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="COCO results: keep instances scored at least this (default: %(default)s)",
    )
    p.add_argument(
        "--threshold",
        type=int,
        default=127,
        help="PNG masks: grey level above which a pixel is foreground (default: %(default)s)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="count a mask present on one side only as empty on the other (default: error)",
    )
    p.add_argument(
        "--pixel-metrics",
        action="store_true",
        help="COCO results: also pixel AUROC, AUPRO, pixel AP and pixel F1-max of a score map per image "
        "(each pixel the highest score of the predicted masks covering it, 0 elsewhere); adds about "
        "0.2 ms an image at 192x240",
    )
    p.add_argument(
        "--fpr-limit",
        type=float,
        default=0.3,
        help="with --pixel-metrics: integrate the PRO curve up to this false-positive rate (default: %(default)s)",
    )
    common(p)
    p.set_defaults(func=_masks)

    p = sub.add_parser(
        "classification",
        help="accuracy, balanced accuracy, per-class P/R/F1, confusion matrix",
        description="Input: a CSV with a header and one row per image, columns 'true' and 'pred' (class names; "
        "other columns such as 'image' are ignored; optional 'prob_<class>' columns for every class add "
        'one-vs-rest AUROC), or a JSON object {"class_names": [...], "y_true": [...], "y_pred": [...], '
        '"probs": [[...]]} with names or indices.',
    )
    p.add_argument("--input", type=Path, required=True, help="predictions CSV or JSON (format above)")
    p.add_argument(
        "--classes",
        default=None,
        help="comma-separated class names in index order (default: the JSON's class_names, "
        "else the sorted labels found)",
    )
    common(p)
    p.set_defaults(func=_classification)

    p = sub.add_parser(
        "anomaly",
        help="image AUROC, pixel AUROC, AUPRO, pixel AP, pixel F1-max (MVTec AD metrics)",
        description="Input: an .npz with arrays image_labels (N, 0 good / 1 defect), image_scores (N) and "
        "optionally gt_masks (N,H,W bool) and score_maps (N,H,W float) for pixel AUROC, AUPRO, pixel AP and "
        "pixel F1-max; or a CSV "
        "with columns 'label' (0/1, or good/<defect name>) and 'score' for image AUROC only.",
    )
    p.add_argument("--input", type=Path, required=True, help=".npz or .csv of scores (format above)")
    p.add_argument(
        "--fpr-limit",
        type=float,
        default=0.3,
        help="integrate the PRO curve up to this false-positive rate (default: %(default)s)",
    )
    common(p)
    p.set_defaults(func=_anomaly)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # the scorers' many megabyte-sized temporaries (defectkit.core.malloc)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
