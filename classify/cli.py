"""``classify``: train / compare / use ResNet defect classifiers on convert-mvtec's classify/ folders.

  classify train --data datasets/converted/wood/classify --out runs/classify/wood
  classify experiments --data datasets/converted/wood/classify --out runs/classify/exp --epochs 5
  classify val --model runs/classify/wood/best.pt --data datasets/converted/wood/classify --split test --out runs/classify/wood-test
  classify predict --model runs/classify/wood/best.pt --source some/images --out predictions.csv

Several GPUs: ``torchrun --nproc_per_node 4 -m classify.cli train ...`` (--batch is per GPU).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import MISSING, fields
from pathlib import Path

from defectkit.classify.config import ARCHITECTURES, FREEZE_CHOICES, LOSSES, OPTIMIZERS, PRESET_HELP, PRESETS, TrainConfig
from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError, cli_entry

# Each subcommand imports the modules it runs (torch, torchvision: 3-4 s), which `classify --help`
# and a mistyped option never need; the options and their defaults come from classify.config.

_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}

# (option, type or "flag", choices, help); every default shown comes from TrainConfig (or the preset).
_CONFIG_OPTIONS = [
    ("arch", str, ARCHITECTURES, "torchvision ResNet to fine-tune"),
    (
        "weights",
        str,
        None,
        (
            "initial weights: 'imagenet' (torchvision's ImageNet-1k V1, downloaded once into "
            "torch's hub cache), 'none' (random init) or PATH to a state dict / classify checkpoint"
        ),
    ),
    (
        "freeze",
        str,
        FREEZE_CHOICES,
        (
            "what trains: 'fc' freezes the backbone and trains only the new head, 'layer4' "
            "trains layer4 and the head, 'none' freezes nothing"
        ),
    ),
    ("optimizer", str, OPTIMIZERS, "optimiser"),
    ("lr", float, None, "learning rate"),
    ("momentum", float, None, "SGD momentum"),
    ("weight_decay", float, None, "weight decay (L2 for adam/sgd, decoupled for adamw)"),
    (
        "scheduler",
        str,
        ("cosine", "none"),
        "learning-rate schedule: cosine annealing over --epochs (per epoch), or constant",
    ),
    ("epochs", int, None, "epochs to train"),
    ("batch", int, None, "batch size (per process under torchrun)"),
    ("image_size", int, None, "images are resized to this square size once, when cached"),
    ("augment", "flag", None, "add random rotation and colour jitter to the train transform"),
    ("hflip", "flag", None, "add random horizontal flips to the train transform"),
    ("rotation", float, None, "max rotation in degrees for --augment"),
    ("jitter", float, None, "brightness/contrast/saturation jitter for --augment (hue gets a quarter)"),
    (
        "loss",
        str,
        LOSSES,
        (
            "training loss: cross-entropy, class-weighted CE (effective number of samples, "
            "Cui et al. 2019), focal loss, or logit-adjusted CE (tau * log prior added to the logits, Menon et al. 2021)"
        ),
    ),
    ("beta", float, None, "beta of the effective number (1 - beta^n) / (1 - beta) for --loss weighted-ce"),
    ("focal_gamma", float, None, "gamma of --loss focal (0 = cross-entropy)"),
    ("tau", float, None, "tau of --loss logit-adjusted (1 = Balanced Softmax)"),
    ("sampler", str, ("random", "balanced"), "'balanced' draws every class equally often (with replacement)"),
    ("select", str, ("loss", "acc"), "keep best.pt by lowest val loss or highest val accuracy"),
    ("limit_per_class", int, None, "train on at most this many images per class (0 = all): quick subsets"),
    ("seed", int, None, "random seed (model init, shuffling, augmentation)"),
    ("device", str, None, "auto, cpu, cuda or cuda:N"),
    ("amp", "bool", None, "bfloat16 autocast on CUDA"),
    (
        "cache",
        str,
        ("memory", "disk"),
        (
            "decoded-image cache: memory only, or also on disk (keyed by file path, "
            "mtime, byte size and image size) so later runs skip decoding"
        ),
    ),
    ("cache_dir", str, None, "folder of the disk cache (default: $DEFECTKIT_CACHE/classify-images)"),
    ("decode_workers", int, None, "threads that decode images into the cache"),
    ("loader_workers", int, None, "DataLoader worker processes for augmentation (0 = in the main process)"),
    ("eval_batch", int, None, "batch size for validation and test"),
]


def add_config_options(
    parser: argparse.ArgumentParser,
    title: str = "training options (default: the preset's value, else the one shown)",
) -> None:
    group = parser.add_argument_group(title)
    for name, kind, choices, text in _CONFIG_OPTIONS:
        flag = "--" + name.replace("_", "-")
        default = _DEFAULTS[name]
        if kind == "flag":
            group.add_argument(flag, action="store_const", const=True, default=None, help=text)
        elif kind == "bool":
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=f"{text} (default: {default})"
            )
        else:
            group.add_argument(
                flag, type=kind, choices=choices, default=None, help=f"{text} (default: {default!r})"
            )


def config_overrides(args: argparse.Namespace) -> dict:
    """The training options given on the command line (None = not given)."""
    return {name: getattr(args, name) for name, *_ in _CONFIG_OPTIONS if getattr(args, name) is not None}


def _train(args: argparse.Namespace) -> int:
    from defectkit.classify.presets import preset_config
    from defectkit.classify.train import train

    if args.resume is not None:
        # A resumed run goes on in its own folder with its stored options: refuse what would be ignored.
        if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve().parent:
            raise DefectkitError(
                f"{args.resume}: a resumed run continues in its own folder {Path(args.resume).parent}; "
                f"drop --out {args.out} (or copy the run folder there first)"
            )
        given = [f"--{name.replace('_', '-')}" for name in config_overrides(args) if name != "device"]
        given += [opt for opt, value in (("--data", args.data), ("--preset", args.preset)) if value is not None]
        if given:
            raise DefectkitError(
                f"{args.resume}: a resumed run uses its stored options; only --device may change (drop {', '.join(given)})"
            )
        train(resume=args.resume, progress=not args.quiet, device=args.device)
        return 0
    if args.data is None:
        raise DefectkitError(
            "train needs --data (the classify/ folder from convert-mvtec) or --resume last.pt"
        )
    out = args.out or Path("runs/classify") / (args.preset or "train")
    overrides = config_overrides(args)
    if args.preset:
        cfg = preset_config(args.preset, args.data, out, **overrides)
    else:
        cfg = TrainConfig(data=str(args.data), out=str(out), **overrides)
    train(cfg, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def _experiments(args: argparse.Namespace) -> int:
    from defectkit.classify.presets import comparison_markdown, run_experiments

    presets = [p.strip() for p in args.presets.split(",") if p.strip()] if args.presets else None
    summaries = run_experiments(
        args.data, args.out, presets, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
        **config_overrides(args),
    )  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only the main process reports
        print(comparison_markdown(summaries))
        print(f"wrote {args.out / 'report' / 'report.md'}")
    return 0


def _val(args: argparse.Namespace) -> int:
    from defectkit.classify.val import validate

    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        metrics = validate(
            args.model, args.data, args.split, tmp, device=args.device, posthoc_tau=args.posthoc_tau,
            batch=args.batch, progress=not args.quiet,
        )  # fmt: skip
    print(
        f"{args.split}: accuracy {metrics['accuracy']:.4f}  balanced accuracy {metrics['balanced_accuracy']:.4f}"
    )
    auroc = (metrics.get("defective") or {}).get("image_auroc")
    if auroc is not None:
        print(f"good vs defect, image AUROC of the defective score 1 - p(good): {auroc:.4f}")
    for name, row in metrics["per_class"].items():
        recall, precision = (
            f"{v:.3f}" if v is not None else "n/a" for v in (row["recall"], row["precision"])
        )
        print(f"  {name:>12}  recall {recall}  precision {precision}  n={row['support']}")
    print(f"wrote {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from defectkit.classify.predict import predict_source

    records, metrics = predict_source(
        args.model, args.source, out=args.out, report=args.report, device=args.device,
        posthoc_tau=args.posthoc_tau, batch=args.batch, progress=not args.quiet,
    )  # fmt: skip
    if args.out is None:
        for rec in records:
            print(json.dumps({k: rec[k] for k in ("file", "class", "score", "defective", "probs")}))
    else:
        print(f"wrote {len(records)} predictions to {args.out}")
    if metrics is not None:
        print(
            f"accuracy {metrics['accuracy']:.4f}  balanced accuracy {metrics['balanced_accuracy']:.4f}; report in {args.report}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a ResNet on <data>/{train,val,test}/<class>/*",
                       description="Fine-tune a torchvision ResNet; writes <out>/best.pt, last.pt, history.json, "
                       "curves.png, summary.json and test/ (the evaluator's report on the test split).")  # fmt: skip
    p.add_argument(
        "--data", type=Path, help="classify/ folder from convert-mvtec: <data>/<split>/<class>/*.png"
    )
    p.add_argument("--out", type=Path, help="run folder (default: runs/classify/<preset or 'train'>)")
    p.add_argument("--preset", choices=tuple(PRESETS), help="start from a course experiment: "
                   + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))  # fmt: skip
    p.add_argument("--resume", type=Path, help="continue the run of this last.pt (its stored options are used; "
                   "only --device may change)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_config_options(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("experiments", help="train the course's presets and write a comparison table",
                       description="Train presets into <out>/<preset>/ and write <out>/report/ (report.md with "
                       "train loss/acc, val loss/acc, best val, test accuracy per preset; metrics.json; curves). "
                       "Presets: " + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))  # fmt: skip
    p.add_argument("--data", type=Path, required=True, help="classify/ folder from convert-mvtec")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/classify/experiments"),
        help="output folder (default: %(default)s)",
    )
    p.add_argument("--presets", help=f"comma-separated subset (default: all: {','.join(PRESETS)})")
    p.add_argument("--resume", action="store_true", help="continue presets that have a last.pt in --out")
    p.add_argument("--overwrite", action="store_true", help="replace earlier preset runs in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_config_options(p, "training options, applied to every preset (they win over the preset's own value; "
                       "default: the preset's value, else the one shown)")  # fmt: skip
    p.set_defaults(func=_experiments)

    for name, text in (("val", "score a checkpoint on a labelled split with the shared evaluator"),
                       ("predict", "classify an image or a folder of images")):  # fmt: skip
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--model", type=Path, required=True, help="checkpoint from classify train (best.pt)")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
        p.add_argument("--batch", type=int, default=64, help="images per forward pass (default: %(default)s)")
        p.add_argument("--posthoc-tau", type=float, default=0.0,
                       help="post-hoc logit adjustment: subtract tau * log(training class prior) from the logits "
                       "before choosing a class (Menon et al. 2021; 0 = off, default)")  # fmt: skip
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "val":
            p.add_argument(
                "--data", type=Path, required=True, help="classify/ folder: <data>/<split>/<class>/*"
            )
            p.add_argument(
                "--split", default="test", help="split to score: val or test (default: %(default)s)"
            )
            p.add_argument("--out", type=Path, required=True, help="folder for report.md, metrics.json, "
                           "confusion matrix PNG, predictions.json and predictions.csv")  # fmt: skip
            p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
            p.set_defaults(func=_val)
        else:
            p.add_argument(
                "--source", type=Path, required=True, help="an image, or a folder (searched recursively)"
            )
            p.add_argument("--out", type=Path, help="write the predictions here: .json (list of records) or .csv "
                           "(default: print one JSON line per image)")  # fmt: skip
            p.add_argument("--report", type=Path, help="for a folder laid out as <class>/<image>: also score the "
                           "predictions with the shared evaluator into this folder")  # fmt: skip
            p.set_defaults(func=_predict)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    main()
