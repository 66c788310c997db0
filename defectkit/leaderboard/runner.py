"""Run a benchmark: convert once, run each row on the same split (or load it when finished
earlier, with ``resume``), then write one report. ``defectkit demo`` and ``defectkit benchmark``
both end up here.
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from defectkit.convert import convert_category
from defectkit.convert.split import parse_protocol
from defectkit.core.atomic import atomic_write_json
from defectkit.core.digest import sha256_file
from defectkit.core.torchio import parse_device
from defectkit.core.errors import DefectkitError
from defectkit.leaderboard.context import BenchmarkConfig, RunContext
from defectkit.leaderboard.intervals import as_interval, at_chance, format_metric
from defectkit.leaderboard.report import CHANCE, auroc_of, build_report, chance_line, headline_text
from defectkit.leaderboard.rows import ROWS, resolve_rows, runnable_rows
from defectkit.leaderboard.rows_detection import WORLD_ROWS, ensure_text_embeddings
from defectkit.leaderboard.rows_segmentation import SAM_ROWS, check_sam, sam_is_random
from defectkit.leaderboard.scoring import image_level, image_level_intervals
from defectkit.evaluation.bootstrap import bootstrap_info, warm_up_compiled
from defectkit.evaluation.coco_io import load_json
from defectkit.evaluation.report import to_jsonable

RUN_FILE = "run.json"
RESULT_FILE = "result.json"
# Settings a finished row depends on: resuming with other values would mix incomparable rows.
SETTINGS_THAT_MATTER = (
    "root", "category", "device", "detector", "closed_detector", "seg_detector", "text_embeddings", "prompts",
    "sam_model", "sam_checkpoint", "sam_random_weights", "sam_lr", "yolo_args", "classifier_arch", "classifier_weights", "anomaly_backbone_weights", "anomaly_source", "epochs", "epochs_detector", "epochs_sam", "epochs_classifier", "epochs_anomaly", "imgsz", "batch", "seed",
    "val_frac", "test_frac", "mask_score_threshold", "protocol", "bootstrap",
)  # fmt: skip


def versions() -> dict[str, str]:
    """Python, platform, the libraries that produce the numbers, and the GPU when there is one."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in (
        "defectkit",
        "torch",
        "torchvision",
        "ultralytics",
        "segment-anything",
        "supervision",
        "faster-coco-eval",
        "pycocotools",
        "numpy",
        "opencv-python-headless",
        "opencv-python",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["cuda"] = str(torch.version.cuda)
    return out


def check_device(cfg: BenchmarkConfig) -> None:
    """Fail before any work when a GPU is asked for and there is none (each stage would fail later)."""
    parse_device(cfg.device)


def prepare_output(out: Path, record: str, kind: str, resume: bool, overwrite: bool, key: str) -> dict | None:
    """The rules of every benchmark output folder (a run's, with run.json; a suite's, with
    suite.json): missing or empty starts fresh; without its ``record`` file it is someone else's
    (refused); with ``resume`` the earlier record is returned (it must hold the dict ``key``); with
    ``overwrite`` it is replaced; else refused."""
    marker = out / record
    if not out.exists() or not any(out.iterdir()):
        return None
    if not marker.is_file():
        raise DefectkitError(f"{out}: exists and is not a defectkit {kind} folder (no {record}); choose another --out")
    if resume:
        earlier = load_json(marker, record)
        if not (isinstance(earlier, dict) and isinstance(earlier.get(key), dict)):
            raise DefectkitError(f"{marker}: not a defectkit {record} (no '{key}'); use a new --out")
        return earlier
    if overwrite:
        shutil.rmtree(out)
        return None
    raise DefectkitError(f"{out}: already holds a {kind}; pass --resume to continue it or --overwrite to replace it")


def check_same_settings(record: Path, what: str, was: dict, now: dict, keys: tuple[str, ...]) -> None:
    """Refuse to resume ``what`` (a run, a suite) with other values of the settings that change results;
    ``was`` holds today's defaults under the record's values (a setting added since had its default)."""
    changed = [k for k in keys if was.get(k) != now.get(k)]
    if changed:
        k = changed[0]
        raise DefectkitError(
            f"{record}: this {what} used {k}={was.get(k)!r}, not {now.get(k)!r}; "
            "resume with the same settings, or use a new --out (or --overwrite)"
        )


