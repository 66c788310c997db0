"""How many cores this process may use (the one count every stage's default workers start from)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on: ``os.sched_getaffinity``, which honours ``taskset`` and
    container CPU sets, or ``os.cpu_count`` where the platform lacks it (macOS, Windows).

    >>> usable_cores() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
