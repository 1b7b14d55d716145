"""Ledger entries: what an entry holds, how it is encoded and how it is read back.

An entry is one canonical JSON object (FORMAT.md §3) with exactly these members::

    action   str   what was done, e.g. "export.approve"
    actor    str   who did it, e.g. "user:alice" or "system:gateway"
    detail   obj   anything else worth keeping (organisation, role, request id, ...)
    object   str   what it was done to, e.g. "grant:7f3a"
    outcome  str   how it ended, e.g. "allowed", "denied", "ok", "failed"
    prev     str   hex leaf hash of the entry before (64 zeros for the first entry)
    seq      int   position in the ledger, from 0, without gaps
    time     int   microseconds since 1970-01-01T00:00:00Z, never decreasing
    v        int   entry format version (1)

Keys sort so that ``prev``, ``seq``, ``time`` and ``v`` — all scalars — close every
entry; a reader can take the chain fields from the end of the line without parsing the
rest (:func:`chain_fields`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from audit import canonical
from audit.errors import InvalidEntry

FORMAT_VERSION = 1
GENESIS_PREV = "0" * 64
DEFAULT_MAX_ENTRY_BYTES = 64 * 1024
CALLER_FIELDS = ("action", "actor", "detail", "object", "outcome")
ALL_FIELDS = frozenset((*CALLER_FIELDS, "prev", "seq", "time", "v"))
_MAX_LABEL = 256
SYSTEM_ACTION_PREFIX = "ledger."  # actions the ledger writes about itself; nobody else may

_TAIL = re.compile(
    rb',"prev":"([0-9a-f]{64})","seq":(0|[1-9][0-9]*),"time":(0|[1-9][0-9]*),"v":([1-9][0-9]*)}\Z'
)
_TAIL_WINDOW = 160  # longer than the longest tail the pattern can match


@dataclass(frozen=True, slots=True)
class ChainFields:
    prev: str
    seq: int
    time: int
    version: int


def chain_fields(line: bytes) -> ChainFields | None:
    """Read ``prev``, ``seq``, ``time`` and ``v`` from the end of an encoded entry, or
    ``None`` if the line does not end the way an entry must."""
    match = _TAIL.search(line, max(0, len(line) - _TAIL_WINDOW))
    if match is None:
        return None
    prev, seq, time, version = match.groups()
    return ChainFields(prev.decode(), int(seq), int(time), int(version))


def _label(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEntry(f"{name} must be a non-empty string")
    if len(value) > _MAX_LABEL:
        raise InvalidEntry(f"{name} is longer than {_MAX_LABEL} characters")
    return value


def encode_body(
    *,
    action: str,
    actor: str,
    object: str,  # noqa: A002 - the field's name in the format
    outcome: str,
    detail: dict[str, Any] | None,
    max_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    system: bool = False,
) -> bytes:
    """Check the caller's fields and return the entry's canonical bytes up to, and not
    including, the chain fields (``{"action":…,"outcome":"…"``, no closing brace).

    Raises :class:`InvalidEntry` with a reason; nothing is written. Actions under
    ``ledger.`` (key records, repairs) are the ledger's own: only ``system`` may use them."""
    if not system and isinstance(action, str) and action.startswith(SYSTEM_ACTION_PREFIX):
        raise InvalidEntry(f"actions starting with {SYSTEM_ACTION_PREFIX!r} are the ledger's own")
    body = {
        "action": _label("action", action),
        "actor": _label("actor", actor),
        "object": _label("object", object),
        "outcome": _label("outcome", outcome),
        "detail": {} if detail is None else detail,
    }
    if not isinstance(body["detail"], dict):
        raise InvalidEntry("detail must be a JSON object")
    try:
        encoded = canonical.encode(body)
    except canonical.CanonicalError as exc:
        raise InvalidEntry(str(exc)) from None
    if len(encoded) + 120 > max_bytes:
        raise InvalidEntry(f"entry is larger than the limit of {max_bytes} bytes")
    return encoded[:-1]


def seal_body(body: bytes, *, prev: str, seq: int, time: int) -> bytes:
    """Complete an encoded body with its chain fields: the entry's canonical bytes."""
    return b'%s,"prev":"%s","seq":%d,"time":%d,"v":%d}' % (
        body,
        prev.encode(),
        seq,
        time,
        FORMAT_VERSION,
    )


def parse(line: bytes) -> dict[str, Any]:
    """Parse and fully check one encoded entry (canonical form, members, types)."""
    try:
        value = canonical.decode_canonical(line)
    except canonical.CanonicalError as exc:
        raise InvalidEntry(str(exc)) from None
    if not isinstance(value, dict) or set(value) != ALL_FIELDS:
        raise InvalidEntry("entry does not have exactly the members of format version 1")
    for name in ("action", "actor", "object", "outcome"):
        _label(name, value[name])
    if not isinstance(value["detail"], dict):
        raise InvalidEntry("detail must be a JSON object")
    for name in ("seq", "time", "v"):
        if isinstance(value[name], bool) or not isinstance(value[name], int) or value[name] < 0:
            raise InvalidEntry(f"{name} must be a non-negative integer")
    if value["v"] != FORMAT_VERSION:
        raise InvalidEntry(f"unknown entry version {value['v']}")
    if chain_fields(line) is None:
        raise InvalidEntry("prev must be 64 lowercase hex digits")
    return value
