"""One report, two renderings: ``report.md`` (images beside it) and a self-contained ``report.html``
(images inlined as base64 ``data:`` URIs; no script, no stylesheet or font from elsewhere), so it
opens in a browser from a mail attachment or a file share, with no server.

Text blocks are plain text with `code` spans; that is all the Markdown the HTML side renders.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from defectkit.core.atomic import atomic_dir

_CODE = re.compile(r"`([^`]+)`")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

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


def format_cell(value: Any, digits: int = 4) -> str:
    """Table cells as the shared evaluator's reports show them (floats rounded, None as n/a).

    >>> format_cell(0.123456), format_cell(None), format_cell("a|b")
    ('0.1235', 'n/a', 'a\\\\|b')
    """
    from defectkit.evaluation.report import format_value

    return format_value(value, digits)


class Document:
    """Headings, paragraphs, tables, images and code blocks, written as Markdown and HTML together."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []
        self.images: dict[str, bytes] = {}

    def heading(self, text: str, level: int = 2) -> Document:
        self.blocks.append(("h", level, text))
        return self

    def text(self, text: str) -> Document:
        self.blocks.append(("p", text))
        return self

    def bullets(self, items: Sequence[str]) -> Document:
        if items:
            self.blocks.append(("ul", list(items)))
        return self

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> Document:
        for row in rows:
            if len(row) != len(headers):
                raise ValueError(f"table row has {len(row)} cells, header has {len(headers)}")
        cells = [[format_cell(v, digits) for v in row] for row in rows]
        self.blocks.append(("table", [str(h) for h in headers], cells))
        return self

    def image(self, name: str, png: bytes, caption: str = "") -> Document:
        """A PNG (bytes); Markdown links the file ``name``, HTML inlines it."""
        name = _SAFE_NAME.sub("_", name)
        if not name.endswith(".png"):
            name += ".png"
        base, n = name[:-4], 2
        while name in self.images:  # two images may not share a file
            name, n = f"{base}_{n}.png", n + 1
        self.images[name] = png
        self.blocks.append(("img", name, caption))
        return self

    def code(self, text: str) -> Document:
        self.blocks.append(("pre", text))
        return self

    # -- rendering -------------------------------------------------------------------------------
    def markdown(self) -> str:
        out = [f"# {self.title}"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "table":
                _, headers, rows = block
                lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
                lines += ["| " + " | ".join(row) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "img":
                _, name, caption = block
                out.append(f"![{caption or name}]({name})" + (f"\n\n*{caption}*" if caption else ""))
            elif kind == "pre":
                out.append("```\n" + block[1].rstrip() + "\n```")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                parts.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
            elif kind == "p":
                parts.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "ul":
                parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                _, headers, rows = block
                head = "".join(f"<th>{_inline(h)}</th>" for h in headers)
                body = "".join(
                    "<tr>"
                    + "".join(f"<td>{_inline(c.replace(chr(92) + '|', '|'))}</td>" for c in row)
                    + "</tr>"
                    for row in rows
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img":
                _, name, caption = block
                data = base64.b64encode(self.images[name]).decode("ascii")
                alt = html.escape((caption or name).replace("`", ""), quote=True)
                cap = f"<figcaption>{_inline(caption)}</figcaption>" if caption else ""
                parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{cap}</figure>')
            elif kind == "pre":
                parts.append(f"<pre>{html.escape(block[1].rstrip())}</pre>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    def write(self, out_dir: str | Path, extra_files: dict[str, bytes] | None = None) -> Path:
        """Atomically write ``out_dir/{report.md, report.html, *.png}`` (plus ``extra_files``)."""
        with atomic_dir(out_dir, overwrite=True) as tmp:
            for name, data in {**self.images, **(extra_files or {})}.items():
                (tmp / name).write_bytes(data)
            (tmp / "report.md").write_text(self.markdown(), encoding="utf-8")
            (tmp / "report.html").write_text(self.html(), encoding="utf-8")
        return Path(out_dir)


def _inline(text: str) -> str:
    """Escape text for HTML and turn `code` spans into <code>.

    >>> _inline("run `a < b` & go")
    'run <code>a &lt; b</code> &amp; go'
    """
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text, quote=False))
