"""What every benchmark here prints the same way: the load, the CPU, CPU time with children, spreads.

The benchmarks are scripts run from this folder (``python benchmarks/<name>.py``), so they import this
module by its bare name.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import platform
import resource
import statistics
import sys
from pathlib import Path


def cpu_seconds() -> float:
    """CPU time of this process and of every child it has waited for (helpers, commands)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def spread(values: list[float], digits: int = 2) -> str:
    """``min a  median b  max c`` of per-repeat values (seconds or ratios).

    >>> spread([1.0, 3.0, 2.0])
    'min 1.00  median 2.00  max 3.00'
    """
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"min {low:.{digits}f}  median {mid:.{digits}f}  max {high:.{digits}f}"


_DEFECTKIT_PACKAGES = (
    "defectkit", "defectkit.core", "defectkit.leaderboard", "defectkit.convert", "defectkit.evaluation",
    "defectkit.detect", "defectkit.segment", "defectkit.classify", "defectkit.anomaly",
)  # fmt: skip
_compiled = False


def compile_defectkit() -> None:
    """Compile defectkit's modules to bytecode where they lack it, as ``pip install`` does.

    A wheel install writes every module's ``.pyc`` at install time, and so does a library's (the
    other side of every bench). An editable install compiles on first import, unless
    ``PYTHONDONTWRITEBYTECODE`` is set (as on the project's CI and dev machines). Then every command
    recompiles our modules from source: 16 modules, about 30 ms, for every ``evaluate`` start
    (measured with ``python -v`` and cProfile), which no installed user pays.
    """
    global _compiled
    if _compiled:
        return
    for name in _DEFECTKIT_PACKAGES:
        spec = importlib.util.find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            # maxlevels=0: each package's own modules; its subpackages are listed above.
            compileall.compile_dir(folder, maxlevels=0, quiet=1)
    _compiled = True


def console_script(name: str, module: str | None = None) -> list[str]:
    """How to launch defectkit's (or a library's) console script ``name`` as a user's venv does:
    the script installed beside this interpreter, else ``python -m module``.

    Never the first ``name`` on PATH: a version manager's shim in front of it (pyenv's is a bash
    script) adds 0.05-0.15 s per start that the other side, launched as ``sys.executable``, does
    not pay (measured: ``evaluate`` through pyenv's shim 0.64 s median, the script itself 0.50 s).
    """
    compile_defectkit()
    exe = Path(sys.executable).with_name(name)
    if exe.is_file():
        return [str(exe)]
    if module is None:
        raise SystemExit(f"{exe}: no such console script beside {sys.executable}")
    return [sys.executable, "-m", module]
