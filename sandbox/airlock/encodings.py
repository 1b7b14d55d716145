"""Content re-encoded inside text: runs of base64 or hex long enough to hold a table are
decoded, so that what they hold is checked like any file of the export.

A run counts as base64 only if it mixes character classes as encoded bytes do (both
cases, or ``+`` and ``/``): a long word, a column of numbers or a keyed
pseudonym (lower-case letters only) is not decoded. Line breaks inside a run are allowed
(MIME wraps base64 at 76 characters). What a run decodes to is kept only if it is
something the airlock reads (text, or a file of a known kind); random bytes are dropped
by the caller.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

_HEX = re.compile(r"[0-9a-fA-F]+")
_HAS_DIGIT = re.compile(r"[0-9]")
_HEX_LETTER = re.compile(r"[a-fA-F]")
_HAS_UPPER = re.compile(r"[A-Z]")
_HAS_LOWER = re.compile(r"[a-z]")


@dataclass(frozen=True)
class Blob:
    encoding: str  # "base64" or "hex"
    line: int  # where the run starts in its text
    data: bytes


@lru_cache(maxsize=8)
def _run(min_chars: int) -> re.Pattern[str]:
    return re.compile(rf"[A-Za-z0-9+/_\-]{{{min_chars},}}={{0,2}}")


_LINE = re.compile(r"[A-Za-z0-9+/_\-]{16,}={0,2}")


def looks_encoded(run: str) -> bool:
    """Whether a run of base64 characters looks like encoded bytes rather than a word."""
    if _HEX.fullmatch(run):  # digits and letters a-f both, as bytes written in hex have
        return bool(_HAS_DIGIT.search(run) and _HEX_LETTER.search(run)) and len(run) % 2 == 0
    if "+" in run or "/" in run:
        return True
    # both cases: base64 of repetitive text may lack digits, words of one case do not count
    return bool(_HAS_UPPER.search(run) and _HAS_LOWER.search(run))


def decode_run(run: str) -> tuple[str, bytes] | None:
    """The encoding and the bytes of a run, or None if it decodes to nothing."""
    compact = "".join(run.split())
    if _HEX.fullmatch(compact) and len(compact) % 2 == 0:
        try:
            return "hex", bytes.fromhex(compact)
        except ValueError:
            return None
    alphabet = "-_" if ("-" in compact or "_" in compact) else "+/"
    padded = compact.rstrip("=")
    padded += "=" * (-len(padded) % 4)
    try:
        return "base64", base64.b64decode(padded, altchars=alphabet.encode(), validate=True)
    except (binascii.Error, ValueError):
        return None


def find_blobs(text: str, min_chars: int) -> Iterator[Blob]:
    """The encoded runs of ``text`` of at least ``min_chars`` characters, decoded: whole
    lines of encoded characters, wrapped or not, and runs inside other lines."""
    lines = text.splitlines()
    block: list[str] = []
    start = 0
    for number, line in enumerate([*lines, ""], start=1):
        stripped = line.strip()
        if _LINE.fullmatch(stripped) and not (block and block[-1].endswith("=")):
            if not block:
                start = number
            block.append(stripped)
            continue
        if block:
            blob = _decoded("".join(block), start, min_chars)
            if blob is not None:
                yield blob
            elif len(block) == 1:
                yield from _runs(block[0], start, min_chars)
            block = []
        if stripped:
            yield from _runs(stripped, number, min_chars)


def _runs(line: str, number: int, min_chars: int) -> Iterator[Blob]:
    for match in _run(min_chars).finditer(line):
        blob = _decoded(match.group(), number, min_chars)
        if blob is not None:
            yield blob


def _decoded(run: str, line: int, min_chars: int) -> Blob | None:
    if len(run) < min_chars or not looks_encoded(run.rstrip("=")):
        return None
    decoded = decode_run(run)
    return None if decoded is None else Blob(decoded[0], line, decoded[1])
