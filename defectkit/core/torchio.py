"""Torch helpers every training stage shares: device names and safe checkpoint loading."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from defectkit.core.errors import DefectkitError

# What torch.load raises for a file that is not a (safe) checkpoint: bad zip, bad pickle, a global
# refused under weights_only, truncated data.
LOAD_ERRORS = (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError, AttributeError, KeyError)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; a named device that is missing is a one-line error.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DefectkitError(f"--device {name}: not a device name (cpu, cuda, cuda:1, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DefectkitError(f"--device {name}: CUDA is not available on this machine")
    return dev


def load_weights_only(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming the file.

    ``what`` names the expected file in the messages ("checkpoint", "text-embeddings file", ...).
    """
    path = Path(path)
    if not path.is_file():
        raise DefectkitError(f"{path}: no such {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message is a page of advice to load the file unsafely; the user needs one line.
        raise DefectkitError(
            f"{path}: not a loadable {what} (it holds Python objects, not plain tensors: "
            f"written by another tool?)"
        ) from None
    except LOAD_ERRORS as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise DefectkitError(f"{path}: not a loadable {what} ({type(exc).__name__}: {first})") from None
