"""The one report builder of defectkit: every stage's evaluator report and the benchmark report.

A ``Report`` collects headings, text, tables, bullet lists, code blocks, images and a metrics dict in
memory (figures are rendered to PNG bytes when added, so no matplotlib figure stays open), and
writes them together, atomically (an interrupted write leaves the previous report intact):

- ``report.md``, the images beside it as PNG files;
- ``metrics.json`` when metrics were added;
- with ``html=True``, ``report.html`` too: self-contained (images inlined as base64 ``data:`` URIs;
  no script, stylesheet or font from elsewhere), so it opens in a browser from a mail attachment
  or a file share, with no server.

The HTML side renders the Markdown the builders write: text paragraphs with `code` spans and
``- `` bullet lines, headings, tables, images and code blocks.

>>> r = Report("wood: detection").add_text("YOLO-World, `1` epoch")
>>> r = r.add_table(["metric", "value"], [["AP", 0.5]]).add_metrics("bbox", {"AP": 0.5})
>>> print(r.markdown())
# wood: detection
<BLANKLINE>
YOLO-World, `1` epoch
<BLANKLINE>
| metric | value |
|---|---|
| AP | 0.5000 |
<BLANKLINE>
>>> "<p>YOLO-World, <code>1</code> epoch</p>" in r.html()
True
>>> r.write("runs/eval")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html as html_lib
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


_PLAIN_TYPES = frozenset({str, int, bool, type(None)})


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and Paths to plain JSON types; NaN and inf become None.

    >>> to_jsonable({"a": np.float32(0.5), "b": np.array([1, 2]), "c": float("nan")})
    {'a': 0.5, 'b': [1, 2], 'c': None}
    """
    kind = type(obj)
    if kind in _PLAIN_TYPES:  # most leaves: one set lookup instead of the chain of isinstance below
        return obj
    if kind is float:
        return obj if math.isfinite(obj) else None
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


_ONE_LINE = json.JSONEncoder(allow_nan=False, separators=(", ", ": "))


