"""``segment``: fine-tune SAM on defect masks, score it, and segment images from boxes or clicks.

  segment train   --data <out>/<category>/sam --model vit_b --checkpoint sam_vit_b_01ec64.pth
  segment val     --data <out>/<category>/sam --split test --finetuned runs/segment/train/best.pt
  segment predict --image IMG|DIR (--box x1,y1,x2,y2 | --point x,y[,label] | --boxes-from PRED.json
                  | --detector WEIGHTS) --out runs/segment/predict
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from defectkit.core.errors import DefectkitError, cli_entry
from defectkit.segment.catalog import CHECKPOINT_URLS, MODEL_NAMES

# Each subcommand imports the modules it runs (torch, segment-anything: 3-5 s), which `segment
# --help` and a mistyped option never need.


def _add_model_args(p: argparse.ArgumentParser, default_model: str | None) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODEL_NAMES, default=default_model,
                   help="SAM size: vit_b / vit_l / vit_h (official weights) or vit_tiny (small random model for "
                   "tests and demos)" + (" (default: %(default)s)" if default_model else
                                         " (default: the one --finetuned was trained on, else vit_b)"))
    g.add_argument("--checkpoint", type=Path, default=None,
                   help="official SAM weights for --model, e.g. sam_vit_b_01ec64.pth; when missing they are "
                   f"downloaded to ~/.cache/defectkit (vit_b: {CHECKPOINT_URLS['vit_b']})")
    g.add_argument("--random-weights", action="store_true",
                   help="no checkpoint: random weights from --seed (benchmarks and smoke tests only; masks are "
                   "meaningless until fine-tuned). vit_tiny always has random weights")
    g.add_argument("--seed", type=int, default=0, help="seed of random weights, jitter and shuffling (default: %(default)s)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="embedding cache folder (default: $DEFECTKIT_CACHE/sam_embeddings or "
                   "~/.cache/defectkit/sam_embeddings)")
    g.add_argument("--no-amp", dest="amp", action="store_false", help="no bf16 autocast on CUDA")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fine-tune SAM's mask decoder on a converted data set",
                       description="Fine-tune SAM's mask decoder (image encoder frozen, embeddings cached) on "
                       "sam/train.jsonl, validate each epoch against base SAM, write best.pt only when it beats "
                       "base SAM. Several GPUs: torchrun --nproc_per_node N -m segment.cli train ...")
    t.add_argument("--data", type=Path, required=True, help="the sam/ folder written by convert-mvtec (<out>/<category>/sam)")
    _add_model_args(t, "vit_b")
    t.add_argument("--out", type=Path, default=Path("runs/segment/train"), help="run folder (default: %(default)s)")
    t.add_argument("--epochs", type=int, default=10, help="epochs (default: %(default)s)")
    t.add_argument("--batch", type=int, default=16, help="instances of one image per decoder call (default: %(default)s)")
    t.add_argument("--images-per-step", type=int, default=1,
                   help="images whose prompts go through one decoder call and one optimizer step (default: %(default)s)")
    t.add_argument("--lr", type=float, default=None,
                   help="AdamW learning rate, cosine-decayed per step (default: 1e-4 from SAM's released weights, "
                   "3e-3 from random weights: vit_tiny, --random-weights)")
    t.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: %(default)s)")
    t.add_argument("--points", type=int, default=0, help="positive points sampled from each mask and added to its box (default: %(default)s)")
    t.add_argument("--neg-points", type=int, default=0, help="negative points sampled from the box's background (default: %(default)s)")
    t.add_argument("--box-jitter", type=float, default=0.05, help="box corner noise, std as a fraction of the box side (default: %(default)s)")
    t.add_argument("--train-prompt-encoder", action="store_true", help="train the prompt encoder too (default: decoder only)")
    t.add_argument("--loss", choices=("dice+bce", "dice+focal"), default="dice+bce",
                   help="mask loss; plus MSE on SAM's IoU prediction (default: %(default)s)")
    t.add_argument("--max-pos-weight", type=float, default=1000.0,
                   help="cap of the BCE foreground weight, the background/foreground pixel ratio of each mask: "
                   "foreground and background weigh the same in total, so a thin defect cannot be learnt as an "
                   "empty mask; lower it if masks come out too fat (default: %(default)s)")
    t.add_argument("--mask-loss", choices=("points", "full"), default="full",
                   help="where Dice and BCE/focal are computed: 'full', every pixel at the original resolution, or "
                   "'points', --mask-points points per mask sampled by uncertainty as Mask2Former (default: %(default)s)")
    t.add_argument("--mask-points", type=int, default=112 * 112,
                   help="points per mask with --mask-loss points (default: %(default)s)")
    t.add_argument("--val-split", default="val", help="split scored each epoch (default: %(default)s)")
    t.add_argument("--no-val", dest="validate", action="store_false", help="skip validation (then no best.pt; last.pt only)")
    t.add_argument("--select-metric", choices=("mean_iou", "mean_dice", "segm_AP"), default="mean_iou",
                   help="validation metric that picks best.pt (default: %(default)s)")
    t.add_argument("--no-cache", action="store_true", help="encode images inside the loop every step (slow; for comparison)")
    t.add_argument("--encode-batch", type=int, default=4, help="images per encoder call when filling the cache (default: %(default)s)")
    t.add_argument("--max-steps", type=int, default=None, help="cap decoder steps per epoch")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt (epoch, optimizer, schedule)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out run")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_train)

    v = sub.add_parser("val", help="score base SAM and a fine-tuned one side by side",
                       description="Prompt every ground-truth instance of a split with its box; score base SAM and "
                       "(with --finetuned) the fine-tuned decoder with the shared evaluator: mIoU, Dice, segm AP. "
                       "Writes report.md + metrics.json.")
    v.add_argument("--data", type=Path, required=True, help="the sam/ folder written by convert-mvtec")
    v.add_argument("--split", default="val", choices=("train", "val", "test"), help="split to score (default: %(default)s)")
    v.add_argument("--finetuned", type=Path, default=None, help="best.pt from `segment train`")
    v.add_argument("--out", type=Path, default=Path("runs/segment/val"), help="report folder (default: %(default)s)")
    v.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    v.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    _add_model_args(v, None)
    v.set_defaults(func=_val)

    p = sub.add_parser("predict", help="segment images from boxes, points, detections or a detector",
                       description="Segment an image (or every image of a folder) from prompts. Writes "
                       "masks/<name>.png (union of the masks, 0/255), overlays/<name>.png and results.json "
                       "(COCO results with RLE masks and scores).")
    p.add_argument("--image", type=Path, required=True, help="an image file or a folder of images")
    src = p.add_argument_group("prompts (one kind; --box and --point may be combined)")
    src.add_argument("--box", action="append", default=[], metavar="x1,y1,x2,y2", help="a box prompt in pixels (repeatable)")
    src.add_argument("--point", action="append", default=[], metavar="x,y[,label]",
                     help="a click in pixels, label 1 (default) foreground or 0 background; all points form one prompt (repeatable)")
    src.add_argument("--boxes-from", type=Path, default=None, metavar="PRED.json",
                     help="boxes from COCO results (e.g. `detect predict` output); image ids via --coco, else 1..N in sorted order")
    src.add_argument("--detector", default=None, metavar="WEIGHTS", help="run this fine-tuned detector first (detect, then segment)")
    p.add_argument("--coco", type=Path, default=None, help="COCO json whose image ids the results should use (e.g. coco/test.json)")
    p.add_argument("--min-score", type=float, default=0.0, help="skip --boxes-from detections below this score (default: %(default)s)")
    p.add_argument("--conf", type=float, default=0.25, help="--detector confidence threshold (default: %(default)s)")
    p.add_argument("--max-det", type=int, default=100,
                   help="--detector / --boxes-from: segment the N highest-scored boxes of each image (default: "
                   "%(default)s, COCO's limit)")
    p.add_argument("--imgsz", type=int, default=None,
                   help="--detector image size (default: the size the detector was trained at)")
    p.add_argument("--category-id", type=int, default=1, help="category_id written for --box/--point masks (default: %(default)s)")
    p.add_argument("--finetuned", type=Path, default=None, help="best.pt from `segment train` (decoder on top of --checkpoint)")
    p.add_argument("--out", type=Path, default=Path("runs/segment/predict"), help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(p, None)
    p.set_defaults(func=_predict)
    return parser


# ---------------------------------------------------------------- commands


def _train(args: argparse.Namespace) -> int:
    from defectkit.segment.train import TrainConfig, train

    cfg = TrainConfig(
        data=args.data, out=args.out, model=args.model, checkpoint=args.checkpoint,
        random_weights=args.random_weights, seed=args.seed, epochs=args.epochs, batch=args.batch, lr=args.lr,
        weight_decay=args.weight_decay, device=args.device, resume=args.resume, overwrite=args.overwrite,
        points=args.points, neg_points=args.neg_points, box_jitter=args.box_jitter,
        train_prompt_encoder=args.train_prompt_encoder, loss=args.loss, max_pos_weight=args.max_pos_weight,
        mask_loss=args.mask_loss, mask_points=args.mask_points, images_per_step=args.images_per_step,
        cache_dir=args.cache_dir, no_cache=args.no_cache, val_split=args.val_split, validate=args.validate,
        select_metric=args.select_metric, amp=args.amp, encode_batch=args.encode_batch, max_steps=args.max_steps,
        progress=not args.quiet,
    )
    for name in ("epochs", "batch", "encode_batch", "images_per_step", "mask_points"):
        if getattr(cfg, name) < 1:
            raise DefectkitError(f"--{name.replace('_', '-')} must be >= 1")
    train(cfg)
    return 0


def _segmenter(args: argparse.Namespace, use_cache: bool):
    """``load_segmenter`` for --model/--checkpoint/--finetuned/--cache-dir: (segmenter, base SAM's
    decoder weights when --finetuned replaced them, else None)."""
    from defectkit.segment.embeddings import default_cache_dir
    from defectkit.segment.predict import load_segmenter

    cache = (args.cache_dir or default_cache_dir()) if use_cache else None
    return load_segmenter(
        args.model, checkpoint=args.checkpoint, random_weights=args.random_weights, seed=args.seed,
        device=args.device, finetuned=args.finetuned, cache_dir=cache, amp=args.amp,
    )  # fmt: skip


def _val(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.overwrite:
        raise DefectkitError(f"{args.out}: already exists; pass --overwrite to replace it")
    from defectkit.segment.data import coco_json_for, read_sam_jsonl, split_jsonl
    from defectkit.segment.train import format_metrics
    from defectkit.segment.val import BASE, FINETUNED, val_split, write_val

    records = read_sam_jsonl(split_jsonl(args.data, args.split))
    coco = coco_json_for(args.data, args.split)
    segmenter, base_state = _segmenter(args, use_cache=not args.no_cache)
    scored = val_split(segmenter, records, coco, base_state, progress=True)
    print(f"base SAM   {args.split}: {format_metrics(scored[BASE][1])}")
    if FINETUNED in scored:
        print(f"fine-tuned {args.split}: {format_metrics(scored[FINETUNED][1])}")
    write_val(args.out, args.split, f"SAM on {args.data.resolve().parent.name} / {args.split}", scored)
    print(f"wrote {args.out / 'report.md'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    kinds = [bool(args.box or args.point), args.boxes_from is not None, args.detector is not None]
    if sum(kinds) != 1:
        raise DefectkitError("give one kind of prompt: --box/--point, --boxes-from PRED.json, or --detector WEIGHTS")
    if args.out.exists() and not args.overwrite:
        raise DefectkitError(f"{args.out}: already exists; pass --overwrite to replace it")
    if args.max_det < 1:
        raise DefectkitError("--max-det must be >= 1")
    from defectkit.segment.predict import RESULTS_FILE, segment_images
    from defectkit.segment.prompts import parse_box, parse_point

    segmenter, _ = _segmenter(args, use_cache=args.cache_dir is not None)
    results = segment_images(
        segmenter, args.image, args.out, boxes=[parse_box(b) for b in args.box],
        points=[parse_point(p) for p in args.point], boxes_from=args.boxes_from, detector=args.detector,
        coco=args.coco, min_score=args.min_score, conf=args.conf, max_det=args.max_det, imgsz=args.imgsz,
        device=args.device, category_id=args.category_id, overwrite=True, progress=not args.quiet,
    )  # fmt: skip
    n_masks, n_images = len(results), len(list((args.out / "masks").iterdir()))
    print(f"wrote {n_masks} mask{'s' * (n_masks != 1)} for {n_images} image{'s' * (n_images != 1)} to "
          f"{args.out} (masks/, overlays/, {RESULTS_FILE})")
    return 0


COORDINATE_OPTIONS = ("--box", "--point")


def join_negative_coordinates(argv: list[str]) -> list[str]:
    """``--box -1,0,5,5`` -> ``--box=-1,0,5,5``: argparse takes a value starting with ``-`` for an
    option, so a negative coordinate would fail with a usage dump instead of the message that names
    the image and says the box is outside it.

    >>> join_negative_coordinates(["--box", "-1,0,5,5", "--point", "3,4", "--seed", "-2"])
    ['--box=-1,0,5,5', '--point', '3,4', '--seed', '-2']
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if tok in COORDINATE_OPTIONS and re.fullmatch(r"-[\d.][\d.,eE+-]*", nxt):
            out.append(f"{tok}={nxt}")
            i += 2
        else:
            out.append(tok)
            i += 1
    return out


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(join_negative_coordinates(argv))
    return args.func(args)


if __name__ == "__main__":
    main()
