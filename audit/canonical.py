"""Canonical JSON: the one byte representation of a ledger record.

Rules (FORMAT.md §2): UTF-8; object keys sorted by Unicode code point; no insignificant
whitespace; strings escaped as the JSON encoder of the standard library does with
``ensure_ascii=False`` (only ``"``, ``\\`` and control characters are escaped); numbers
are integers in the I-JSON safe range ``[-(2**53-1), 2**53-1]``; no floats, NaN or
infinities; no duplicate keys; no lone surrogates. For keys within the Basic
Multilingual Plane this is the same byte sequence as RFC 8785 (JCS).
"""

from __future__ import annotations

import json
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1

_encoder = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


class CanonicalError(ValueError):
    """A value cannot be represented, or bytes are not in canonical form."""


def check_value(value: Any) -> None:
    """Raise :class:`CanonicalError` unless ``value`` is representable canonically.

    Strings are checked for lone surrogates by :func:`encode`, which must encode anyway."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        if item is None or isinstance(item, str | bool):
            continue
        if isinstance(item, float):
            break
        if isinstance(item, int):
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            break
        if isinstance(item, dict):
            if all(type(key) is str for key in item):
                extend(item.values())
                continue
            break
        if isinstance(item, list | tuple):
            extend(item)
            continue
        break
    else:
        return
    _explain(value, "$")  # slow path: find the offending value and say where it is
    raise CanonicalError("value is not representable as canonical JSON")


def _explain(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalError(f"{path}: integer {value} is outside the safe range ±(2^53-1)")
        return
    if isinstance(value, float):
        raise CanonicalError(f"{path}: floats are not allowed (got {value!r}); use integers")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _explain(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(f"{path}: object keys must be strings, got {key!r}")
            _explain(item, f"{path}.{key}")
        return
    raise CanonicalError(f"{path}: {type(value).__name__} is not a JSON value")


def _find_bad_text(value: Any, path: str = "$") -> str:
    """Where a string that is not valid Unicode (a lone surrogate) is."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"{path}: string is not valid Unicode ({exc.reason})"
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if found := _find_bad_text(item, f"{path}[{i}]"):
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if found := _find_bad_text(key, path) or _find_bad_text(item, f"{path}.{key}"):
                return found
    return ""


def encode(value: Any) -> bytes:
    """Return the canonical UTF-8 bytes of ``value`` after checking it."""
    check_value(value)
    try:
        return _encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError(_find_bad_text(value) or "string is not valid Unicode") from None


def _reject_constant(name: str) -> Any:
    raise CanonicalError(f"{name} is not allowed")


def _reject_float(text: str) -> Any:
    raise CanonicalError(f"floats are not allowed (got {text})")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise CanonicalError(f"duplicate key {key!r}")
        result[key] = item
    return result


def decode(data: bytes) -> Any:
    """Parse ``data`` strictly: it must be valid UTF-8 JSON with integers only.

    Raises :class:`CanonicalError` with a reason; does not require canonical form (see
    :func:`decode_canonical`).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalError(f"not UTF-8 at byte {exc.start}") from None
    try:
        value = json.loads(
            text,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_object_without_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise CanonicalError(f"not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise CanonicalError("JSON nested too deeply") from None
    check_value(value)
    return value


def decode_canonical(data: bytes) -> Any:
    """Parse ``data`` and require that it is exactly the canonical encoding of its value."""
    value = decode(data)
    if encode(value) != data:
        raise CanonicalError("bytes are valid JSON but not in canonical form")
    return value
