"""The report figures of ``evaluate detection`` and ``evaluate masks``, drawn with Pillow straight to PNG.

Why not matplotlib (which draws every other defectkit figure, see plots.py): importing it costs about
1 s and drawing two figures another 0.5 s, more than scoring 1,500 images takes; Pillow imports in
milliseconds and draws these three simple charts (line chart, heat map, histogram) in a few ms each.
They keep matplotlib's look: DejaVu Sans (the font matplotlib ships, read from its folder without
importing it), the tab10 colours and the "Blues" colour map. Lines are drawn at twice the size and
scaled down, which anti-aliases them.

>>> png = pr_curves_png(np.linspace(0, 1, 101), {"hole (AP50 0.800)": np.linspace(1, 0.5, 101)}, "PR")
>>> png[:4]
b'\\x89PNG'
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SCALE = 2  # drawn at twice the size, then scaled down: anti-aliased lines and text
TAB10 = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
# matplotlib's "Blues" (ColorBrewer's 9 classes), sampled evenly from 0 to 1.
BLUES = np.array(
    [
        (247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
        (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107),
    ],
    dtype=np.float64,
)  # fmt: skip
GRID = (235, 235, 235)
INK = (34, 34, 34)


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size`` pixels (of the doubled canvas): matplotlib's own font, found without
    importing matplotlib; Pillow's built-in font when matplotlib's folder is not there."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def blues(fraction: float) -> tuple[int, int, int]:
    """The "Blues" colour at ``fraction`` (0..1), interpolated between the 9 anchors."""
    x = float(np.clip(fraction, 0.0, 1.0)) * (len(BLUES) - 1)
    i = min(int(x), len(BLUES) - 2)
    rgb = BLUES[i] + (BLUES[i + 1] - BLUES[i]) * (x - i)
    return tuple(round(float(v)) for v in rgb)


class Canvas:
    """A white image at SCALE times ``width`` x ``height`` with helpers for text in figure pixels."""

    def __init__(self, width: int, height: int):
        self.image = Image.new("RGB", (width * SCALE, height * SCALE), "white")
        self.draw = ImageDraw.Draw(self.image)

    def text(self, xy, text: str, size: int = 11, anchor: str = "mm", fill=INK, angle: float = 0) -> None:
        """Text at figure pixel ``xy`` (``anchor`` as in Pillow: "mm" centred, "rm" right-middle ...)."""
        x, y = xy[0] * SCALE, xy[1] * SCALE
        f = font(size * SCALE)
        if not angle:
            self.draw.text((x, y), text, font=f, fill=fill, anchor=anchor)
            return
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=f, anchor="lt")
        label = Image.new("L", (right - left + 4, bottom - top + 4), 0)
        ImageDraw.Draw(label).text((2 - left, 2 - top), text, font=f, fill=255, anchor="lt")
        label = label.rotate(angle, expand=True, resample=Image.BICUBIC)
        w, h = label.size
        # "rt": the rotated label's top-right corner at xy (x tick labels); else centred on xy.
        ox, oy = (x - w, y) if anchor == "rt" else (x - w // 2, y - h // 2)
        self.image.paste(Image.new("RGB", label.size, fill), (int(ox), int(oy)), label)

    def text_width(self, text: str, size: int = 11) -> float:
        return self.draw.textlength(text, font=font(size * SCALE)) / SCALE

    def png(self) -> bytes:
        small = self.image.reduce(SCALE)  # box filter over SCALE x SCALE pixels: anti-aliased, fast
        buf = io.BytesIO()
        # Named, not format="PNG": Pillow then loads its PNG plugin alone instead of its five basic
        # ones (6 ms of imports per command). compress_level 3: 30% less encoding time than the
        # default 6 for 20% more bytes on these flat-coloured charts (about 25 KB each).
        buf.name = "chart.png"
        small.save(buf, compress_level=3)
        return buf.getvalue()


class Axes:
    """A rectangle of the canvas mapping data (x0..x1, y0..y1) to pixels, with ticks and a grid."""

    def __init__(self, canvas: Canvas, box: tuple[int, int, int, int], xlim, ylim):
        self.c, self.box, self.xlim, self.ylim = canvas, box, xlim, ylim

    def px(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Data coordinates to doubled-canvas pixels."""
        left, top, right, bottom = self.box
        fx = (np.asarray(x, np.float64) - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (np.asarray(y, np.float64) - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return (left + fx * (right - left)) * SCALE, (bottom - fy * (bottom - top)) * SCALE

    def frame(self, xticks, yticks, xlabel: str, ylabel: str, title: str, grid: bool = True) -> None:
        left, top, right, bottom = self.box
        d = self.c.draw
        for v in xticks:
            x, _ = self.px(v, self.ylim[0])
            if grid:
                d.line([(x, top * SCALE), (x, bottom * SCALE)], fill=GRID, width=SCALE)
            d.line([(x, bottom * SCALE), (x, (bottom + 4) * SCALE)], fill=INK, width=SCALE)
            self.c.text((x / SCALE, bottom + 12), f"{v:g}", 10)
        for v in yticks:
            _, y = self.px(self.xlim[0], v)
            if grid:
                d.line([(left * SCALE, y), (right * SCALE, y)], fill=GRID, width=SCALE)
            d.line([((left - 4) * SCALE, y), (left * SCALE, y)], fill=INK, width=SCALE)
            self.c.text((left - 7, y / SCALE), f"{v:g}", 10, anchor="rm")
        d.rectangle([left * SCALE, top * SCALE, right * SCALE, bottom * SCALE], outline=INK, width=SCALE)
        self.c.text(((left + right) / 2, bottom + 30), xlabel, 11)
        self.c.text((left - 42, (top + bottom) / 2), ylabel, 11, angle=90)
        self.c.text(((left + right) / 2, top - 14), title, 12)

    def line(self, x, y, color, width: float = 1.2) -> None:
        px, py = self.px(x, y)
        # A pixel-level ROC of millions of points: drop points that land on the quarter pixel of
        # the one before (the drawing is the same; Pillow's time is per point, seconds at 10M).
        if px.size > 4096:
            qx, qy = np.round(px * 4), np.round(py * 4)
            keep = np.r_[True, (qx[1:] != qx[:-1]) | (qy[1:] != qy[:-1])]
            keep[-1] = True
            px, py = px[keep], py[keep]
        self.c.draw.line(
            list(zip(px.tolist(), py.tolist())), fill=color, width=max(1, round(width * SCALE)), joint="curve"
        )


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values between lo and hi (1, 2, 2.5 or 5 times a power of ten apart)."""
    span = hi - lo if hi > lo else 1.0
    raw = span / n
    power = 10 ** np.floor(np.log10(raw))
    step = min((m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw), default=10 * power)
    first = np.ceil(lo / step) * step
    return [round(float(v), 10) for v in np.arange(first, hi + step * 1e-9, step)]


def _dashed(canvas: Canvas, p0, p1, color, dash: float = 5.0, gap: float = 3.0) -> None:
    """A dashed straight line between two doubled-canvas points (Pillow draws only solid lines)."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    length = float(np.hypot(*(p1 - p0)))
    step = (dash + gap) * SCALE
    for start in np.arange(0.0, length, step):
        a = p0 + (p1 - p0) * start / length
        b = p0 + (p1 - p0) * min(start + dash * SCALE, length) / length
        canvas.draw.line([tuple(a), tuple(b)], fill=color, width=SCALE)


def line_chart_png(
    lines: list[tuple[str, np.ndarray, np.ndarray, tuple, float]],
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    size: tuple[int, int] = (650, 480),
    legend: str = "lower left",
    empty_text: str = "nothing to draw",
    diagonal: bool = False,
    vline: float | None = None,
) -> bytes:
    """Lines ``(label, x, y, colour, width)`` on axes 0..1 x 0..1.02 with a legend, as PNG bytes;
    ``diagonal`` adds a dotted grey chance line, ``vline`` a dashed grey vertical line."""
    c = Canvas(*size)
    box = (70, 36, size[0] - 20, size[1] - 60)
    ax = Axes(c, box, (0.0, 1.0), (0.0, 1.02))
    ax.frame(_ticks(0, 1), _ticks(0, 1), xlabel, ylabel, title)
    if diagonal:
        _dashed(
            c,
            [v[0] for v in ax.px([0, 1], [0, 1])],
            [v[1] for v in ax.px([0, 1], [0, 1])],
            (128, 128, 128),
            1.5,
            2.5,
        )
    if vline is not None:
        x, y = ax.px([vline, vline], [0, 1.02])
        _dashed(c, (x[0], y[0]), (x[1], y[1]), (128, 128, 128))
    for _, x, y, color, width in lines:
        ax.line(x, y, color, width)
    if not lines:
        c.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), empty_text, 11)
        return c.png()
    row, pad = 14, 6
    box_w = max(c.text_width(label, 8) for label, *_ in lines) + 34
    box_h = row * len(lines) + 2 * pad
    x0 = box[0] + 8 if legend == "lower left" else box[2] - 8 - box_w
    y0 = box[3] - 8 - box_h
    c.draw.rectangle(
        [x0 * SCALE, y0 * SCALE, (x0 + box_w) * SCALE, (y0 + box_h) * SCALE],
        fill="white",
        outline=(204, 204, 204),
        width=SCALE,
    )
    for k, (label, _, _, color, width) in enumerate(lines):
        y = y0 + pad + row * k + row / 2
        c.draw.line(
            [((x0 + 5) * SCALE, y * SCALE), ((x0 + 25) * SCALE, y * SCALE)],
            fill=color,
            width=max(1, round(width * SCALE)),
        )
        c.text((x0 + 30, y), label, 8, anchor="lm")
    return c.png()


