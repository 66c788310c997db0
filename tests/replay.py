"""Replay a benchmark row's recorded commands (``run.json["rows"][row]``) in a fresh folder and
compare the metrics.json files they rebuild with the recorded ones: what
defectkit/leaderboard/README.md ("Reproduce a row") tells users to do by hand.

The fresh folder gets what the commands start from, hard-linked: the converted data set
(``data/``), the embedding cache (``cache/``) and the row's checkpoints; no prediction, report or
metrics file of the run. The commands run in order from it, with the installed console scripts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

TOLERANCE = 1e-9


def console_script(name: str) -> str:
    """The installed console script ``name`` beside this Python (a venv's bin/), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    assert found, f"console script {name!r} is not installed"
    return found


def _link_tree(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=os.link, symlinks=True)


def replay_row(run: Path, row: str, into: Path) -> list[tuple[str, dict, dict]]:
    """Rebuild ``row`` in ``into``; returns (metrics path, recorded, rebuilt) for each metrics file."""
    entry = json.loads((run / "run.json").read_text())["rows"][row]
    into.mkdir(parents=True)
    _link_tree(run / "data", into / "data")
    _link_tree(run / "cache", into / "cache")
    for ck in entry["checkpoints"]:
        (into / ck).parent.mkdir(parents=True, exist_ok=True)
        os.link(run / ck, into / ck)
    for argv in entry["commands"]:
        done = subprocess.run([console_script(argv[0]), *argv[1:]], cwd=into, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{row}: {' '.join(argv)} failed:\n{done.stderr[-3000:]}"
    return [
        (m, json.loads((run / m).read_text()), json.loads((into / m).read_text()))
        for m in [entry["metrics"], *entry["more_metrics"]]
    ]


def number_differences(recorded, rebuilt, where: str = "") -> list[str]:
    """Every place where two JSON documents differ in structure or by more than TOLERANCE in a
    number (strings such as file paths may differ: the run folders do).

    >>> number_differences({"a": [1.0, "x"], "b": 2}, {"a": [1.0 + 1e-12, "y"], "b": 2.5})
    ['b: 2 != 2.5']
    """
    if isinstance(recorded, dict) and isinstance(rebuilt, dict):
        if recorded.keys() != rebuilt.keys():
            return [f"{where}: keys {sorted(recorded)} != {sorted(rebuilt)}"]
        return [d for k in recorded for d in number_differences(recorded[k], rebuilt[k], f"{where}.{k}".lstrip("."))]
    if isinstance(recorded, list) and isinstance(rebuilt, list):
        if len(recorded) != len(rebuilt):
            return [f"{where}: {len(recorded)} items != {len(rebuilt)}"]
        return [d for i, (a, b) in enumerate(zip(recorded, rebuilt)) for d in number_differences(a, b, f"{where}[{i}]")]
    numbers = (int, float)
    if isinstance(recorded, numbers) and not isinstance(recorded, bool):
        if not isinstance(rebuilt, numbers) or isinstance(rebuilt, bool) or abs(recorded - rebuilt) > TOLERANCE:
            return [f"{where}: {recorded!r} != {rebuilt!r}"]
        return []
    if type(recorded) is not type(rebuilt) or (recorded is None) != (rebuilt is None):
        return [f"{where}: {recorded!r} != {rebuilt!r}"]
    return []
