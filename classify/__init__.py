"""classify: the ResNet baseline. Fine-tune torchvision ResNets on convert-mvtec's ``classify/``
folders, compare the course's experiments, handle the long tail, predict and score with the shared
evaluator. See classify/README.md."""

from defectkit.classify.predict import evaluate_split, predict_source
from defectkit.classify.presets import PRESETS, run_experiments
from defectkit.classify.train import TrainConfig

# (the function ``train`` is not re-exported: ``defectkit.classify.train`` stays the module, as in segment)
__all__ = ["PRESETS", "TrainConfig", "evaluate_split", "predict_source", "run_experiments"]
