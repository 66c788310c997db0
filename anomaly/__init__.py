"""anomaly: the unsupervised baselines of MVTec AD (anomalib's PaDiM, PatchCore and DRAEM) on
defectkit's split: trained on the train split's good images, thresholds chosen on val, scored on
test by the shared evaluator. Needs the ``anomaly`` extra (``pip install "defectkit[anomaly]"``);
without it :func:`anomalib_available` is False and the commands say how to install it.
See anomaly/README.md.

Public functions (modules ``train``, ``predict``, ``val``):
``defectkit.anomaly.train.train``, ``defectkit.anomaly.predict.predict``, ``defectkit.anomaly.val.validate``.
"""

from defectkit.anomaly._anomalib import MISSING_MESSAGE, anomalib_available
from defectkit.anomaly.models import MODEL_REGISTRY, AnomalyTrainConfig

# (the functions ``train``, ``predict`` and ``validate`` are not re-exported: ``defectkit.anomaly.train``
# and the others stay the modules, as in the other stages)
__all__ = ["MISSING_MESSAGE", "MODEL_REGISTRY", "AnomalyTrainConfig", "anomalib_available"]
