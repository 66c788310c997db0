"""``convert_category``: scan, split, decode each image and mask once, write the asked formats.

The whole ``<out>/<category>/`` folder is written in a temporary folder beside it and moved into
place at the end (``defectkit.core.atomic.atomic_dir``): an interrupted or failed run leaves the previous
output as it was, and an existing output is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from defectkit.convert.instances import DEFAULT_MIN_AREA, extract_instances
from defectkit.core.layout import FORMATS, MANIFEST, SPLITS, Manifest, check_unique_flat_names, classify_classes
from defectkit.convert.reader import SourceImage, extract_category, is_archive, locate_category, scan_category
from defectkit.convert.split import assign_splits, check_fractions
from defectkit.convert.writers import WRITERS, ImageRecord, WriteContext
from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import read_image, read_mask

SOURCE_DIR = "source"
"""Where an archive's category is extracted: ``<out>/<category>/source/<category>/``."""


@dataclass
class ConvertOptions:
    """How masks become instances (the numeric options of ``convert-mvtec``)."""

    min_area: int = DEFAULT_MIN_AREA
    connectivity: int = 8
    merge_distance: int = 0
    mask_threshold: int = 127
    strict: bool = False

    def check(self) -> None:
        if self.connectivity not in (4, 8):
            raise DefectkitError(f"--connectivity {self.connectivity}: must be 4 or 8")
        if self.min_area < 0:
            raise DefectkitError(f"--min-area {self.min_area}: must be >= 0")
        if self.merge_distance < 0:
            raise DefectkitError(f"--merge-distance {self.merge_distance}: must be >= 0")
        if not 0 <= self.mask_threshold <= 254:
            raise DefectkitError(
                f"--mask-threshold {self.mask_threshold}: must be in 0..254 (a pixel is defect when > it)"
            )


@dataclass
class ConvertSummary:
    """What a conversion wrote: counts per split and class, and the warnings it raised."""

    category: str
    out: Path
    formats: list[str]
    classes: list[str]
    images: dict[str, dict[str, int]]
    instances: dict[str, dict[str, int]]
    warnings: list[str] = field(default_factory=list)
    dropped_small: int = 0
    min_area: int = DEFAULT_MIN_AREA

    def table(self) -> str:
        """A plain-text table: images / instances per class (rows) and split (columns)."""
        rows = [["class", *[f"{s} img/inst" for s in SPLITS]]]
        for c in classify_classes(self.classes):
            rows.append([c, *[f"{self.images[s].get(c, 0)}/{self.instances[s].get(c, 0)}" for s in SPLITS]])
        rows.append(
            ["total", *[f"{sum(self.images[s].values())}/{sum(self.instances[s].values())}" for s in SPLITS]]
        )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))
            )
            for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def parse_formats(to: str | Iterable[str]) -> list[str]:
    """``--to`` values (repeated and/or comma-separated, ``all``) -> formats in writing order.

    >>> parse_formats(["coco,yolo", "coco"]), parse_formats("all")[:2]
    (['yolo', 'coco'], ['yolo', 'yolo-seg'])
    """
    items = [to] if isinstance(to, str) else list(to)
    asked = {p.strip() for item in items for p in str(item).split(",") if p.strip()}
    unknown = sorted(asked - set(FORMATS) - {"all"})
    if unknown:
        raise DefectkitError(
            f"--to {','.join(unknown)}: unknown format (choose from {', '.join(FORMATS)}, all)"
        )
    if not asked:
        raise DefectkitError(f"--to: no format given (choose from {', '.join(FORMATS)}, all)")
    return list(FORMATS) if "all" in asked else [f for f in FORMATS if f in asked]


def strict_error(warning: str) -> DefectkitError:
    """A warning turned error by ``--strict``: its "; what happens next" tail no longer applies.

    >>> str(strict_error("a/000.png: defect image without a mask (looked for ...); kept with no instances"))
    'a/000.png: defect image without a mask (looked for ...) [--strict]'
    """
    return DefectkitError(f"{warning.rsplit('; ', 1)[0]} [--strict]")


