"""The approaches a benchmark puts side by side: a registry of rows, like segment-anything's
``sam_model_registry``: a name maps to a builder that trains (when the approach trains), predicts
the val and test splits through the stage's own Python API, scores the test split with the shared
evaluator and returns a plain dict (stored as ``rows/<name>/result.json``).

Each result holds the task metrics, the per-class table, the cost (training seconds, inference
seconds per image, device) and, when the approach can give one, an image-level "defective" score
per val and test image (max box score, max mask score, 1 - p(good)): the common column.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from defectkit.core.atomic import atomic_write_json
from defectkit.core.errors import DefectkitError
from defectkit.leaderboard.context import RunContext, SplitTruth
from defectkit.leaderboard.scoring import max_score_per_image

DETECTION, SEGMENTATION, CLASSIFICATION = "detection", "segmentation", "classification"
DETECTOR_CONF = 0.001  # keep low-score boxes: COCO AP and the image AUROC need the whole ranking


@dataclass(frozen=True)
class RowSpec:
    name: str
    title: str
    task: str
    run: Callable[[RunContext, Path], dict]
    about: str
    needs: tuple[str, ...] = ()  # rows whose results this one reads (run first)


ROWS: dict[str, RowSpec] = {}


def register(name: str, title: str, task: str, about: str, needs: tuple[str, ...] = ()):
    def wrap(fn: Callable[[RunContext, Path], dict]) -> Callable[[RunContext, Path], dict]:
        ROWS[name] = RowSpec(name, title, task, fn, about, needs)
        return fn

    return wrap


# ---------------------------------------------------------------- shared pieces


def sha256_of(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def checkpoint_entry(ctx: RunContext, path: Path) -> dict:
    return {"path": ctx.rel(path), "sha256": sha256_of(path)}


def command_line(*parts) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")


def image_ids_by_path(truth: SplitTruth) -> dict[str, int]:
    return {str(p): i for p, i in zip(truth.paths, truth.image_ids)}


def write_predictions(ctx: RunContext, row_dir: Path, split: str, results: list) -> str:
    path = atomic_write_json(row_dir / f"{split}_predictions.json", results, indent=None)
    return ctx.rel(path)


def evaluator_plots(ctx: RunContext, eval_dir: Path) -> dict[str, str]:
    return {p.stem: ctx.rel(p) for p in sorted(eval_dir.glob("*.png"))}


def coco_row(
    ctx: RunContext,
    row_dir: Path,
    iou_type: str,
    preds: dict[str, list[dict]],
    infer_s: float,
    title: str,
    image_scores: bool = True,
) -> dict:
    """Score COCO results of the test split with the shared evaluator (report with PR curves and
    confusion matrix in ``row_dir/eval``) and package what every box/mask row returns."""
    from defectkit.evaluation import evaluate_detection

    test = ctx.truth["test"]
    out = evaluate_detection(
        str(test.coco_path), preds["test"], iou_type, out_dir=row_dir / "eval", title=title
    )
    m = out[iou_type]
    prefix = "box" if iou_type == "bbox" else "segm"
    return {
        "metrics": {
            f"{prefix}_AP": m["AP"],
            f"{prefix}_AP50": m["AP50"],
            f"{prefix}_AP75": m["AP75"],
            f"{prefix}_AR100": m["AR100"],
        },
        "per_class": {name: v["AP"] if v["AP"] != -1 else None for name, v in m["per_class"].items()},
        "per_class_metric": f"{prefix} AP",
        "scores": {s: max_score_per_image(ctx.truth[s].image_ids, preds[s]) for s in ("val", "test")}
        if image_scores
        else None,
        "infer_s_per_image": infer_s / max(1, len(test.image_ids)),
        "predictions": {s: write_predictions(ctx, row_dir, s, preds[s]) for s in ("val", "test")},
        "prediction_kind": "masks" if iou_type == "segm" else "boxes",
        "plots": evaluator_plots(ctx, row_dir / "eval"),
    }


def extra_train_args(ctx: RunContext) -> dict:
    # No worker processes on a CPU run (they cost more than they save on a few small images); our
    # own report draws the plots.
    return {
        "plots": False,
        "verbose": ctx.config.progress,
        **({"workers": 0} if ctx.config.ultralytics_device == "cpu" else {}),
    }


# Run and report order: detectors first (sam-det reads yolo-world-ft's boxes), SAM fine-tuned
# before sam-det (which uses its decoder when present), the classifier last.
ALL_ROWS = (
    "yolo-world-ft",
    "yolo-world-zs",
    "yolo-closed",
    "sam-gt-base",
    "sam-gt-ft",
    "sam-det",
    "yolo-seg",
    "classifier",
)
DEMO_ROWS = ("yolo-world-ft", "sam-gt-base", "sam-gt-ft", "sam-det", "classifier")


def resolve_rows(names: list[str] | tuple[str, ...]) -> list[str]:
    """The rows to run, in run order, with the rows they need added.

    >>> resolve_rows(["sam-det"])
    ['yolo-world-ft', 'sam-det']
    """
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise DefectkitError(
            f"--rows {','.join(unknown)}: unknown row; known: {', '.join(ALL_ROWS)}, all, demo"
        )
    wanted = set(names)
    for name in list(names):
        wanted.update(ROWS[name].needs)
    return [n for n in ALL_ROWS if n in wanted]


# The rows register themselves when their modules load; the registry above must exist first.
from defectkit.leaderboard import rows_classification, rows_detection, rows_segmentation  # noqa: F401

if set(ROWS) != set(ALL_ROWS):
    raise RuntimeError(f"rows registered {sorted(ROWS)} differ from ALL_ROWS {sorted(ALL_ROWS)}")
