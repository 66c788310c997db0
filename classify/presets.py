"""The course's four transfer-learning experiments as named presets, and ``classify experiments``,
which trains them one after another and writes a comparison table (report.md + metrics.json).

Each preset changes one thing from ``baseline`` (Adam 1e-3, CosineAnnealingLR, 50 epochs, ImageNet
ResNet-18 with its backbone frozen), as in the course.
"""

from __future__ import annotations

from pathlib import Path

from classify.training import TrainConfig, load_history, train
from defectkit.errors import DefectkitError

_BASELINE = {
    "optimizer": "adam",
    "lr": 1e-3,
    "scheduler": "cosine",
    "epochs": 50,
    "freeze": "fc",
    "weight_decay": 0.0,
}

PRESETS: dict[str, dict] = {
    "baseline": dict(_BASELINE),
    "unfreeze-layer4": {**_BASELINE, "freeze": "layer4"},
    "augment": {**_BASELINE, "augment": True},
    "sgd": {**_BASELINE, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
}

PRESET_HELP = {
    "baseline": "Adam lr 1e-3, cosine schedule, 50 epochs, backbone frozen (only the new fc trains)",
    "unfreeze-layer4": "baseline with layer4 trained too",
    "augment": "baseline with random rotation and colour jitter in the train transform",
    "sgd": "baseline with SGD lr 0.01, momentum 0.9, weight decay 1e-4",
}


def preset_config(name: str, data: str | Path, out: str | Path, **overrides) -> TrainConfig:
    """A TrainConfig from preset ``name``; ``overrides`` (e.g. epochs=1) win over the preset."""
    if name not in PRESETS:
        raise DefectkitError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return TrainConfig(data=str(data), out=str(out), **{**PRESETS[name], **overrides})


def comparison_rows(summaries: dict[str, dict]) -> list[list]:
    """One table row per preset: the course's columns plus balanced test accuracy."""
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
    return rows


def experiments_report(summaries: dict[str, dict], data: str | Path, histories: dict[str, list[dict]]):
    """The comparison Report: table, per-class test recall, validation curves."""
    from evaluation.plots import new_figure
    from evaluation.report import Report

    first = next(iter(summaries.values()))
    select = first.get("select", "loss")
    report = Report(f"classify experiments on {Path(data).name}")
    report.add_text(
        f"Architecture {first['arch']}; best checkpoint chosen by validation {select}; the test columns "
        "score that checkpoint. Train/val columns are from the last epoch."
    )
    report.add_table(
        [
            "preset",
            "epochs",
            "train loss",
            "train acc",
            "val loss",
            "val acc",
            f"best val {select}",
            "test acc",
            "test balanced acc",
        ],
        comparison_rows(summaries),
    )
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
    metrics.json, val_curves.png). With ``resume``, a preset whose ``last.pt`` exists goes on from
    it (a finished one is only re-scored), so an interrupted comparison continues where it stopped."""
    import os

    names = presets or list(PRESETS)
    for name in names:
        if name not in PRESETS:
            raise DefectkitError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    out = Path(out)
    summaries, histories = {}, {}
    for name in names:
        run_dir = out / name
        if progress:
            print(f"== preset {name}: {PRESET_HELP[name]}")
        if resume and (run_dir / "last.pt").is_file():
            summaries[name] = train(
                resume=run_dir / "last.pt", progress=progress, device=overrides.get("device")
            )
        else:
            cfg = preset_config(name, data, run_dir, **overrides)
            summaries[name] = train(cfg, overwrite=overwrite, progress=progress)
        histories[name] = load_history(run_dir)
    if int(os.environ.get("RANK", "0")) != 0:
        return summaries  # under torchrun only the main process reports
    experiments_report(summaries, data, histories).write(out / "report", overwrite=True)
    if progress:
        print(f"wrote {out / 'report' / 'report.md'}")
    return summaries
