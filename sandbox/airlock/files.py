"""What a file is: its bytes (on disk, or in memory for an archive member or a decoded
blob), its kind from its content rather than its name, and its text encoding.

The kind comes from magic numbers (Parquet ``PAR1``, zip ``PK``, gzip, tar's ``ustar``,
PNG, JPEG, …) and, for text, from the first characters (JSON, a notebook, SVG, HTML).
Text is UTF-8, UTF-8 with a byte-order mark, UTF-16 (with or without a mark: the
zero bytes of ASCII characters give away the byte order) or GB 18030, the superset of
GBK; anything that decodes to control characters is not text.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sandbox.airlock.contracts import FileKind

HEAD_BYTES = 1 << 16
EXTENSION_KINDS: dict[str, FileKind] = {
    "csv": FileKind.CSV,
    "tsv": FileKind.TSV,
    "tab": FileKind.TSV,
    **dict.fromkeys(("txt", "md", "py", "r", "log", "sql", "rst", "tex"), FileKind.TEXT),
    "json": FileKind.JSON,
    "jsonl": FileKind.JSON_LINES,
    "ndjson": FileKind.JSON_LINES,
    "ipynb": FileKind.NOTEBOOK,
    "html": FileKind.HTML,
    "htm": FileKind.HTML,
    "svg": FileKind.SVG,
    **dict.fromkeys(("xlsx", "xlsm", "xls", "ods"), FileKind.EXCEL),
    "parquet": FileKind.PARQUET,
    "pq": FileKind.PARQUET,
    "arrow": FileKind.ARROW,
    "feather": FileKind.ARROW,
    "zip": FileKind.ZIP,
    "tar": FileKind.TAR,
    "gz": FileKind.GZIP,
    "tgz": FileKind.GZIP,
    "png": FileKind.PNG,
    "jpg": FileKind.JPEG,
    "jpeg": FileKind.JPEG,
    "gif": FileKind.GIF,
    "pdf": FileKind.PDF,
    **dict.fromkeys(("doc", "docx", "ppt", "pptx", "odt", "odp"), FileKind.OFFICE),
    **dict.fromkeys(("7z", "rar", "bz2", "xz", "zst"), FileKind.OTHER_ARCHIVE),
}
TEXT_KINDS = frozenset(
    {
        FileKind.CSV,
        FileKind.TSV,
        FileKind.TEXT,
        FileKind.JSON,
        FileKind.JSON_LINES,
        FileKind.NOTEBOOK,
        FileKind.HTML,
        FileKind.SVG,
    }
)
_MAGIC: tuple[tuple[bytes, FileKind], ...] = (
    (b"PAR1", FileKind.PARQUET),
    (b"ARROW1", FileKind.ARROW),
    (b"PK\x03\x04", FileKind.ZIP),
    (b"PK\x05\x06", FileKind.ZIP),  # an empty zip
    (b"\x1f\x8b", FileKind.GZIP),
    (b"\x89PNG\r\n\x1a\n", FileKind.PNG),
    (b"\xff\xd8\xff", FileKind.JPEG),
    (b"GIF87a", FileKind.GIF),
    (b"GIF89a", FileKind.GIF),
    (b"%PDF", FileKind.PDF),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", FileKind.EXCEL),  # OLE2: .xls (or .doc)
    (b"7z\xbc\xaf\x27\x1c", FileKind.OTHER_ARCHIVE),
    (b"Rar!", FileKind.OTHER_ARCHIVE),
    (b"BZh", FileKind.OTHER_ARCHIVE),
    (b"\xfd7zXZ\x00", FileKind.OTHER_ARCHIVE),
    (b"\x28\xb5\x2f\xfd", FileKind.OTHER_ARCHIVE),  # zstandard
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Source:
    """A file to check: on disk (``path``) or in memory (``data``). ``label`` names it in
    findings; ``depth`` counts the archives it is inside, ``encodings`` the encodings it
    was decoded from."""

    label: str
    name: str  # the file name, for its extension ("" for a decoded blob)
    path: Path | None = None
    data: bytes | None = None
    depth: int = 0
    encodings: int = 0

    def open(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None  # noqa: S101 - one of the two is always given
        return self.path.open("rb")

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.path is not None  # noqa: S101
        return self.path.stat().st_size

    def head(self, count: int = HEAD_BYTES) -> bytes:
        if self.data is not None:
            return self.data[:count]
        with self.open() as handle:
            return handle.read(count)

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None  # noqa: S101
        return self.path.read_bytes()

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.open() as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def extension(name: str) -> str:
    """The last suffix of ``name``, lower case, without the dot ("" if none)."""
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base.lstrip(".") else ""


def declared_kind(name: str) -> FileKind | None:
    return EXTENSION_KINDS.get(extension(name))


def sniff(head: bytes) -> FileKind:
    """The kind of a file from its first bytes (a zip is refined by :func:`zip_kind`)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if len(head) > 262 and head[257:262] == b"ustar":
        return FileKind.TAR
    encoding = detect_encoding(head)
    if encoding is None:
        return FileKind.BINARY
    text = decode_prefix(head, encoding).lstrip("\ufeff \t\r\n")
    lowered = text[:2048].lower()
    if text.startswith(("{", "[")):
        return FileKind.NOTEBOOK if '"nbformat"' in text[:HEAD_BYTES] else FileKind.JSON
    if lowered.startswith("<svg") or (lowered.startswith("<?xml") and "<svg" in lowered):
        return FileKind.SVG
    if lowered.startswith(("<!doctype html", "<html", "<table", "<div")):
        return FileKind.HTML
    return FileKind.TEXT


