"""What every kind of view shares: a field's treatment as a SQL expression, the keyed
pseudonym, and a DuckDB connection that streams its source within a memory limit.

The queries of the view builders are built from column names quoted by :func:`quoted`,
from numbers the specs' checks have validated, and from constants; values from the data
never enter them.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from sandbox.views.treatments import Treatment

MIN_KEY_BYTES = 32
NOT_IN_RECORDS = frozenset({Treatment.DROP, Treatment.AGGREGATE_ONLY})
# A pseudonym is the hex HMAC with its digits 0-9 written as g-p: 64 letters a-p. No run of
# digits in it can read as a phone, ID or card number to a scanner (the export airlock's).
PSEUDONYM_DIGITS = "ghijklmnop"
PSEUDONYM_ALPHABET = str.maketrans("0123456789", PSEUDONYM_DIGITS)
GENERALIZATIONS = ("year", "month", "band", "district")
# An address cut after its county-level unit (区, 县 or 县级市), past an optional province
# and prefecture city: 山东省青岛市市南区香港中路10号 -> 山东省青岛市市南区.
DISTRICT = "^((?:[^省]{1,8}省)?(?:[^市区县]{1,8}市)?.{1,8}?[区县市])"


class ViewSpecError(ValueError):
    """The spec asks for something the policy or the data does not allow; nothing was
    built. The message says which field and why."""


@dataclass(frozen=True)
class FieldRule:
    """One column of the view: a source column and its treatment, with its parameters:

    - ``mask``: ``keep_start`` and ``keep_end`` characters shown (3 and 4: 138****8000);
    - ``generalize``: ``to`` one of ``year``/``month`` (dates), ``band`` with ``width``
      (numbers: 30-39), ``district`` (addresses, cut after the county-level unit);
    - ``top_bottom_code``: ``low`` and ``high``, the values beyond them replaced by them.
    """

    column: str
    treatment: Treatment
    params: Mapping[str, Any] = field(default_factory=dict)


@contextmanager
def source_connection(
    source: Path, spill_beside: Path, memory_limit: str
) -> Iterator[tuple[duckdb.DuckDBPyConnection, list[str], dict[str, str]]]:
    """A DuckDB connection with ``source`` (Parquet or CSV) as the view ``source``, its
    column names and their types. DuckDB spills to a private folder beside
    ``spill_beside``, removed on the way out."""
    spill = Path(tempfile.mkdtemp(prefix=".view-", dir=spill_beside.parent))
    connection = duckdb.connect(
        config={"memory_limit": memory_limit, "threads": 2, "temp_directory": str(spill)}
    )
    try:
        connection.execute("SET enable_progress_bar = false")
        read = connection.read_parquet if source.suffix == ".parquet" else connection.read_csv
        read(str(source)).create_view("source")
        described = connection.execute("DESCRIBE source").fetchall()
        yield connection, [row[0] for row in described], {row[0]: row[1] for row in described}
    finally:
        connection.close()
        shutil.rmtree(spill, ignore_errors=True)


def check_key(key: bytes) -> None:
    """:class:`ViewSpecError` for a pseudonym key too short to be a key."""
    if len(key) < MIN_KEY_BYTES:
        raise ViewSpecError(f"a pseudonym key has at least {MIN_KEY_BYTES} bytes")


def expression(rule: FieldRule, column: str) -> str:
    params = dict(rule.params)
    treatment = rule.treatment
    if treatment is Treatment.KEEP or treatment in NOT_IN_RECORDS:
        return column
    if treatment is Treatment.PSEUDONYMIZE:
        # HMAC-SHA256 under the grant's key, defined on the connection (pseudonyms.py)
        return f"sbx_pseudonym(CAST({column} AS VARCHAR))"
    if treatment is Treatment.SUPPRESS:
        return "NULL"
    if treatment is Treatment.MASK:
        start, end = _int(rule, params, "keep_start", 3, 0), _int(rule, params, "keep_end", 4, 0)
        text = f"CAST({column} AS VARCHAR)"
        return (
            f"CASE WHEN length({text}) > {start + end} THEN left({text}, {start}) || "
            f"repeat('*', length({text}) - {start + end}) || right({text}, {end}) "
            f"ELSE repeat('*', length({text})) END"
        )
    if treatment is Treatment.TOP_BOTTOM_CODE:
        low, high = _number(rule, params, "low"), _number(rule, params, "high")
        if low > high:
            raise ViewSpecError(f"{rule.column}: low is above high")
        return f"least(greatest({column}, {low}), {high})"
    to = params.get("to")
    if to == "year":
        return f"strftime(CAST({column} AS DATE), '%Y')"
    if to == "month":
        return f"strftime(CAST({column} AS DATE), '%Y-%m')"
    if to == "band":
        width = _int(rule, params, "width", 10, 1)
        band = f"CAST(floor({column} / {width}) * {width} AS BIGINT)"
        return f"CAST({band} AS VARCHAR) || '-' || CAST({band} + {width - 1} AS VARCHAR)"
    if to == "district":
        text = f"CAST({column} AS VARCHAR)"
        return f"nullif(regexp_extract({text}, '{DISTRICT}', 1), '')"
    raise ViewSpecError(f"{rule.column}: generalize 'to' is one of {', '.join(GENERALIZATIONS)}")


def _int(rule: FieldRule, params: dict[str, Any], name: str, default: int, least: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= 10_000:
        raise ViewSpecError(f"{rule.column}: {name} is a whole number from {least} to 10000")
    return value


def _number(rule: FieldRule, params: dict[str, Any], name: str) -> float:
    value = params.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ViewSpecError(f"{rule.column}: {name} must be a finite number")
    return float(value)


def quoted(name: str) -> str:
    """A column name as a SQL identifier. The queries are built from these, from numbers
    the spec's checks have validated, and from constants; values never enter them."""
    return '"' + name.replace('"', '""') + '"'


def literal(path: Path) -> str:
    return str(path).replace("'", "''")


def scalar(connection: duckdb.DuckDBPyConnection, query: str) -> int:
    row = connection.execute(query).fetchone()
    return int(row[0]) if row else 0
