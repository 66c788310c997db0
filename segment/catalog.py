"""The SAM models defectkit knows, by name, and where their official weights are downloaded from.

Plain data, apart from the builders of ``segment.models`` (which need torch and segment-anything),
so that ``segment --help`` lists the choices without loading either. tests/test_segment.py checks
that every name here has a builder there and the other way round.
"""

MODEL_NAMES = ("vit_tiny", "vit_b", "vit_l", "vit_h")
"""``vit_b`` / ``vit_l`` / ``vit_h``: segment-anything's official models; ``vit_tiny``: a small
random model for tests and demos (see ``segment.models``)."""

CHECKPOINT_URLS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}