def pr_curves_png(
    recall: np.ndarray, curves: dict[str, np.ndarray], title: str, mean_label: str = "all classes"
) -> bytes:
    """Precision-recall curves, one line per class plus their mean (bold black), as PNG bytes.

    ``curves`` maps a label (already carrying its AP, e.g. ``"hole (AP50 0.812)"``) to precision
    values at the points ``recall``.
    """
    lines = [
        (label, recall, np.asarray(p, np.float64), TAB10[i % 10], 1.2)
        for i, (label, p) in enumerate(curves.items())
    ]
    if len(curves) > 1:
        lines.append(
            (mean_label, recall, np.mean(np.stack([line[2] for line in lines]), axis=0), (0, 0, 0), 2.6)
        )
    return line_chart_png(lines, title, "recall", "precision", empty_text="no class has ground truth")


def roc_curves_png(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    fpr_limit: float | None = None,
    ylabel: str = "true positive rate",
) -> bytes:
    """ROC-style curves (``curves`` maps a label to (x, y): FPR vs TPR, or FPR vs PRO) with the chance
    diagonal and, given ``fpr_limit``, a dashed line there; as PNG bytes."""
    lines = [(label, x, y, TAB10[i % 10], 1.5) for i, (label, (x, y)) in enumerate(curves.items())]
    return line_chart_png(
        lines,
        title,
        "false positive rate",
        ylabel,
        size=(550, 450),
        legend="lower right",
        diagonal=True,
        vline=fpr_limit,
    )