def prepare_run_folder(cfg: BenchmarkConfig) -> dict | None:
    """Check ``cfg.out`` for this run; returns the earlier run.json when resuming, else None."""
    out = Path(cfg.out)
    earlier = prepare_output(out, RUN_FILE, "benchmark run", cfg.resume, cfg.overwrite, "config")
    if earlier is not None:
        was = {**BenchmarkConfig(cfg.root, cfg.category, cfg.out, []).to_dict(), **earlier["config"]}
        check_same_settings(out / RUN_FILE, "run", was, cfg.to_dict(), SETTINGS_THAT_MATTER)
    return earlier


def convert_data(cfg: BenchmarkConfig) -> Path:
    """``convert-mvtec <category> --to all`` into ``<out>/data`` (kept across --resume)."""
    data = Path(cfg.out) / "data" / cfg.category
    if (data / "split.json").is_file():
        return data
    say(cfg, f"converting {Path(cfg.root) / cfg.category} -> {data}")
    summary = convert_category(
        cfg.root,
        cfg.category,
        Path(cfg.out) / "data",
        ("all",),
        val_frac=cfg.val_frac,
        test_frac=test_frac(cfg),
        seed=cfg.seed,
        protocol=cfg.protocol,
        progress=cfg.progress,
        overwrite=True,
    )
    say(cfg, summary.table())
    return data


def test_frac(cfg: BenchmarkConfig) -> float | None:
    """``--test-frac`` as convert takes it: the default protocol's; the others fix their test set."""
    return None if parse_protocol(cfg.protocol).fixes_test else cfg.test_frac


def convert_command(cfg: BenchmarkConfig) -> list[str]:
    """``convert-mvtec`` as :func:`convert_data` runs it, from the run folder (writes ``data/``)."""
    fractions = ["--val-frac", repr(cfg.val_frac)]
    if test_frac(cfg) is not None:
        fractions += ["--test-frac", repr(cfg.test_frac)]
    return ["convert-mvtec", cfg.category, "--root", str(Path(cfg.root).resolve()), "--out", "data", "--to", "all",
            *fractions, "--protocol", cfg.protocol, "--seed", str(cfg.seed), "--overwrite"]  # fmt: skip


def say(cfg: BenchmarkConfig, text: str) -> None:
    if cfg.progress:
        print(text, flush=True)


def finish_row(ctx: RunContext, name: str, result: dict, wall_s: float) -> dict:
    """Add what every row result carries: its identity, device, image-level scores and wall time."""
    spec = ROWS[name]
    scores = result.get("scores")
    level = None
    if scores:
        val, test = ctx.truth["val"], ctx.truth["test"]
        level = image_level(val.labels, scores["val"], test.labels, scores["test"])
    notes = list(result.pop("notes", []))
    if scores and len(set(scores["test"])) == 1:
        notes.append(
            f"every test image got the same score ({scores['test'][0]:g}): nothing told defective and good "
            "images apart, so its AUROC of 0.5 is chance (too little training?)"
        )
    cfg = ctx.config
    result["metrics"] = {m: as_interval(v) for m, v in result["metrics"].items()}
    if level is not None:
        intervals = (
            image_level_intervals(ctx.truth["test"].labels, scores["test"], level["threshold"], cfg.bootstrap, cfg.seed)
            if cfg.bootstrap > 0
            else {}
        )
        level = {**level, **{k: intervals.get(k, as_interval(level[k])) for k in ("test_auroc", "test_accuracy")}}
        level["at_chance"] = at_chance(level["test_auroc"])
        if level["at_chance"]:
            notes.append(f"image AUROC {format_metric(level['test_auroc'])}: {CHANCE} (its 95% interval contains 0.5)")
    return {
        "row": name,
        "title": spec.title,
        "task": spec.task,
        "device": ctx.config.device,
        "image_level": level,
        "bootstrap": bootstrap_info(cfg.bootstrap, cfg.seed) if cfg.bootstrap > 0 else None,
        "wall_s": wall_s,
        "notes": notes,
        **result,
    }


