"""convert-mvtec: convert one MVTec AD-layout category into YOLO, YOLO-seg, COCO, SAM and class folders."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from defectkit.convert.instances import DEFAULT_MIN_AREA
from defectkit.core.layout import FORMATS
from defectkit.convert.pipeline import convert_category, default_workers
from defectkit.core.malloc import keep_freed_memory
from defectkit.convert.reader import default_root
from defectkit.convert.registry import MVTEC_AD_URL, known_categories
from defectkit.convert.split import DEFAULT_TEST_FRAC, PROTOCOL_CHOICES, PROTOCOLS
from defectkit.core.errors import cli_entry

EPILOG = f"""\
outputs (under OUT/CATEGORY/, see docs/FORMATS.md):
  split.json           the train/val/test manifest every format follows (and its --protocol)
  yolo/                ultralytics detection data set (data.yaml, images/, labels/)
  yolo-seg/            the same with polygon labels (holes bridged in)
  coco/<split>.json    COCO instances with RLE masks
  sam/<split>.jsonl    a line per image: boxes, interior points and masks as SAM prompts
  classify/<split>/<class>/   ImageFolder layout (good + defect types)

known MVTec AD categories: {", ".join(known_categories())}
(any other folder in the same layout works too). Get the data at {MVTEC_AD_URL}

split protocols (--protocol; docs/PROTOCOLS.md gives the papers and the numbers each makes comparable):
{chr(10).join(
    textwrap.fill(f"{name + (':K' if name == 'fewshot' else ''):<18} {info.rule} [{info.citation}]",
                  100, initial_indent="  ", subsequent_indent=" " * 21, break_on_hyphens=False)
    for name, info in PROTOCOLS.items()
)}

example:
  convert-mvtec wood --root datasets/sample --to all
  convert-mvtec wood --root ~/Downloads/wood.tar.xz --to yolo,coco --merge-distance 6
  convert-mvtec wood --protocol fewshot:10 --seed 1     # DRA/AHL's ten-shot general setting, run 2 of 3
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="convert-mvtec",
        description="Convert one category in the MVTec AD layout (a folder, or the official .tar.xz) into "
        "training data: each connected component of a ground-truth mask becomes one instance of the "
        "defect folder's class, and the test images are split into train/val/test (stratified, seeded).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("category", help="category folder name, e.g. wood, bottle, or a custom one")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="folder holding CATEGORY/, or an MVTec AD archive (CATEGORY.tar.xz or the whole "
        "mvtec_anomaly_detection.tar.xz; the category is extracted once into OUT/CATEGORY/source/). "
        "Default: $DEFECTKIT_DATA_ROOT, else datasets/mvtec_anomaly_detection",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("datasets/converted"),
        help="output folder; writes OUT/CATEGORY/ (default: %(default)s)",
    )
    p.add_argument(
        "--to",
        action="append",
        default=None,
        metavar="FORMAT",
        help=f"format(s) to write: {', '.join(FORMATS)} or all; repeat or comma-separate (default: all)",
    )
    p.add_argument(
        "--protocol",
        default="defectkit",
        metavar="NAME",
        help=f"how the test images are split: {PROTOCOL_CHOICES} (see below and docs/PROTOCOLS.md; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--val-frac",
        type=float,
        default=0.2,
        help="defectkit: fraction of each test folder put in val; anomalydiffusion: of each defect type's "
        "training third and of train/good; fewshot:K: of train/good (default: %(default)s)",
    )
    p.add_argument(
        "--test-frac",
        type=float,
        default=None,
        help="defectkit protocol only: fraction of each test folder kept for test "
        f"(default: {DEFAULT_TEST_FRAC}); the rest and all of train/good go to train. "
        "The other protocols fix their test set by their rule",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the split (and of fewshot's draw of K); same arguments, same output "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--min-area",
        type=int,
        default=DEFAULT_MIN_AREA,
        help="drop instances of fewer pixels (stray specks); 1 keeps all (default: %(default)s)",
    )
    p.add_argument(
        "--connectivity",
        type=int,
        choices=(4, 8),
        default=8,
        help="pixel connectivity of a component (default: %(default)s)",
    )
    p.add_argument(
        "--merge-distance",
        type=int,
        default=0,
        metavar="PX",
        help="join components closer than about PX pixels into one instance, e.g. a broken scratch (default: 0, off)",
    )
    p.add_argument(
        "--mask-threshold",
        type=int,
        default=127,
        metavar="T",
        help="a mask pixel is defect when its grey value is > T; the midpoint also suits noisy JPEG masks (default: %(default)s)",
    )
    p.add_argument(
        "--copy", action="store_true", help="copy images instead of linking them (hard link, else symlink)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT/CATEGORY/ (it is replaced only once the new one is complete)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings (image without mask, mask without image, empty mask, missing defect folder) as errors",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="threads that decode images and masks in parallel; the output is the same for any N; 1 "
        f"converts on this thread alone (default: one per usable core, here {default_workers()})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # a 3 MB array per decoded image, each faulted in afresh otherwise (core.malloc)
    summary = convert_category(
        args.root if args.root is not None else default_root(),
        args.category,
        args.out,
        to=args.to or ["all"],
        val_frac=args.val_frac,
        test_frac=args.test_frac,
        seed=args.seed,
        protocol=args.protocol,
        min_area=args.min_area,
        connectivity=args.connectivity,
        merge_distance=args.merge_distance,
        mask_threshold=args.mask_threshold,
        copy=args.copy,
        overwrite=args.overwrite,
        strict=args.strict,
        progress=not args.quiet,
        workers=args.workers,
    )
    print(f"wrote {summary.out} ({', '.join(summary.formats)})")
    print(summary.table())
    print(summary.protocol_line())
    if summary.dropped_small:
        print(f"dropped {summary.dropped_small} component(s) under --min-area {summary.min_area} pixels")
    if summary.warnings:
        print(f"{len(summary.warnings)} warning(s):")
        for w in summary.warnings:
            print(f"  warning: {w}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    main()
