"""The suite's report: the table every MVTec AD paper prints (rows: categories plus their mean;
columns: approach x metric), a leaderboard of the approaches over all categories (ranked by mean
image AUROC, ties and chance marked from the 95% intervals), and with ``--shots`` the
label-efficiency curves. report.md, a self-contained report.html and leaderboard.json.

Columns come from the rows' declarations (``RowSpec.table``) and from what their results hold (an
image AUROC column for a row that gives an image-level score); no row is named here.
"""

from __future__ import annotations

import json
from pathlib import Path

from defectkit.evaluation.report import Report, to_jsonable
from defectkit.leaderboard.curves import label_efficiency_png
from defectkit.leaderboard.intervals import (
    as_interval,
    at_chance,
    format_metric,
    mean_of_independent,
    over_repeats,
    tied_with,
    value_of,
)
from defectkit.leaderboard.report import CHANCE, auroc_of
from defectkit.leaderboard.rows import ROWS, metric_label
from defectkit.leaderboard.runner import RUN_FILE
from defectkit.leaderboard.suite import SuitePlan, SuiteResults, shot_label
from defectkit.evaluation.coco_io import load_json

IMAGE_AUROC = "image_auroc"  # the common column, read from a result's image_level
MEAN = "mean"


def row_metric(result: dict, metric: str) -> dict | None:
    """One metric of a row result as an interval dict (None when the row does not have it)."""
    if metric == IMAGE_AUROC and auroc_of(result) is not None:
        return auroc_of(result)  # the common column (a row may also report its own "image_auroc")
    found = result.get("metrics", {}).get(metric)
    return None if found is None else as_interval(found)


def table_columns(plan: SuitePlan, results: dict[str, dict[str, dict]]) -> list[tuple[str, str]]:
    """(row, metric) columns in run order: image AUROC when the row gives an image-level score,
    then the metrics the row declares for the table."""
    columns = []
    for row in plan.rows:
        ran = [r[row] for r in results.values() if row in r]
        if any(r.get("image_level") for r in ran):
            columns.append((row, IMAGE_AUROC))
        columns += [(row, m) for m in ROWS[row].table if (row, m) not in columns]
    return columns


def summarise(plan: SuitePlan, results: dict[str, dict[str, dict]], protocol: str) -> dict:
    """One protocol's numbers: per category and their mean, per (row, metric); over repeats the
    mean ± std with each seed's run under ``repeats``. The mean row averages the categories of each
    seed first, then summarises those means over the seeds."""
    columns = table_columns(plan, results)
    multi = len(plan.seeds) > 1

    def per_seed(category: str, row: str, metric: str) -> list[dict | None]:
        return [row_metric(results[plan.run_key(protocol, s, category)][row], metric) for s in plan.seeds]

    def summary(runs: list[dict | None]) -> dict | None:
        if any(r is None for r in runs):
            return None
        return over_repeats(runs, plan.seeds) if multi else runs[0]

    table: dict[str, dict[str, dict[str, dict | None]]] = {}
    for category in plan.categories:
        table[category] = {}
        for row, metric in columns:
            table[category].setdefault(row, {})[metric] = summary(per_seed(category, row, metric))
    mean: dict[str, dict[str, dict | None]] = {}
    for row, metric in columns:
        by_seed = [[per_seed(c, row, metric)[k] for c in plan.categories] for k in range(len(plan.seeds))]
        means = [None if any(m is None for m in ms) else mean_of_independent(ms) for ms in by_seed]
        mean.setdefault(row, {})[metric] = summary(means)
    return {"columns": [list(c) for c in columns], "categories": table, MEAN: mean}


def ranking(plan: SuitePlan, summary: dict, titles: dict[str, str]) -> list[dict]:
    """The approaches ranked by their mean image AUROC over the categories (those without one last,
    in run order); each with the ranks it is tied with and whether it is at chance."""
    order = sorted(
        enumerate(plan.rows),
        key=lambda item: (
            value_of(summary[MEAN][item[1]].get(IMAGE_AUROC)) is None,
            -(value_of(summary[MEAN][item[1]].get(IMAGE_AUROC)) or 0.0),
            item[0],
        ),
    )
    names = [name for _, name in order]
    aurocs = [summary[MEAN][name].get(IMAGE_AUROC) for name in names]
    ties = tied_with(aurocs)
    out = []
    for rank, (name, auroc, tied) in enumerate(zip(names, aurocs, ties), 1):
        spec = ROWS[name]
        out.append({
            "rank": rank, "row": name, "title": titles.get(name, spec.title), "task": spec.task,
            IMAGE_AUROC: auroc, "tied_with": tied, "at_chance": at_chance(auroc),
            "main_metric": spec.main_metric, "main": summary[MEAN][name].get(spec.main_metric),
        })  # fmt: skip
    return out


