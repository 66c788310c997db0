"""The benchmark report: leaderboard, per-task and per-class tables, the evaluator's PR curves and
confusion matrices, ROC curves of the common column, the gallery of the worst validation images,
and everything needed to reproduce the run."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from defectkit.evaluation.charts import roc_curves_png
from defectkit.evaluation.ranking import roc_curve
from defectkit.evaluation.report import Report
from defectkit.leaderboard.context import RunContext
from defectkit.leaderboard.gallery import gallery_image
from defectkit.leaderboard.intervals import as_interval, at_chance, format_metric, tied_with, value_of
from defectkit.leaderboard.rows import AGNOSTIC, ROWS, metric_label
from defectkit.leaderboard.scoring import majority_accuracy, rank_errors

CHANCE = "not distinguishable from chance"


def auroc_of(result: dict) -> dict | None:
    """A row's test image AUROC as an interval dict (None: no image-level score)."""
    level = result.get("image_level")
    return as_interval(level["test_auroc"]) if level and level.get("test_auroc") is not None else None


def leaderboard(results: dict[str, dict]) -> list[dict]:
    """Rows ranked by test image AUROC (rows without an image-level score last, in run order)."""

    def key(item):
        order, r = item
        auroc = value_of(auroc_of(r))
        return (auroc is None, -(auroc or 0.0), order)

    return [r for _, r in sorted(enumerate(results.values()), key=key)]


def main_metric(result: dict) -> tuple[str, dict | None]:
    """A row's main metric: its label and its interval dict."""
    name = ROWS[result["row"]].main_metric
    found = result["metrics"].get(name)
    return metric_label(name), None if found is None else as_interval(found)


def threshold_label(level: dict) -> str | float | None:
    """The threshold as the report shows it: the number when it splits the val images, else what
    it does ("all defective": the scores did not separate the classes on val).

    >>> threshold_label({"threshold": 0.25, "val_call": "split"}), threshold_label({"threshold": 0.0, "val_call": "all defective"})
    (0.25, 'none: all defective')
    """
    call = level.get("val_call", "split")
    return level.get("threshold") if call == "split" else f"none: {call}"


def chance_line(ctx: RunContext) -> str:
    """What acc@thr must beat: calling every test image by the larger class."""
    labels = ctx.truth["test"].labels
    n_def = sum(labels)
    call = "defective" if 2 * n_def >= len(labels) else "good"
    acc = majority_accuracy(labels)
    return (
        f"acc@thr: test accuracy at the threshold chosen on val; calling every test image {call} "
        f"already scores {'n/a' if acc is None else f'{acc:.3f}'} ({n_def} of {len(labels)} are defective). "
        "AUROC 0.5 is chance."
    )


def headline_rows(results: dict[str, dict]) -> tuple[list[str], list[list]]:
    headers = [
        "rank",
        "approach",
        "task",
        "image AUROC (test) [95% CI]",
        "tied with",
        "chance",
        "acc. @ val threshold (test)",
        "threshold",
        "main metric",
        "value [95% CI]",
        "train s",
        "infer ms/img",
        "device",
    ]
    ranked = leaderboard(results)
    ties = tied_with([auroc_of(r) for r in ranked])
    rows = []
    for i, (r, tied) in enumerate(zip(ranked, ties), 1):
        il = r.get("image_level") or {}
        label, main = main_metric(r)
        rows.append(
            [
                i,
                f"{r['title']} (`{r['row']}`)",
                r["task"],
                format_metric(auroc_of(r)),
                ", ".join(map(str, tied)) or "-",
                CHANCE if at_chance(auroc_of(r)) else "",
                format_metric(as_interval(il["test_accuracy"])) if il else "n/a",
                threshold_label(il) if il else None,
                label,
                format_metric(main),
                f"{r['train_s']:.1f}",
                f"{1000 * r['infer_s_per_image']:.1f}",
                r["device"],
            ]
        )
    return headers, rows


