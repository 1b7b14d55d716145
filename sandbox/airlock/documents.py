"""Documents made of parts: Jupyter notebooks (every cell's source and every output by
its media type), HTML (its tables, with the standard library's parser), SVG (its text
and attribute values: axis labels, titles, comments, embedded data) and the parts of
PNG and JPEG files that are not pixels (text chunks, comments, bytes after the image's
end). Pixels are not read: no OCR is available, so an image of a table passes through
only as an image for the reviewer.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

from sandbox.airlock.tables import (
    ImageItem,
    Item,
    MemberItem,
    Problem,
    ReadError,
    TextItem,
    json_value_items,
    table_from_rows,
)

IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif"}
TEXT_TYPES = ("text/plain", "text/markdown", "text/latex", "application/javascript")
GEOMETRY = frozenset(
    {"d", "points", "transform", "style", "viewbox", "x", "y", "x1", "x2", "y1", "y2"}
    | {"width", "height", "cx", "cy", "r", "rx", "ry", "fill", "stroke", "stroke-width"}
    | {"font-size", "font-family", "clip-path", "class", "version", "xmlns", "xmlns:xlink"}
)
MAX_INFLATED = 1 << 24  # a compressed text chunk of an image


# ---------------------------------------------------------------------- notebooks
def notebook_items(text: str) -> Iterator[Item]:
    try:
        notebook = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ReadError("not valid JSON") from None
    if not isinstance(notebook, dict):
        raise ReadError("not a notebook")
    cells = notebook.get("cells")
    if cells is None:  # nbformat 3
        cells = [c for sheet in notebook.get("worksheets") or [] for c in sheet.get("cells", [])]
    if not isinstance(cells, list):
        raise ReadError("a notebook's cells are a list")
    if notebook.get("metadata"):
        yield TextItem("metadata", json.dumps(notebook["metadata"], ensure_ascii=False))
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            continue
        where = f"cell {number}"
        source = _joined(cell.get("source", cell.get("input", "")))
        if source:
            yield TextItem(f"{where}, source", source)
        for name, bundle in (cell.get("attachments") or {}).items():
            yield from _bundle(f"{where}, attachment {name}", bundle)
        for position, output in enumerate(cell.get("outputs") or [], start=1):
            if isinstance(output, dict):
                yield from _output(f"{where}, output {position}", output)


def _joined(value: Any) -> str:
    if isinstance(value, list):
        return "".join(map(str, value))
    return "" if value is None else str(value)


def _output(where: str, output: dict[str, Any]) -> Iterator[Item]:
    kind = output.get("output_type")
    if kind == "stream":
        yield TextItem(where, _joined(output.get("text")))
    elif kind in ("error", "pyerr"):
        yield TextItem(where, "\n".join(map(str, output.get("traceback") or [])))
    else:
        yield from _bundle(where, output.get("data") or {})
        if "text" in output:  # nbformat 3 keeps text/plain here
            yield TextItem(where, _joined(output["text"]))


def _bundle(where: str, bundle: Any) -> Iterator[Item]:
    if not isinstance(bundle, dict):
        return
    for mime, value in bundle.items():
        place = f"{where} ({mime})"
        if mime in IMAGE_TYPES:
            try:
                data = base64.b64decode(_joined(value).replace("\n", ""), validate=False)
            except (binascii.Error, ValueError):
                yield Problem("unreadable", place, "an image that is not valid base64")
                continue
            yield MemberItem(f"image.{IMAGE_TYPES[mime]}", place, data)
        elif mime == "text/html":
            yield from html_items(_joined(value), place)
        elif mime == "image/svg+xml":
            yield from svg_items(_joined(value), place)
        elif mime.endswith("json"):
            yield from json_value_items(value, place)
        else:
            text = _joined(value) if mime in TEXT_TYPES or isinstance(value, str | list) else ""
            yield TextItem(place, text or json.dumps(value, ensure_ascii=False, default=str))


# ---------------------------------------------------------------------- HTML and SVG
class _Markup(HTMLParser):
    """Tables (rows of cell texts), all text, comments and attribute values."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.texts: list[str] = []
        self._open: list[list[list[str]]] = []  # tables being read, innermost last
        self._cell: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        for name, value in attrs:
            if value and name.lower() not in GEOMETRY:
                self.texts.append(value)
        if tag == "table":
            self._open.append([])
        elif tag == "tr" and self._open:
            self._open[-1].append([])
        elif tag in ("td", "th") and self._open:
            if not self._open[-1]:
                self._open[-1].append([])
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip = max(0, self._skip - 1)
        if tag in ("td", "th") and self._open and self._cell is not None:
            self._open[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table" and self._open:
            self.tables.append(self._open.pop())
        elif tag in ("text", "tspan", "p", "div", "br", "li", "tr", "title", "desc"):
            self.texts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.texts.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def handle_comment(self, data: str) -> None:
        self.texts.append(data)


def _markup(text: str) -> _Markup:
    parser = _Markup()
    parser.feed(text)
    parser.close()
    while parser._open:  # tables left open at the end
        parser.tables.append(parser._open.pop())
    return parser


def html_items(text: str, location: str = "") -> Iterator[Item]:
    parser = _markup(text)
    for number, rows in enumerate(parser.tables, start=1):
        place = f"{location + ', ' if location else ''}table {number}"
        table = table_from_rows(place, rows)
        if table is not None:
            yield table
    yield TextItem(location, " ".join(parser.texts))


def svg_items(text: str, location: str = "") -> Iterator[Item]:
    yield ImageItem(location, "svg")
    yield from html_items(text, location)


# ---------------------------------------------------------------------- PNG and JPEG
def png_items(data: bytes) -> Iterator[Item]:
    """The text chunks of a PNG, and whatever follows its end."""
    yield ImageItem("", "png")
    position, texts = 8, []
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            texts.append(_png_text(kind, body))
        if kind == b"IEND":
            break
    else:
        yield Problem("unreadable", "", "the image ends before its IEND chunk")
    if texts:
        yield TextItem("text chunks", "\n".join(texts))
    yield from _trailing(data, position)


def _png_text(kind: bytes, body: bytes) -> str:
    keyword, _, rest = body.partition(b"\0")
    try:
        if kind == b"zTXt":
            rest = _inflate(rest[1:])
        elif kind == b"iTXt":
            compressed, rest = rest[:1] == b"\1", rest[2:]
            _, _, rest = rest.partition(b"\0")  # language
            _, _, rest = rest.partition(b"\0")  # translated keyword
            rest = _inflate(rest) if compressed else rest
    except zlib.error:
        return keyword.decode("latin-1")
    encoding = "utf-8" if kind == b"iTXt" else "latin-1"
    return f"{keyword.decode('latin-1')}: {rest.decode(encoding, 'replace')}"


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_INFLATED)
    return out


def jpeg_items(data: bytes) -> Iterator[Item]:
    """The comments of a JPEG, and whatever follows its end."""
    yield ImageItem("", "jpeg")
    position, comments, end = 2, [], None
    while position + 2 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xD9:
            end = position + 2
            break
        if marker in (0x01, *range(0xD0, 0xD8)):
            position += 2
            continue
        if position + 4 > len(data):
            break
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if marker == 0xFE:
            comments.append(data[position + 4 : position + 2 + length].decode("utf-8", "replace"))
        position += 2 + length
        if marker == 0xDA:  # entropy-coded data up to the next marker
            while position + 1 < len(data) and not (
                data[position] == 0xFF and data[position + 1] not in (0x00, *range(0xD0, 0xD8))
            ):
                position += 1
    if comments:
        yield TextItem("comments", "\n".join(comments))
    if end is None:
        yield Problem("unreadable", "", "the image has no end marker")
    else:
        yield from _trailing(data, end)


def _trailing(data: bytes, end: int) -> Iterator[Item]:
    rest = data[end:]
    if rest.strip(b"\0"):
        yield Problem("image", "after the end", f"{len(rest)} bytes follow the end of the image")
        yield MemberItem("", "after the end", rest)
