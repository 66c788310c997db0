"""The umbrella command: ``defectkit sample``, ``defectkit demo`` and ``defectkit benchmark``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from defectkit.convert.reader import default_root
from defectkit.convert.split import parse_protocol
from defectkit.core.errors import DefectkitError, cli_entry
from defectkit.sample import write_category, write_sample

# The leaderboard (and with it torch, ultralytics and segment-anything) is imported by the demo and
# benchmark subcommands that use it, not here: `defectkit --help` and `defectkit sample` need none of
# it, and loading it takes seconds (tests/test_architecture.py LAZY_IMPORTS).


def _sample(args: argparse.Namespace) -> int:
    if args.size is None and args.n_per_defect is None:
        paths = write_sample(args.out, overwrite=args.overwrite, seed=args.seed)
    else:
        size = 256 if args.size is None else args.size
        paths = [
            write_category(
                args.out,
                args.category,
                size=(size, size),
                n_per_defect=4 if args.n_per_defect is None else args.n_per_defect,
                seed=args.seed,
                overwrite=args.overwrite,
                progress=True,
            )
        ]
    for p in paths:
        print(f"wrote {p}")
    return 0


DEFAULT_SAMPLE = Path("datasets/sample")
# The demo's small settings, measured on the bundled sample on a 2-core CPU (see the leaderboard README):
# with --fast, 1 epoch at 64 px; else 15 epochs, in which SAM's decoder learns (YOLO-World from a
# random start does not, at any setting that fits a few CPU minutes) and the whole demo takes 2-4 min.
DEMO_EPOCHS, DEMO_IMGSZ = 15, 128
# The demo's time goes where learning happens: a detector from a random start learns nothing in a few
# CPU minutes, so it gets 2 epochs (enough to exercise train, predict and resume); SAM's decoder and the
# classifier, which do learn on the sample, get more.
DEMO_EPOCHS_BY_FAMILY = {"detector": 2, "sam": 20, "classifier": 20, "anomaly": 20}
FAST_EPOCHS, FAST_IMGSZ = 1, 64
BENCHMARK_EPOCHS, BENCHMARK_IMGSZ = 30, 640
# Models: the benchmark's (pretrained, downloaded once) and the small random-start ones the demo and
# any --fast run use (nothing to download).
REAL_MODELS = {
    "detector": "yolov8s-worldv2.pt",
    "closed_detector": "yolov8n.pt",
    "seg_detector": "yolov8n-seg.pt",
    "sam_model": "vit_b",
    "classifier_weights": "imagenet",
    "anomaly_backbone_weights": "imagenet",
}
SMALL_MODELS = {
    "detector": "yolov8s-worldv2.yaml",
    "closed_detector": "yolov8n.yaml",
    "seg_detector": "yolov8n-seg.yaml",
    "sam_model": "vit_tiny",
    "classifier_weights": "none",
    "anomaly_backbone_weights": "none",
}


def _rows(text: str) -> list[str]:
    from defectkit.leaderboard import ALL_ROWS, DEMO_ROWS  # lazy: see the note at the top

    names: list[str] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        names += list(ALL_ROWS) if item == "all" else list(DEMO_ROWS) if item == "demo" else [item]
    return list(dict.fromkeys(names))


def _default_device() -> str:
    import torch  # lazy: see the note at the top

    return "0" if torch.cuda.is_available() else "cpu"


def _is_suite(args: argparse.Namespace) -> bool:
    """Several categories, seeds, protocols or a shard: a suite folder and the category table;
    else one run folder, as ``benchmark CATEGORY`` has always written."""
    return (
        args.category == "all"
        or "," in args.category
        or args.repeats != 1
        or args.shots is not None
        or getattr(args, "shard", None) is not None
    )


def _run(args: argparse.Namespace, command: str) -> int:
    from defectkit.leaderboard import BenchmarkConfig, run_benchmark  # lazy: see the note at the top
    from defectkit.leaderboard import suite, suite_runner  # lazy: see the note at the top

    demo = command == "demo"
    small = demo or args.fast  # the small random-start models, unless named
    for name, default in (SMALL_MODELS if small else REAL_MODELS).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    epochs = args.epochs or (FAST_EPOCHS if args.fast else DEMO_EPOCHS if demo else BENCHMARK_EPOCHS)
    imgsz = args.imgsz or (FAST_IMGSZ if args.fast else DEMO_IMGSZ if demo else BENCHMARK_IMGSZ)
    sam_lr = args.sam_lr  # None: segment train picks it (higher for random-start weights)
    # A family's own option, else (a plain demo without --epochs) the demo's share, else --epochs (None).
    fallback = DEMO_EPOCHS_BY_FAMILY if demo and not args.fast and args.epochs is None else {}
    per_family = {
        family: own if (own := getattr(args, f"epochs_{family}")) is not None else fallback.get(family)
        for family in DEMO_EPOCHS_BY_FAMILY
    }
    for name, value in (("epochs", epochs), ("imgsz", imgsz), ("batch", args.batch),
                        *((f"epochs-{f}", v) for f, v in per_family.items() if v is not None)):  # fmt: skip
        if value < 1:
            raise DefectkitError(f"--{name} must be at least 1, got {value}")
    if sam_lr is not None and not sam_lr > 0:
        raise DefectkitError(f"--sam-lr must be above 0, got {sam_lr}")
    if args.bootstrap < 0:
        raise DefectkitError(f"--bootstrap {args.bootstrap}: must be 0 (no intervals) or more resamples")
    protocol = parse_protocol(args.protocol)
    args.protocol = protocol.spec
    if args.test_frac is not None and protocol.fixes_test:
        raise DefectkitError(
            f"--test-frac {args.test_frac}: the {args.protocol} protocol fixes the test set by its rule; "
            "leave --test-frac out"
        )
    multi = _is_suite(args)
    shard = suite.parse_shard(args.shard) if getattr(args, "shard", None) is not None else None
    protocols = suite.parse_shots(args.shots, args.protocol) if args.shots is not None else [args.protocol]
    # Several categories: checked (and 'all' listed) before anything is written.
    categories = suite.find_categories(args.root, args.category) if multi else [args.category]
    if args.yolo_arg:
        from defectkit.detect.train import parse_extra_args  # lazy: see the note at the top

        parse_extra_args(args.yolo_arg)  # a misspelt argument fails now, not after the data is converted
    if demo and args.root == DEFAULT_SAMPLE and not (args.root / args.category).is_dir():
        print(f"writing the bundled sample to {args.root}")
        write_sample(args.root)
    embeddings = args.text_embeddings or ("random" if str(args.detector).endswith(".yaml") else None)
    default_out = Path("runs/suite") if multi else Path("runs/benchmark") / args.category
    cfg = BenchmarkConfig(
        root=args.root, category=args.category, out=args.out or default_out,
        rows=_rows(args.rows), device=args.device or _default_device(), detector=args.detector,
        closed_detector=args.closed_detector, seg_detector=args.seg_detector, text_embeddings=embeddings,
        prompts=args.prompts, sam_model=args.sam_model,
        sam_checkpoint=str(args.sam_checkpoint) if args.sam_checkpoint else None,
        sam_random_weights=args.sam_random_weights, sam_lr=sam_lr, yolo_args=args.yolo_arg,
        classifier_arch=args.classifier_arch, classifier_weights=args.classifier_weights, epochs=epochs,
        epochs_detector=per_family["detector"], epochs_sam=per_family["sam"],
        epochs_classifier=per_family["classifier"], epochs_anomaly=per_family["anomaly"],
        anomaly_backbone_weights=args.anomaly_backbone_weights, anomaly_source=args.anomaly_source, imgsz=imgsz, batch=args.batch, seed=args.seed, val_frac=args.val_frac,
        test_frac=0.2 if args.test_frac is None else args.test_frac, protocol=protocols[-1], bootstrap=args.bootstrap,
        gallery=args.gallery, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
        command=["defectkit", *(args.argv if args.argv is not None else sys.argv[1:])],
    )  # fmt: skip
    if multi:
        plan = suite_runner.plan_suite(cfg, categories, protocols, args.repeats, shots=args.shots is not None)
        report = suite_runner.run_suite(cfg, plan, shard)
        if report is not None:
            print(f"\nreport: {report / 'report.html'}  (also {report / 'report.md'}, {report / 'leaderboard.json'})")
            print((report / "leaderboard.txt").read_text().rstrip())
        return 0
    report = run_benchmark(cfg)
    print(f"\nreport: {report / 'report.html'}  (also {report / 'report.md'})")
    print((report / "leaderboard.txt").read_text().rstrip())
    return 0


def _merge(args: argparse.Namespace) -> int:
    from defectkit.leaderboard import suite_runner  # lazy: see the note at the top

    report = suite_runner.merge_suites(args.run_dirs, args.out, overwrite=args.overwrite)
    print(f"report: {report / 'report.html'}  (also {report / 'report.md'}, {report / 'leaderboard.json'})")
    print((report / "leaderboard.txt").read_text().rstrip())
    return 0


def _add_run_options(p: argparse.ArgumentParser, demo: bool) -> None:
    """The options demo and benchmark share; the defaults differ (small and random for the demo)."""
    g = p.add_argument_group("run")
    g.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo") if demo else None,
        help="run folder: converted data, one folder per row, report/ (default: "
        + ("%(default)s)" if demo else "runs/benchmark/CATEGORY)"),
    )
    g.add_argument(
        "--rows",
        default="demo" if demo else "all",
        help="comma-separated rows: yolo-world-ft, yolo-world-zs, yolo-closed, sam-gt-base, sam-gt-random, "
        "sam-gt-ft, sam-det, yolo-seg, classifier, and the unsupervised padim, patchcore, draem (the anomaly "
        "extra; skipped with one line without it); 'all' or 'demo' (yolo-world-ft, sam-gt-base, sam-gt-ft, "
        "sam-det, classifier, padim); rows a row needs are added; sam-gt-base (SAM as released) is "
        "sam-gt-random when the SAM has random weights (default: %(default)s)",
    )
    g.add_argument(
        "--device",
        default="cpu" if demo else None,
        help="cpu, or a GPU: 0, 1 or cuda:N (default: "
        + ("cpu)" if demo else "0 when CUDA is there, else cpu)"),
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the split, the training runs and random weights (default: %(default)s)",
    )
    g.add_argument(
        "--val-frac", type=float, default=0.2, help="share of each test folder for val (default: %(default)s)"
    )
    g.add_argument(
        "--test-frac",
        type=float,
        default=None,
        help="share of each test folder for test, defectkit protocol only (default: 0.2)",
    )
    g.add_argument(
        "--protocol",
        default="defectkit",
        help="how convert-mvtec splits the data (docs/PROTOCOLS.md): defectkit (stratified, the default), "
        "anomalydiffusion (the first third of each defect type trains), fewshot:K (K defect images train); "
        "recorded in run.json (default: %(default)s)",
    )
    g.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="resamples of the test images behind each metric's 95%% interval, seeded by --seed; 0: no "
        "intervals (default: %(default)s)",
    )
    g.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the whole benchmark R times with seeds SEED..SEED+R-1 (a new split where the protocol draws "
        "one, a new training seed always) and report mean ± std over the repeats (default: %(default)s)",
    )
    g.add_argument(
        "--shots",
        default=None,
        metavar="K,K,...,all",
        help="label efficiency: run the fewshot:K protocol for each K ('all': --protocol's split) and plot "
        "image AUROC and each row's main metric against the labelled defect images (e.g. 1,5,10,all)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: finished rows (rows/<row>/result.json) are loaded, not redone",
    )
    g.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    g.add_argument(
        "--gallery",
        type=int,
        default=6,
        help="worst validation images drawn in the report (default: %(default)s)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-row lines")
    m = p.add_argument_group("models and training")

    def model_default(name: str) -> str:
        small = SMALL_MODELS[name]
        return f"default: {small})" if demo else f"default: {REAL_MODELS[name]}; with --fast {small})"

    m.add_argument(
        "--detector",
        default=None,
        help="YOLO-World weights (.pt, hub names downloaded once) or a .yaml for a random start ("
        + model_default("detector"),
    )
    m.add_argument(
        "--closed-detector",
        default=None,
        help="closed-set YOLO for the yolo-closed row (" + model_default("closed_detector"),
    )
    m.add_argument(
        "--seg-detector",
        default=None,
        help="YOLO segmentation model for the yolo-seg row (" + model_default("seg_detector"),
    )
    m.add_argument(
        "--text-embeddings",
        default=None,
        help="YOLO-World text embeddings: a file from `detect embed`, or 'random' (default: random for a "
        ".yaml detector, else the data set's file, which `detect embed` makes once)",
    )
    m.add_argument("--prompts", default=None, help='YOLO-World class prompts, e.g. "hole=a hole in wood"')
    m.add_argument(
        "--sam-model",
        default=None,
        help="SAM size: vit_tiny (small, random; demos and tests), vit_b, vit_l, vit_h ("
        + model_default("sam_model"),
    )
    m.add_argument(
        "--sam-checkpoint",
        type=Path,
        default=None,
        help="official SAM weights for --sam-model (e.g. sam_vit_b_01ec64.pth; downloaded once when missing)",
    )
    m.add_argument(
        "--sam-random-weights",
        action="store_true",
        help="no SAM checkpoint: random weights for vit_b/l/h (speed and smoke checks only; masks mean "
        "nothing until fine-tuned)",
    )
    m.add_argument(
        "--sam-lr",
        type=float,
        default=None,
        help="learning rate of SAM's decoder fine-tune (default: segment train's: 3e-3 for random-start "
        "weights such as vit_tiny, 1e-4 from a checkpoint)",
    )
    m.add_argument(
        "--yolo-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further ultralytics training argument for every trained YOLO row, repeatable (e.g. "
        "--yolo-arg lr0=0.001 --yolo-arg mosaic=0.5; as `detect train`'s KEY=VALUE arguments)",
    )
    m.add_argument("--classifier-arch", default="resnet18", help="torchvision ResNet (default: %(default)s)")
    m.add_argument(
        "--classifier-weights",
        default=None,
        help="classifier start: imagenet, none (random) or a state-dict path ("
        + model_default("classifier_weights"),
    )
    m.add_argument(
        "--anomaly-backbone-weights",
        default=None,
        help="PaDiM/PatchCore backbone features: imagenet (timm's, downloaded once; offline it fails in seconds), "
        "none (random init) or a state-dict path (" + model_default("anomaly_backbone_weights"),
    )
    m.add_argument(
        "--anomaly-source",
        default="perlin",
        help="DRAEM's synthetic anomalies: perlin (noise) or a folder of texture images, e.g. DTD as in the paper "
        "(default: %(default)s)",
    )
    m.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs of every trained row without its own option below (default: "
        + f"{DEMO_EPOCHS if demo else BENCHMARK_EPOCHS}, {FAST_EPOCHS} with --fast)",
    )
    for family, rows in (("detector", "YOLO-World, closed-set YOLO and YOLO-seg rows"),
                         ("sam", "SAM decoder fine-tuning"), ("classifier", "ResNet classifier"),
                         ("anomaly", "anomaly models trained by epochs (DRAEM)")):  # fmt: skip
        m.add_argument(
            f"--epochs-{family}",
            type=int,
            default=None,
            help=f"training epochs of the {rows} (default: "
            + (f"{DEMO_EPOCHS_BY_FAMILY[family]}; --epochs or --fast set all" if demo else "--epochs")
            + ")",
        )
    m.add_argument(
        "--imgsz",
        type=int,
        default=None,
        help="YOLO input size; the classifier uses min(imgsz, 224) (default: "
        + f"{DEMO_IMGSZ if demo else BENCHMARK_IMGSZ}, {FAST_IMGSZ} with --fast)",
    )
    m.add_argument(
        "--batch",
        type=int,
        default=8 if demo else 16,
        help="batch size of the YOLO and classifier training (default: %(default)s)",
    )
    m.add_argument(
        "--fast",
        action="store_true",
        help=f"the quickest end-to-end check: {FAST_EPOCHS} epoch at {FAST_IMGSZ} px"
        + ("" if demo else ", with the demo's small random-start models unless named (nothing is downloaded)")
        + "; nothing learns, the numbers only show the pipeline runs",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="defectkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "sample",
        help="write the bundled synthetic sample in the MVTec AD layout",
        description="Write a small synthetic wood-like category in the MVTec AD layout, from code "
        "(no download). Without --size/--n-per-defect it writes the bundled sample: 'wood' "
        "(RGB 256x256) and 'wood_gray' (grayscale, 192x256).",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("datasets/sample"),
        help="folder to write into (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; the same seed writes the same bytes (default: %(default)s)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="write one square category of this size instead of the bundled pair",
    )
    p.add_argument(
        "--n-per-defect",
        type=int,
        default=None,
        help="images per defect type for a custom category (default 4)",
    )
    p.add_argument(
        "--category", default="wood", help="category name for a custom --size sample (default: %(default)s)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing sample folder")
    p.set_defaults(func=_sample)

    p = sub.add_parser(
        "demo",
        help="the whole pipeline on the bundled sample, offline, on the CPU, in a few minutes",
        description="convert -> train YOLO-World (random start, random text embeddings) -> fine-tune a small SAM "
        "-> train a ResNet classifier (no pretrained weights) -> score each with the shared evaluator -> one "
        "report (report.md + self-contained report.html). Writes the bundled sample first when --root is the "
        "default and missing. With a GPU and real weights (--device 0 --detector yolov8s-worldv2.pt "
        "--sam-model vit_b --sam-checkpoint sam_vit_b_01ec64.pth --classifier-weights imagenet) the same command "
        "is a real baseline run on any category. The demo is `defectkit benchmark` with fewer rows and small "
        "settings.",
    )
    p.add_argument(
        "--root", type=Path, default=DEFAULT_SAMPLE, help="MVTec AD-layout data root (default: %(default)s)"
    )
    p.add_argument("--category", default="wood", help="category folder under --root (default: %(default)s)")
    _add_run_options(p, demo=True)
    p.set_defaults(func=lambda args: _run(args, "demo"))

    p = sub.add_parser(
        "benchmark",
        help="every approach on the same split, scored by the shared evaluator, in one leaderboard",
        description="Convert CATEGORY once, then train and score each row (detectors, SAM variants, YOLO-seg, the "
        "classifier) on that split. Each row ranks on the image-level column (image AUROC and accuracy at the "
        "threshold chosen on val) and reports its own task metrics and cost, every metric with a 95% bootstrap "
        "interval. Writes <out>/report/report.md, report.html (plots inlined), leaderboard.json; --resume skips "
        "finished rows. Several categories (a,b,c or all), --repeats, --shots or --shard make a suite: one run "
        "folder per category (and seed, and split), and one category table with a mean row. "
        "`defectkit benchmark merge RUN_DIRS... --out DIR` joins the shards of a suite.",
    )
    p.add_argument(
        "category",
        help="category folder under --root (e.g. wood); several: a,b,c or 'all' (every folder in the MVTec AD "
        "layout), each run in <out>/<category>/ and one table of them in <out>/report/. `defectkit benchmark "
        "merge RUN_DIRS... --out DIR` joins shards",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=default_root(),
        help="MVTec AD-layout data root or a .tar.xz (default: $DEFECTKIT_DATA_ROOT, else %(default)s)",
    )
    _add_run_options(p, demo=False)
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run only the I-th of N equal, contiguous parts of the work (units of split protocol x seed x "
        "category x row group, in that order; the first units%%N parts one unit longer), e.g. a job array's "
        "index; give each shard its own --out, then `defectkit benchmark merge` joins them",
    )
    p.set_defaults(func=lambda args: _run(args, "benchmark"))
    return parser


def build_merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="defectkit benchmark merge",
        description="Join the run folders of a suite's shards (`defectkit benchmark ... --shard I/N --out DIR_I`) "
        "into the one category table a single run writes: DIR/report/report.md, report.html, leaderboard.json. "
        "The shards must share every setting and the plan, each part once, none missing.",
    )
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="the shards' --out folders")
    p.add_argument("--out", type=Path, required=True, help="folder for the merged report (report/ in it)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier merge in --out")
    p.set_defaults(func=_merge)
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    if given[:2] == ["benchmark", "merge"]:  # a subcommand of benchmark beside its CATEGORY argument
        args = build_merge_parser().parse_args(given[2:])
        return args.func(args)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    main()
