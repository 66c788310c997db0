"""convert-mvtec: MVTec AD-layout defect data -> YOLO, YOLO-seg, COCO, SAM prompts and class folders.

>>> from convert import convert_category  # doctest: +SKIP
>>> convert_category("datasets/sample", "wood", "datasets/converted", to=("all",))  # doctest: +SKIP
"""

from convert.layout import Manifest, flat_name
from convert.pipeline import ConvertSummary, convert_category
from convert.registry import MVTEC_AD_CATEGORIES, known_categories

__all__ = [
    "MVTEC_AD_CATEGORIES",
    "ConvertSummary",
    "Manifest",
    "convert_category",
    "flat_name",
    "known_categories",
]
