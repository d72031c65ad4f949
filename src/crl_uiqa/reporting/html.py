"""Self-contained HTML reports.

:class:`Report` assembles headings, short text, tables, key/value lists,
matplotlib figures and image grids into one HTML file that opens offline: all
pictures are embedded as base64 PNG data URIs, the CSS is inline, and a
Content-Security-Policy forbids loading anything from elsewhere. Every piece of
user text is HTML-escaped.

Example
-------
>>> from crl_uiqa.report import Report
>>> rep = Report("Sweep quality", timestamp="2024-01-01T00:00:00")
>>> _ = rep.add_heading("Summary").add_key_values({"frames": 120, "best score": 0.91})
>>> html = rep.to_html()
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, validate
from ..errors import ArgumentTypeError, ConfigError, ImageError, InputError, reworded
from ..files import write_text

__all__ = ["Report", "PNG_SIGNATURE", "png_data_uri", "image_to_png", "SCORE_SCALE"]

#: the 8 bytes every PNG file starts with
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: How to read a quality score, in words for the people who read the reports (every report shows it).
SCORE_SCALE = (
    "**How to read the scores.** Higher = better image quality. A crl-uiqa model scores on the scale of the "
    "images it was trained on with pseudo-labels (`fit`): about 0 for the training image least like the reference "
    "standard planes and about 1 for the one most like them, so other images can score below 0 or above 1; the "
    "scores of a baseline (`crl-uiqa baseline`) or of a model trained on your own labels are on that method's or "
    "those labels' scale. The numbers have no unit and no fixed pass/fail line: compare images scored by the same "
    "model, and look at the images at both ends to decide where your own cut-off lies."
)

_CSS = """
:root { --fg: #1d2330; --muted: #5d6677; --line: #d9dee7; --accent: #2b6cb0; --bg: #ffffff; --soft: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--soft); color: var(--fg);
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 40px; background: var(--bg);
  min-height: 100vh; box-shadow: 0 0 0 1px var(--line); }
header { border-bottom: 2px solid var(--accent); margin-bottom: 18px; padding-bottom: 8px; }
h1, h2, h3, h4, p, li, figcaption, caption { overflow-wrap: break-word; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.3em; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.1em; margin: 22px 0 8px; }
h4 { font-size: 1.0em; margin: 18px 0 6px; }
.meta, footer { color: var(--muted); font-size: 0.85em; }
footer { margin-top: 40px; padding-top: 10px; border-top: 1px solid var(--line); }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 16px;
  margin: 12px 0 18px; font-size: 0.92em; }
nav.toc ul { margin: 4px 0; padding-left: 18px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.9em;
  background: var(--soft); padding: 1px 4px; border-radius: 3px; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 0.9em; }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: 4px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; vertical-align: top; }
td { white-space: pre-wrap; overflow-wrap: anywhere; }
td:not(.num) { min-width: 7em; }
th { background: var(--soft); text-align: left; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; overflow-wrap: normal; }
tbody tr:nth-child(even) td { background: #fafbfc; }
table.kv th { width: 1%; white-space: nowrap; }
table.kv td.num { text-align: left; }
@media (max-width: 640px) { table.kv th { white-space: normal; width: 38%; } }
.table-wrap { overflow-x: auto; }
figure { margin: 14px 0 22px; }
figure.plot img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.88em; margin-top: 4px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; margin: 10px 0 22px; }
.grid figure { margin: 0; text-align: center; }
.grid img { display: block; margin: 0 auto; border: 1px solid var(--line); border-radius: 3px;
  image-rendering: auto; background: #000; }
.grid figcaption { max-width: 220px; word-break: break-word; }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 14px;
  margin: 10px 0 22px; }
