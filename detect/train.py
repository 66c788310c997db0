"""``detect train``: check the data and model, then hand over to ultralytics' own trainer.

There is no training loop here: ultralytics trains (schedules, augmentation, EMA, AMP, DDP, resume,
its run folder with ``weights/best.pt``, ``last.pt``, ``results.csv`` and plots). defectkit adds the
checks before it starts, offline safety, and YOLO-World text embeddings from a file.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from defectkit.core.errors import DefectkitError
from defectkit.core.torchio import parse_device
from defectkit.detect import embeddings as emb
from defectkit.detect._ultralytics import check_args, trainer_for, ultralytics_patched
from defectkit.detect.data import load_data
from defectkit.detect.models import check_task, is_world, open_model

# Arguments defectkit sets itself: passing them as KEY=VALUE extras would be ambiguous.
OWN_ARGS = (
    "data",
    "model",
    "epochs",
    "imgsz",
    "batch",
    "device",
    "seed",
    "resume",
    "project",
    "name",
    "mode",
)


def parse_extra_args(items: list[str] | None) -> dict[str, Any]:
    """``["lr0=0.001", "mosaic=0", "optimizer=SGD"]`` -> typed dict, checked against ultralytics' settings.

    >>> parse_extra_args(["lr0=0.001", "cos_lr=true", "optimizer=SGD"])
    {'lr0': 0.001, 'cos_lr': True, 'optimizer': 'SGD'}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise DefectkitError(f"{item!r}: extra training arguments are KEY=VALUE (e.g. lr0=0.001)")
        out[key] = yaml.safe_load(value) if value.strip() else None
    return check_args(out, reserved=OWN_ARGS)


@ultralytics_patched()
def train(
    data: str | Path,
    model: str | Path = "yolov8s-worldv2.pt",
    *,
    epochs: int = 100,
    imgsz: int = 640,
    batch: int = 16,
    device: str | None = None,
    seed: int = 0,
    project: str | Path = "runs/detect",
    name: str = "train",
    resume: bool | str | Path = False,
    prompts: str | None = None,
    text_embeddings: str | None = None,
    exist_ok: bool = False,
    callbacks: dict[str, list] | None = None,
    quiet: bool = False,
    **extra: Any,
) -> Path:
    """Fine-tune ``model`` on the YOLO data set ``data``; returns the run folder (``weights/best.pt`` inside).

    ``text_embeddings`` (YOLO-World only): a file made by ``detect embed``, ``"random"``, or None for
    the data set's default file. ``resume``: True to continue ``<project>/<name>/weights/last.pt``,
    or the path of a ``last.pt``. ``callbacks``: ultralytics events to functions of the trainer
    (``{"on_train_epoch_end": [fn]}``). ``quiet``: ultralytics logs warnings and errors only (no
    configuration dump, no progress bars). ``extra``: further ultralytics training arguments, unchanged.
    """
    if device is not None:  # None: ultralytics picks; else checked now and spelled as ultralytics takes it
        device = parse_device(device).ultralytics
    if resume:
        if extra:
            raise DefectkitError(
                f"--resume continues with the run's own arguments; drop {', '.join(f'{k}=' for k in extra)}"
            )
        return _resume(resume, project, name, device, callbacks, quiet)
    extra = check_args(extra, reserved=OWN_ARGS)
    ds = load_data(data, splits=("train", "val"))
    yolo = open_model(model)
    _add_callbacks(yolo, callbacks)
    check_task(yolo, ds, model)
    world = is_world(yolo)
    if not world and (prompts or text_embeddings):
        raise DefectkitError(f"{model}: --prompts and --text-embeddings are for YOLO-World models only")
    args = dict(
        data=str(ds.yaml_path.resolve()),
        epochs=int(epochs),
        imgsz=int(imgsz),
        batch=batch,
        seed=int(seed),
        project=str(Path(project).resolve()),
        name=name,
        exist_ok=exist_ok,
        **extra,
    )
    check_final_batch(ds, yolo, args)
    if device is not None:
        if "," in str(device) and importlib.util.find_spec("cloudpickle") is None:
            # ultralytics' DDP launcher pickles the trainer with cloudpickle (it would try to pip-install it)
            raise DefectkitError(
                f"--device {device}: multi-GPU training needs the cloudpickle package (pip install cloudpickle)"
            )
        args["device"] = device
    if not world:  # the trainer class applies the patches in DDP workers too
        with ultralytics_patched(quiet=quiet):
            yolo.train(trainer=trainer_for(yolo.task), **args)
        return Path(yolo.trainer.save_dir)
    table = emb.resolve(text_embeddings, ds.names, ds.yaml_path.parent, prompts_spec=prompts, seed=seed)
    Path(args["project"]).mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".text_embeddings.", suffix=".pt", dir=args["project"])
    os.close(fd)
    try:  # the trainer saves the table into the run folder as it starts; tmp is for DDP workers
        with emb.training_embeddings(table, Path(tmp)) as trainer, ultralytics_patched(quiet=quiet):
            yolo.train(trainer=trainer, **args)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return Path(yolo.trainer.save_dir)


