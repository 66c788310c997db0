"""The course's four transfer-learning experiments as named presets, and ``classify experiments``,
which trains them one after another and writes a comparison table (report.md + metrics.json).

Each preset changes one thing from ``baseline`` (Adam 1e-3, CosineAnnealingLR, 50 epochs, ImageNet
ResNet-18 with its backbone frozen), as in the course.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from defectkit.classify.config import PRESET_HELP, PRESETS, TrainConfig
from defectkit.classify.data import dataset_name
from defectkit.classify.train import image_cache, load_history, train
from defectkit.core.errors import DefectkitError
from defectkit.evaluation.plots import new_figure
from defectkit.evaluation.report import Report, markdown_table

def preset_config(name: str, data: str | Path, out: str | Path, **overrides) -> TrainConfig:
    """A TrainConfig from preset ``name``; ``overrides`` (e.g. epochs=1) win over the preset."""
    if name not in PRESETS:
        raise DefectkitError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return TrainConfig(data=str(data), out=str(out), **{**PRESETS[name], **overrides})


def comparison_table(summaries: dict[str, dict]) -> tuple[list[str], list[list]]:
    """Headers and one row per preset: the course's columns plus balanced test accuracy."""
    select = next(iter(summaries.values())).get("select", "loss")
    headers = ["preset", "epochs", "train loss", "train acc", "val loss", "val acc", f"best val {select}",
               "test acc", "test balanced acc"]  # fmt: skip
    rows = []
    for name, s in summaries.items():
        best = s.get("best") or {}
        test = s.get("test") or {}
        best_val = best.get("val_loss") if s.get("select") == "loss" else best.get("val_acc")
        rows.append([
            name, s["epochs"], s["train_loss"], s["train_acc"], s["val_loss"], s["val_acc"],
            f"{best_val:.4f} (epoch {best.get('epoch')})" if best_val is not None else None,
            test.get("accuracy"), test.get("balanced_accuracy"),
        ])  # fmt: skip
    return headers, rows


def comparison_markdown(summaries: dict[str, dict]) -> str:
    """The comparison table as Markdown (what ``classify experiments`` prints)."""
    return markdown_table(*comparison_table(summaries))


def experiments_report(summaries: dict[str, dict], data: str | Path, histories: dict[str, list[dict]]):
    """The comparison Report: table, per-class test recall, validation curves."""
    first = next(iter(summaries.values()))
    select = first.get("select", "loss")
    report = Report(f"classify experiments on {dataset_name(data)}")
    report.add_text(
        f"Architecture {first['arch']}; best checkpoint chosen by validation {select}; the test columns "
        "score that checkpoint. Train/val columns are from the last epoch."
    )
    report.add_table(*comparison_table(summaries))
    classes = first["classes"]
    recall_rows = [
        [name] + [((s.get("test") or {}).get("recall") or {}).get(c) for c in classes]
        for name, s in summaries.items()
    ]
    report.add_heading("Test recall per class")
    report.add_table(["preset"] + list(classes), recall_rows)
    fig = new_figure(10, 4)
    for i, key in enumerate(("val_loss", "val_acc")):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, hist in histories.items():
            ax.plot([h["epoch"] for h in hist], [h[key] for h in hist], marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    report.add_image("val_curves.png", fig, "validation loss and accuracy per epoch, per preset")
    for name, s in summaries.items():
        report.add_metrics(name, s)
    return report


def run_experiments(
    data: str | Path,
    out: str | Path,
    presets: list[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **overrides,
) -> dict[str, dict]:
    """Train every preset into ``<out>/<preset>/`` and write ``<out>/report/`` (report.md,
    metrics.json, val_curves.png). ``overrides`` (training options) apply to every preset. With
    ``resume``, a finished preset (its ``summary.json`` exists) is taken as it is and one with a
    ``last.pt`` goes on from it, so an interrupted comparison continues where it stopped.
    The images are decoded once for all presets."""
    names = presets or list(PRESETS)
    for name in names:
        if name not in PRESETS:
            raise DefectkitError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    out = Path(out)
    if not (resume or overwrite):  # before any training, not after the first presets
        taken = [name for name in names if (out / name / "last.pt").exists()]
        if taken:
            raise DefectkitError(
                f"{out}: already holds runs of {', '.join(taken)}; pass --resume to continue them "
                "or --overwrite to start again"
            )
    summaries, histories = {}, {}
    # Decoded once, shared by every preset (a resumed one with another image size makes its own).
    cache = image_cache(preset_config(names[0], data, out, **overrides))
    for name in names:
        run_dir = out / name
        if progress:
            print(f"== preset {name}: {PRESET_HELP[name]}")
        if resume and (run_dir / "summary.json").is_file():
            summaries[name] = json.loads((run_dir / "summary.json").read_text())
            if progress:
                print(f"{run_dir}: finished earlier, kept")
        else:
            if resume and (run_dir / "last.pt").is_file():
                run = {"resume": run_dir / "last.pt", "device": overrides.get("device")}
            else:
                run = {"cfg": preset_config(name, data, run_dir, **overrides), "overwrite": overwrite}
            summaries[name] = train(progress=progress, cache=cache, **run)
        histories[name] = load_history(run_dir)
    if int(os.environ.get("RANK", "0")) != 0:
        return summaries  # under torchrun only the main process reports
    experiments_report(summaries, data, histories).write(out / "report", overwrite=True)
    return summaries