.thumbs figure { margin: 0; min-width: 0; }
.thumbs img, .thumbs .noimg { display: block; width: 100%; height: auto; border: 1px solid var(--line);
  border-radius: 3px; background: #000; }
.thumbs .noimg { aspect-ratio: 4 / 3; display: flex; align-items: center; justify-content: center; color: #fff;
  font-size: 0.85em; }
.thumbs figcaption { margin-top: 3px; font-size: 0.85em; line-height: 1.35; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.thumbs figcaption strong { color: var(--fg); font-variant-numeric: tabular-nums; }
@media (max-width: 640px) { .thumbs { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 10px; } }
details.more { border: 1px solid var(--line); border-radius: 6px; padding: 4px 14px; margin: 10px 0 18px; }
details.more > summary { cursor: pointer; font-weight: 600; padding: 4px 0; }
details.more[open] > summary { border-bottom: 1px solid var(--line); margin-bottom: 8px; }
p.empty { color: var(--muted); font-style: italic; }
.note { background: var(--soft); border-left: 3px solid var(--accent); padding: 6px 12px; margin: 10px 0 16px; }
.note p { margin: 4px 0; }
ul.links { padding-left: 20px; }
ul.links li { overflow-wrap: anywhere; }
@media print { body { background: #fff; } main { box-shadow: none; max-width: none; padding: 0; }
  figure, table, .grid figure, .thumbs figure { break-inside: avoid; } nav.toc { display: none; } }
"""


def _esc(text: Any) -> str:
    """HTML-escape ``str(text)`` (quotes included)."""
    return html.escape(str(text), quote=True)


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _inline(text: str) -> str:
    """Escape ``text`` and render ``**bold**`` and ```code``` spans."""
    out = _esc(text)
    out = _CODE.sub(r"<code>\1</code>", out)
    return _BOLD.sub(r"<strong>\1</strong>", out)


def _format_cell(value: Any, float_format: str) -> tuple[str, bool]:
    """Text of one table cell and whether it is numeric (right-aligned)."""
    if value is None:
        return "", False
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no"), False
    if isinstance(value, (int, np.integer)):
        return str(int(value)), True
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "n/a", True
        return float_format.format(v), True
    if isinstance(value, os.PathLike):
        return os.fspath(value), False
    return str(value), False


def _check_format(float_format: str) -> None:
    try:
        float_format.format(1.5)
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"float_format {float_format!r} cannot format a float: {exc}") from None


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` URI for PNG bytes (checked to be a PNG)."""
    if not isinstance(png, (bytes, bytearray)) or not bytes(png[:8]) == PNG_SIGNATURE:
        raise InputError("expected PNG bytes (they must start with the PNG signature)")
    return "data:image/png;base64," + base64.b64encode(bytes(png)).decode("ascii")


def image_to_png(image: np.ndarray, *, size: int | None = None) -> bytes:
    """Encode a grayscale image ``(H, W)`` in [0, 1] as 8-bit PNG bytes.

    Parameters
    ----------
    image : ndarray
        Grayscale image, values clipped to [0, 1]; NaN becomes 0.
    size : int, optional
        Shrink (never enlarge) so that the longer side is at most ``size``
        pixels, keeping the aspect ratio.
    """
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ImageError(f"expected a grayscale image of shape (H, W), got shape {arr.shape}")
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    u8 = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    img = Image.fromarray(u8, mode="L")
    if size is not None:
        size = validate.integer("size", size, minimum=1)  # pixels
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


class Report:
    """Builder of one self-contained HTML report.

    Add content in reading order with the ``add_*`` methods (each returns the
    report, so calls can be chained), then :meth:`write` it or get the text
    with :meth:`to_html`.

    Parameters
    ----------
    title : str
        Report title (page title and top heading).
    timestamp : datetime or str, optional
        Generation time printed in the header and footer; the current local
        time when omitted. Pass a fixed value for reproducible output.
    """

    def __init__(self, title: str, *, timestamp: datetime | str | None = None) -> None:
        self.title = str(title)
        if timestamp is None:
            timestamp = datetime.now().astimezone()
        if isinstance(timestamp, datetime):
            timestamp = timestamp.isoformat(sep=" ", timespec="seconds")
        self.timestamp = str(timestamp)
        self._blocks: list[str] = []
        self._toc: list[tuple[int, str, str]] = []
        self._ids: set[str] = set()

    # -- content ---------------------------------------------------------------
    def add_heading(self, text: str, level: int = 2) -> Report:
        """Add a section heading (``level`` 2 to 4; level 2 appears in the contents)."""
        if level not in (2, 3, 4):
            raise ConfigError(f"heading level must be 2, 3 or 4, got {level!r}")
        anchor = self._anchor(str(text))
        self._blocks.append(f'<h{level} id="{anchor}">{_esc(text)}</h{level}>')
        self._toc.append((level, anchor, str(text)))
        return self

    def add_text(self, text: str) -> Report:
        """Add escaped text with light markdown.

        Blank lines separate paragraphs; a paragraph whose lines all start with
        ``- `` or ``* `` becomes a bullet list; ``**bold**`` and ```code```
        spans are rendered. Anything else (HTML tags included) shows literally.
        """
        for block in re.split(r"\n\s*\n", str(text).strip()):
            lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
            if not lines:
                continue
            if all(ln.startswith(("- ", "* ")) for ln in lines):
                items = "".join(f"<li>{_inline(ln[2:].strip())}</li>" for ln in lines)
                self._blocks.append(f"<ul>{items}</ul>")
            else:
                self._blocks.append(f"<p>{_inline(' '.join(lines))}</p>")
        return self

    def add_note(self, text: str) -> Report:
        """Add a highlighted box of text (light markdown as :meth:`add_text`), e.g. how to read the scores."""
        inner = Report("")
        inner.add_text(text)
        self._blocks.append('<div class="note">' + "".join(inner._blocks) + "</div>")
        return self

    def add_links(self, links: Sequence[tuple[str, str]]) -> Report:
        """Add a list of links ``(text, relative path)``, e.g. to the reports beside this one.

        The path is percent-encoded (spaces, ``#``, ``?`` and non-ASCII names stay one file); an
        absolute URL or path is refused: a report links only to files beside it.
        """
        from urllib.parse import quote

        items = []
        for text, href in links:
            href = str(href).replace(os.sep, "/")
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", href) or href.startswith("/"):
                raise InputError(f"add_links: {href!r} is not a relative path")
            items.append(f'<li><a href="{_esc(quote(href))}">{_esc(text)}</a></li>')
        if items:
            self._blocks.append('<ul class="links">' + "".join(items) + "</ul>")
        return self

    def add_table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        caption: str = "",
        float_format: str = "{:.3f}",
    ) -> Report:
        """Add a table with one row per dict.

        Parameters
        ----------
        rows : list of dict
            Rows; missing keys give empty cells.
        columns : list of str, optional
            Column keys and order; by default every key in order of first
            appearance.
        caption : str
            Caption shown above the table.
        float_format : str
            :meth:`str.format` pattern for floats (NaN shows as ``n/a``);
            integers are printed as they are, numbers are right-aligned.
        """
        _check_format(float_format)
        rows = list(rows)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InputError(f"add_table: row {i} is a {type(row).__name__}, expected a dict")
        if columns is None:
            columns = list(dict.fromkeys(k for row in rows for k in row))
        columns = [str(c) for c in columns]
        parts = ['<div class="table-wrap"><table>']
        if caption:
            parts.append(f"<caption>{_esc(caption)}</caption>")
        parts.append("<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr></thead><tbody>")
        for row in rows:
            cells = []
            for c in columns:
                text, numeric = _format_cell(row.get(c), float_format)
                cls = ' class="num"' if numeric else ""
                cells.append(f"<td{cls}>{_esc(text)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table></div>")
        if not rows:
            parts.append('<p class="empty">(no rows)</p>')
        self._blocks.append("".join(parts))
        return self

    def add_key_values(self, values: Mapping[str, Any], caption: str = "",
                       float_format: str = "{:.4g}") -> Report:
        """Add a two-column ``key | value`` table (e.g. a summary or settings)."""
        if not isinstance(values, Mapping):
            raise InputError(f"add_key_values: expected a dict, got {type(values).__name__}")
        _check_format(float_format)
        parts = ['<div class="table-wrap"><table class="kv">']
        if caption:
            parts.append(f"<caption>{_esc(caption)}</caption>")
        parts.append("<tbody>")
        for key, value in values.items():
            text, numeric = _format_cell(value, float_format)
            cls = ' class="num"' if numeric else ""
            parts.append(f"<tr><th>{_esc(key)}</th><td{cls}>{_esc(text)}</td></tr>")
        parts.append("</tbody></table></div>")
        self._blocks.append("".join(parts))
        return self

    def add_figure(self, fig_or_png: Any, caption: str = "", *, dpi: int = 100) -> Report:
        """Embed a matplotlib figure (rendered at ``dpi``) or PNG bytes."""
        if isinstance(fig_or_png, (bytes, bytearray)):
            png = bytes(fig_or_png)
        else:
            from matplotlib.figure import Figure

            if not isinstance(fig_or_png, Figure):
                raise ArgumentTypeError(
                    f"add_figure: expected a matplotlib Figure or PNG bytes, got {type(fig_or_png).__name__}"
                )
            from .figures import fig_to_png

            png = fig_to_png(fig_or_png, dpi=dpi)
        uri = png_data_uri(png)
        cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
        self._blocks.append(f'<figure class="plot"><img src="{uri}" alt="{_esc(caption or "figure")}">{cap}</figure>')
        return self

    def add_images(self, images: Sequence[np.ndarray], captions: Sequence[str] | None = None,
                   *, size: int = 192) -> Report:
        """Add a grid of thumbnails.

        Parameters
        ----------
        images : list of ndarray
            Grayscale images ``(H, W)`` in [0, 1].
        captions : list of str, optional
            One caption per image.
        size : int
            Longer side of each thumbnail in pixels (images are only shrunk).
        """
        images = list(images)
        captions = self._captions("add_images", captions, len(images))
        if not images:
            self._blocks.append('<p class="empty">(no images)</p>')
            return self
        parts = ['<div class="grid">']
        for i, image in enumerate(images):
            cap = captions[i] if captions is not None else ""
            parts.append(
                f'<figure><img src="{self._image_uri("add_images", i, image, size)}" '
                f'alt="{_esc(cap or f"image {i + 1}")}">'
                + (f"<figcaption>{_esc(cap)}</figcaption>" if cap else "")
                + "</figure>"
            )
        parts.append("</div>")
        self._blocks.append("".join(parts))
        return self

    def add_thumbnails(self, images: Sequence[np.ndarray | None], titles: Sequence[str],
                       captions: Sequence[str] | None = None, *, size: int = 256) -> Report:
        """Add a responsive grid of thumbnails, each scaled to its cell: several per row on a wide screen, two
        per row on a phone (e.g. the best and worst images of a score report).

        Parameters
        ----------
        images : list of ndarray or None
            Grayscale images ``(H, W)`` in [0, 1]; ``None`` keeps the place of an image that could not be read
            (a dark box saying so).
        titles : list of str
            One short line per image, shown in bold (e.g. the rank and score).
        captions : list of str, optional
            More text per image (e.g. the file name; each line of it is a line under the title); long names wrap.
        size : int
            Longer side of each embedded image in pixels (images are only shrunk).
        """
        images = list(images)
        titles = self._captions("add_thumbnails", titles, len(images), "titles")
        captions = self._captions("add_thumbnails", captions, len(images))
        if not images:
            self._blocks.append('<p class="empty">(no images)</p>')
            return self
        parts = ['<div class="thumbs">']
        for i, image in enumerate(images):
            cap = captions[i] if captions is not None else ""
            alt = _esc(f"{titles[i]} {cap}".strip().replace("\n", " "))
            if image is None:
                pic = f'<div class="noimg" role="img" aria-label="{alt}">not readable</div>'
            else:
                pic = f'<img src="{self._image_uri("add_thumbnails", i, image, size)}" alt="{alt}">'
            text = "<br>".join(_esc(line) for line in cap.splitlines())
            parts.append(f"<figure>{pic}<figcaption><strong>{_esc(titles[i])}</strong>"
                         + (f"<br>{text}" if text else "") + "</figcaption></figure>")
        parts.append("</div>")
        self._blocks.append("".join(parts))
        return self

    @staticmethod
    def _captions(method: str, captions: Sequence[str] | None, n: int, what: str = "captions") -> list[str] | None:
        """``captions`` as strings, checked to be one per image."""
        if captions is None:
            return None
        captions = [str(c) for c in captions]
        if len(captions) != n:
            raise InputError(f"{method}: got {len(captions)} {what} for {n} images")
        return captions

    @staticmethod
    def _image_uri(method: str, i: int, image: np.ndarray, size: int) -> str:
        """The data URI of image ``i`` shrunk to ``size``; an unusable image is an :class:`ImageError` naming it."""
        try:
            png = image_to_png(image, size=size)
        except ConfigError:  # the size: a setting, not this image
            raise
        except ValueError as exc:
            raise reworded(exc, f"{method}: image {i}: {exc}", ImageError) from None
        return png_data_uri(png)

    @contextmanager
    def details(self, summary: str) -> Iterator[Report]:
        """A collapsed section: what is added inside the ``with`` block shows when the reader opens ``summary``
        (e.g. settings and timings for developers at the end of a report for users)."""
        self._blocks.append(f'<details class="more"><summary>{_esc(summary)}</summary>')
        try:
            yield self
        finally:
            self._blocks.append("</details>")

    # -- output ----------------------------------------------------------------
    def to_html(self) -> str:
        """The complete HTML document."""
        meta = f"crl-uiqa {_esc(__version__)} &middot; generated {_esc(self.timestamp)}"
        toc = ""
        top = [(a, t) for lvl, a, t in self._toc if lvl == 2]
        if len(top) >= 3:
            items = "".join(f'<li><a href="#{a}">{_esc(t)}</a></li>' for a, t in top)
            toc = f'<nav class="toc"><strong>Contents</strong><ul>{items}</ul></nav>'
        body = "\n".join(self._blocks)
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta http-equiv="Content-Security-Policy" '
            "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n"
            f'<meta name="generator" content="crl-uiqa {_esc(__version__)}">\n'
            f"<title>{_esc(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            f'<header><h1>{_esc(self.title)}</h1><div class="meta">{meta}</div></header>\n'
            f"{toc}\n{body}\n"
            f"<footer>{meta}. Scores: higher = better quality.</footer>\n"
            "</main>\n</body>\n</html>\n"
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the report atomically to ``path`` (folders are created) and return it."""
        return write_text(path, self.to_html())

    # -- helpers ---------------------------------------------------------------
    def _anchor(self, text: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
        anchor, k = base, 2
        while anchor in self._ids:
            anchor, k = f"{base}-{k}", k + 1
        self._ids.add(anchor)
        return anchor
