"""classify: the ResNet baseline. Fine-tune torchvision ResNets on convert-mvtec's ``classify/``
folders, compare the course's experiments, handle the long tail, predict and score with the shared
evaluator. See classify/README.md."""

from defectkit.classify.predict import predict_source
from defectkit.classify.presets import PRESETS, run_experiments
from defectkit.classify.train import TrainConfig

# (the functions ``train`` and ``validate`` are not re-exported: ``defectkit.classify.train`` and
# ``defectkit.classify.val`` stay the modules, as in segment and detect)
__all__ = ["PRESETS", "TrainConfig", "predict_source", "run_experiments"]