def headline_text(results: dict[str, dict], footer: str = "") -> str:
    """The leaderboard as a fixed-width text table (what the CLI prints at the end), then ``footer``."""
    headers = ["approach", "task", "AUROC [95% CI]", "acc@thr", "main metric", "train s", "ms/img"]
    rows = []
    for r in leaderboard(results):
        il = r.get("image_level") or {}
        label, main = main_metric(r)
        auroc = format_metric(auroc_of(r)) + (" ~chance" if at_chance(auroc_of(r)) else "")
        rows.append(
            [
                r["row"],
                r["task"],
                auroc,
                format_metric(as_interval(il["test_accuracy"]) if il else None),
                f"{label} {format_metric(main and {'value': main['value']})}",
                f"{r['train_s']:.1f}",
                f"{1000 * r['infer_s_per_image']:.1f}",
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in [headers, *rows]]
    lines = [line.rstrip() for line in lines]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if any(at_chance(auroc_of(r)) for r in results.values()):
        footer = f"~chance: the AUROC's 95% interval contains 0.5 ({CHANCE}). {footer}"
    return "\n".join([*lines, *textwrap.wrap(footer, max(60, len(lines[0])))])


def _task_tables(doc: Report, results: dict[str, dict], classes: list[str]) -> None:
    for task in dict.fromkeys(r["task"] for r in results.values()):
        rows = [r for r in results.values() if r["task"] == task]
        metrics = list(dict.fromkeys(m for r in rows for m in ROWS[r["row"]].metrics))
        doc.add_heading(task.capitalize(), 3)
        extra = ["prompt"] if any("prompt" in r for r in rows) else []
        doc.add_table(
            ["approach", *extra, *map(metric_label, metrics)],
            [
                [r["row"], *[r.get(e) for e in extra],
                 *[format_metric(as_interval(r["metrics"][m]) if m in r["metrics"] else None) for m in metrics]]
                for r in rows
            ],
        )  # fmt: skip
        metric_names = sorted({r["per_class_metric"] for r in rows})
        doc.add_text(f"Per class ({', '.join(metric_names)}; test split):")
        doc.add_table(
            ["approach", *classes], [[r["row"], *[r["per_class"].get(c) for c in classes]] for r in rows]
        )


def _agnostic_table(doc: Report, results: dict[str, dict]) -> None:
    """Every row that finds defects as boxes or masks, supervised or not, on the same terms: each
    defect type counted as one class (an anomaly model cannot name types)."""
    metrics = [f"agnostic_{kind}_{k}" for kind in ("box", "segm") for k in AGNOSTIC]
    rows = [r for r in results.values() if any(m in r["metrics"] for m in metrics)]
    if not rows:
        return
    doc.add_heading("Class-agnostic: defects found, whatever their type", 3)
    doc.add_text(
        "COCO AP with every defect type as one class `defect` (`evaluate detection --class-agnostic`): the "
        "terms on which the unsupervised anomaly rows, which cannot name a defect type, stand beside the "
        "supervised detectors and segmenters. Boxes of mask rows are not scored (n/a)."
    )
    doc.add_table(
        ["approach", "task", *map(metric_label, metrics)],
        [[r["row"], r["task"], *[format_metric(as_interval(r["metrics"][m]) if m in r["metrics"] else None)
                                 for m in metrics]] for r in rows],
    )  # fmt: skip


def _roc_figure(ctx: RunContext, results: dict[str, dict]) -> bytes | None:
    labels = np.asarray(ctx.truth["test"].labels)
    curves = {}
    for r in results.values():
        auroc = auroc_of(r)
        if auroc is not None:
            fpr, tpr, _ = roc_curve(labels, np.asarray(r["scores"]["test"]))
            curves[f"{r['row']} (AUROC {auroc['value']:.3f})"] = (fpr, tpr)
    if not curves:
        return None
    return roc_curves_png(curves, "image level: defective vs good (test)")


def worst_validation_images(ctx: RunContext, results: dict[str, dict], n: int) -> list[int]:
    """Indices into the val split of the ``n`` images the approaches rank worst on average (rank
    errors are comparable across approaches whose scores are not); defective images first on ties."""
    val = ctx.truth["val"]
    labels = np.asarray(val.labels)
    errors = [
        rank_errors(labels, np.asarray(r["scores"]["val"])) for r in results.values() if r.get("scores")
    ]
    mean = np.mean(errors, axis=0) if errors else np.zeros(len(labels))
    order = sorted(range(len(labels)), key=lambda i: (-mean[i], -labels[i], i))
    return order[:n]


def _gallery(doc: Report, ctx: RunContext, results: dict[str, dict]) -> None:
    val = ctx.truth["val"]
    picks = worst_validation_images(ctx, results, ctx.config.gallery)
    if not picks:
        return
    preds = {name: json.loads((ctx.out / r["predictions"]["val"]).read_text()) for name, r in results.items()}
    doc.add_heading("Worst validation images", 2)
    doc.add_text(
        "Ground truth, then each approach. Boxes and masks are drawn when scored at or above the approach's "
        "image-level threshold (chosen on val), so a drawn box means the image is called defective (red "
        "frame); rows prompted by ground-truth boxes draw every mask. Ranked by the mean rank error over the "
        "approaches with an image-level score."
    )
    for i in picks:
        image_id, file_name = val.image_ids[i], val.file_names[i]
        specs = []
        for name, r in results.items():
            il = r.get("image_level") or {}
            if r["prediction_kind"] == "labels":
                found = next(p for p in preds[name] if p["file_name"] == file_name)
            else:
                found = [p for p in preds[name] if p["image_id"] == image_id]
            specs.append(
                {
                    "title": name,
                    "kind": r["prediction_kind"],
                    "results": found,
                    "threshold": il.get("threshold"),
                    "call": il.get("val_call", "split"),
                    "score": r["scores"]["val"][i] if r.get("scores") else None,
                }
            )
        png = gallery_image(val.path(file_name), val.annotations.get(image_id, []), val.class_names, specs)
        doc.add_image(
            f"gallery_{i:03d}_{Path(file_name).stem}_{file_name.split('/')[1]}", png, f"val `{file_name}`"
        )


def build_report(ctx: RunContext, results: dict[str, dict], run_info: dict) -> Report:
    cfg = ctx.config
    test = ctx.truth["test"]
    doc = Report(f"defectkit benchmark: {cfg.category}")
    n_def = sum(test.labels)
    doc.add_text(
        f"Data `{cfg.root}` category `{cfg.category}`, split manifest `{run_info['split_manifest']['path']}`; "
        f"test split: {len(test.labels)} images ({n_def} defective, {len(test.labels) - n_def} good), "
        f"val split: {len(ctx.truth['val'].labels)} images. Device `{cfg.device}`, epochs: "
        f"detectors {cfg.epochs_for('detector')}, SAM {cfg.epochs_for('sam')}, classifier {cfg.epochs_for('classifier')}; "
        f"image size {cfg.imgsz}, seed {cfg.seed}, split protocol `{cfg.protocol}`, bootstrap {cfg.bootstrap} "
        "resamples. Every number comes from the shared evaluator "
        "(`evaluation`)."
    )
    doc.add_heading("Leaderboard", 2)
    doc.add_text(
        "The common column: each approach's image-level defective score (detectors: the highest box score; "
        "mask predictors: the highest mask score; the classifier: 1 - p(good)) ranked by test image AUROC, "
        "and the test accuracy of the defective/good call at the threshold that was best on val. "
        "Rows prompted by ground-truth boxes have no image-level score (n/a). In brackets: the 95% bootstrap "
        "interval over the test images (`--bootstrap`); rows whose AUROC intervals overlap are tied (the data "
        f"cannot order them), and a row whose AUROC interval contains 0.5 is {CHANCE}. Train s: training wall time; "
        "infer ms/img: test-split inference per image (detector boxes + SAM for `sam-det`). A threshold "
        "shown as 'none: all defective' (or good) put every val image on one side: the scores did not "
        "separate the classes on val, so the call is the larger class. " + chance_line(ctx)
    )
    headers, rows = headline_rows(results)
    doc.add_table(headers, rows, digits=3)
    roc = _roc_figure(ctx, results)
    if roc is not None:
        doc.add_image("roc_image_level.png", roc, "image-level ROC of each approach on the test split")
    doc.add_heading("Per task and per class", 2)
    _task_tables(doc, results, test.class_names)
    _agnostic_table(doc, results)
    doc.add_heading("PR curves and confusion matrices", 2)
    for name, r in results.items():
        for plot, caption in (
            ("pr_curves", "precision-recall per class (IoU 0.50)"),
            ("confusion_matrix", "confusion matrix (rows: true class)"),
        ):
            if plot in r.get("plots", {}):
                doc.add_image(f"{name}_{plot}", (ctx.out / r["plots"][plot]).read_bytes(), f"`{name}`: {caption}")
    _gallery(doc, ctx, results)
    doc.add_heading("Notes", 2)
    doc.add_bullets(
        [
            f"`{name}`: {ROWS[name].about}" + "".join(f"; {n}" for n in r.get("notes", []))
            for name, r in results.items()
        ]
    )
    _reproduce(doc, ctx, results, run_info)
    return doc


def _reproduce(doc: Report, ctx: RunContext, results: dict[str, dict], run_info: dict) -> None:
    doc.add_heading("Reproduce", 2)
    doc.add_text("The command of this run, then the stage command each row corresponds to:")
    doc.add_code("\n".join([run_info["command"], *[f"# {name}\n{r['command']}" for name, r in results.items()]]))
    doc.add_table(["component", "version"], sorted(run_info["versions"].items()))
    doc.add_table(
        ["what", "value"],
        [
            ["seed", ctx.config.seed],
            ["split manifest", run_info["split_manifest"]["path"]],
            ["split manifest sha256", run_info["split_manifest"]["sha256"]],
            ["split protocol", ctx.config.protocol],
            ["val / test fractions", f"{ctx.config.val_frac} / {ctx.config.test_frac}"],
            ["bootstrap resamples (seeded by the seed)", ctx.config.bootstrap],
        ],
    )
    doc.add_table(
        ["row", "checkpoint", "sha256"],
        [
            [
                name,
                (r.get("checkpoint") or {}).get("path", "none (not trained)"),
                (r.get("checkpoint") or {}).get("sha256", "")[:16],
            ]
            for name, r in results.items()
        ],
    )
