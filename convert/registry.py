"""The 15 MVTec AD categories and their defect types, as the official archive ships them.

A category not listed here still converts when its folder follows the MVTec AD layout (a custom
category); the registry lets a typo in a known name fail with the list of names, and lets a
partial download (a missing defect folder) be noticed.
"""

from __future__ import annotations

MVTEC_AD_URL = "https://www.mvtec.com/company/research/datasets/mvtec-ad"

MVTEC_AD_CATEGORIES: dict[str, tuple[str, ...]] = {
    "bottle": ("broken_large", "broken_small", "contamination"),
    "cable": (
        "bent_wire",
        "cable_swap",
        "combined",
        "cut_inner_insulation",
        "cut_outer_insulation",
        "missing_cable",
        "missing_wire",
        "poke_insulation",
    ),
    "capsule": ("crack", "faulty_imprint", "poke", "scratch", "squeeze"),
    "carpet": ("color", "cut", "hole", "metal_contamination", "thread"),
    "grid": ("bent", "broken", "glue", "metal_contamination", "thread"),
    "hazelnut": ("crack", "cut", "hole", "print"),
    "leather": ("color", "cut", "fold", "glue", "poke"),
    "metal_nut": ("bent", "color", "flip", "scratch"),
    "pill": ("color", "combined", "contamination", "crack", "faulty_imprint", "pill_type", "scratch"),
    "screw": ("manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"),
    "tile": ("crack", "glue_strip", "gray_stroke", "oil", "rough"),
    "toothbrush": ("defective",),
    "transistor": ("bent_lead", "cut_lead", "damaged_case", "misplaced"),
    "wood": ("color", "combined", "hole", "liquid", "scratch"),
    "zipper": (
        "broken_teeth",
        "combined",
        "fabric_border",
        "fabric_interior",
        "rough",
        "split_teeth",
        "squeezed_teeth",
    ),
}


def known_categories() -> list[str]:
    """Names of the MVTec AD categories, sorted.

    >>> known_categories()[:3]
    ['bottle', 'cable', 'capsule']
    >>> len(known_categories())
    15
    """
    return sorted(MVTEC_AD_CATEGORIES)


def defect_types(category: str) -> tuple[str, ...] | None:
    """The official defect types of a known category (sorted), or None for a custom category.

    >>> defect_types("wood")
    ('color', 'combined', 'hole', 'liquid', 'scratch')
    >>> defect_types("my_part") is None
    True
    """
    return MVTEC_AD_CATEGORIES.get(category)
