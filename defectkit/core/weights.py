"""Fetch model weights without ever hanging when the network is missing.

Users have internet, so the real download addresses stay; offline, a fetch fails within
``timeout`` seconds with a message that says where to get the file and which option takes a path.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from defectkit.core.atomic import atomic_write_bytes
from defectkit.core.errors import DefectkitError


def cache_dir() -> Path:
    """Where downloaded weights live: ``$DEFECTKIT_CACHE`` or ``~/.cache/defectkit``."""
    return Path(os.environ.get("DEFECTKIT_CACHE", Path.home() / ".cache" / "defectkit"))


def fetch(url: str, dest: str | Path | None = None, *, timeout: float = 10.0, hint: str = "") -> Path:
    """Return a local copy of ``url``: the cached file if present, else download it (atomically).

    Raises DefectkitError within about ``timeout`` seconds when the download fails, naming the URL
    and ``hint`` (for example "pass --checkpoint PATH").
    Set ``DEFECTKIT_OFFLINE=1`` to refuse every download at once.
    """
    dest = Path(dest) if dest is not None else cache_dir() / Path(url).name
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    advice = f"download {url} yourself" + (f" and {hint}" if hint else "")
    if os.environ.get("DEFECTKIT_OFFLINE", "") not in ("", "0"):
        raise DefectkitError(f"{dest}: not on disk and DEFECTKIT_OFFLINE is set; {advice}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = resp.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DefectkitError(
            f"{dest}: not on disk and could not be downloaded ({reason}); {advice}"
        ) from None
    return atomic_write_bytes(dest, data)
