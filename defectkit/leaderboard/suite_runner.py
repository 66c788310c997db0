"""Run a suite (``defectkit benchmark all``, ``a,b,c``, ``--repeats``, ``--shots``, ``--shard``) and
join shards (``defectkit benchmark merge``): each unit is a plain benchmark run (``run_benchmark``),
so each category folder resumes row by row as a single run does."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from defectkit.core.atomic import atomic_write_json
from defectkit.core.errors import DefectkitError
from defectkit.leaderboard.context import BenchmarkConfig
from defectkit.leaderboard.runner import run_benchmark, say, usable_rows
from defectkit.leaderboard.suite import SUITE_FILE, SuitePlan, collect, prepare_suite_folder, suite_record
from defectkit.leaderboard.suite_report import write_suite_report

REPORT_DIR = "report"
MERGE_FILE = "merge.json"  # marks a merge's folder: which shards it joined


def plan_suite(
    template: BenchmarkConfig, categories: list[str], protocols: list[str], repeats: int, shots: bool
) -> SuitePlan:
    """The plan of a suite: ``repeats`` seeds from the template's (0..R-1 by default), its rows
    resolved as a single run resolves them."""
    if repeats < 1:
        raise DefectkitError(f"--repeats {repeats}: must be at least 1")
    rows = usable_rows(template)
    return SuitePlan(categories, protocols, [template.seed + r for r in range(repeats)], rows, shots)


def run_suite(
    template: BenchmarkConfig, plan: SuitePlan, shard: tuple[int, int] | None = None
) -> Path | None:
    """Run (or, with ``template.resume``, continue) the suite's units, or one shard's, each in its run
    folder under ``template.out``; then the suite report. Returns the report folder, or None for one
    shard of several (``benchmark merge`` joins them)."""
    out = Path(template.out)
    units = plan.shard(*shard) if shard else plan.units()
    record = suite_record(template, plan, shard, units)
    earlier = prepare_suite_folder(out, record, template.resume, template.overwrite)
    record["commands"] = [*(earlier or {}).get("commands", []), " ".join(template.command)]
    # The top folder this suite creates (out or a missing parent): what a failed fresh start removes.
    created = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SUITE_FILE, record)  # first: marks the folder as a suite
    runs: dict[tuple[str, int, str], list[str]] = {}
    for u in units:
        runs.setdefault((u.protocol, u.seed, u.category), []).extend(u.rows)
    if shard:
        say(
            template,
            f"shard {shard[0]}/{shard[1]}: {len(units)} of {len(plan.units())} units, {len(runs)} run folders",
        )
    try:
        for i, ((protocol, seed, category), rows) in enumerate(runs.items(), 1):
            key = plan.run_key(protocol, seed, category)
            say(template, f"== [{i}/{len(runs)}] {key}: {', '.join(rows)} (split {protocol}, seed {seed})")
            unit = dataclasses.replace(
                template,
                category=category,
                out=out / key,
                rows=rows,
                seed=seed,
                protocol=protocol,
                overwrite=False,
            )
            run_benchmark(unit)
    except BaseException:
        # A fresh suite whose first run could not even start (its data, say) leaves nothing behind;
        # once a run folder exists the suite is kept, to --resume.
        if earlier is None and created is not None and not any(p.name != SUITE_FILE for p in out.iterdir()):
            shutil.rmtree(created, ignore_errors=True)
        raise
    if shard and shard[1] > 1:
        say(
            template,
            f"shard {shard[0]}/{shard[1]} done; join the shards: defectkit benchmark merge RUN_DIRS... --out DIR",
        )
        return None
    return write_suite_report(collect([out]), out / REPORT_DIR)


def merge_suites(folders: list[Path], out: Path, overwrite: bool = False) -> Path:
    """Join the shards' suite folders into one report in ``out/report`` (with ``out/merge.json``
    naming the shards); the same table a single run of the whole suite writes."""
    if not folders:
        raise DefectkitError("benchmark merge: name the shards' run folders")
    suite = collect(folders)  # every check first: nothing is written for shards that do not fit
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / MERGE_FILE).is_file():
            raise DefectkitError(
                f"{out}: exists and is not an earlier merge (no {MERGE_FILE}); choose another --out"
            )
        if not overwrite:
            raise DefectkitError(f"{out}: holds an earlier merge; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "shards": [str(Path(f).resolve()) for f in folders],
        "plan": suite.plan.to_dict(),
        "settings": suite.settings,
    }
    atomic_write_json(out / MERGE_FILE, record)
    return write_suite_report(suite, out / REPORT_DIR)
