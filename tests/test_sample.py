import numpy as np

from defectkit.imageio import read_image, read_mask
from defectkit.sample import WOOD_DEFECTS, write_category


def test_sample_layout(sample_root):
    wood = sample_root / "wood"
    assert sorted(p.name for p in (wood / "test").iterdir()) == sorted(("good",) + WOOD_DEFECTS)
    for defect in WOOD_DEFECTS:
        images = sorted((wood / "test" / defect).glob("*.png"))
        assert images, defect
        for img in images:
            mask = read_mask(wood / "ground_truth" / defect / f"{img.stem}_mask.png")
            assert mask.shape == read_image(img).shape[:2]
            assert mask.any(), f"{img}: empty mask"
    gray = read_image(sample_root / "wood_gray" / "test" / "hole" / "000.png", mode="unchanged")
    assert gray.ndim == 2 and gray.shape == (192, 256)


def test_sample_is_deterministic(tmp_path):
    a = write_category(tmp_path / "a", "wood", size=(64, 64), n_train_good=1, n_test_good=1, n_per_defect=1)
    b = write_category(tmp_path / "b", "wood", size=(64, 64), n_train_good=1, n_test_good=1, n_per_defect=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_sample_hard_cases(sample_root):
    """The sample holds what the converters must get right: a ring, border cuts, multi-component masks."""
    import cv2

    gt = sample_root / "wood" / "ground_truth"
    n_components, holes, border = [], 0, 0
    for mask_path in gt.rglob("*_mask.png"):
        mask = read_mask(mask_path).astype(np.uint8)
        n, _ = cv2.connectedComponents(mask, connectivity=8)
        n_components.append(n - 1)
        _, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        holes += int((hierarchy[0][:, 3] >= 0).sum()) if hierarchy is not None else 0
        border += int(mask[:, 0].any() or mask[0].any() or mask[:, -1].any() or mask[-1].any())
    assert max(n_components) >= 3 and holes >= 1 and border >= 1
