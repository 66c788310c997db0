"""What every benchmark here prints the same way: the load, the CPU, CPU time with children, spreads.

The benchmarks are scripts run from this folder (``python benchmarks/<name>.py``), so they import this
module by its bare name.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
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
