"""The umbrella command: ``defectkit sample`` (and ``demo`` / ``benchmark`` as they land)."""

from __future__ import annotations

import argparse
from pathlib import Path

from defectkit.errors import cli_entry


def _sample(args: argparse.Namespace) -> int:
    from defectkit.sample import write_category, write_sample

    if args.size is None and args.n_per_defect is None:
        paths = write_sample(args.out, overwrite=args.overwrite, seed=args.seed)
    else:
        size = args.size or 256
        paths = [
            write_category(
                args.out,
                args.category,
                size=(size, size),
                n_per_defect=args.n_per_defect or 4,
                seed=args.seed,
                overwrite=args.overwrite,
                progress=True,
            )
        ]
    for p in paths:
        print(f"wrote {p}")
    return 0


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
    p.add_argument("--out", type=Path, default=Path("datasets/sample"), help="folder to write into (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same bytes (default: %(default)s)")
    p.add_argument("--size", type=int, default=None, help="write one square category of this size instead of the bundled pair")
    p.add_argument("--n-per-defect", type=int, default=None, help="images per defect type for a custom category (default 4)")
    p.add_argument("--category", default="wood", help="category name for a custom --size sample (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing sample folder")
    p.set_defaults(func=_sample)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    main()
