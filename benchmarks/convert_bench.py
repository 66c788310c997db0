"""convert-mvtec ``--to all`` against the I/O floor: decoding every image and mask once.

Both are measured in the same run, alternating, several repeats; the medians and their ratios are
printed. The floor decodes with the same reader (defectkit.core.imageio) the converter uses, one file
after another (a bare ``cv2.imdecode`` floor is timed too, to show what the reader's checks cost); the converter is timed with 1 decoding thread (like for like) and with its default
(up to 2 threads), and the 2-thread floor is printed too so the parallel figure is not flattered.

    python benchmarks/convert_bench.py                       # 1024x1024, 20 images per defect type
    python benchmarks/convert_bench.py --size 256 --n-per-defect 4 --repeats 3   # quick
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from defectkit.convert import convert_category
from defectkit.convert.reader import scan_category
from defectkit.core.imageio import read_image, read_mask
from defectkit.sample import write_category


def decode_all(folder: Path, threads: int = 1, bare: bool = False) -> int:
    """The I/O floor: decode every image and every mask of the category once.

    ``bare`` decodes with plain ``cv2.imdecode`` instead of defectkit.core.imageio, leaving out its
    structure checks (PNG CRCs), so their cost shows and cannot flatter the ratio.
    """
    source = scan_category(folder)
    paths = [(folder / img.file_name, False) for img in source.images]
    paths += [(folder / img.mask, True) for img in source.images if img.mask]

    def decode(item):
        path, is_mask = item
        if bare:
            flag = cv2.IMREAD_GRAYSCALE if is_mask else cv2.IMREAD_UNCHANGED
            return cv2.imdecode(np.fromfile(path, np.uint8), flag).size
        return read_mask(path).size if is_mask else read_image(path, mode="unchanged").size

    if threads == 1:
        return sum(map(decode, paths))
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(decode, paths))


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--n-per-defect", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", type=Path, default=None, help="reuse (or create) the generated data here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="convert_bench_"))
    data = args.data or work / "data"
    folder = data / "bench"
    if not folder.is_dir():
        write_category(
            data, "bench", size=(args.size, args.size), n_per_defect=args.n_per_defect, progress=True
        )
    source = scan_category(folder)
    n_defect = sum(1 for img in source.images if img.mask)
    print(f"category: {args.size}x{args.size}, {len(source.images)} images ({n_defect} with masks)")

    decode_all(folder)  # warm the page cache so neither side pays the first disk read
    names = ("floor-cv2", "floor", "convert-1t", "floor-2t", "convert")
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for i in range(args.repeats):  # alternate the runs so load changes hit both sides alike
        out = work / f"out{i}"
        runs = {
            "floor-cv2": lambda: decode_all(folder, 1, bare=True),
            "floor": lambda: decode_all(folder, 1),
            "convert-1t": lambda out=out: convert_category(
                data, "bench", out, ("all",), progress=False, workers=1
            ),
            "floor-2t": lambda: decode_all(folder, 2),
            "convert": lambda out=out: convert_category(
                data, "bench", out, ("all",), progress=False, overwrite=True
            ),
        }
        for k in names:
            w, c = timed(runs[k])
            wall[k].append(w)
            cpu[k].append(c)
        shutil.rmtree(out)
    for k in names:
        print(
            f"{k:11s} wall median {statistics.median(wall[k]):.2f}s (runs {' '.join(f'{t:.2f}' for t in wall[k])})"
            f"  cpu median {statistics.median(cpu[k]):.2f}s"
        )

    def ratio(a: str, b: str, t: dict[str, list[float]]) -> float:
        """Median over repeats of the per-repeat ratio (each pair ran back to back)."""
        return statistics.median(x / y for x, y in zip(t[a], t[b]))

    print(
        f"decode floor (defectkit.core.imageio) / bare cv2.imdecode  : wall {ratio('floor', 'floor-cv2', wall):.2f}x"
        f"  cpu {ratio('floor', 'floor-cv2', cpu):.2f}x"
    )
    print(
        f"convert --to all, 2 threads / bare cv2.imdecode, 1 t : wall {ratio('convert', 'floor-cv2', wall):.2f}x"
    )
    print(
        f"convert --to all, 1 thread  / decode floor, 1 thread : wall {ratio('convert-1t', 'floor', wall):.2f}x"
        f"  cpu {ratio('convert-1t', 'floor', cpu):.2f}x"
    )
    print(
        f"convert --to all, 2 threads / decode floor, 1 thread : wall {ratio('convert', 'floor', wall):.2f}x"
        f"  (goal <= 1.5x)"
    )
    print(
        f"convert --to all, 2 threads / decode floor, 2 threads: wall {ratio('convert', 'floor-2t', wall):.2f}x"
        f"  cpu {ratio('convert', 'floor-2t', cpu):.2f}x"
    )
    shutil.rmtree(work)  # the outputs, and the generated data unless --data kept it elsewhere


if __name__ == "__main__":
    main()
