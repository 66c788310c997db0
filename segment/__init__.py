"""segment: fine-tune SAM (segment-anything) on defect masks, with box and point prompts, cached
image embeddings, validation against base SAM, and ``segment predict``.

>>> from defectkit.segment import build_sam, Segmenter, TrainConfig  # doctest: +SKIP
>>> from defectkit.segment.train import train  # doctest: +SKIP

See segment/README.md for the CLI (``segment --help``).
"""

from defectkit.core.lazy import lazy_exports

# Loaded on first use (core.lazy): `segment --help` needs neither torch nor segment-anything.
# (the function ``train`` is not re-exported: ``segment.train`` stays the module)
_PUBLIC = {
    "EmbeddingCache": "defectkit.segment.embeddings",
    "ImageEncoder": "defectkit.segment.embeddings",
    "MODEL_REGISTRY": "defectkit.segment.models",
    "Segmenter": "defectkit.segment.predict",
    "TrainConfig": "defectkit.segment.train",
    "build_sam": "defectkit.segment.models",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