def intervals_text(settings: dict) -> str:
    """What the bracketed intervals are (or that there are none)."""
    n = settings.get("bootstrap", 0)
    if not n:
        return "no intervals (`--bootstrap 0`), so no ties or chance calls."
    return (
        f"in brackets, 95% percentile intervals from {n} bootstrap resamples of each run's test images"
        "; with repeats, the runs' intervals averaged."
    )


def _chance_text(entry: dict) -> str:
    return CHANCE if entry["at_chance"] else ""


def _label_efficiency(doc: Report, suite: SuiteResults, summaries: dict[str, dict]) -> dict:
    """Image AUROC and each row's main metric against the labelled anomalous training images (the
    mean over categories and seeds of what each split put in train), with 95% bands."""
    plan = suite.plan
    x_of = {}
    for protocol in plan.protocols:
        counts = [
            suite.anomalous_train_images(plan.run_key(protocol, s, c), c)
            for s in plan.seeds
            for c in plan.categories
        ]
        x_of[protocol] = sum(counts) / len(counts)
    xlabels = {x_of[p]: f"{x_of[p]:g} (all)" for p in plan.protocols if shot_label(p) == "all"}
    curves: dict[str, dict[str, list]] = {"image AUROC": {}, "main metric": {}}
    for row in plan.rows:
        spec = ROWS[row]
        for kind, metric in (("image AUROC", IMAGE_AUROC), ("main metric", spec.main_metric)):
            points = []
            for protocol in plan.protocols:
                m = summaries[protocol][MEAN][row].get(metric)
                if m is not None and m.get("value") is not None:
                    points.append((x_of[protocol], m["value"], m.get("ci_low"), m.get("ci_high")))
            if points:
                label = row if kind == "image AUROC" else f"{row}: {metric_label(metric)}"
                curves[kind][label] = points
    doc.add_heading("Label efficiency", 2)
    doc.add_text(
        "How many labelled defect images are worth it: the `fewshot:K` split (K defect images drawn at random "
        "into train, every other test image scored) for each K of `--shots`, and the default split ('all'). "
        "Each point is the mean over the categories (and seeds); the band is its 95% interval."
    )
    for kind, ylabel in (("image AUROC", "image AUROC (test)"), ("main metric", "main task metric (test)")):
        if curves[kind]:
            png = label_efficiency_png(curves[kind], ylabel, f"{kind} vs labelled defect images", xlabels)
            doc.add_image(
                f"label_efficiency_{kind.replace(' ', '_')}.png",
                png,
                f"{kind} against the number of labelled anomalous images",
            )
    return {"x": {shot_label(p): x_of[p] for p in plan.protocols}, "curves": curves}


