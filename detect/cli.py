"""The ``detect`` command: embed, train, predict, val, export. See detect/README.md.

Each subcommand imports its module when it runs: they bring ultralytics and torch (2-3 s), which
``detect --help`` and a mistyped option never need."""

from __future__ import annotations

import argparse
from pathlib import Path

from defectkit.core.errors import DefectkitError, cli_entry

EMB_HELP = (
    "YOLO-World only: the text embeddings file (made by `detect embed`), or 'random' (deterministic by --seed; "
    "for tests and from-scratch runs). Default: <data folder>/text_embeddings_clip-ViT-B-32.pt"
)
QUIET_HELP = "no progress bars; ultralytics prints warnings and errors only (no configuration dump)"
PROMPTS_HELP = (
    'YOLO-World only: class prompts, e.g. "hole=a hole in wood,scratch=a thin scratch" (default: the names)'
)


def _embed(args) -> int:
    from defectkit.core.torchio import resolve_device
    from defectkit.detect import embeddings as emb
    from defectkit.detect.data import load_data

    ds = load_data(args.data, splits=(), check_labels=False)
    out = (
        Path(args.out)
        if args.out
        else emb.default_path(ds.yaml_path.parent, "random" if args.random else emb.CLIP_VARIANT)
    )
    if out.exists() and not args.overwrite:
        raise DefectkitError(f"{out}: already exists; pass --overwrite to replace it")
    prompts = emb.parse_prompts(args.prompts, ds.names)
    table = (
        emb.random_embeddings(ds.names, prompts, seed=args.seed)
        if args.random
        else emb.clip_embeddings(ds.names, prompts, device=str(resolve_device(args.device or "cpu")))
    )
    table.save(out)
    print(f"wrote {out} ({len(table.names)} classes, {table.model})")
    return 0


def _train(args) -> int:
    from defectkit.detect.train import parse_extra_args, train

    if not args.data and not args.resume:
        raise DefectkitError("--data is required (except with --resume)")
    run = train(
        args.data,
        args.model,
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        device=args.device,
        seed=args.seed,
        project=args.project,
        name=args.name,
        resume=args.resume,
        prompts=args.prompts,
        text_embeddings=args.text_embeddings,
        exist_ok=args.exist_ok,
        quiet=args.quiet,
        **parse_extra_args(args.extra),
    )
    print(f"run folder: {run}  (best weights: {run / 'weights' / 'best.pt'})")
    return 0


def _predict(args) -> int:
    if not (args.save_coco or args.save_txt or args.save_images):
        raise DefectkitError("nothing to save: give --save-coco, --save-txt and/or --save-images")
    from defectkit.detect.models import run_dir_weights
    from defectkit.detect.predict import predict_to_files

    preds = predict_to_files(
        run_dir_weights(args.model),
        args.source,
        save_coco=args.save_coco,
        coco=args.coco,
        save_txt=args.save_txt,
        save_images=args.save_images,
        conf=args.conf,
        imgsz=args.imgsz,
        device=args.device,
        overwrite=args.overwrite,
        max_det=args.max_det,
        progress=not args.quiet,
    )
    print(
        f"{len(preds)} detections"
        + "".join(f"; wrote {p}" for p in (args.save_coco, args.save_txt, args.save_images) if p)
    )
    return 0


