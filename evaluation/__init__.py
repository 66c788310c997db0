"""The shared evaluator: every stage's numbers come from here, so they stand side by side.

>>> from defectkit.evaluation import evaluate_detection, evaluate_masks, evaluate_classification, evaluate_anomaly
>>> from defectkit.evaluation.report import Report

See evaluation/README.md for the metrics.json schema and the CLI (``evaluate --help``).

The names below load their module on first use (PEP 562): importing one submodule, as
``evaluate detection`` does, then loads only what that scorer needs (the anomaly and mask scorers
bring OpenCV and tqdm, a tenth of a second of the command's start).
"""

from defectkit.core.lazy import lazy_exports

_PUBLIC = {
    "Report": "defectkit.evaluation.report",
    "evaluate_anomaly": "defectkit.evaluation.anomaly",
    "evaluate_classification": "defectkit.evaluation.classification",
    "evaluate_detection": "defectkit.evaluation.detection",
    "evaluate_masks": "defectkit.evaluation.masks",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
