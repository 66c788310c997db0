"""``detect export``: ultralytics' exporter, with YOLO-World prompts baked in from the embeddings file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from defectkit.core.errors import DefectkitError
from defectkit.detect import embeddings as emb
from defectkit.detect._ultralytics import ultralytics_patched
from defectkit.detect.models import is_world, open_model

# Formats whose Python package ultralytics would otherwise try to pip-install on the spot.
NEEDS = {
    "onnx": ("onnx", "pip install onnx onnxslim"),
    "openvino": ("openvino", "pip install openvino"),
    "engine": ("tensorrt", "install TensorRT"),
    "tflite": ("tensorflow", "pip install tensorflow"),
    "saved_model": ("tensorflow", "pip install tensorflow"),
    "coreml": ("coremltools", "pip install coremltools"),
}


@ultralytics_patched()
def export(
    model,
    *,
    format: str = "onnx",
    imgsz: int | None = None,
    text_embeddings: str | None = None,
    names: list[str] | None = None,
    device: str | None = None,
    **extra,
) -> Path:
    """Export ``model`` with ultralytics; returns the exported file.

    A YOLO-World model exports with the classes it holds (a fine-tuned checkpoint carries its
    embeddings). With ``text_embeddings`` (a ``detect embed`` file) the classes and prompts of that
    file are set first (``ultralytics_patched(text_embeddings=...)``: no CLIP) and baked into the graph.
    """
    fmt = format.lower()
    if fmt in NEEDS and importlib.util.find_spec(NEEDS[fmt][0]) is None:
        raise DefectkitError(
            f"--format {fmt}: the '{NEEDS[fmt][0]}' package is not installed ({NEEDS[fmt][1]})"
        )
    yolo = open_model(model)
    if text_embeddings:
        if not is_world(yolo):
            raise DefectkitError(f"{model}: --text-embeddings is for YOLO-World models")
        table = emb.load(text_embeddings)
        with ultralytics_patched(text_embeddings=table):
            yolo.set_classes(list(names or table.names))
    kwargs = dict(format=fmt, **extra)
    if fmt == "onnx" and "simplify" not in kwargs and importlib.util.find_spec("onnxslim") is None:
        kwargs["simplify"] = False  # ultralytics would try to pip-install onnxslim for it
    if imgsz:
        kwargs["imgsz"] = imgsz
    if device is not None:
        kwargs["device"] = device
    try:
        out = yolo.export(**kwargs)
    except (ModuleNotFoundError, ImportError) as exc:
        raise DefectkitError(f"--format {fmt}: a package the exporter needs is missing ({exc})") from None
    if not out:
        raise DefectkitError(f"{model}: export to {fmt} produced no file")
    return Path(out)
