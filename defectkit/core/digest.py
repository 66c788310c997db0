"""The one file digest: SHA-256 of a file's bytes (checkpoints and split manifests in run records,
image keys of the embedding cache)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from defectkit.core.errors import DefectkitError

CHUNK = 1 << 20  # read 1 MiB at a time: a multi-GB checkpoint never sits in memory whole


def sha256_file(path: str | Path) -> str:
    """The SHA-256 hex digest of the file at ``path`` (chunked, so Python 3.10 needs no
    ``hashlib.file_digest``); a missing or unreadable file is a one-line DefectkitError.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as fh:
    ...     _ = fh.write(b"abc")
    >>> sha256_file(fh.name)
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    >>> import os; os.remove(fh.name)
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DefectkitError(f"{path}: cannot read for its digest ({exc.strerror or exc})") from None
    return digest.hexdigest()