def check_final_batch(ds, yolo, args: dict[str, Any]) -> None:
    """Refuse, before ultralytics makes a run folder, what its trainer refuses later with a traceback:
    a last batch of one image at a size under two strides (BatchNorm then sees one value per channel).
    The rule is ultralytics' own (BaseTrainer._build_train_pipeline, 8.4)."""
    batch, n_images = int(args["batch"]), len(ds.images("train"))
    if batch < 1 or n_images % batch != 1:  # batch <= 0: ultralytics' auto batch size
        return
    stride = int(max(getattr(yolo.model, "stride", [32])))
    scale = float(args.get("multi_scale", 0.0) or 0.0)
    smallest = max(stride, int(args["imgsz"] * (1 - scale))) // stride * stride
    if smallest < 2 * stride:
        raise DefectkitError(
            f"{ds.yaml_path}: {n_images} training images in batches of {batch} leave a last batch of 1 image, "
            f"which cannot train at imgsz {smallest} (BatchNorm sees one value per channel); "
            f"use another --batch, or --imgsz {2 * stride} or more"
        )


def _add_callbacks(yolo, callbacks: dict[str, list] | None) -> None:
    for event, functions in (callbacks or {}).items():
        for fn in functions:
            yolo.add_callback(event, fn)


def _resume(resume: bool | str | Path, project, name, device, callbacks=None, quiet: bool = False) -> Path:
    last = Path(project) / name / "weights" / "last.pt" if resume is True else Path(resume)
    if not last.is_file():
        raise DefectkitError(f"{last}: no checkpoint to resume (train first, or pass --resume PATH/last.pt)")
    yolo = open_model(last)
    ckpt = getattr(yolo, "ckpt", None) or {}
    if ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None:
        # ultralytics would warn and start a NEW run on its default data set (coco8, a download)
        raise DefectkitError(
            f"{last}: training to its last epoch is finished, nothing to resume (the checkpoint has no optimizer "
            "state); to train more, start a new run with --model pointing at it"
        )
    load_data(ckpt.get("train_args", {}).get("data", ""), splits=("train", "val"))  # still there and sound?
    _add_callbacks(yolo, callbacks)
    kwargs: dict[str, Any] = {"resume": True}
    if device is not None:
        kwargs["device"] = device
    try:
        if not is_world(yolo):
            with ultralytics_patched(quiet=quiet):
                yolo.train(trainer=trainer_for(yolo.task), **kwargs)
        else:
            file = last.parent.parent / emb.RUN_FILE
            with emb.training_embeddings(emb.load(file), file) as trainer, ultralytics_patched(quiet=quiet):
                yolo.train(trainer=trainer, **kwargs)
    except AssertionError as exc:  # ultralytics: "training to N epochs is finished, nothing to resume"
        raise DefectkitError(f"{last}: {str(exc).splitlines()[0]}") from None
    return Path(yolo.trainer.save_dir)
