"""detect: fine-tune and evaluate YOLO-World / YOLOv8 / YOLO11 defect detectors on convert-mvtec's yolo/ data.

ultralytics does the training and inference; this package adds data checks, offline safety, YOLO-World
text embeddings from a file, COCO results for the shared evaluator, and the ``detect`` command.
Importing it changes nothing in ultralytics: the stage functions enter
``detect._ultralytics.ultralytics_patched()`` while they run.
"""

from defectkit.detect.predict import predict_images

__all__ = ["predict_images"]
