"""The label-efficiency figure: a metric against the number of labelled anomalous training images,
one line per approach with its 95% interval as a band, drawn with the evaluator's Pillow chart
pieces (``evaluation.charts``: no matplotlib import, the same look as every other report figure).

``charts.line_chart_png`` draws on fixed 0..1 axes; this x axis is a count on a log scale (1, 5, 10
and the default split's few dozen), so the figure is laid out here from its ``Canvas`` and ``Axes``.

>>> png = label_efficiency_png({"classifier": [(1, 0.6, 0.5, 0.7), (10, 0.8, 0.7, 0.9)]}, "image AUROC")
>>> png[:4]
b'\\x89PNG'
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from defectkit.evaluation.charts import SCALE, TAB10, Axes, Canvas

Point = tuple[float, float | None, float | None, float | None]  # (images, value, ci_low, ci_high)


BAND_ALPHA = 56  # of 255: bands of several approaches stay visible through each other


def _band(c: Canvas, points: list[tuple[float, float]], color: tuple[int, int, int]) -> None:
    """A translucent polygon over the canvas (Pillow's RGB drawing has no alpha: composite a layer)."""
    layer = Image.new("RGBA", c.image.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).polygon(points, fill=(*color, BAND_ALPHA))
    c.image = Image.alpha_composite(c.image.convert("RGBA"), layer).convert("RGB")
    c.draw = ImageDraw.Draw(c.image)


def label_efficiency_png(
    series: dict[str, list[Point]],
    ylabel: str,
    title: str = "",
    xlabels: dict[float, str] | None = None,
    size: tuple[int, int] = (650, 460),
) -> bytes:
    """One line per approach through its (images, value) points, the (ci_low, ci_high) band behind
    it, x on a log scale ticked at the counts themselves (``xlabels`` renames a tick, e.g. "38
    (all)"); y from 0 to 1.02 with the chance line at 0.5 dotted when ``ylabel`` is an AUROC. PNG bytes."""
    xs = sorted({p[0] for points in series.values() for p in points if p[0] > 0}) or [1.0]
    lo, hi = math.log10(xs[0]), math.log10(xs[-1])
    pad = max(0.08 * (hi - lo), 0.15)
    c = Canvas(*size)
    box = (70, 36, size[0] - 170, size[1] - 60)
    ax = Axes(c, box, (lo - pad, hi + pad), (0.0, 1.02))
    ax.frame(
        [], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "labelled anomalous training images (log scale)", ylabel, title
    )
    for x in xs:  # ticks at the counts themselves, labelled in counts (frame() would print log10 values)
        px, _ = ax.px(math.log10(x), 0.0)
        c.draw.line([(px, box[3] * SCALE), (px, (box[3] + 4) * SCALE)], fill=(34, 34, 34), width=SCALE)
        c.text((px / SCALE, box[3] + 12), (xlabels or {}).get(x, f"{x:g}"), 10)
    if "AUROC" in ylabel:
        x0, y0 = ax.px(lo - pad, 0.5)
        x1, _ = ax.px(hi + pad, 0.5)
        for start in np.arange(float(x0), float(x1), 8.0 * SCALE):  # dotted: Pillow draws solid lines only
            c.draw.line([(start, y0), (min(start + 3 * SCALE, x1), y0)], fill=(128, 128, 128), width=SCALE)
    drawn = []
    for k, (label, points) in enumerate(series.items()):
        points = sorted((p for p in points if p[0] > 0 and p[1] is not None), key=lambda p: p[0])
        if points:
            drawn.append((label, TAB10[k % len(TAB10)], points))
    for _, color, points in drawn:  # every band first, so no band hides a line
        band = [p for p in points if p[2] is not None and p[3] is not None]
        if len(band) > 1:
            upper = [ax.px(math.log10(p[0]), min(p[3], 1.02)) for p in band]
            lower = [ax.px(math.log10(p[0]), max(p[2], 0.0)) for p in reversed(band)]
            _band(c, [(float(x), float(y)) for x, y in upper + lower], color)
    for _, color, points in drawn:
        xs_log = [math.log10(p[0]) for p in points]
        ys = [p[1] for p in points]
        if len(points) > 1:
            ax.line(xs_log, ys, color, 1.8)
        for x, y in zip(xs_log, ys):
            px, py = ax.px(x, y)
            r = 3 * SCALE
            c.draw.ellipse([px - r, py - r, px + r, py + r], fill=color)
    for k, (label, color, _) in enumerate(drawn):  # legend right of the axes
        y = box[1] + 8 + 16 * k
        c.draw.line(
            [((box[2] + 12) * SCALE, y * SCALE), ((box[2] + 30) * SCALE, y * SCALE)],
            fill=color,
            width=3 * SCALE,
        )
        c.text((box[2] + 35, y), label, 9, anchor="lm")
    if not drawn:
        c.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), "no approach has this metric", 11)
    return c.png()
