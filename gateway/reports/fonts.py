"""The Chinese font of the reports' PDFs, parsed once per process.

fpdf2 parses a font file each time a document adds it and subsets it (fontTools) when the
document is written. The system's Chinese font (fonts-wqy-microhei) has about 50,000
glyphs in 5 MB, so both steps cost most of the time of a small report. Here:

- the font is parsed once (:func:`_parsed`) and each document gets a shallow copy of it
  with its own subset map (the glyphs it uses): the parsed tables, character widths and
  glyph ids are only read while a document is laid out;
- when a document is written, the font it embeds is cut first from a small subset made
  once for each set of glyphs (:func:`_subset`): the glyphs the document uses together
  with ``common`` (printable ASCII and the reports' fixed labels), so that reports
  which differ only in figures reuse the same subset. fpdf2 then subsets that small
  font to exactly the glyphs used, as it would the whole font.

The bytes are a function of the document alone: the subset is a function of the glyph
set, and no timestamps are recomputed (``recalcTimestamp=False``, as fpdf2 opens fonts).
"""

from __future__ import annotations

import copy
import io
import threading
from datetime import datetime
from functools import lru_cache

from fontTools import subset as ftsubset  # type: ignore[import-untyped]
from fontTools import ttLib
from fpdf import FPDF
from fpdf.fonts import SubsetMap, TTFFont

from gateway.agreements.pdf import FONT, PdfError

FAMILY = "wqy"
ASCII = "".join(chr(code) for code in range(0x20, 0x7F))
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _parsed() -> TTFFont:
    """The font as fpdf2 parses it, never written itself (each document gets a copy)."""
    return TTFFont(FPDF(), FONT, FAMILY, "")


@lru_cache(maxsize=32)
def _subset(glyph_names: frozenset[str]) -> bytes:
    """The font cut to ``glyph_names``, glyph names kept (fpdf2 looks glyphs up by name)."""
    options = ftsubset.Options(notdef_outline=True, recommended_glyphs=True, glyph_names=True)
    options.drop_tables += ["FFTM"]
    font = ttLib.TTFont(FONT, fontNumber=0, lazy=True, recalcTimestamp=False)
    try:
        subsetter = ftsubset.Subsetter(options)
        subsetter.populate(glyphs=sorted(glyph_names))
        subsetter.subset(font)
        out = io.BytesIO()
        font.save(out)
    finally:
        font.close()
    return out.getvalue()


def chinese_pdf(*, title: str, created: datetime) -> FPDF:
    """An A4 document with the Chinese font added as ``wqy``, created at ``created``."""
    if not FONT.exists():
        raise PdfError(f"the Chinese font {FONT} is missing: install fonts-wqy-microhei")
    with _lock:
        parsed = _parsed()
    pdf = FPDF(format="A4")
    pdf.set_creation_date(created)
    pdf.set_title(title)
    font = copy.copy(parsed)  # the parsed tables, widths and glyph ids, shared
    font.subset = SubsetMap(font)  # the document's own: the glyphs it uses
    font.missing_glyphs = []
    pdf.fonts[FAMILY] = font
    pdf.set_auto_page_break(auto=True, margin=15)
    return pdf


def pdf_bytes(pdf: FPDF, common: str = "") -> bytes:
    """The document of :func:`chinese_pdf` written out, its font cut from the subset of
    the glyphs it uses and those of ``common`` (with printable ASCII)."""
    font = pdf.fonts[FAMILY]
    cmap = font.cmap
    wanted = {glyph for glyph in font.subset.get_all_glyph_names() if glyph}
    wanted.update(cmap[ord(char)] for char in ASCII + common if ord(char) in cmap)
    with _lock:
        data = _subset(frozenset(wanted))
    # Its glyphs' boxes were computed when it was cut: written as they are.
    font.ttfont = ttLib.TTFont(io.BytesIO(data), recalcBBoxes=False, recalcTimestamp=False)
    return bytes(pdf.output())
