"""How long each command takes to answer ``--help``: the start-up every argument error pays too.

Each side runs a command's ``main`` with ``--help`` in a fresh interpreter. Without ``--before``,
the installed console scripts (beside this interpreter, as a venv puts them on PATH). With
``--before REV``, that revision (checked out into a temporary git worktree) and the working tree
side by side, both through the same launcher that maps the ``defectkit.*`` packages to a checkout's
folders (pyproject's package-dir), so both start alike. One warm-up round, then rounds in
alternating order; min / median / max per command, and the median ratio after / before.

    python benchmarks/startup_bench.py                      # the installed commands, 5 rounds
    python benchmarks/startup_bench.py --before 769bcdd     # that revision against the working tree
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import console_script, load

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {  # console script -> its module, and the subcommand whose --help is timed too
    "defectkit": ("defectkit.cli", None),
    "convert-mvtec": ("defectkit.convert.cli", None),
    "evaluate": ("defectkit.evaluation.cli", "detection"),
    "detect": ("defectkit.detect.cli", "train"),
    "segment": ("defectkit.segment.cli", "train"),
    "classify": ("defectkit.classify.cli", "train"),
    "anomaly": ("defectkit.anomaly.cli", "train"),
}
# Runs ``main`` of a module from the checkout in argv[1]: defectkit.<stage> -> <checkout>/<folder>.
LAUNCHER = """
import importlib, importlib.abc, importlib.util, sys
from pathlib import Path
root, folders = Path(sys.argv[1]), dict(pair.split("=") for pair in sys.argv[2].split(","))
class Checkout(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in folders:
            folder = root / folders[name]
            return importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
        return None
sys.meta_path.insert(0, Checkout())
module = sys.argv[3]
sys.argv = [module, *sys.argv[4:]]
importlib.import_module(module).main()
"""


def package_folders(checkout: Path) -> str:
    text = (checkout / "pyproject.toml").read_text()
    pairs = dict(re.findall(r'^"(defectkit(?:\.\w+)*)" = "(\w+)"$', text, flags=re.MULTILINE))
    pairs.update({"defectkit.core": "defectkit/core", "defectkit.leaderboard": "defectkit/leaderboard"})
    return ",".join(f"{k}={v}" for k, v in pairs.items())


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default: %(default)s)")
    parser.add_argument("--before", default=None, help="a git revision to time side by side with the working tree")
    args = parser.parse_args()
    cases = [(name, None) for name in COMMANDS] + [(name, sub) for name, (_, sub) in COMMANDS.items() if sub]
    with tempfile.TemporaryDirectory() as tmp:
        sides: dict[str, dict[tuple, list[str]]] = {}
        if args.before:
            old = Path(tmp) / "before"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(old), args.before], check=True)
            for tag, checkout in (("before", old), ("after", REPO)):
                folders = package_folders(checkout)
                sides[tag] = {
                    (n, s): [sys.executable, "-c", LAUNCHER, str(checkout), folders, COMMANDS[n][0], *([s] if s else []), "--help"]
                    for n, s in cases
                }
        else:
            sides["installed"] = {
                (n, s): [*console_script(n, COMMANDS[n][0]), *([s] if s else []), "--help"] for n, s in cases
            }
        try:
            print(f"startup_bench: {load()}, {args.rounds} rounds" + (f", {args.before} vs the working tree" if args.before else ""))
            runs = [(tag, case, argv) for tag, table in sides.items() for case, argv in table.items()]
            for _, _, argv in runs:  # warm-up: page cache, compiled modules
                timed(argv)
            times: dict[tuple, list[float]] = {(tag, case): [] for tag, case, _ in runs}
            for r in range(args.rounds):
                for tag, case, argv in runs if r % 2 == 0 else runs[::-1]:
                    times[(tag, case)].append(timed(argv))
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(Path(tmp) / "before")], check=False)
    for name, sub in cases:
        label = f"{name}{' ' + sub if sub else ''} --help"
        cells = []
        for tag in sides:
            v = times[(tag, (name, sub))]
            cells.append(f"{tag} {statistics.median(v):5.2f} s ({min(v):.2f}-{max(v):.2f})")
        if args.before:
            ratio = statistics.median(a / b for a, b in zip(times[("after", (name, sub))], times[("before", (name, sub))]))
            cells.append(f"after / before {ratio:.3f}")
        print(f"  {label:28s} " + "   ".join(cells))
    print(f"{load()} at the end")


if __name__ == "__main__":
    main()
