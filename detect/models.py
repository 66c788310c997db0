"""Open a model for training or inference and check that it is one detect can use."""

from __future__ import annotations

import pickle
from pathlib import Path

from defectkit.core.errors import DefectkitError
from defectkit.detect._ultralytics import resolve_model, ultralytics_patched
from defectkit.detect.data import YoloData

SUPPORTED_TASKS = ("detect", "segment")


@ultralytics_patched()
def open_model(model, *, verbose: bool = False):
    """An ``ultralytics.YOLO`` (``YOLOWorld`` for world models) for a path, hub name, yaml or YOLO object."""
    from ultralytics import YOLO
    from ultralytics.engine.model import Model

    if isinstance(model, Model):
        return model
    source = resolve_model(model)
    try:
        return YOLO(source, verbose=verbose)
    except FileNotFoundError as exc:
        raise DefectkitError(f"{model}: {exc}") from None
    except (
        TypeError, RuntimeError, KeyError, ValueError, AttributeError, AssertionError, pickle.UnpicklingError
    ) as exc:  # ultralytics asserts on files it cannot read (a .pth of another tool, say)
        raise DefectkitError(
            f"{model}: not a YOLO model ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None


@ultralytics_patched()
def is_world(yolo) -> bool:
    """True for a YOLO-World model (scores boxes against text embeddings)."""
    from ultralytics.nn.tasks import WorldModel

    return isinstance(getattr(yolo, "model", None), WorldModel)


def model_names(yolo) -> list[str]:
    names = getattr(yolo.model, "names", None) or {}
    return list(names.values()) if isinstance(names, dict) else list(names)


def check_task(yolo, data: YoloData, model_arg) -> None:
    """Refuse a model whose task cannot learn from ``data`` (classify/pose/obb, or seg on box labels)."""
    task = getattr(yolo, "task", None)
    if task not in SUPPORTED_TASKS:
        raise DefectkitError(f"{model_arg}: a '{task}' model; detect trains detection or segmentation models")
    if task == "segment" and data.label_kind != "polygon":
        seg_yaml = data.yaml_path.parent.parent / "yolo-seg" / data.yaml_path.name
        raise DefectkitError(
            f"{model_arg}: a segmentation model needs polygon labels, {data.yaml_path} has boxes; "
            f"use {seg_yaml} (convert-mvtec --to yolo-seg)"
        )
    if is_world(yolo) and len(data.names) > 80:
        raise DefectkitError(
            f"{data.yaml_path}: {len(data.names)} classes; YOLO-World trains at most 80 prompts at once"
        )


def run_dir_weights(run: str | Path) -> Path:
    """``<run>/weights/best.pt`` or, when given a file, the file itself."""
    run = Path(run)
    if run.is_dir():
        best = run / "weights" / "best.pt"
        if not best.is_file():
            raise DefectkitError(f"{run}: no weights/best.pt in this run folder")
        return best
    return run
