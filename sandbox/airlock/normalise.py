"""Values as the checks see them: every cell as text, in two forms, and 64-bit hashes.

- *display* text: the value trimmed and in Unicode NFKC (full-width digits and letters
  become ASCII), case kept; the identifier scanner reads it (a credit code is upper case).
- *canonical* text: the display text in lower case, with numbers written one way
  (``007``, ``7.0``, ``+7`` and ``7`` are all ``7``; ``1,234.5`` is ``1234.5``), dates with
  dashes (``2024/01/05`` is ``2024-01-05``, midnight times dropped) and missing values
  (``NaN``, ``None``, ``null``, empty) as the empty string. Two files that hold the same
  values in different formats have the same canonical cells, whatever the column types
  (a CSV read as text, a Parquet column of doubles).

Hashes are DuckDB's ``hash()`` of the canonical text (fast, vectorised, the same for the
same DuckDB version; an index records the version it was built with). A row's key is
the mixed sum of its values' hashes, so it does not depend on column order or names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HASHER = f"duckdb-{duckdb.__version__}"
MISSING = ["", "nan", "-nan", "none", "null", "na", "n/a", "nat", "<na>"]
_INTEGER = r"^[+-]?[0-9]+$"
_DECIMAL = r"^[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?$|^[+-]?[0-9]+e[+-]?[0-9]+$"
_GROUPED = r"^[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?$"
_DATE = r"^([0-9]{4})[/.]([0-9]{1,2})[/.]([0-9]{1,2})"
_MIDNIGHT = r"[ t]00:00(?::00(?:\.0+)?)?$"
_FRACTION_ZEROS = r"(:[0-9]{2})\.0+$"
# The blocks whose characters NFKC changes: Latin-1 signs (no-break space, ², ½),
# general punctuation to miscellaneous symbols (spaces, super- and subscripts, ①), CJK
# symbols and compatibility (the ideographic space, ㎏), compatibility ideographs and
# half- and full-width forms (１２３, ＡＢ).
_COMPATIBILITY = "[\u00a0-\u00ff\u2000-\u2bff\u3000-\u33ff\uf900-\uffff]"
_GOLDEN = 0x9E3779B97F4A7C15
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def text_of(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The display text of each value (null where the value is missing)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    kind = values.type
    if pa.types.is_dictionary(kind):
        return text_of(values.dictionary_decode())
    if pa.types.is_null(kind):
        return pa.nulls(len(values), pa.string())
    if pa.types.is_floating(kind):
        text = pc.cast(values, pa.string())
    elif pa.types.is_decimal(kind):
        text = pc.cast(pc.cast(values, pa.float64()), pa.string())
    elif pa.types.is_timestamp(kind):
        text = pc.replace_substring_regex(pc.cast(values, pa.string()), _FRACTION_ZEROS, r"\1")
    elif (
        pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_date(kind)
        or pa.types.is_time(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    ):
        text = pc.cast(values, pa.string())
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        text = pa.array(
            [None if v is None else v.decode("utf-8", "replace") for v in values.to_pylist()],
            pa.string(),
        )
    else:  # lists, structs, maps: their JSON text
        text = pa.array([_json_text(v) for v in values.to_pylist()], pa.string())
    return _nfkc(pc.utf8_trim_whitespace(text))


def _nfkc(text: pa.Array) -> pa.Array:
    """NFKC for the values that have characters it changes (normalising every value
    costs more than all the other steps together)."""
    if not len(text) or pc.all(pc.fill_null(pc.string_is_ascii(text), True)).as_py():
        return text
    changed = pc.fill_null(pc.match_substring_regex(text, _COMPATIBILITY), False)
    if not pc.any(changed).as_py():
        return text
    return pc.replace_with_mask(text, changed, pc.utf8_normalize(text.filter(changed), "NFKC"))


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def canonical(display: pa.Array) -> pa.Array:
    """The canonical text of display text (no nulls: a missing value is ``""``). Each
    rewriting runs only if a cheap test (a literal, a first character) says some value
    needs it: most columns are plain text or plain digits."""
    text = pc.utf8_lower(pc.fill_null(display, ""))
    text = pc.if_else(pc.is_in(text, value_set=pa.array(MISSING)), "", text)
    if not _any(pc.match_substring_regex(text, r"^[-+.0-9]")):
        return text  # no number and no date: nothing more to rewrite
    if _any(pc.match_substring(text, ",")):
        grouped = pc.match_substring_regex(text, _GROUPED)
        text = pc.if_else(grouped, pc.replace_substring(text, ",", ""), text)
    integer = pc.fill_null(pc.utf8_is_digit(text), False)
    signed = pc.or_(pc.starts_with(text, "+"), pc.starts_with(text, "-"))
    if _any(signed):
        integer = pc.or_(integer, pc.match_substring_regex(text, _INTEGER))
    padded = pc.and_(integer, pc.or_(pc.starts_with(text, "0"), signed))
    if _any(padded):
        digits = pc.replace_substring_regex(text, r"^\+?(-?)0*([0-9])", r"\1\2")
        digits = pc.if_else(pc.equal(digits, "-0"), "0", digits)
        text = pc.if_else(padded, digits, text)
    if _any(pc.or_(pc.match_substring(text, "."), pc.match_substring(text, "e"))):
        decimal = pc.and_(pc.match_substring_regex(text, _DECIMAL), pc.invert(integer))
        if _any(decimal):
            numbers = pc.cast(pc.if_else(decimal, text, pa.scalar(None, pa.string())), pa.float64())
            written = pc.cast(numbers, pa.string())
            written = pc.if_else(pc.equal(written, "-0"), "0", written)
            text = pc.if_else(decimal, written, text)
    if _any(pc.or_(pc.match_substring(text, "/"), pc.match_substring(text, "."))):
        dated = pc.match_substring_regex(text, _DATE)
        if _any(dated):
            dashed = pc.replace_substring_regex(text, _DATE, r"\1-\2-\3")
            dashed = pc.replace_substring_regex(dashed, r"^([0-9]{4})-([0-9])-", r"\1-0\2-")
            dashed = pc.replace_substring_regex(
                dashed, r"^([0-9]{4}-[0-9]{2})-([0-9])\b", r"\1-0\2"
            )
            text = pc.if_else(dated, dashed, text)
    if _any(pc.match_substring(text, "00:00")):
        midnight = pc.match_substring_regex(text, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}" + _MIDNIGHT)
        text = pc.if_else(midnight, pc.replace_substring_regex(text, _MIDNIGHT, ""), text)
    return text


def _any(mask: pa.Array) -> bool:
    return bool(pc.any(mask).as_py())


def display_and_canonical(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """Both texts of a column. A column of whole numbers or dates is written one way
    already; only text and fractional numbers need :func:`canonical`'s rewriting."""
    display = text_of(values)
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_date(kind) or pa.types.is_boolean(kind):
        return display, pc.fill_null(display, "")
    return display, canonical(display)