def confusion_matrix_png(matrix: np.ndarray, labels: Sequence[str], title: str = "Confusion matrix") -> bytes:
    """Heat map of a confusion matrix (rows true class, columns predicted class), as PNG bytes.

    Colours show each row's fractions (recall per true class), each non-zero cell prints its count
    (up to 30 classes), so rare classes stay readable; a colour bar gives the scale.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(labels)
    rows = matrix.sum(axis=1, keepdims=True)
    shown = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    label_w = max([font(9 * SCALE).getlength(str(s)) / SCALE for s in labels] + [10.0])
    cell = int(np.clip(360 / max(n, 1), 14, 60))
    side = cell * n
    left, top = int(36 + label_w), 40
    below = int(0.72 * label_w) + 16  # x labels are turned 45 degrees
    c = Canvas(left + side + 110, top + side + below + 40)
    d = c.draw
    for i in range(n):
        for j in range(n):
            x0, y0 = (left + j * cell) * SCALE, (top + i * cell) * SCALE
            d.rectangle([x0, y0, x0 + cell * SCALE, y0 + cell * SCALE], fill=blues(shown[i, j]))
            if n <= 30 and matrix[i, j]:
                c.text((left + (j + 0.5) * cell, top + (i + 0.5) * cell), f"{int(matrix[i, j])}", 8,
                       fill="white" if shown[i, j] > 0.5 else "black")  # fmt: skip
    d.rectangle(
        [left * SCALE, top * SCALE, (left + side) * SCALE, (top + side) * SCALE], outline=INK, width=SCALE
    )
    for k, name in enumerate(labels):
        c.text((left - 6, top + (k + 0.5) * cell), str(name), 9, anchor="rm")
        c.text((left + (k + 0.5) * cell + 4, top + side + 4), str(name), 9, anchor="rt", angle=45)
    c.text((left + side / 2, top + side + below + 20), "predicted", 11)
    c.text((left - label_w - 22, top + side / 2), "true", 11, angle=90)
    c.text((left + side / 2, top - 18), title, 12)
    # Colour bar: 0 (bottom) .. 1 (top), "fraction of row".
    bar_x = left + side + 20
    for k in range(side):
        y = (top + side - k - 1) * SCALE
        d.rectangle([bar_x * SCALE, y, (bar_x + 14) * SCALE, y + SCALE], fill=blues(k / max(side - 1, 1)))
    d.rectangle(
        [bar_x * SCALE, top * SCALE, (bar_x + 14) * SCALE, (top + side) * SCALE], outline=INK, width=SCALE
    )
    for v in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        c.text((bar_x + 18, top + side - v * side), f"{v:.1f}", 9, anchor="lm")
    c.text((bar_x + 60, top + side / 2), "fraction of row", 10, angle=90)
    return c.png()


def histogram_png(
    values: Sequence[float], bins: int, value_range: tuple[float, float], xlabel: str, ylabel: str, title: str
) -> bytes:
    """A histogram of ``values`` in ``bins`` equal bins over ``value_range``, as PNG bytes."""
    counts, edges = np.histogram(np.asarray(values, np.float64), bins=bins, range=value_range)
    c = Canvas(600, 360)
    top_count = max(1, int(counts.max()))
    yticks = [v for v in _ticks(0, top_count * 1.05) if float(v).is_integer()] or [0.0]
    ax = Axes(c, (70, 34, 580, 300), value_range, (0.0, max(top_count * 1.05, yticks[-1])))
    ax.frame(_ticks(*value_range), yticks, xlabel, ylabel, title, grid=False)
    for k, n in enumerate(counts):
        if n:
            (x0, x1), (y0, y1) = ax.px(edges[k : k + 2], [n, 0])
            c.draw.rectangle([x0 + SCALE, y0, x1 - SCALE, y1], fill=TAB10[0])
    return c.png()
