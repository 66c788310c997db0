"""The shared evaluator: every stage's numbers come from here, so they stand side by side.

>>> from defectkit.evaluation import evaluate_detection, evaluate_masks, evaluate_classification, evaluate_anomaly
>>> from defectkit.evaluation.report import Report

See evaluation/README.md for the metrics.json schema and the CLI (``evaluate --help``).
"""

from defectkit.evaluation.anomaly import evaluate_anomaly
from defectkit.evaluation.classification import evaluate_classification
from defectkit.evaluation.detection import evaluate_detection
from defectkit.evaluation.masks import evaluate_masks
from defectkit.evaluation.report import Report

__all__ = ["Report", "evaluate_anomaly", "evaluate_classification", "evaluate_detection", "evaluate_masks"]