def zip_kind(names: list[str]) -> FileKind:
    """A zip that is an Office document is not an archive to open but a document."""
    members = set(names)
    if "xl/workbook.xml" in members or "xl/workbook.bin" in members:
        return FileKind.EXCEL
    if "mimetype" in members and "content.xml" in members:
        return FileKind.OFFICE
    if "[Content_Types].xml" in members:
        return FileKind.OFFICE
    return FileKind.ZIP


def compatible(declared: FileKind, actual: FileKind) -> bool:
    """Whether content of kind ``actual`` may carry a name that says ``declared``."""
    if declared is actual:
        return True
    return declared in TEXT_KINDS and actual in TEXT_KINDS


def detect_encoding(head: bytes) -> str | None:
    """The text encoding of a file starting with ``head``, or None if it is not text."""
    if not head:
        return "utf-8"
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32" if _plausible(head, "utf-32") else None
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16" if _plausible(head, "utf-16") else None
    sample = head[:HEAD_BYTES]
    if b"\x00" in sample:
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        if odd > len(sample) // 8 and even * 10 < odd:
            candidate = "utf-16-le"
        elif even > len(sample) // 8 and odd * 10 < even:
            candidate = "utf-16-be"
        else:
            return None
        return candidate if _plausible(sample[: len(sample) // 2 * 2], candidate) else None
    for candidate in ("utf-8", "gb18030"):
        if _plausible(sample, candidate):
            return candidate
    return None


def decode_prefix(data: bytes, encoding: str) -> str:
    """``data`` decoded, allowing a character cut short at the end."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 4:
            raise
        return data[: exc.start].decode(encoding)


def _plausible(data: bytes, encoding: str) -> bool:
    try:
        text = decode_prefix(data, encoding)
    except (UnicodeDecodeError, LookupError):
        return False
    if not text:
        return True
    return len(_CONTROL.findall(text)) <= len(text) // 200


def decode_text(data: bytes) -> tuple[str, str] | None:
    """The text of ``data`` and its encoding, or None if it is not text."""
    encoding = detect_encoding(data[:HEAD_BYTES])
    if encoding is None:
        return None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        return None
    if _CONTROL.search(text) and len(_CONTROL.findall(text)) > len(text) // 200:
        return None
    return text.lstrip("\ufeff"), encoding
