"""anomaly: the unsupervised baselines of MVTec AD (anomalib's PaDiM, PatchCore and DRAEM) on
defectkit's split: trained on the train split's good images, thresholds chosen on val, scored on
test by the shared evaluator. Needs the ``anomaly`` extra (``pip install "defectkit[anomaly]"``);
without it :func:`anomalib_available` is False and the commands say how to install it.
See anomaly/README.md.

Public functions (modules ``train``, ``predict``, ``val``):
``defectkit.anomaly.train.train``, ``defectkit.anomaly.predict.predict``, ``defectkit.anomaly.val.validate``.
"""

from defectkit.core.lazy import lazy_exports

# Loaded on first use (core.lazy): `anomaly --help` needs no torch.
# (the functions ``train``, ``predict`` and ``validate`` are not re-exported: ``defectkit.anomaly.train``
# and the others stay the modules, as in the other stages)
_PUBLIC = {
    "MISSING_MESSAGE": "defectkit.anomaly._anomalib",
    "MODEL_REGISTRY": "defectkit.anomaly.config",
    "AnomalyTrainConfig": "defectkit.anomaly.config",
    "anomalib_available": "defectkit.anomaly._anomalib",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