def build_suite_report(suite: SuiteResults) -> tuple[Report, dict]:
    """The report and leaderboard.json of a suite (one folder, or shards merged)."""
    plan = suite.plan
    n = len(plan.categories)
    doc = Report(f"defectkit benchmark: {n} {'category' if n == 1 else 'categories'}")
    seeds = (
        f"seeds {', '.join(map(str, plan.seeds))} (mean ± std over the repeats)"
        if len(plan.seeds) > 1
        else f"seed {plan.seeds[0]}"
    )
    doc.add_text(
        f"Categories: {', '.join(f'`{c}`' for c in plan.categories)}; rows: {', '.join(f'`{r}`' for r in plan.rows)}; "
        f"split protocol(s): {', '.join(f'`{p}`' for p in plan.protocols)}; {seeds}; {intervals_text(suite.settings)} "
        "Every number comes from the shared evaluator (`evaluation`)."
    )
    summaries = {p: summarise(plan, suite.results, p) for p in plan.protocols}
    board: dict = {
        "plan": plan.to_dict(),
        "settings": suite.settings,
        "sources": [str(s) for s in suite.sources],
        "protocols": {},
    }
    for protocol in plan.protocols:
        summary = summaries[protocol]
        titles = {row: r["title"] for results in suite.results.values() for row, r in results.items()}
        ranked = ranking(plan, summary, titles)
        suffix = f" (protocol `{protocol}`)" if len(plan.protocols) > 1 else ""
        doc.add_heading(f"Leaderboard{suffix}", 2)
        doc.add_text(
            "Approaches ranked by their image AUROC averaged over the categories; the interval of a mean "
            "combines the categories' intervals. Rows whose intervals overlap are tied (the data cannot "
            "order them); an AUROC interval that contains 0.5 is not distinguishable from chance."
        )
        doc.add_table(
            ["rank", "approach", "task", "image AUROC (mean over categories)", "tied with", "chance", "main metric", "value"],
            [
                [e["rank"], f"{e['title']} (`{e['row']}`)", e["task"], format_metric(e[IMAGE_AUROC]),
                 ", ".join(map(str, e["tied_with"])) or "-", _chance_text(e), metric_label(e["main_metric"]),
                 format_metric(e["main"])]
                for e in ranked
            ],
        )  # fmt: skip
        doc.add_heading(f"Per category{suffix}", 2)
        columns = [tuple(c) for c in summary["columns"]]
        doc.add_table(
            ["category", *[f"{row}: {metric_label(metric)}" for row, metric in columns]],
            [
                [name, *[format_metric(cells[row][metric]) for row, metric in columns]]
                for name, cells in [*summary["categories"].items(), (MEAN, summary[MEAN])]
            ],
        )
        board["protocols"][protocol] = {"leaderboard": ranked, "table": summary}
    if plan.shots:
        board["label_efficiency"] = _label_efficiency(doc, suite, summaries)
    board["runs"] = {key: _run_entry(folders) for key, folders in suite.runs.items()}
    doc.add_heading("Reproduce", 2)
    doc.add_text(
        "Each category's run folder holds its own report and run.json: the `convert-mvtec` command that made "
        "its split and, per row, the stage and `evaluate` commands that rebuild every number of this table "
        "(leaderboard.json `runs`)."
    )
    doc.add_table(
        ["run", "folder"], [[key, ", ".join(map(str, folders))] for key, folders in suite.runs.items()]
    )
    return doc, to_jsonable(board)


def _run_entry(folders: list[Path]) -> dict:
    """What rebuilds a run's numbers: its folders (one per shard that ran rows of it), the command
    that made its split and each row's commands (paths relative to the row's folder)."""
    runs = [load_json(folder / RUN_FILE, "run.json") for folder in folders]
    rows = {name: {**entry, "folder": str(folder)} for folder, run in zip(folders, runs)
            for name, entry in (run.get("rows") or {}).items()}  # fmt: skip
    return {"folders": [str(f) for f in folders], "split_manifest": runs[0].get("split_manifest"),
            "data": runs[0].get("data"), "rows": rows}  # fmt: skip


def suite_text(board: dict) -> str:
    """The approaches' leaderboard of each protocol as fixed-width text (what the CLI prints)."""
    blocks = []
    for protocol, part in board["protocols"].items():
        lines = [["rank", "approach", "image AUROC (mean) [95% CI]", "tied with", "main metric"]]
        for e in part["leaderboard"]:
            auroc = format_metric(e[IMAGE_AUROC]) + (" ~chance" if e["at_chance"] else "")
            lines.append([str(e["rank"]), e["row"], auroc, ",".join(map(str, e["tied_with"])) or "-",
                          f"{metric_label(e['main_metric'])} {format_metric(e['main'])}"])  # fmt: skip
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        blocks.append(
            "\n".join([f"split {protocol}, mean over {len(board['plan']['categories'])} categories:", *text])
        )
    return (
        "\n\n".join(blocks) + "\n~chance: the AUROC interval contains 0.5 (not distinguishable from chance)"
    )


def write_suite_report(suite: SuiteResults, out: Path) -> Path:
    """Write ``out/report.md``, ``report.html``, ``leaderboard.json`` and ``leaderboard.txt`` atomically;
    returns ``out``."""
    doc, board = build_suite_report(suite)
    return doc.write(
        out,
        html=True,
        extra_files={
            "leaderboard.json": (json.dumps(board, indent=2, allow_nan=False) + "\n").encode("utf-8"),
            "leaderboard.txt": (suite_text(board) + "\n").encode("utf-8"),
        },
    )
