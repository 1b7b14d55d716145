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
# The same encoder as _encoder, built once: check_value has already ruled out cycles,
# floats and foreign types, so the per-call set-up of JSONEncoder.encode is not needed.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_fast_encode: Any = (
    _c_make_encoder(
        None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )
    if _c_make_encoder is not None
    else lambda value, _level: [_encoder.encode(value)]
)


class CanonicalError(ValueError):
    """A value cannot be represented, or bytes are not in canonical form."""


_MAX_ITEMS = 1 << 20  # more values than any entry can hold: a cycle, or far too large


def check_value(value: Any) -> None:
    """Raise :class:`CanonicalError` unless ``value`` is representable canonically.

    Strings are checked for lone surrogates by :func:`encode`, which must encode anyway."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    budget = _MAX_ITEMS
    while stack:
        budget -= 1
        item = pop()
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            break
        if kind is dict:
            if budget < 0 or not all(type(key) is str for key in item):
                break
            extend(item.values())
            continue
        if kind is list or kind is tuple:
            if budget < 0:
                break
            extend(item)
            continue
        if isinstance(item, str) or (
            isinstance(item, int)
            and not isinstance(item, bool)
            and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER
        ):
            continue  # subclasses such as enums encode as their plain values
        break
    else:
        return
    if budget < 0:
        raise CanonicalError("value is too large or refers to itself")
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
        return "".join(_fast_encode(value, 0)).encode("utf-8")
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
