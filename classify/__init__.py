"""classify: the ResNet baseline. Fine-tune torchvision ResNets on convert-mvtec's ``classify/``
folders, compare the course's experiments, handle the long tail, predict and score with the shared
evaluator. See classify/README.md."""

from defectkit.core.lazy import lazy_exports

# Loaded on first use (core.lazy): `classify --help` needs no torch.
# (the functions ``train`` and ``validate`` are not re-exported: ``defectkit.classify.train`` and
# ``defectkit.classify.val`` stay the modules, as in segment and detect)
_PUBLIC = {
    "PRESETS": "defectkit.classify.config",
    "TrainConfig": "defectkit.classify.config",
    "predict_source": "defectkit.classify.predict",
    "run_experiments": "defectkit.classify.presets",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
