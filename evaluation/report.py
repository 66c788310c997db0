"""A small Markdown report builder shared by every stage: text, tables, images and a metrics dict.

A ``Report`` collects blocks in memory (figures are rendered to PNG bytes when added, so no
matplotlib figure stays open) and writes ``report.md``, ``metrics.json`` and the images together,
atomically: an interrupted write leaves the previous report intact.

>>> r = Report("wood: detection")  # doctest: +SKIP
>>> r.add_text("YOLO-World, 1 epoch").add_table(["metric", "value"], [["AP", 0.5]])  # doctest: +SKIP
>>> r.add_metrics("bbox", {"AP": 0.5}).write("runs/eval")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from defectkit.core.atomic import atomic_dir
from defectkit.core.errors import DefectkitError

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and Paths to plain JSON types; NaN and inf become None.

    >>> to_jsonable({"a": np.float32(0.5), "b": np.array([1, 2]), "c": float("nan")})
    {'a': 0.5, 'b': [1, 2], 'c': None}
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def format_value(value: Any, digits: int = 4) -> str:
    """How a table cell shows a value: floats rounded, None/NaN as ``n/a``.

    >>> format_value(0.123456), format_value(None), format_value(3), format_value(-1.0)
    ('0.1235', 'n/a', '3', '-1.0000')
    """
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if not math.isfinite(float(value)) else f"{float(value):.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def figure_to_png(fig, dpi: int = 100) -> bytes:
    """Render a matplotlib Figure (pyplot or plain ``matplotlib.figure.Figure``) to PNG bytes."""
    buf = io.BytesIO()
    if fig.canvas is None or type(fig.canvas).__name__ == "FigureCanvasBase":
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi)  # figures call tight_layout; "tight" bbox would draw twice
    return buf.getvalue()


class Report:
    """Markdown report + metrics.json + images, written atomically by :meth:`write`.

    Methods return ``self`` so calls chain. Image names are file names inside the output folder
    (``.png`` is added when missing).
    """

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[str] = []
        self.images: dict[str, bytes] = {}
        self.metrics: dict[str, Any] = {}

    # -- content ---------------------------------------------------------------------------------
    def add_text(self, markdown: str) -> Report:
        """Append a Markdown paragraph (or a heading, list, ... as written)."""
        self.blocks.append(markdown.rstrip())
        return self

    def add_heading(self, text: str, level: int = 2) -> Report:
        return self.add_text(f"{'#' * level} {text}")

    def add_table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> Report:
        """Append a Markdown table; floats are shown with ``digits`` decimals, None as ``n/a``."""
        headers = [format_value(h) for h in headers]
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
        for row in rows:
            if len(row) != len(headers):
                raise ValueError(f"table row has {len(row)} cells, header has {len(headers)}")
            lines.append("| " + " | ".join(format_value(v, digits) for v in row) + " |")
        self.blocks.append("\n".join(lines))
        return self

    def add_image(self, name: str, fig_or_png_path: Any, caption: str = "") -> Report:
        """Embed an image: a matplotlib Figure (rendered now), PNG bytes, or a path to a PNG file.

        The image is written beside report.md as ``name`` and linked with ``caption`` as alt text.
        """
        name = _SAFE_NAME.sub("_", Path(name).name)
        if not name.lower().endswith(".png"):
            name += ".png"
        if isinstance(fig_or_png_path, (bytes, bytearray)):
            data = bytes(fig_or_png_path)
        elif isinstance(fig_or_png_path, (str, Path)):
            path = Path(fig_or_png_path)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise DefectkitError(
                    f"{path}: cannot read image for the report ({exc.strerror or exc})"
                ) from None
        elif hasattr(fig_or_png_path, "savefig"):
            data = figure_to_png(fig_or_png_path)
            _close(fig_or_png_path)
        else:
            raise TypeError(f"add_image: expected a Figure, PNG bytes or a path, got {type(fig_or_png_path)}")
        self.images[name] = data
        self.blocks.append(f"![{caption or name}]({name})" + (f"\n\n*{caption}*" if caption else ""))
        return self

    def add_metrics(self, key: str, metrics: dict) -> Report:
        """Store ``metrics`` under ``key`` in metrics.json (a later call with the same key replaces it)."""
        self.metrics[key] = to_jsonable(metrics)
        return self

    # -- output ----------------------------------------------------------------------------------
    def markdown(self) -> str:
        return f"# {self.title}\n\n" + "\n\n".join(self.blocks) + "\n"

    def write_files(self, folder: str | Path) -> Path:
        """Write report.md, metrics.json and the images into an existing folder (not atomic by
        itself: use it inside your own ``atomic_dir`` when the report is part of a larger output)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.images.items():
            (folder / name).write_bytes(data)
        (folder / "metrics.json").write_text(json.dumps(self.metrics, indent=2, allow_nan=False) + "\n")
        (folder / "report.md").write_text(self.markdown(), encoding="utf-8")
        return folder

    def write(self, out_dir: str | Path, overwrite: bool = True) -> Path:
        """Atomically write ``out_dir/{report.md, metrics.json, *.png}``; returns ``out_dir``."""
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            self.write_files(tmp)
        return Path(out_dir)


def _close(fig) -> None:
    """Close a pyplot figure (plain Figures need nothing) so long runs do not leak memory."""
    plt = sys.modules.get("matplotlib.pyplot")  # never import pyplot ourselves: it picks a backend
    if plt is not None and plt.fignum_exists(getattr(fig, "number", -1)):
        plt.close(fig)
