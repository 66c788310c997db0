"""convert-mvtec: MVTec AD-layout defect data -> YOLO, YOLO-seg, COCO, SAM prompts and class folders.

>>> from defectkit.convert import convert_category  # doctest: +SKIP
>>> convert_category("datasets/sample", "wood", "datasets/converted", to=("all",))  # doctest: +SKIP
"""

from defectkit.core.layout import Manifest, flat_name
from defectkit.convert.pipeline import ConvertSummary, convert_category
from defectkit.convert.registry import MVTEC_AD_CATEGORIES, known_categories
from defectkit.convert.split import PROTOCOL_CHOICES, PROTOCOLS, Protocol, assign_splits, parse_protocol

__all__ = [
    "MVTEC_AD_CATEGORIES",
    "PROTOCOLS",
    "PROTOCOL_CHOICES",
    "ConvertSummary",
    "Manifest",
    "Protocol",
    "assign_splits",
    "convert_category",
    "flat_name",
    "known_categories",
    "parse_protocol",
]
