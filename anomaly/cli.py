"""``anomaly``: unsupervised anomaly detection (anomalib's PaDiM, PatchCore, DRAEM, EfficientAD) on convert-mvtec's split.

  anomaly train --data datasets/converted/wood --model padim --out runs/anomaly/padim --backbone-weights none
  anomaly val --model runs/anomaly/padim --data datasets/converted/wood --split test --out runs/anomaly/padim-test
  anomaly predict --model runs/anomaly/padim --source datasets/sample/wood/test --out runs/anomaly/predict

Models learn from the train split's good images only; their thresholds are chosen on the val split
(F1-max); val scores a split with the shared evaluator. Needs the extra: pip install "defectkit[anomaly]".
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from defectkit.anomaly.config import MODEL_REGISTRY, AnomalyTrainConfig
from defectkit.evaluation.cli import add_bootstrap_options

from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError, cli_entry

# Each subcommand imports the modules it runs (torch, anomalib: seconds), which `anomaly --help` and
# a mistyped option never need; the options and their defaults come from anomaly.config.

_DEFAULTS = {f.name: f.default for f in fields(AnomalyTrainConfig) if f.name not in ("data", "layers")}
DEVICE_HELP = "auto, cpu, 0 (a CUDA index), cuda:N or mps (default: %(default)s)"
QUIET_HELP = "no progress bars or summary lines"


def _layers(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _train(args: argparse.Namespace) -> int:
    given = {
        name: getattr(args, name)
        for name in ("model", "backbone", "layers", "backbone_weights", "imgsz", "epochs", "batch",
                     "n_features", "coreset_ratio", "anomaly_source", "teacher_weights", "imagenet_dir",
                     "model_size", "seed", "device")
        if getattr(args, name) is not None
    }  # fmt: skip
    cfg = AnomalyTrainConfig(data=str(args.data), out=str(args.out), **given)
    from defectkit.anomaly.train import train

    train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def _val(args: argparse.Namespace) -> int:
    from defectkit.anomaly.val import validate

    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        validate(
            args.model,
            args.data,
            args.split,
            tmp,
            device=args.device,
            batch=args.batch,
            bootstrap=args.bootstrap,
            seed=args.seed,
            progress=not args.quiet,
        )
    if not args.quiet:
        print(f"wrote {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from defectkit.anomaly.predict import predict

    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        records = predict(
            args.model, args.source, tmp, device=args.device, category_dir=args.data, batch=args.batch,
            progress=not args.quiet,
        )  # fmt: skip
    if not args.quiet:
        flagged = sum(r["defect"] for r in records)
        print(f"wrote {len(records)} scores ({flagged} above the image threshold) to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomaly", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="fit an unsupervised model on the train split's good images; thresholds from the val split",
        description="Fit anomalib's model on the good images of the manifest's train split, choose the image and "
        "pixel thresholds on the val split (F1-max of 'score >= t'), write RUN/model.pt (loads with "
        "torch.load(weights_only=True)) and RUN/summary.json; DRAEM also writes last.pt after each epoch.",
    )
    p.add_argument("--data", type=Path, required=True, help="converted category folder (convert-mvtec <cat> --to all): "
                   "split.json and coco/<split>.json")  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=Path(_DEFAULTS["out"]), help="run folder (default: %(default)s)"
    )
    p.add_argument("--model", choices=tuple(MODEL_REGISTRY), help="padim, patchcore (ImageNet CNN features), draem "
                   "(trained from scratch) or efficient_ad (student and autoencoder against a pre-trained teacher) "
                   f"(default: {_DEFAULTS['model']})")  # fmt: skip
    p.add_argument("--backbone", help="timm CNN for padim/patchcore (default: resnet18 for padim, wide_resnet50_2 "
                   "for patchcore)")  # fmt: skip
    p.add_argument("--layers", type=_layers, help="comma-separated backbone layers to take features from "
                   "(default: layer1,layer2,layer3 for padim, layer2,layer3 for patchcore)")  # fmt: skip
    p.add_argument("--backbone-weights", help="padim/patchcore backbone weights: 'imagenet' (timm's, from the Hugging "
                   "Face cache or downloaded; offline it fails in seconds naming the file), 'none' (random init, "
                   "offline) or PATH to a timm/torchvision state dict of --backbone "
                   f"(default: {_DEFAULTS['backbone_weights']})")  # fmt: skip
    p.add_argument(
        "--imgsz", type=int, help=f"square model input size in pixels (default: {_DEFAULTS['imgsz']})"
    )
    p.add_argument("--epochs", type=int, help="epochs for draem (default: 700, the paper's) and efficient_ad "
                   "(default: 70); padim and patchcore fit in one pass")  # fmt: skip
    p.add_argument(
        "--batch", type=int, help="images per batch (default: 32; draem 8; efficient_ad trains at 1)"
    )
    p.add_argument("--n-features", type=int, help="padim: features kept after the random projection "
                   "(default: anomalib's, 100 for resnet18)")  # fmt: skip
    p.add_argument("--coreset-ratio", type=float, help="patchcore: share of patch features kept in the memory bank "
                   f"(default: {_DEFAULTS['coreset_ratio']})")  # fmt: skip
    p.add_argument("--anomaly-source", help="draem (required): 'perlin' (synthetic anomalies are noise) or a folder "
                   "of texture images pasted in as anomalies (the paper's: DTD)")  # fmt: skip
    p.add_argument(
        "--teacher-weights",
        help="efficient_ad: the pre-trained teacher's state dict (default: anomalib's pretrained_teacher_<size>.pth "
        "in its cache, fetched once with anomalib's zip; offline it fails in seconds naming the file)",
    )
    p.add_argument(
        "--imagenet-dir",
        help="efficient_ad (required): a folder of class folders of ImageNet images for its penalty loss "
        "(anomalib uses ImageNette)",
    )
    p.add_argument(
        "--model-size", choices=("small", "medium"), help="efficient_ad: EfficientAD-S or -M (default: small)"
    )
    p.add_argument("--seed", type=int, help=f"random seed (PaDiM's feature choice, coreset, DRAEM's anomalies) "
                   f"(default: {_DEFAULTS['seed']})")  # fmt: skip
    p.add_argument("--device", help=DEVICE_HELP.replace("%(default)s", str(_DEFAULTS["device"])))
    p.add_argument("--resume", action="store_true", help="continue the run in --out (draem: from last.pt); a "
                   "finished run is left as it is; the options must be the run's")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.set_defaults(func=_train)

    for name, text in (
        ("val", "score a run on a split with the shared evaluator (anomaly metrics + class-agnostic COCO)"),
        ("predict", "scores, anomaly maps, overlays and COCO results for images"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--model", type=Path, required=True, help="run folder of anomaly train (or its model.pt)"
        )
        p.add_argument("--out", type=Path, required=True, help="output folder" + (
            ": metrics.json, report.md, bbox/, segm/, scores.json, predictions.json" if name == "val" else
            ": scores.json, maps/*.npy, overlays/*.png, predictions.json"))  # fmt: skip
        p.add_argument("--device", default="auto", help=DEVICE_HELP)
        p.add_argument("--batch", type=int, default=32, help="images per forward pass (default: %(default)s)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
        p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
        if name == "val":
            p.add_argument(
                "--data", type=Path, required=True, help="converted category folder (split.json, coco/)"
            )
            p.add_argument(
                "--split",
                default="test",
                choices=("val", "test"),
                help="split to score (default: %(default)s)",
            )
            add_bootstrap_options(p)
            p.set_defaults(func=_val)
        else:
            p.add_argument("--source", type=Path, nargs="+", required=True, help="images and/or folders (searched "
                           "recursively)")  # fmt: skip
            p.add_argument("--data", type=Path, help="converted category folder the images come from: scores.json "
                           "gets their file_name and predictions.json the ids of coco/<split>.json (default: the "
                           "run's training data, when it is still there)")  # fmt: skip
            p.set_defaults(func=_predict)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch", None) is not None and args.batch < 1:
        raise DefectkitError(f"--batch must be at least 1, got {args.batch}")
    return args.func(args)


if __name__ == "__main__":
    main()
