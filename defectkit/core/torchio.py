"""Torch helpers every training stage shares: the ``--device`` parser, the multi-GPU (torchrun) set-up
and safe checkpoint saving and loading."""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from defectkit.core.atomic import atomic_write_bytes
from defectkit.core.errors import DefectkitError

# What torch.load raises for a file that is not a (safe) checkpoint: bad zip, bad pickle, a global
# refused under weights_only, truncated data.
LOAD_ERRORS = (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError, AttributeError, KeyError)


DEVICE_NAMES = "cpu, 0, 0,1, cuda:N, mps or auto"


@dataclass(frozen=True)
class Device:
    """A ``--device`` value, parsed once and spelled the way each library takes it.

    ``kind`` is ``cpu``, ``mps`` or ``cuda``; ``gpus`` lists the CUDA indices (several for
    multi-GPU training), empty otherwise. ultralytics takes GPU index lists (``0,1``), torch a
    single ``cuda:N``: :attr:`ultralytics` and :attr:`torch` give both renderings.

    >>> gpus = parse_device("0,1", check=False)
    >>> gpus.ultralytics, gpus.torch, gpus.multi_gpu
    ('0,1', 'cuda:0', True)
    >>> one = parse_device("cuda:1", check=False)
    >>> one.ultralytics, one.torch, one.multi_gpu
    ('1', 'cuda:1', False)
    >>> parse_device("cpu").ultralytics, parse_device("cpu").torch
    ('cpu', 'cpu')
    """

    kind: str
    gpus: tuple[int, ...] = ()

    @property
    def ultralytics(self) -> str:
        """``cpu``, ``mps`` or the GPU index list ultralytics takes (``0``, ``0,1``)."""
        return ",".join(map(str, self.gpus)) if self.kind == "cuda" else self.kind

    @property
    def torch(self) -> str:
        """``cpu``, ``mps`` or ``cuda:N`` as torch takes it; a GPU list gives its first GPU (under
        torchrun each process takes its own, see :func:`init_distributed`)."""
        return f"cuda:{self.gpus[0]}" if self.kind == "cuda" else self.kind

    @property
    def multi_gpu(self) -> bool:
        return len(self.gpus) > 1


def parse_device(name: str | int | None, *, check: bool = True) -> Device:
    """The one ``--device`` parser of every stage and the leaderboard.

    Accepted: ``cpu``, ``mps``, a CUDA index (``0``), a list (``0,1``), ``cuda``, ``cuda:N`` (also
    in lists, ``cuda:0,cuda:1``), and ``auto``, None or ``""``: the first GPU when CUDA is present,
    else the CPU. A name that is none of these is a one-line DefectkitError; so is, with ``check``,
    a device this machine does not have (checked before any work starts, not minutes later).

    >>> parse_device(" CUDA:0 , 1", check=False)
    Device(kind='cuda', gpus=(0, 1))
    >>> parse_device("gpu")
    Traceback (most recent call last):
    defectkit.core.errors.DefectkitError: --device gpu: not a device (cpu, 0, 0,1, cuda:N, mps or auto)
    """
    text = "" if name is None else str(name).strip().lower().replace(" ", "")
    if text in ("", "auto"):
        return Device("cuda", (0,)) if torch.cuda.is_available() else Device("cpu")
    if text in ("cpu", "mps"):
        device = Device(text)
    else:
        ids = ["0" if part == "cuda" else part.removeprefix("cuda:") for part in text.split(",")]
        if not all(i.isdigit() for i in ids):
            raise DefectkitError(f"--device {name}: not a device ({DEVICE_NAMES})")
        device = Device("cuda", tuple(dict.fromkeys(int(i) for i in ids)))
    if check:
        _check_available(device, name)
    return device


def _check_available(device: Device, name: str | int | None) -> None:
    if device.kind == "mps" and not torch.backends.mps.is_available():
        raise DefectkitError(f"--device {name}: Apple MPS is not available on this machine")
    if device.kind != "cuda":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise DefectkitError(f"--device {name}: no CUDA GPU on this machine; use --device cpu")
    missing = [i for i in device.gpus if i >= count]
    if missing:
        raise DefectkitError(f"--device {name}: GPU {missing[0]} does not exist (this machine has {count})")


def resolve_device(name: str | int | None) -> torch.device:
    """The torch device of a ``--device`` value (see :func:`parse_device`).

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    return torch.device(parse_device(name).torch)


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in a torchrun job (world 1, rank 0 when run alone) and its device."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, prints and writes."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for when run alone)."""
        if self.world > 1:
            dist.barrier()


def init_distributed(device: str | int | None) -> Distributed:
    """The one multi-GPU set-up of the training stages (``torchrun --nproc_per_node N ...``).

    Alone (WORLD_SIZE unset or 1): the parsed ``device``. Under torchrun: join the process group
    (NCCL on GPUs, gloo on the CPU) and take the GPU of this process' LOCAL_RANK, whatever index
    ``device`` names (torchrun hands out the GPUs).

    >>> init_distributed("cpu")
    Distributed(world=1, rank=0, local_rank=0, device=device(type='cpu'))
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = parse_device(device).kind == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Distributed(world, rank, local_rank, torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"))


# What a file torch.save wrote starts with: a zip archive (torch >= 1.6) or a pickle protocol mark
# (the legacy format). Anything else (a text file, an image, an empty file) is refused before
# torch.load, whose legacy reader fails on such input with errors like "pop from empty list".
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through a temporary file, so a checkpoint is either complete or absent."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def check_torch_file(path: str | Path, what: str = "checkpoint") -> None:
    """Raise a one-line DefectkitError unless ``path`` starts like a file ``torch.save`` wrote."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise DefectkitError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if not head.startswith(_TORCH_MAGIC):
        raise DefectkitError(f"{path}: not a loadable {what} (not a file torch.save wrote{'; it is empty' if not head else ''})")


def load_weights_only(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming the file.

    ``what`` names the expected file in the messages ("checkpoint", "text-embeddings file", ...).
    """
    path = Path(path)
    if not path.is_file():
        raise DefectkitError(f"{path}: no such {what}")
    check_torch_file(path, what)
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