def json_text(obj: Any, indent: int = 2, _depth: int = 0) -> str:
    """``json.dumps(obj, indent=indent)``'s layout, except that a list of objects (per-image or
    per-row records) gets one line per object. Those lines come from json's C encoder: the indented
    encoder is pure Python, a second for the 80,000 records of ``evaluate masks`` on 20,000 images.

    >>> print(json_text({"stats": {"AP": 0.5}, "per_image": [{"image": "a", "iou": 1.0}, {"image": "b", "iou": None}]}))
    {
      "stats": {
        "AP": 0.5
      },
      "per_image": [
        {"image": "a", "iou": 1.0},
        {"image": "b", "iou": null}
      ]
    }
    """
    inner, outer = " " * (indent * (_depth + 1)), " " * (indent * _depth)
    if type(obj) is dict and obj:
        items = (f"{inner}{_ONE_LINE.encode(str(k))}: {json_text(v, indent, _depth + 1)}" for k, v in obj.items())
        return "{\n" + ",\n".join(items) + "\n" + outer + "}"
    if type(obj) is list and obj:
        if all(type(v) is dict for v in obj):
            lines = (inner + _ONE_LINE.encode(v) for v in obj)
        else:
            lines = (inner + json_text(v, indent, _depth + 1) for v in obj)
        return "[\n" + ",\n".join(lines) + "\n" + outer + "]"
    return _ONE_LINE.encode(obj)


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
    # A plain Figure's canvas switches to Agg for PNG by itself: this module never imports
    # matplotlib, so `evaluate` (whose charts are Pillow's, see charts.py) never pays its import.
    fig.savefig(buf, format="png", dpi=dpi)  # figures call tight_layout; "tight" bbox would draw twice
    return buf.getvalue()


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}
figure{margin:.6em 0 1.2em}figcaption{font-size:.85em;color:#555}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}
code{background:#f3f3f3;padding:0 .2em}
"""
_CODE = re.compile(r"`([^`]+)`")


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    """A Markdown table; floats shown with ``digits`` decimals, None as ``n/a`` (see :func:`format_value`).

    >>> print(markdown_table(["a", "b"], [["x", 0.123456], ["y", None]]))
    | a | b |
    |---|---|
    | x | 0.1235 |
    | y | n/a |
    """
    head, cells = _table_cells(headers, rows, digits)
    return _markdown_table(head, cells)


def _table_cells(headers, rows, digits) -> tuple[list[str], list[list[str]]]:
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"table row has {len(row)} cells, header has {len(headers)}")
    return [format_value(h) for h in headers], [[format_value(v, digits) for v in row] for row in rows]


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


class Report:
    """Markdown (and optionally self-contained HTML) report + metrics.json + images, written
    atomically by :meth:`write`.

    Methods return ``self`` so calls chain. Image names are file names inside the output folder
    (``.png`` is added when missing; a second image of the same name gets ``_2``, ``_3`` ...).
    """

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []  # ("h", level, text) | ("p", text) | ("ul", items) | ...
        self.images: dict[str, bytes] = {}
        self.metrics: dict[str, Any] = {}

    # -- content ---------------------------------------------------------------------------------
    def add_text(self, markdown: str) -> Report:
        """Append a Markdown paragraph (or several, or a ``- `` list, as written)."""
        self.blocks.append(("p", markdown.rstrip()))
        return self

    def add_heading(self, text: str, level: int = 2) -> Report:
        self.blocks.append(("h", level, text))
        return self

    def add_bullets(self, items: Sequence[str]) -> Report:
        """Append a bullet list (nothing for no items)."""
        if items:
            self.blocks.append(("ul", list(items)))
        return self

    def add_code(self, text: str) -> Report:
        """Append a preformatted block (commands, logs)."""
        self.blocks.append(("pre", text.rstrip()))
        return self

    def add_table(self, headers: Sequence[Any], rows: Sequence[Sequence[Any]], digits: int = 4) -> Report:
        """Append a table; floats are shown with ``digits`` decimals, None as ``n/a``."""
        self.blocks.append(("table", *_table_cells(headers, rows, digits)))
        return self

    def add_image(self, name: str, fig_or_png_path: Any, caption: str = "") -> Report:
        """Embed an image: a matplotlib Figure (rendered now), PNG bytes, or a path to a PNG file.

        The image is written beside report.md as ``name`` and linked with ``caption`` as alt text;
        report.html inlines it.
        """
        name = _SAFE_NAME.sub("_", Path(name).name)
        if not name.lower().endswith(".png"):
            name += ".png"
        base, n = name[:-4], 2
        while name in self.images:  # two images may not share a file
            name, n = f"{base}_{n}.png", n + 1
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
        self.blocks.append(("img", name, caption))
        return self

    def add_metrics(self, key: str, metrics: dict) -> Report:
        """Store ``metrics`` under ``key`` in metrics.json (a later call with the same key replaces it)."""
        self.metrics[key] = to_jsonable(metrics)
        return self

    # -- rendering -------------------------------------------------------------------------------
    def markdown(self) -> str:
        out = [f"# {self.title}"]
        for kind, *rest in self.blocks:
            if kind == "h":
                out.append("#" * rest[0] + " " + rest[1])
            elif kind == "p":
                out.append(rest[0])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in rest[0]))
            elif kind == "table":
                out.append(_markdown_table(*rest))
            elif kind == "img":
                name, caption = rest
                out.append(f"![{caption or name}]({name})" + (f"\n\n*{caption}*" if caption else ""))
            elif kind == "pre":
                out.append("```\n" + rest[0] + "\n```")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        """The report as one self-contained HTML page (images inlined)."""
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html_lib.escape(self.title)}</title><style>{STYLE}</style></head><body>",
            f"<h1>{html_lib.escape(self.title)}</h1>",
        ]
        for kind, *rest in self.blocks:
            if kind == "h":
                parts.append(f"<h{rest[0]}>{_inline(rest[1])}</h{rest[0]}>")
            elif kind == "p":
                parts += [_html_paragraph(par) for par in re.split(r"\n\s*\n", rest[0]) if par.strip()]
            elif kind == "ul":
                parts.append(_html_list(rest[0]))
            elif kind == "table":
                headers, rows = rest
                head = "".join(f"<th>{_inline(_unescape_cell(h))}</th>" for h in headers)
                body = "".join(
                    "<tr>" + "".join(f"<td>{_inline(_unescape_cell(c))}</td>" for c in row) + "</tr>"
                    for row in rows
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img":
                name, caption = rest
                data = base64.b64encode(self.images[name]).decode("ascii")
                alt = html_lib.escape((caption or name).replace("`", ""), quote=True)
                cap = f"<figcaption>{_inline(caption)}</figcaption>" if caption else ""
                parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{cap}</figure>')
            elif kind == "pre":
                parts.append(f"<pre>{html_lib.escape(rest[0])}</pre>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    # -- output ----------------------------------------------------------------------------------
    def write_files(
        self, folder: str | Path, *, html: bool = False, extra_files: dict[str, bytes] | None = None
    ) -> Path:
        """Write report.md, metrics.json (when metrics were added), the images, report.html (with
        ``html``) and ``extra_files`` (name -> bytes) into a folder. Not atomic by itself: use it
        inside your own ``atomic_dir`` when the report is part of a larger output."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in {**self.images, **(extra_files or {})}.items():
            (folder / name).write_bytes(data)
        if self.metrics:
            (folder / "metrics.json").write_text(json_text(self.metrics) + "\n")
        (folder / "report.md").write_text(self.markdown(), encoding="utf-8")
        if html:
            (folder / "report.html").write_text(self.html(), encoding="utf-8")
        return folder

    def write(
        self,
        out_dir: str | Path,
        overwrite: bool = True,
        *,
        html: bool = False,
        extra_files: dict[str, bytes] | None = None,
    ) -> Path:
        """Atomically write ``out_dir`` as :meth:`write_files` does; returns ``out_dir``."""
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            self.write_files(tmp, html=html, extra_files=extra_files)
        return Path(out_dir)


def _inline(text: str) -> str:
    """Escape text for HTML and turn `code` spans into <code>.

    >>> _inline("run `a < b` & go")
    'run <code>a &lt; b</code> &amp; go'
    """
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html_lib.escape(text, quote=False))


def _unescape_cell(cell: str) -> str:
    """A Markdown table cell as plain text (format_value escapes ``|`` for Markdown only)."""
    return cell.replace("\\|", "|")


def _html_list(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>"


def _html_paragraph(text: str) -> str:
    r"""One Markdown paragraph: a ``- `` list when every line is an item, else a <p>.

    >>> _html_paragraph("- a\n- `b`"), _html_paragraph("one\nline")
    ('<ul><li>a</li><li><code>b</code></li></ul>', '<p>one\nline</p>')
    """
    lines = text.strip().splitlines()
    if all(line.startswith("- ") for line in lines):
        return _html_list([line[2:] for line in lines])
    return f"<p>{_inline(text.strip())}</p>"


def _close(fig) -> None:
    """Close a pyplot figure (plain Figures need nothing) so long runs do not leak memory."""
    plt = sys.modules.get("matplotlib.pyplot")  # never import pyplot ourselves: it picks a backend
    if plt is not None and plt.fignum_exists(getattr(fig, "number", -1)):
        plt.close(fig)


def add_intervals(report: Report, intervals: dict[str, dict], info: dict) -> Report:
    """A table of bootstrap confidence intervals (``defectkit.evaluation.bootstrap``) and how they
    were drawn, the same in every evaluator report.

    >>> r = add_intervals(Report("x"), {"AP": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}},
    ...                   {"resamples": 1000, "seed": 0, "confidence": 0.95, "unit": "test image"})
    >>> "| AP | 0.5000 | 0.4000 | 0.6000 |" in r.markdown()
    True
    """
    level = f"{info['confidence']:.0%}"
    report.add_heading(f"{level} confidence intervals")
    report.add_table(
        ["metric", "value", f"{level} low", f"{level} high"],
        [[name, ci["value"], ci["ci_low"], ci["ci_high"]] for name, ci in intervals.items()],
    )
    report.add_text(
        f"Percentile bootstrap over {info['resamples']} resamples of the {info['unit']}s (drawn with "
        f"replacement, seed {info['seed']}): how much the numbers would move on another test set of "
        "the same size. Rows whose intervals overlap are not distinguishable on this test set."
    )
    return report
