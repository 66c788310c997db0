"""convert-mvtec ``--to all`` against the one-core decode floor, as a user runs it and as a library call.

What each side does:

- **floor**: decode every image and every mask of the category once, one after another in this
  process, with the reader the converter uses (``defectkit.core.imageio``: structure checks, then
  OpenCV). Nothing is written. It is the least any converter that looks at every pixel must do on
  one core. It runs with glibc's malloc tuned as the command tunes it (``core.malloc``: freed
  memory kept for reuse, 1.15x faster on one thread here), so the command's own tuning is
  not counted as a gain.
- **command**: the whole ``convert-mvtec CATEGORY --root R --out O --to all --quiet`` in a fresh
  process (interpreter start, imports, scan, split, decode, instances, every format written, exit),
  with the default ``--workers`` (a decoding thread per usable core) and with ``--workers 1``.
- **library**: ``convert_category(..., to=("all",))`` in this process (malloc tuned as above),
  ``workers=None`` (the default) and ``workers=1``.
- **floor as a command**: the floor in a fresh interpreter (start, imports, decode, exit): what the
  command pays before and after its work, on the floor's side.

Every repeat runs all sides back to back, in an order rotated by one each repeat so load changes
hit them alike, after a warm-up round (page cache, imports); each side's time is divided by the
floor of the same repeat, and min/median/max of those ratios are printed with the load. CPU time
counts this process (its threads included) and every command it waited for.

    python benchmarks/convert_bench.py                       # 1024x1024, 20 images per defect type
    python benchmarks/convert_bench.py --size 256 --n-per-defect 4 --repeats 5   # quick
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import console_script, cpu_seconds, load, spread
from defectkit.convert import convert_category
from defectkit.convert.pipeline import default_workers
from defectkit.convert.reader import scan_category

from defectkit.core.imageio import read_image, read_mask
from defectkit.core.malloc import keep_freed_memory
from defectkit.sample import write_category

GOAL = 0.75  # issue 14: the command at default workers, at most 0.75x the one-core floor


def decode_floor(folder: Path) -> int:
    """The floor: decode every image and every mask of the category once, on one core."""
    source = scan_category(folder)
    pixels = 0
    for img in source.images:
        pixels += read_image(folder / img.file_name, mode="unchanged").size
        if img.mask:
            pixels += read_mask(folder / img.mask).size
    return pixels


def command(data: Path, out: Path, workers: int | None) -> list[str]:
    argv = console_script("convert-mvtec", "defectkit.convert.cli") + ["bench", "--root", str(data), "--out", str(out), "--to", "all", "--quiet"]
    return argv + (["--workers", str(workers)] if workers is not None else [])


def run_command(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")




def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    w0, c0 = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - w0, cpu_seconds() - c0




def autogroup_note() -> str:
    """Linux's autogroup shares CPU time per session, not per process: where another session is
    busy, two processes of one command get no more CPU than one, and the parallel gain shrinks."""
    try:
        on = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return ""
    return "kernel.sched_autogroup_enabled=1: CPU time is shared per session, not per process" if on else ""




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--n-per-defect", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", type=Path, default=None, help="reuse (or create) the generated data here")
    args = parser.parse_args()
    keep_freed_memory()  # as convert-mvtec does: the floor and the library calls get the same malloc

    work = Path(tempfile.mkdtemp(prefix="convert_bench_"))
    data = args.data or work / "data"
    folder = data / "bench"
    if not folder.is_dir():
        write_category(data, "bench", size=(args.size, args.size), n_per_defect=args.n_per_defect, progress=True)
    source = scan_category(folder)
    n_defect = sum(1 for img in source.images if img.mask)
    megabytes = sum((folder / n).stat().st_size for img in source.images for n in (img.file_name, img.mask) if n)
    print(f"category: {args.size}x{args.size}, {len(source.images)} images ({n_defect} with masks), "
          f"{megabytes / 1e6:.0f} MB of files; default --workers here: {default_workers()}")
    print(f"python {platform.python_version()}, {platform.machine()}; before: {load()}")
    if note := autogroup_note():
        print(note)

    outs = iter(range(10**6))

    def fresh_out() -> Path:
        return work / f"out{next(outs)}"

    floor_command = [
        sys.executable,
        "-c",
        (
            f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); from pathlib import Path; "
            "from convert_bench import decode_floor, keep_freed_memory; keep_freed_memory(); "
            f"decode_floor(Path({str(folder)!r}))"
        ),
    ]
    sides = {
        "floor": lambda out: decode_floor(folder),
        "floor as a command": lambda out: run_command(floor_command),
        "command, default workers": lambda out: run_command(command(data, out, None)),
        "command, --workers 1": lambda out: run_command(command(data, out, 1)),
        "library, workers=None": lambda out: convert_category(data, "bench", out, ("all",), progress=False,
                                                              workers=None),
        "library, workers=1": lambda out: convert_category(data, "bench", out, ("all",), progress=False,
                                                           workers=1),
    }
    names = list(sides)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for repeat in range(-1, args.repeats):  # repeat -1 is the warm-up, not recorded
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for name in order:
            out = fresh_out()
            w, c = timed(lambda: sides[name](out))
            shutil.rmtree(out, ignore_errors=True)
            if repeat >= 0:
                wall[name].append(w)
                cpu[name].append(c)
        if repeat >= 0:
            print(f"repeat {repeat + 1}: " + "  ".join(f"{k} {wall[k][-1]:.2f}s" for k in names), flush=True)

    print(f"after: {load()}")
    print("seconds (wall), per side:")
    for k in names:
        print(f"  {k:26s} {spread(wall[k])}   cpu median {statistics.median(cpu[k]):.2f}s")
    print("ratio to the floor of the same repeat (wall | cpu):")
    for k in names[1:]:
        ratios = [x / f for x, f in zip(wall[k], wall["floor"])]
        cpu_ratios = [x / f for x, f in zip(cpu[k], cpu["floor"])]
        goal = f"  (goal <= {GOAL}x)" if k == "command, default workers" else ""
        print(f"  {k:26s} wall {spread(ratios)} | cpu median {statistics.median(cpu_ratios):.2f}{goal}")
    shutil.rmtree(work)  # the outputs, and the generated data unless --data kept it elsewhere


if __name__ == "__main__":
    main()