def _val(args) -> int:
    from defectkit.detect.models import run_dir_weights
    from defectkit.detect.val import validate

    metrics = validate(
        run_dir_weights(args.model),
        args.data,
        split=args.split,
        out=args.out,
        zero_shot=args.zero_shot,
        text_embeddings=args.text_embeddings,
        prompts=args.prompts,
        conf=args.conf,
        imgsz=args.imgsz,
        device=args.device,
        overwrite=args.overwrite,
        seed=args.seed,
        progress=not args.quiet,
    )
    box, theirs = metrics["bbox"], metrics["ultralytics"]
    print(
        f"COCO mAP50-95 {box['AP']:.4f}  mAP50 {box['AP50']:.4f}   |   ultralytics mAP50-95 "
        f"{theirs['mAP50-95']:.4f}  mAP50 {theirs['mAP50']:.4f}"
    )
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _export(args) -> int:
    from defectkit.detect.export import export
    from defectkit.detect.models import run_dir_weights

    out = export(
        run_dir_weights(args.model),
        format=args.format,
        imgsz=args.imgsz,
        text_embeddings=args.text_embeddings,
        device=args.device,
    )
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect",
        description="Fine-tune and evaluate YOLO-World / YOLOv8 / YOLO11 defect detectors on convert-mvtec's yolo/ "
        "data (ultralytics underneath, offline-safe).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, model_help):
        p.add_argument("--model", required=True, help=model_help)
        p.add_argument(
            "--device",
            default=None,
            help="cpu, or a GPU index such as 0 (default: ultralytics picks: first GPU, else cpu)",
        )
        p.add_argument(
            "--imgsz", type=int, default=None, help="image size (default: the size the model was trained at)"
        )

    p = sub.add_parser(
        "embed",
        help="compute YOLO-World text embeddings once and store them beside the data set",
        description="Encode each class prompt with CLIP ViT-B/32 (needs the `clip` package and, the first "
        "time, internet) and write <data folder>/text_embeddings_clip-ViT-B-32.pt; train, val, predict "
        "and export then read that file and never run CLIP.",
    )
    p.add_argument(
        "--data", required=True, help="the YOLO data yaml (convert-mvtec's <out>/<category>/yolo/data.yaml)"
    )
    p.add_argument("--prompts", default=None, help=PROMPTS_HELP)
    p.add_argument("--out", default=None, help="where to write (default: beside the data yaml)")
    p.add_argument(
        "--random", action="store_true", help="write deterministic random embeddings instead of CLIP's"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random (default: %(default)s)")
    p.add_argument(
        "--device", default=None, help="torch device for CLIP: cpu, cuda, cuda:1, auto (default: cpu)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=_embed)

    p = sub.add_parser(
        "train",
        help="fine-tune a detector (ultralytics trainer)",
        description="Check the data and model, then train with ultralytics. Unknown KEY=VALUE arguments "
        "(lr0=0.001 mosaic=0 ...) pass through to ultralytics unchanged.",
    )
    p.add_argument(
        "--data",
        help="the YOLO data yaml (convert-mvtec's <out>/<category>/yolo/data.yaml); not needed with --resume",
    )
    p.add_argument(
        "--model",
        default="yolov8s-worldv2.pt",
        help="YOLO-World (yolov8s-worldv2.pt, or *-worldv2.yaml for a random start) or YOLOv8/YOLO11 detect/seg "
        ".pt/.yaml; hub names are downloaded once into ~/.cache/defectkit (default: %(default)s)",
    )
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default: %(default)s)")
    p.add_argument("--imgsz", type=int, default=640, help="training image size (default: %(default)s)")
    p.add_argument(
        "--batch",
        type=float,
        default=16,
        help="batch size; -1 or 0.0-1.0 lets ultralytics fit GPU memory (default: 16)",
    )
    p.add_argument(
        "--device", default=None, help="cpu, 0, or 0,1,2,3 for multi-GPU DDP (default: ultralytics picks)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed (also seeds --text-embeddings random) (default: %(default)s)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        help="continue <project>/<name>/weights/last.pt, or the last.pt given",
    )
    p.add_argument("--project", default="runs/detect", help="folder of run folders (default: %(default)s)")
    p.add_argument(
        "--name", default="train", help="run folder name; taken names get a number (default: %(default)s)"
    )
    p.add_argument(
        "--exist-ok", action="store_true", help="reuse <project>/<name> instead of numbering a new one"
    )
    p.add_argument("--prompts", default=None, help=PROMPTS_HELP)
    p.add_argument("--text-embeddings", default=None, help=EMB_HELP)
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument(
        "extra", nargs="*", help="further ultralytics training arguments as KEY=VALUE (lr0=0.001 mosaic=0.5)"
    )
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "predict", help="detect defects in images; write COCO results, YOLO txt, annotated images"
    )
    common(p, "weights (.pt) or a run folder (uses weights/best.pt)")
    p.add_argument("--source", nargs="+", required=True, help="image files and/or folders")
    p.add_argument(
        "--coco", default=None, help="convert-mvtec coco/<split>.json: image ids of the results follow it"
    )
    p.add_argument("--save-coco", default=None, help="write the COCO results JSON here")
    p.add_argument(
        "--save-txt", default=None, help="write YOLO txt (class cx cy w h conf) per image into this folder"
    )
    p.add_argument(
        "--save-images", default=None, help="write annotated images (boxes + labels) into this folder"
    )
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default: %(default)s)")
    p.add_argument(
        "--max-det", type=int, default=300, help="at most this many boxes an image (default: %(default)s)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "val", help="score a detector on a split with the shared evaluator (+ ultralytics' mAP)"
    )
    common(p, "weights (.pt), a run folder, or a YOLO-World hub name with --zero-shot")
    p.add_argument("--data", required=True, help="the YOLO data yaml")
    p.add_argument(
        "--split",
        default="val",
        choices=("train", "val", "test"),
        help="split to score (default: %(default)s)",
    )
    p.add_argument(
        "--out", required=True, help="report folder (metrics.json, report.md, PR curves, confusion matrix)"
    )
    p.add_argument(
        "--zero-shot",
        action="store_true",
        help="YOLO-World: set the classes from the prompts' embeddings (score an un-fine-tuned model)",
    )
    p.add_argument("--prompts", default=None, help=PROMPTS_HELP)
    p.add_argument("--text-embeddings", default=None, help=EMB_HELP)
    p.add_argument(
        "--seed", type=int, default=0, help="seed for --text-embeddings random (default: %(default)s)"
    )
    p.add_argument(
        "--conf", type=float, default=0.001, help="confidence threshold for mAP (default: %(default)s)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.set_defaults(func=_val)

    p = sub.add_parser("export", help="export with ultralytics' exporter (onnx, torchscript, ...)")
    common(p, "weights (.pt) or a run folder")
    p.add_argument(
        "--format", default="onnx", help="onnx, torchscript, openvino, engine, ... (default: %(default)s)"
    )
    p.add_argument(
        "--text-embeddings", default=None, help="YOLO-World: bake in the classes and prompts of this file"
    )
    p.set_defaults(func=_export)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch", None) is not None and float(args.batch).is_integer():
        args.batch = int(args.batch)
    if args.command != "embed":  # embed's --device is CLIP's torch device, checked where it is used
        from defectkit.core.torchio import parse_device

        parse_device(args.device)
    return args.func(args)


if __name__ == "__main__":
    main()
