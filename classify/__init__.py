"""classify: the ResNet baseline. Fine-tune torchvision ResNets on convert-mvtec's ``classify/``
folders, compare the course's experiments, handle the long tail, predict and score with the shared
evaluator. See classify/README.md."""

from classify.predict import evaluate_split, predict_source
from classify.presets import PRESETS, run_experiments
from classify.training import TrainConfig, train

__all__ = ["PRESETS", "TrainConfig", "evaluate_split", "predict_source", "run_experiments", "train"]
