"""Keyed pseudonyms in the view builder's queries: ``sbx_pseudonym(text)`` on a connection.

A pseudonym is HMAC-SHA256 under the grant's key, in hex with the digits written as the
letters g-p (``fields.PSEUDONYM_DIGITS``). :func:`install` defines ``sbx_pseudonym`` on a
DuckDB connection for one key, in one of two ways with the same results:

- the compiled kernel ``sandbox.views._pseudonym`` (built with the package when a C
  compiler and OpenSSL are there): a vectorized function over Arrow strings that hashes
  the key's pads once and releases the GIL, so DuckDB's threads hash in parallel;
- otherwise a SQL macro from two ``sha256`` calls (RFC 2104), the reference.

The key never enters a query's text except as the macro's pads, on a connection of the
builder's own.
"""

from __future__ import annotations

import hashlib
import importlib
from types import ModuleType

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from duckdb.func import FunctionNullHandling, PythonUDFType

from sandbox.views.fields import PSEUDONYM_DIGITS

HMAC_BLOCK = 64
FUNCTION = "sbx_pseudonym"
WIDTH = 64  # letters per pseudonym


def _kernel() -> ModuleType | None:
    try:
        return importlib.import_module("sandbox.views._pseudonym")
    except ImportError:  # no compiler at install time: the SQL macro does the same, slower
        return None


native = _kernel()


def install(connection: duckdb.DuckDBPyConnection, key: bytes, *, compiled: bool = True) -> str:
    """Define ``sbx_pseudonym(VARCHAR) -> VARCHAR`` on ``connection`` for ``key``; which
    implementation was installed (``"native"`` or ``"sql"``)."""
    if len(key) > HMAC_BLOCK:
        key = hashlib.sha256(key).digest()
    kernel = native if compiled else None
    if kernel is None:
        padded = key.ljust(HMAC_BLOCK, b"\0")
        ipad = bytes(b ^ 0x36 for b in padded).hex()
        opad = bytes(b ^ 0x5C for b in padded).hex()
        inner = f"unhex(sha256(unhex('{ipad}') || encode(v)))"
        connection.execute(
            f"CREATE OR REPLACE TEMP MACRO {FUNCTION}(v) AS "
            f"translate(sha256(unhex('{opad}') || {inner}), '0123456789', '{PSEUDONYM_DIGITS}')"
        )
        return "sql"

    def pseudonyms(values: pa.Array) -> pa.Array:
        strings = values.cast(pa.string())
        if isinstance(strings, pa.ChunkedArray):
            strings = strings.combine_chunks()
        count = len(strings)
        _, offsets, data = strings.buffers()
        starts = np.frombuffer(offsets, dtype=np.int32)[strings.offset : strings.offset + count + 1]
        letters = kernel.hmac_letters(
            key, np.ascontiguousarray(starts).tobytes(), data or b"", count
        )
        out_offsets = pa.py_buffer(
            np.arange(0, (count + 1) * WIDTH, WIDTH, dtype=np.int32).tobytes()
        )
        result = pa.Array.from_buffers(
            pa.string(), count, [None, out_offsets, pa.py_buffer(letters)]
        )
        if strings.null_count:
            result = pc.if_else(strings.is_null(), pa.scalar(None, pa.string()), result)
        return result

    connection.create_function(
        FUNCTION,
        pseudonyms,
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("VARCHAR"),
        type=PythonUDFType.ARROW,
        null_handling=FunctionNullHandling.SPECIAL,
        side_effects=False,
    )
    return "native"
