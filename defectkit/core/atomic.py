"""Write outputs to a temporary place and move them into place, so an interrupted run never leaves a
half-written dataset, checkpoint or report behind (and the previous output stays intact)."""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from defectkit.core.errors import DefectkitError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# tempfile makes private files (0600) and folders (0700); outputs get the modes a plain open() or
# mkdir would give them, so a converted data set or report is as readable as any other file.
# (Read once at import: os.umask can only be read by setting it, which is not thread-safe.)
_UMASK = _current_umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def remove_stale_siblings(final: Path) -> None:
    """Remove ``.<name>.tmp-<pid>-*`` / ``.<name>.old-<pid>-*`` left beside ``final`` by a run that was
    killed (kill -9, a power cut: no handler runs then). The pid in the name tells a dead run's folder
    from one a live run is still writing."""
    with contextlib.suppress(OSError):
        for sibling in final.parent.glob(f".{glob.escape(final.name)}.*-*-*"):
            kind, _, rest = sibling.name[len(final.name) + 2 :].partition("-")
            pid = rest.split("-", 1)[0]
            if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
                _remove(sibling)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _make_parent(final: Path) -> list[Path]:
    """Create ``final``'s parent folders; return those created (deepest first). One-line errors for a
    path through a file or a folder that cannot be written."""
    for parent in (final.parent, *final.parent.parents):
        if parent.exists() and not parent.is_dir():
            raise DefectkitError(f"{parent}: is a file, not a folder; choose another output path")
    created = [p for p in (final.parent, *final.parent.parents) if not p.exists()]
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DefectkitError(f"{final.parent}: cannot create the output folder ({exc.strerror})") from None
    return created


@contextlib.contextmanager
def atomic_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; on success it replaces ``final``.

    On any exception (Ctrl-C, and SIGTERM under :func:`defectkit.core.errors.cli_entry`, included)
    the temporary folder is removed and ``final`` is untouched. What a killed run left beside
    ``final`` is removed first. An existing ``final`` is replaced only when ``overwrite`` is true.

    >>> with atomic_dir("runs/report", overwrite=True) as tmp:  # doctest: +SKIP
    ...     (tmp / "metrics.json").write_text("{}")
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise DefectkitError(f"{final}: already exists; pass --overwrite to replace it")
    # Parent folders this call creates are removed again on failure: a failed run leaves nothing.
    created = _make_parent(final)
    remove_stale_siblings(final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    except OSError as exc:
        raise DefectkitError(f"{final.parent}: cannot write the output here ({exc.strerror})") from None
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in created:  # deepest first; stops at one something else has written into
            try:
                parent.rmdir()
            except OSError:
                break
        raise
    if final.exists() or final.is_symlink():
        # Two renames: the old output stays whole until the new one is complete.
        old = final.parent / f".{final.name}.old-{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}"
        final.rename(old)
        tmp.rename(final)
        _remove(old)
    else:
        tmp.rename(final)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    _make_parent(path)
    if path.is_dir():
        raise DefectkitError(f"{path}: is a folder, not a file; choose another output path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DefectkitError(f"{path.parent}: cannot write {path.name} here ({exc.strerror})") from None
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_savefig(fig, path: str | Path, **kwargs) -> Path:
    """Save a matplotlib figure atomically (PNG unless the suffix says otherwise)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **kwargs)
    return atomic_write_bytes(path, buf.getvalue())