def decode_image(
    folder: Path, src: SourceImage, opts: ConvertOptions, *, rle: bool, polygons: bool, points: bool
) -> tuple[ImageRecord, list[str], int]:
    """Decode one image (and its mask) once: its size, its instances, warnings, components dropped."""
    image_path = folder / src.file_name
    height, width = read_image(image_path, mode="unchanged").shape[:2]
    record = ImageRecord(src.file_name, src.label, width, height)
    if src.mask is None:
        return record, [], 0
    mask_path = folder / src.mask
    mask = read_mask(mask_path, threshold=opts.mask_threshold)
    if mask.shape != (height, width):
        raise DefectkitError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is {width}x{height}"
        )
    if not mask.any():
        warning = f"{mask_path}: empty mask (no pixel > {opts.mask_threshold}); image kept with no instances"
        if opts.strict:
            raise strict_error(warning)
        return record, [warning], 0
    record.instances, dropped = extract_instances(
        mask,
        connectivity=opts.connectivity,
        merge_distance=opts.merge_distance,
        min_area=opts.min_area,
        rle=rle,
        polygons=polygons,
        points=points,
    )
    return record, [], dropped


def _check_no_overlap(final: Path, source: Path) -> None:
    final, source = final.resolve(), source.resolve()
    if final == source or source in final.parents or final in source.parents:
        raise DefectkitError(
            f"{final}: output folder overlaps the source data {source}; choose another --out"
        )


def default_workers() -> int:
    """Decoding threads: 2 where there are 2 or more cores (cv2 decoding releases the GIL)."""
    return min(2, os.cpu_count() or 1)


def convert_category(
    root: str | Path,
    category: str,
    out: str | Path,
    to: str | Iterable[str] = ("all",),
    *,
    val_frac: float = 0.2,
    test_frac: float = 0.2,
    seed: int = 0,
    min_area: int = DEFAULT_MIN_AREA,
    connectivity: int = 8,
    merge_distance: int = 0,
    mask_threshold: int = 127,
    copy: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> ConvertSummary:
    """Convert ``root/category`` (a folder in the MVTec AD layout, or an MVTec AD ``.tar.xz``) into
    ``out/category/`` in the formats ``to`` (see docs/FORMATS.md); returns the summary.

    >>> s = convert_category("datasets/sample", "wood", "datasets/converted", to=["coco"])  # doctest: +SKIP
    >>> s.instances["train"]["hole"]  # doctest: +SKIP
    3
    """
    formats = parse_formats(to)
    opts = ConvertOptions(min_area, connectivity, merge_distance, mask_threshold, strict)
    opts.check()
    check_fractions(val_frac, test_frac)
    root = Path(root)
    final = Path(out).resolve() / category
    archive = is_archive(root)
    if not archive:
        folder = locate_category(root, category)
        _check_no_overlap(final, folder)
    with atomic_dir(final, overwrite=overwrite) as tmp:
        if archive:
            folder = extract_category(root, category, tmp / SOURCE_DIR, progress=progress)
            final_source = final / SOURCE_DIR / category
        else:
            final_source = folder.resolve()
        source = scan_category(folder, category)
        warnings = list(source.warnings)
        if strict and warnings:
            raise strict_error(warnings[0])

        check_unique_flat_names([img.file_name for img in source.images], folder)
        splits = assign_splits([img.file_name for img in source.images], val_frac, test_frac, seed)
        manifest = Manifest(category, str(final_source), seed, val_frac, test_frac, source.classes, splits)
        (tmp / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")

        flags = {
            "rle": "coco" in formats or "sam" in formats,
            "polygons": "yolo-seg" in formats,
            "points": "sam" in formats,
        }
        records: dict[str, ImageRecord] = {}
        dropped = 0
        n_workers = default_workers() if workers is None else max(1, workers)
        pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None
        try:
            jobs = source.images
            run = functools.partial(decode_image, folder, opts=opts, **flags)
            results = pool.map(run, jobs) if pool else map(run, jobs)
            for record, image_warnings, n_dropped in tqdm(
                results, total=len(jobs), desc=f"convert {category}", unit="img", disable=not progress
            ):
                records[record.file_name] = record
                warnings += image_warnings
                dropped += n_dropped
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)

        ctx = WriteContext(tmp, final, folder, final_source, manifest, records, copy=copy)
        for name in formats:
            WRITERS[name](ctx)

    images = {s: {} for s in SPLITS}
    instances = {s: {} for s in SPLITS}
    for split, names in splits.items():
        for name in names:
            rec = records[name]
            images[split][rec.label] = images[split].get(rec.label, 0) + 1
            instances[split][rec.label] = instances[split].get(rec.label, 0) + len(rec.instances)
    return ConvertSummary(
        category, final, formats, source.classes, images, instances, warnings, dropped, min_area
    )
