"""One self-contained HTML page, the form of `fsd report` (fsdbatch.report decides what goes on it): sections of
text, tables of values, figures and turntables, its media carried as base64 data URIs (Media.EMBED) or as references
relative to the page's folder (Media.LINK). Nothing on the page is fetched from a network.
"""
from __future__ import annotations

import base64
import enum
import html
import math
import os
from pathlib import Path
from urllib.parse import quote

GENERATOR = "fsd report"  # the page's <meta name="generator">: how a later report tells its own page
MIME = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm"}

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}h3{font-size:1em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f0f0f0}
td.t,th.t{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.card{border:1px solid #ddd;padding:.5em;border-radius:4px}
.card video,.card img.turntable{width:384px;max-width:100%;image-rendering:pixelated;display:block}
img.figure{max-width:100%;display:block;margin:.5em 0}
.links a{margin-right:.8em}.note{color:#666;font-size:.85em}
"""


class Media(str, enum.Enum):
    """How the page carries its figures and turntables (fsdbatch.report's docstring)."""

    EMBED = "embed"
    LINK = "link"


class Page:
    """Collects the page's sections; media go in as data URIs or relative references."""

    def __init__(self, folder: Path, media: Media):
        self.folder = folder  # where the page is written: relative references start here
        self.media = media
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def src(self, path: Path) -> str:
        if self.media is Media.EMBED:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            return f"data:{MIME[path.suffix.lower()]};base64,{data}"
        return self.href(path)

    def href(self, path: Path) -> str:
        return quote(Path(os.path.relpath(path, self.folder)).as_posix(), safe="/")

    def figure(self, path: Path, alt: str) -> str:
        return f'<img class="figure" src="{self.src(path)}" alt="{esc(alt)}">'

    def turntable(self, path: Path, label: str) -> str:
        if path.suffix.lower() == ".gif":
            return f'<img class="turntable" src="{self.src(path)}" alt="{esc(label)}">'
        return (f'<video src="{self.src(path)}" title="{esc(label)}" autoplay loop muted playsinline controls>'
                f"</video>")

    def links(self, files: list[Path]) -> str:
        """Download links to `files` (always relative), in one row; '' for none."""
        return ('<div class="links">' + "".join(f'<a href="{self.href(p)}" download>{esc(p.name)}</a>'
                                                for p in files) + "</div>") if files else ""

    def html(self, title: str) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f'<meta name="generator" content="{GENERATOR}">'
                f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n<h1>{esc(title)}</h1>\n"
                + "\n".join(self.parts) + "\n</body></html>\n")


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    """A table cell: floats to 4 significant digits, everything else as text."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return "" if value is None else str(value)


def table_html(columns: list[str], rows: list[dict]) -> str:
    def cell(tag: str, v) -> str:
        text = fmt(v)
        numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
        return f"<{tag}{'' if numeric else ' class=t'}>{esc(text)}</{tag}>"

    head = "".join(f"<th class=t>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell("td", r.get(c)) for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
