"""detect: fine-tune and evaluate YOLO-World / YOLOv8 / YOLO11 defect detectors on convert-mvtec's yolo/ data.

ultralytics does the training and inference; this package adds data checks, offline safety, YOLO-World
text embeddings from a file, COCO results for the shared evaluator, and the ``detect`` command.
Importing it changes nothing in ultralytics: the stage functions enter
``detect._ultralytics.ultralytics_patched()`` while they run.
"""

from defectkit.core.lazy import lazy_exports

# Loaded on first use (core.lazy): `detect --help` and the light subcommands need no ultralytics.
_PUBLIC = {"predict_images": "defectkit.detect.predict"}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
