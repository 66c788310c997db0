"""The bundled synthetic sample: a small wood-like category in the MVTec AD layout, made from code.

Nothing is downloaded: tests, the demo and the benchmarks all run on this. The defects are painted
to exercise what the converters must get right: several components per mask, a ring (a component
with a hole), components cut by the image border, thin broken scratches and tiny specks.

Layout written (as MVTec AD)::

    <out>/<category>/train/good/000.png ...
    <out>/<category>/test/good/000.png ...
    <out>/<category>/test/<defect>/000.png ...
    <out>/<category>/ground_truth/<defect>/000_mask.png ...
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError
from defectkit.core.imageio import write_png

WOOD_DEFECTS = ("color", "combined", "hole", "liquid", "scratch")


def wood_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A brown, grained, noisy RGB texture (HxWx3 uint8) that looks enough like MVTec wood.

    >>> wood_texture(np.random.default_rng(0), 32, 48).shape
    (32, 48, 3)
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    s = max(height, width) / 256.0
    period = rng.uniform(9, 14) * s
    wobble = 6 * s * np.sin(y / (rng.uniform(20, 40) * s) + rng.uniform(0, 6.3))
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (x + wobble) / period)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.8 * s)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.5 * s)
    shade = 0.8 + 0.15 * grain + 0.05 * noise
    base = np.array([170, 118, 70], np.float32) * rng.uniform(0.9, 1.1)
    img = shade[..., None] * base[None, None, :]
    return np.clip(img, 0, 255).astype(np.uint8)


def _blend(img: np.ndarray, region: np.ndarray, colour, alpha: float) -> None:
    colour = np.asarray(colour, np.float32)
    img[region] = np.clip((1 - alpha) * img[region] + alpha * colour, 0, 255).astype(np.uint8)


def _paint_hole(rng, img, mask, s, speck=False):
    h, w = mask.shape
    for _ in range(rng.integers(1, 3)):
        r = int(rng.uniform(5, 12) * s)
        c = (int(rng.uniform(r, w - r)), int(rng.uniform(r, h - r)))
        region = np.zeros_like(mask, np.uint8)
        cv2.circle(region, c, r, 1, -1)
        _blend(img, region.astype(bool), (40, 25, 15), 0.85)
        mask |= region.astype(bool)
    if speck:  # a tiny speck: the kind of component --min-area exists for
        x, y = int(rng.uniform(4, w - 4)), int(rng.uniform(4, h - 4))
        mask[y : y + 2, x : x + 2] = True
        img[y : y + 2, x : x + 2] = (45, 30, 20)


def _paint_scratch(rng, img, mask, s, broken=False):
    h, w = mask.shape
    x1, y1 = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.3) * h
    x2, y2 = x1 + rng.uniform(-0.3, 0.3) * w, y1 + rng.uniform(0.4, 0.6) * h
    thick = max(1, round(1.5 * s))
    region = np.zeros_like(mask, np.uint8)
    if broken:  # one scratch broken in two by a small gap (what --merge-distance joins)
        t = 0.5
        gap = 4 * s / max(1.0, np.hypot(x2 - x1, y2 - y1))
        xm1, ym1 = x1 + (t - gap) * (x2 - x1), y1 + (t - gap) * (y2 - y1)
        xm2, ym2 = x1 + (t + gap) * (x2 - x1), y1 + (t + gap) * (y2 - y1)
        cv2.line(region, (int(x1), int(y1)), (int(xm1), int(ym1)), 1, thick)
        cv2.line(region, (int(xm2), int(ym2)), (int(x2), int(y2)), 1, thick)
    else:
        cv2.line(region, (int(x1), int(y1)), (int(x2), int(y2)), 1, thick)
    _blend(img, region.astype(bool), (225, 200, 165), 0.8)
    mask |= region.astype(bool)


def _paint_color(rng, img, mask, s, on_border=False):
    h, w = mask.shape
    axes = (int(rng.uniform(10, 22) * s), int(rng.uniform(6, 14) * s))
    if on_border:  # centre on the left edge: the component is cut by the border
        c = (0, int(rng.uniform(0.3, 0.7) * h))
    else:
        c = (int(rng.uniform(0.25, 0.75) * w), int(rng.uniform(0.25, 0.75) * h))
    region = np.zeros_like(mask, np.uint8)
    cv2.ellipse(region, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    _blend(img, region.astype(bool), (120, 40, 60), 0.55)
    mask |= region.astype(bool)


def _paint_liquid(rng, img, mask, s):
    h, w = mask.shape
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    region = np.zeros_like(mask, np.uint8)
    for _ in range(5):
        r = int(rng.uniform(5, 11) * s)
        cv2.circle(region, (int(cx + rng.uniform(-10, 10) * s), int(cy + rng.uniform(-10, 10) * s)), r, 1, -1)
    region = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 2 * s) > 0.5
    _blend(img, region, (90, 60, 35), 0.5)
    mask |= region


def _paint_ring(rng, img, mask, s):
    h, w = mask.shape
    r = int(rng.uniform(12, 18) * s)
    c = (int(rng.uniform(r + 2, w - r - 2)), int(rng.uniform(r + 2, h - r - 2)))
    region = np.zeros_like(mask, np.uint8)
    cv2.circle(region, c, r, 1, max(2, int(3 * s)))  # an annulus: a component with a hole
    _blend(img, region.astype(bool), (60, 35, 20), 0.8)
    mask |= region.astype(bool)


def paint_defect(rng: np.random.Generator, img: np.ndarray, defect: str, index: int) -> np.ndarray:
    """Paint one defect of type ``defect`` onto ``img`` (in place) and return its bool mask.

    ``index`` varies the hard cases deterministically: specks, broken scratches, border cuts.
    """
    h, w = img.shape[:2]
    s = max(h, w) / 256.0
    mask = np.zeros((h, w), bool)
    if defect == "hole":
        _paint_hole(rng, img, mask, s, speck=index % 2 == 1)
    elif defect == "scratch":
        _paint_scratch(rng, img, mask, s, broken=index % 2 == 0)
    elif defect == "color":
        _paint_color(rng, img, mask, s, on_border=index % 2 == 0)
        if index % 3 == 1:
            _paint_color(rng, img, mask, s)
    elif defect == "liquid":
        _paint_liquid(rng, img, mask, s)
    elif defect == "combined":
        _paint_ring(rng, img, mask, s)
        _paint_hole(rng, img, mask, s)
        _paint_scratch(rng, img, mask, s)
    else:
        raise ValueError(f"unknown synthetic defect {defect!r}; known: {', '.join(WOOD_DEFECTS)}")
    return mask


MIN_SIZE, MAX_SIZE = 16, 4096  # defects are painted at fixed scales; 4096^2 RGB is ~50 MB an image


def write_category(
    out: str | Path,
    category: str = "wood",
    *,
    size: tuple[int, int] = (256, 256),
    n_train_good: int = 10,
    n_test_good: int = 6,
    n_per_defect: int = 4,
    defects: tuple[str, ...] = WOOD_DEFECTS,
    grayscale: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write one synthetic category in the MVTec AD layout under ``out/category`` (atomically).

    ``size`` is (height, width). The same arguments always write the same bytes.

    >>> write_category("/tmp/sample", "wood", size=(128, 128), overwrite=True)  # doctest: +SKIP
    PosixPath('/tmp/sample/wood')
    """
    height, width = size
    final = Path(out) / category
    # Checked before anything is written: 0 used to fall back to 256 silently, 100000 ran out of memory,
    # and a negative count wrote a category with no defects.
    if not (MIN_SIZE <= height <= MAX_SIZE and MIN_SIZE <= width <= MAX_SIZE):
        raise DefectkitError(f"{final}: sample size {height}x{width} is outside {MIN_SIZE}..{MAX_SIZE} px")
    for what, n in (("n_train_good", n_train_good), ("n_test_good", n_test_good), ("n_per_defect", n_per_defect)):
        if n < 1:
            raise DefectkitError(f"{final}: {what} is {n}; the sample needs at least 1")
    jobs = [("train", "good", i) for i in range(n_train_good)]
    jobs += [("test", "good", i) for i in range(n_test_good)]
    jobs += [("test", d, i) for d in defects for i in range(n_per_defect)]
    with atomic_dir(final, overwrite=overwrite) as tmp:
        for split, kind, i in tqdm(jobs, desc=f"sample {category}", disable=not progress, unit="img"):
            # One generator per image: any image can be regenerated alone, identically.
            key = [seed, ["train", "test"].index(split), (("good",) + tuple(defects)).index(kind), i]
            rng = np.random.default_rng(key)
            img = wood_texture(rng, height, width)
            stem = f"{i:03d}"
            if kind != "good":
                mask = paint_defect(rng, img, kind, i)
                write_png(tmp / "ground_truth" / kind / f"{stem}_mask.png", mask)
            if grayscale:
                img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            write_png(tmp / split / kind / f"{stem}.png", img)
    return final


def write_sample(
    out: str | Path = "datasets/sample", *, overwrite: bool = False, seed: int = 0
) -> list[Path]:
    """The bundled sample: ``wood`` (RGB, 256x256) and ``wood_gray`` (grayscale, non-square 192x256)."""
    return [
        write_category(out, "wood", size=(256, 256), seed=seed, overwrite=overwrite),
        write_category(out, "wood_gray", size=(192, 256), grayscale=True, seed=seed + 1, overwrite=overwrite),
    ]
