"""The approaches a benchmark puts side by side: a registry of rows, like segment-anything's
``sam_model_registry``: a name maps to a builder that trains (when the approach trains), then
predicts and scores through the stages' own public functions (the ones behind ``detect predict``,
``segment predict``/``val``, ``classify val`` and ``evaluate``) and returns a plain dict (stored as
``rows/<name>/result.json``). A row has no inference loop of its own.

Each result holds the task metrics, the per-class table, the cost (training seconds, inference
seconds per image, device), when the approach can give one an image-level "defective" score per
val and test image (max box score, max mask score, 1 - p(good)): the common column, and
``reproduce``: the console commands (argv lists, paths relative to the run folder) that rebuild
the row's metrics.json files from its checkpoints, as ``run.json`` lists them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from defectkit.core.digest import sha256_file
from defectkit.core.errors import DefectkitError
from defectkit.core.results import read_coco_results
from defectkit.evaluation import evaluate_detection, evaluate_masks
from defectkit.leaderboard.context import RunContext
from defectkit.leaderboard.intervals import interval
from defectkit.leaderboard.scoring import max_score_per_image

DETECTION, SEGMENTATION, CLASSIFICATION, ANOMALY = "detection", "segmentation", "classification", "anomaly"
# The pixel metrics papers report, of a score map per image (the evaluator's names).
PIXEL_METRICS = ("pixel_auroc", "aupro", "pixel_ap", "pixel_f1_max")
# The test metrics a row of each task reports, its main one first (the report's "main metric", the
# category table's column, the label-efficiency curve's y), each with a bootstrap interval (AR100,
# which has none, stays in result.json only). A row of another task declares its own
# (``register(..., metrics=...)``).
TASK_METRICS = {
    DETECTION: ("box_AP", "box_AP50", "box_AP75", "agnostic_box_AP50", "agnostic_box_AP"),
    SEGMENTATION: ("mask_mIoU", "mask_mDice", "segm_AP", "segm_AP50", "agnostic_segm_AP50", "agnostic_segm_AP",
                   *PIXEL_METRICS),
    CLASSIFICATION: ("balanced_accuracy", "accuracy"),
    ANOMALY: (*PIXEL_METRICS, "agnostic_box_AP50", "agnostic_box_AP", "agnostic_segm_AP50", "agnostic_segm_AP"),
}  # fmt: skip
# The category table's columns of a task (beside image AUROC): the main metric and, for rows that
# find defects as boxes or masks, the class-agnostic AP50 every such row shares with the anomaly rows.
TASK_TABLE = {
    DETECTION: ("box_AP", "agnostic_box_AP50"),
    SEGMENTATION: ("mask_mIoU", "agnostic_segm_AP50"),
    CLASSIFICATION: ("balanced_accuracy",),
    ANOMALY: ("pixel_auroc", "agnostic_box_AP50", "agnostic_segm_AP50"),
}
# Box and mask rows are also scored with every defect type as one class (``evaluate detection
# --class-agnostic``): the only terms in which a class-unaware anomaly model can be compared with them.
AGNOSTIC = ("AP50", "AP")
METRIC_LABELS = {
    "image_auroc": "image AUROC", "box_AP": "box AP", "mask_mIoU": "mask mIoU", "segm_AP": "segm AP",
    "balanced_accuracy": "balanced acc.", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO", "pixel_ap": "pixel AP",
    "pixel_f1_max": "pixel F1-max", "agnostic_box_AP50": "class-agnostic box AP50",
    "agnostic_box_AP": "class-agnostic box AP", "agnostic_segm_AP50": "class-agnostic mask AP50",
    "agnostic_segm_AP": "class-agnostic mask AP",
}  # fmt: skip


def metric_label(metric: str) -> str:
    """How tables name a metric.

    >>> metric_label("box_AP"), metric_label("agnostic_segm_AP50"), metric_label("pixel_AUROC")
    ('box AP', 'class-agnostic mask AP50', 'pixel AUROC')
    """
    return METRIC_LABELS.get(metric, metric.replace("_", " "))
DETECTOR_CONF = 0.001  # keep low-score boxes: COCO AP and the image AUROC need the whole ranking
SPLITS = ("val", "test")  # val picks the image-level threshold, test is scored

Command = list[str]


@dataclass(frozen=True)
class RowSpec:
    name: str
    title: str
    task: str
    run: Callable[[RunContext, Path], dict]
    about: str
    needs: tuple[str, ...] = ()  # rows whose results this one reads (run first)
    reads: tuple[str, ...] = ()  # rows whose results it reads when they ran (so a shard keeps them together)
    metrics: tuple[str, ...] = ()  # its test metrics, the main one first
    table: tuple[str, ...] = ()  # its columns in the category table (beside image AUROC, when it has one)
    unavailable: Callable[[], str | None] | None = None  # why it cannot run here (a missing extra), else None

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


ROWS: dict[str, RowSpec] = {}


def register(
    name: str,
    title: str,
    task: str,
    about: str,
    needs: tuple[str, ...] = (),
    reads: tuple[str, ...] = (),
    metrics: tuple[str, ...] | None = None,
    table: tuple[str, ...] | None = None,
    unavailable: Callable[[], str | None] | None = None,
):
    """Add a row to ``ROWS``. ``metrics``: its test metrics, main first (default: its task's,
    ``TASK_METRICS``); ``table``: what the category table shows besides the main one (always first;
    default: its task's ``TASK_TABLE``); ``unavailable``: says why the row cannot run here (an optional
    extra missing), else None."""
    declared = tuple(metrics if metrics is not None else TASK_METRICS.get(task, ()))
    if not declared:
        raise ValueError(f"row {name}: task {task!r} has no default metrics; pass metrics=(main, ...)")

    def wrap(fn: Callable[[RunContext, Path], dict]) -> Callable[[RunContext, Path], dict]:
        columns = table if table is not None else TASK_TABLE.get(task, ())
        shown = tuple(dict.fromkeys((declared[0], *columns)))  # the main metric always, first
        ROWS[name] = RowSpec(name, title, task, fn, about, needs, reads, declared, shown, unavailable)
        return fn

    return wrap


# ---------------------------------------------------------------- shared pieces


def checkpoint_entry(ctx: RunContext, path: Path) -> dict:
    return {"path": ctx.rel(path), "sha256": sha256_file(path)}


def command_line(*parts) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")


def arg(ctx: RunContext, path: str | Path) -> str:
    """A path as a recorded command names it: relative to the run folder when it lies inside it
    (the commands run from there), else as given (a SAM checkpoint of the user's, say)."""
    try:
        return ctx.rel(path)
    except ValueError:
        return str(path)


def reproduce(
    ctx: RunContext, commands: list[Command], metrics: list[Path], checkpoints: list[Path] = ()
) -> dict:
    """What ``run.json`` records for a row: the ``commands`` that, run in order from the run folder,
    rebuild its evaluator ``metrics`` files (the first is the row's metrics.json; the others, when
    the row has a second evaluator report, under ``more_metrics``) from the converted data, the
    embedding cache and the row's ``checkpoints``."""
    return {
        "commands": [[str(a) for a in c] for c in commands],
        "metrics": ctx.rel(metrics[0]),
        "more_metrics": [ctx.rel(m) for m in metrics[1:]],
        "checkpoints": [ctx.rel(c) for c in checkpoints],
    }


def bootstrap_args(ctx: RunContext) -> list[str]:
    """The ``evaluate`` options that add the run's intervals (``--bootstrap N --seed S``; none for 0)."""
    n = ctx.config.bootstrap
    return ["--bootstrap", str(n), "--seed", str(ctx.config.seed)] if n > 0 else []


def with_interval(metrics: dict, key: str) -> dict:
    """``metrics[key]`` as ``{"value", "ci_low", "ci_high"}``: the evaluator's bootstrap interval
    (``metrics["ci"][key]``) when it drew one, else the bare value (None bounds).

    >>> with_interval({"AP": 0.5, "ci": {"AP": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}}}, "AP")["ci_low"]
    0.4
    >>> with_interval({"AR100": 0.7}, "AR100")
    {'value': 0.7, 'ci_low': None, 'ci_high': None}
    """
    found = metrics.get("ci", {}).get(key)
    return dict(found) if found is not None else interval(metrics[key])


def evaluator_plots(ctx: RunContext, eval_dir: Path) -> dict[str, str]:
    return {p.stem: ctx.rel(p) for p in sorted(eval_dir.glob("*.png"))}


def evaluate_test(
    ctx: RunContext, pred_file: Path, iou_type: str, out_dir: Path, title: str, class_agnostic: bool = False
) -> tuple[dict, Command]:
    """``evaluate detection`` of the test split's COCO results: the evaluator's report in
    ``out_dir`` (metrics.json, PR curves, confusion matrix) and the command that writes it; with
    ``class_agnostic``, every defect type counted as one class (``--class-agnostic``)."""
    gt = ctx.truth["test"].coco_path
    cfg = ctx.config
    out = evaluate_detection(str(gt), str(pred_file), iou_type, out_dir=out_dir, confusion_matrix=True,
                             title=title, class_agnostic=class_agnostic, bootstrap=cfg.bootstrap, seed=cfg.seed)  # fmt: skip
    command = ["evaluate", "detection", "--gt", arg(ctx, gt), "--pred", arg(ctx, pred_file),
               "--iou-type", iou_type, *(["--class-agnostic"] if class_agnostic else []), *bootstrap_args(ctx),
               "--out", arg(ctx, out_dir), "--overwrite"]  # fmt: skip
    return out, command


def agnostic_metrics(ctx: RunContext, row_dir: Path, iou_type: str, pred_file: Path, title: str) -> tuple[dict, Command]:
    """The class-agnostic AP50/AP of a test split's COCO results (``row_dir/eval_agnostic``), named
    ``agnostic_box_*`` or ``agnostic_segm_*``, and the command that scores them."""
    out, command = evaluate_test(
        ctx, pred_file, iou_type, row_dir / "eval_agnostic", f"{title}: class-agnostic", class_agnostic=True
    )
    prefix = "box" if iou_type == "bbox" else "segm"
    return {f"agnostic_{prefix}_{k}": with_interval(out[iou_type], k) for k in AGNOSTIC}, command


def evaluate_mask_union(ctx: RunContext, pred_file: Path, out_dir: Path) -> tuple[dict, Command]:
    """``evaluate masks --pixel-metrics`` of the test split's COCO results: IoU/Dice of the union of
    the masks scored >= ``mask_score_threshold`` per image and class, and the pixel metrics of each
    image's score map (a pixel's highest covering mask score, 0 elsewhere)."""
    gt, threshold = ctx.truth["test"].coco_path, ctx.config.mask_score_threshold
    out = evaluate_masks(str(gt), str(pred_file), score_threshold=threshold, out_dir=out_dir, pixel_metrics=True,
                         bootstrap=ctx.config.bootstrap, seed=ctx.config.seed)  # fmt: skip
    command = ["evaluate", "masks", "--gt", arg(ctx, gt), "--pred", arg(ctx, pred_file),
               "--score-threshold", repr(float(threshold)), "--pixel-metrics", *bootstrap_args(ctx),
               "--out", arg(ctx, out_dir), "--overwrite"]  # fmt: skip
    return out, command


def coco_row(
    ctx: RunContext,
    row_dir: Path,
    iou_type: str,
    pred_files: dict[str, Path],
    infer_s: float,
    title: str,
    image_scores: bool = True,
) -> tuple[dict, list[Command], list[Path]]:
    """Score the test split's COCO results (``pred_files["test"]``) with ``evaluate detection`` into
    ``row_dir/eval`` (per class) and ``row_dir/eval_agnostic`` (class-agnostic) and package what every
    box/mask row returns; also the commands and the metrics files they write."""
    test = ctx.truth["test"]
    out, command = evaluate_test(ctx, pred_files["test"], iou_type, row_dir / "eval", title)
    agnostic, agnostic_command = agnostic_metrics(ctx, row_dir, iou_type, pred_files["test"], title)
    m = out[iou_type]
    prefix = "box" if iou_type == "bbox" else "segm"
    results = {s: read_coco_results(pred_files[s]) for s in SPLITS}
    row = {
        "metrics": {**{f"{prefix}_{k}": with_interval(m, k) for k in ("AP", "AP50", "AP75", "AR100")}, **agnostic},
        "per_class": {name: v["AP"] if v["AP"] != -1 else None for name, v in m["per_class"].items()},
        "per_class_metric": f"{prefix} AP",
        "scores": {s: max_score_per_image(ctx.truth[s].image_ids, results[s]) for s in SPLITS}
        if image_scores
        else None,
        "infer_s_per_image": infer_s / max(1, len(test.image_ids)),
        "predictions": {s: ctx.rel(pred_files[s]) for s in SPLITS},
        "prediction_kind": "masks" if iou_type == "segm" else "boxes",
        "plots": evaluator_plots(ctx, row_dir / "eval"),
    }
    metrics_files = [row_dir / "eval" / "metrics.json", row_dir / "eval_agnostic" / "metrics.json"]
    return row, [command, agnostic_command], metrics_files


def extra_train_args(ctx: RunContext) -> dict:
    # No worker processes on a CPU run (they cost more than they save on a few small images); our
    # own report draws the plots.
    return {
        "plots": False,
        "verbose": ctx.config.progress,
        **({"workers": 0} if ctx.config.ultralytics_device == "cpu" else {}),
    }


# Run and report order: detectors first (sam-det reads yolo-world-ft's boxes), SAM fine-tuned
# before sam-det (which uses its decoder when present), then the classifier and the unsupervised anomaly rows.
ALL_ROWS = (
    "yolo-world-ft",
    "yolo-world-zs",
    "yolo-closed",
    "sam-gt-base",
    "sam-gt-random",
    "sam-gt-ft",
    "sam-det",
    "yolo-seg",
    "classifier",
    "padim",
    "patchcore",
    "draem",
)
# sam-gt-base is the untuned-SAM row: it becomes sam-gt-random when the run's SAM has random weights.
# PaDiM: the unsupervised row that means something offline (random-init features) in seconds.
DEMO_ROWS = ("yolo-world-ft", "sam-gt-base", "sam-gt-ft", "sam-det", "classifier", "padim")
# The untuned-SAM row by the run's weights: "base SAM" means released weights only.
UNTUNED_SAM = {False: "sam-gt-base", True: "sam-gt-random"}


def resolve_rows(names: list[str] | tuple[str, ...], *, random_sam: bool = False) -> list[str]:
    """The rows to run, in run order, with the rows they need added; the untuned-SAM row named by
    the run's weights (``random_sam``: sam-gt-random, else sam-gt-base).

    >>> resolve_rows(["sam-det"])
    ['yolo-world-ft', 'sam-det']
    >>> resolve_rows(["sam-gt-base", "sam-gt-ft"], random_sam=True)
    ['sam-gt-random', 'sam-gt-ft']
    """
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise DefectkitError(
            f"--rows {','.join(unknown)}: unknown row; known: {', '.join(ALL_ROWS)}, all, demo"
        )
    wanted = {UNTUNED_SAM[random_sam] if n in UNTUNED_SAM.values() else n for n in names}
    for name in list(wanted):
        wanted.update(ROWS[name].needs)
    return [n for n in ALL_ROWS if n in wanted]


def runnable_rows(rows: list[str]) -> tuple[list[str], list[str]]:
    """``rows`` without those that cannot run here, and one line per reason (how to install what
    is missing), to print once.

    >>> runnable_rows(["classifier"])
    (['classifier'], [])
    """
    kept, skipped = [], {}
    for name in rows:
        why = ROWS[name].unavailable() if ROWS[name].unavailable else None
        if why:
            skipped.setdefault(why, []).append(name)
        else:
            kept.append(name)
    return kept, [f"skipping {', '.join(names)}: {why}" for why, names in skipped.items()]


def row_groups(rows: list[str]) -> list[tuple[str, ...]]:
    """``rows`` (in run order) cut into the groups a shard runs whole: a row stays with the rows it
    needs or reads, so its numbers do not depend on how the work was cut.

    >>> row_groups(["yolo-world-ft", "yolo-closed", "sam-gt-ft", "sam-det", "classifier"])
    [('yolo-world-ft', 'sam-gt-ft', 'sam-det'), ('yolo-closed',), ('classifier',)]
    """
    group_of = {name: {name} for name in rows}
    for name in rows:
        for other in (*ROWS[name].needs, *ROWS[name].reads):
            if other in group_of and group_of[other] is not group_of[name]:
                merged = group_of[name] | group_of[other]
                for member in merged:
                    group_of[member] = merged
    groups: list[tuple[str, ...]] = []
    for name in rows:
        group = tuple(n for n in rows if n in group_of[name])
        if group not in groups:
            groups.append(group)
    return groups


# The rows register themselves when their modules load; the registry above must exist first.
from defectkit.leaderboard import rows_anomaly, rows_classification, rows_detection, rows_segmentation  # noqa: F401

if set(ROWS) != set(ALL_ROWS):
    raise RuntimeError(f"rows registered {sorted(ROWS)} differ from ALL_ROWS {sorted(ALL_ROWS)}")
