"""Tune glibc's malloc for a short command that allocates many numpy arrays of 0.1-30 MB.

By default glibc serves each block over 128 KB with its own ``mmap`` (the threshold then grows only
as such blocks are freed) and hands freed memory at the top of its heap back to the system past
128 KB. A command that makes and drops thousands of megabyte-sized arrays (RLE checks, IoU
tables, stacked masks) then faults every page of every temporary in again: ``evaluate detection``
on 1,500 images (segm) took 35,600 page faults, 15,700 with the settings below, and 0.51 s instead
of 0.58 s (medians of 9 alternating pairs, benchmarks/RESULTS.md); ``convert-mvtec``, which
decodes one 3 MB image after another, took 2.72 s instead of 3.12 s on one thread (1.15x; 1.05x on
two). No library sets this for a process; numpy leaves allocation to malloc, so it is set here, and
only by commands that end within seconds to minutes (freed memory is kept for reuse instead of
returned: a process's peak RSS is unchanged, its resident size between peaks is not).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Serve blocks up to ``mmap_threshold`` bytes from the heap and keep up to ``trim_threshold``
    bytes of freed memory for reuse (glibc's ``mallopt``); False where the C library is not glibc
    (musl, macOS, Windows), where nothing is changed.

    >>> keep_freed_memory() in (True, False)
    True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The symbols already loaded in this process (libc among them): no library search, which
        # ctypes.util.find_library would do by running ldconfig.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no glibc: musl has no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; glibc caps the mmap threshold at 32 MB on 64-bit systems.
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