def canonical_texts(values: Iterable[object]) -> list[str]:
    """:func:`canonical` of plain Python values (names given by a caller, tokens of text)."""
    array = pa.array([None if v is None else str(v) for v in values], pa.string())
    if not len(array):
        return []
    return [str(v) for v in canonical(text_of(array)).to_pylist()]


class ValueHasher:
    """64-bit hashes of canonical text, column by column, on a DuckDB connection of its
    own (two threads)."""

    def __init__(self) -> None:
        self._connection = duckdb.connect(config={"threads": 2})
        self.empty = int(self.hashes([pa.array([""])])[0][0])

    def close(self) -> None:
        self._connection.close()

    def hashes(self, columns: Sequence[pa.Array]) -> np.ndarray:
        """An array of shape (columns, rows) of uint64."""
        if not columns:
            return np.zeros((0, 0), dtype=np.uint64)
        table = pa.table({f"c{i}": column for i, column in enumerate(columns)})
        self._connection.register("batch", table)
        try:
            selected = ", ".join(f"hash(c{i}) AS h{i}" for i in range(len(columns)))
            result = self._connection.sql(f"SELECT {selected} FROM batch").to_arrow_table()  # noqa: S608 - column numbers only
        finally:
            self._connection.unregister("batch")
        return np.vstack(
            [np.asarray(result.column(i).to_numpy(), dtype=np.uint64) for i in range(len(columns))]
        )


def row_keys(hashes: np.ndarray) -> np.ndarray:
    """One key per row (column) of ``hashes`` (shape: values, rows): the same for the same
    values in any order."""
    salt = np.uint64(_GOLDEN * hashes.shape[0] % (1 << 64))  # the width keys apart
    total = hashes.sum(axis=0, dtype=np.uint64) + salt
    return mix(total)


def mix(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise (wrapping arithmetic)."""
    x = values.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _MIX_1
    x ^= x >> np.uint64(27)
    x *= _MIX_2
    x ^= x >> np.uint64(31)
    return x


def lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``keys`` are in ``sorted_keys`` (sorted, unique), and where. The keys are
    looked up in sorted order: each search then starts where the last one ended, which
    is several times faster on a large index than searching in the keys' own order."""
    found = np.zeros(len(keys), dtype=bool)
    where = np.zeros(len(keys), dtype=np.intp)
    if not len(sorted_keys) or not len(keys):
        return found, where
    order = np.argsort(keys)
    where[order] = np.searchsorted(sorted_keys, keys[order])
    where[where == len(sorted_keys)] = 0
    found = sorted_keys[where] == keys
    return found, where


def contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which of ``keys`` are in ``sorted_keys`` (sorted, unique)."""
    return lookup(sorted_keys, keys)[0]
