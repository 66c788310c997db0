"""``convert_category``: scan, split, decode each image and mask once, write the asked formats.

Decoding and the per-image instance work run on several threads (``workers``; one per usable core
by default): they are nearly all of a conversion's time, and OpenCV's PNG decoder, most of that,
releases the GIL. Threads return small records (sizes, boxes, RLE strings, polygons) that are taken
in the order of the images; this thread alone writes, so the output is the same bytes whatever the
number of workers.

The whole ``<out>/<category>/`` folder is written in a temporary folder beside it and moved into
place at the end (``defectkit.core.atomic.atomic_dir``): an interrupted or failed run leaves the previous
output as it was, and an existing output is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

from defectkit.convert.instances import DEFAULT_MIN_AREA, extract_instances
from defectkit.core.layout import FORMATS, MANIFEST, SPLITS, Manifest, check_unique_flat_names, classify_classes
from defectkit.convert.reader import SourceImage, extract_category, is_archive, locate_category, scan_category
from defectkit.convert.split import Protocol, assign_splits, check_fractions, parse_protocol
from defectkit.convert.split import resolve_test_frac
from defectkit.convert.writers import WRITERS, ImageRecord, WriteContext
from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import read_image, read_mask
from defectkit.core.parallel import usable_cores

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
    protocol: Protocol = field(default_factory=Protocol)
    seed: int = 0

    def protocol_line(self) -> str:
        """The split protocol, its seed and citation, as convert-mvtec prints it.

        >>> s = ConvertSummary("wood", Path("w"), [], [], {}, {}, protocol=Protocol("fewshot", 5), seed=2)
        >>> s.protocol_line()
        'split protocol: fewshot:5, seed 2 (pang2019devnet,ding2022dra,zhu2024ahl; docs/PROTOCOLS.md)'
        """
        p = self.protocol
        return f"split protocol: {p.spec}, seed {self.seed} ({p.citation}; docs/PROTOCOLS.md)"

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


@contextlib.contextmanager
def _located(where: Path) -> Iterator[None]:
    """Prefix a DefectkitError raised inside with ``where``: ``--protocol`` problems are the data's
    (K larger than its defect images), so the error names the category folder like every other."""
    try:
        yield
    except DefectkitError as exc:
        raise DefectkitError(f"{where}: {exc}") from None


def _check_no_overlap(final: Path, source: Path) -> None:
    final, source = final.resolve(), source.resolve()
    if final == source or source in final.parents or final in source.parents:
        raise DefectkitError(
            f"{final}: output folder overlaps the source data {source}; choose another --out"
        )


def default_workers() -> int:
    """Decoding threads: one per core this process may run on (``core.parallel.usable_cores``)."""
    return usable_cores()


Decoded = tuple[ImageRecord, list[str], int]
"""What :func:`decode_image` returns: the record, its warnings, the components it dropped."""


def decode_all(
    folder: Path, jobs: list[SourceImage], opts: ConvertOptions, flags: dict[str, bool], workers: int
) -> Iterator[Decoded]:
    """:func:`decode_image` over ``jobs``, yielded in their order, by ``workers`` threads
    (``workers=1``: this thread alone, nothing started).

    Threads, not processes: nearly all of the time is in OpenCV's PNG decoder, which releases the
    GIL, and what holds it (the structure checks, the instances) is a small part; two threads run
    at 0.51x of one on 2 cores (benchmarks/RESULTS.md), with nothing to start (a spawned process
    took a quarter of a second of a core to import OpenCV and numpy) and nothing to pickle.

    Results are yielded in the order of ``jobs``, so an error surfaces where it would on one
    thread: the first bad image in order. On an error, Ctrl-C or SIGTERM, the images not yet started
    are dropped and the running ones (one per thread) finish before the exception goes on: nothing
    still runs when the caller removes its temporary folder.
    """
    run = functools.partial(decode_image, folder, opts=opts, **flags)
    workers = min(workers, len(jobs))
    if workers <= 1:
        yield from map(run, jobs)
        return
    # One image per thread and one thread per core: OpenCV's own pool (connected components,
    # dilation, distance transform) would put N x N threads on N cores.
    own_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="convert-decode")
    try:
        # Every image is queued at once: a future and its record are small (sizes, boxes, RLE strings).
        futures = [pool.submit(run, src) for src in jobs]
        for future in futures:
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(own_threads)


def convert_category(
    root: str | Path,
    category: str,
    out: str | Path,
    to: str | Iterable[str] = ("all",),
    *,
    val_frac: float = 0.2,
    test_frac: float | None = None,
    seed: int = 0,
    protocol: str | Protocol = "defectkit",
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

    ``protocol``: how the test images are split (``defectkit``, ``anomalydiffusion`` or
    ``fewshot:K``; docs/PROTOCOLS.md); ``test_frac`` (default 0.2) is for ``defectkit`` only, the
    others fix their test set by their rule. Every format follows the one split, written to split.json.

    ``workers``: threads that decode images and masks (None, the default: one per usable core;
    1: this thread alone). The output is the same bytes for any number.

    >>> s = convert_category("datasets/sample", "wood", "datasets/converted", to=["coco"])  # doctest: +SKIP
    >>> s.instances["train"]["hole"]  # doctest: +SKIP
    3
    """
    formats = parse_formats(to)
    if workers is not None and workers < 1:
        raise DefectkitError(f"--workers {workers}: must be at least 1")
    opts = ConvertOptions(min_area, connectivity, merge_distance, mask_threshold, strict)
    opts.check()
    root = Path(root)
    final = Path(out).resolve() / category
    archive = is_archive(root)
    if not archive:
        folder = locate_category(root, category)
        _check_no_overlap(final, folder)
    where = root if archive else folder  # what a protocol error names: the data the user pointed at
    with _located(where):
        protocol = parse_protocol(protocol)
    test_frac = resolve_test_frac(protocol, test_frac)
    check_fractions(val_frac, test_frac)
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
        with _located(where):  # fewshot:K with more shots than defect images
            names = [img.file_name for img in source.images]
            splits = assign_splits(names, val_frac, test_frac, seed, protocol)
        manifest = Manifest(
            category, str(final_source), seed, val_frac, test_frac, source.classes, splits,
            protocol.spec, protocol.params, protocol.citation,
        )  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")

        flags = {
            "rle": "coco" in formats or "sam" in formats,
            "polygons": "yolo-seg" in formats,
            "points": "sam" in formats,
        }
        records: dict[str, ImageRecord] = {}
        ctx = WriteContext(tmp, final, folder, final_source, manifest, records, copy=copy)
        writers = [WRITERS[name] for name in formats]
        for writer in writers:
            writer.prepare(ctx)
        splits_of: dict[str, list[str]] = {}  # fewshot:K puts its K shots in train and in val
        for split in SPLITS:
            for name in splits[split]:
                splits_of.setdefault(name, []).append(split)
        dropped = 0
        results = decode_all(folder, source.images, opts, flags, workers or default_workers())
        try:
            bar = tqdm(
                results, total=len(source.images), desc=f"convert {category}", unit="img", disable=not progress
            )
            for record, image_warnings, n_dropped in bar:
                records[record.file_name] = record
                warnings += image_warnings
                dropped += n_dropped
                # This image's files now, while the threads decode the next ones (see writers).
                for split in splits_of.get(record.file_name, ()):
                    for writer in writers:
                        writer.image(ctx, split, record)
        finally:
            results.close()  # stops the decoding threads now, on an error or an interrupt too

        for writer in writers:
            writer.finish(ctx)

    images = {s: {} for s in SPLITS}
    instances = {s: {} for s in SPLITS}
    for split, names in splits.items():
        for name in names:
            rec = records[name]
            images[split][rec.label] = images[split].get(rec.label, 0) + 1
            instances[split][rec.label] = instances[split].get(rec.label, 0) + len(rec.instances)
    return ConvertSummary(
        category, final, formats, source.classes, images, instances, warnings, dropped, min_area,
        protocol, seed,
    )  # fmt: skip
