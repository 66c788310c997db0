"""segment: fine-tune SAM (segment-anything) on defect masks, with box and point prompts, cached
image embeddings, validation against base SAM, and ``segment predict``.

>>> from defectkit.segment import build_sam, Segmenter, TrainConfig  # doctest: +SKIP
>>> from defectkit.segment.train import train  # doctest: +SKIP

See segment/README.md for the CLI (``segment --help``).
"""

from defectkit.segment.embeddings import EmbeddingCache, ImageEncoder
from defectkit.segment.models import MODEL_REGISTRY, build_sam
from defectkit.segment.predict import Segmenter
from defectkit.segment.train import TrainConfig

# (the function ``train`` is not re-exported: ``segment.train`` stays the module)
__all__ = ["MODEL_REGISTRY", "EmbeddingCache", "ImageEncoder", "Segmenter", "TrainConfig", "build_sam"]