def run_rows(ctx: RunContext, rows: list[str]) -> dict[str, dict]:
    cfg = ctx.config
    for i, name in enumerate(rows, 1):
        spec = ROWS[name]
        result_file = ctx.row_dir(name) / RESULT_FILE
        if cfg.resume and result_file.is_file():
            ctx.results[name] = load_json(result_file, "row result")
            if not isinstance(ctx.results[name], dict):
                raise DefectkitError(f"{result_file}: not a row result; delete {result_file.parent} to run the row again")
            say(cfg, f"[{i}/{len(rows)}] {name}: finished earlier, loaded {result_file}")
            continue
        # What an interrupted attempt left stays: the row's training continues from its last.pt.
        ctx.row_dir(name).mkdir(parents=True, exist_ok=True)
        say(cfg, f"[{i}/{len(rows)}] {name}: {spec.title} - {spec.about}")
        t0 = time.perf_counter()
        result = finish_row(ctx, name, spec.run(ctx, ctx.row_dir(name)), time.perf_counter() - t0)
        result = to_jsonable(result)
        atomic_write_json(result_file, result)
        ctx.results[name] = result
        auroc = auroc_of(result)
        say(
            cfg,
            f"[{i}/{len(rows)}] {name}: done in {result['wall_s']:.1f}s"
            + (f", image AUROC {format_metric(auroc)}" if auroc is not None else ""),
        )
    return {name: ctx.results[name] for name in rows}


def usable_rows(cfg: BenchmarkConfig) -> list[str]:
    """The run's rows (with those they need), less those that cannot run here, each reason printed
    once on stderr (``skipping padim, ...: anomalib is not installed; pip install ...``)."""
    rows, skipped = runnable_rows(resolve_rows(cfg.rows, random_sam=sam_is_random(cfg)))
    for line in skipped:
        print(line, file=sys.stderr)
    if not rows:
        raise DefectkitError(f"--rows {','.join(cfg.rows)}: none of these rows can run here (see above)")
    return rows


def run_benchmark(cfg: BenchmarkConfig) -> Path:
    """Run (or resume) a benchmark; returns the report folder (``report.md``, ``report.html``)."""
    rows = usable_rows(cfg)
    check_device(cfg)
    earlier = prepare_run_folder(cfg)
    out = Path(cfg.out)
    # The top folder this run creates (out or a missing parent): what a failed fresh start removes.
    created = next((p for p in reversed([out, *out.parents]) if not p.exists()), out)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(cfg.command) if cfg.command else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    run_info = {
        "config": cfg.to_dict(),
        "command": command,
        "versions": versions(),
        "commands": [*(earlier or {}).get("commands", []), command],
    }
    atomic_write_json(out / RUN_FILE, run_info)  # first: marks the folder as a run before anything is written
    if cfg.bootstrap > 0:  # numba and the intervals' compiled COCO AP load while the data converts and models train
        warm_up_compiled()
    try:
        ctx = RunContext(cfg, convert_data(cfg))
        if set(rows) & set(WORLD_ROWS):
            ensure_text_embeddings(ctx)
        if set(rows) & set(SAM_ROWS):  # a bad --sam-checkpoint fails here, before any row runs
            check_sam(cfg)
    except BaseException:
        if earlier is None:  # a fresh run that could not even prepare its data leaves nothing behind
            shutil.rmtree(created, ignore_errors=True)
        raise
    manifest = ctx.data / "split.json"
    run_info["split_manifest"] = {"path": str(manifest.resolve()), "sha256": sha256_file(manifest)}
    if earlier and earlier.get("split_manifest", {}).get("sha256") not in (
        None,
        run_info["split_manifest"]["sha256"],
    ):
        raise DefectkitError(
            f"{manifest}: differs from the split the finished rows were scored on; use a new --out"
        )
    atomic_write_json(out / RUN_FILE, run_info)
    results = run_rows(ctx, rows)
    run_info["data"] = {"commands": [convert_command(cfg)]}
    run_info["rows"] = {name: r["reproduce"] for name, r in results.items() if "reproduce" in r}
    atomic_write_json(out / RUN_FILE, run_info)  # what rebuilds each row's metrics.json, in order
    doc = build_report(ctx, results, run_info)
    leaderboard = {"category": cfg.category, "rows": results, "run": run_info}
    return doc.write(
        out / "report",
        html=True,
        extra_files={
            "leaderboard.json": (json.dumps(leaderboard, indent=2, allow_nan=False) + "\n").encode("utf-8"),
            "leaderboard.txt": (headline_text(results, footer=chance_line(ctx)) + "\n").encode("utf-8"),
        },
    )
