"""Record-level desensitized views: each field treated as its spec says, then records that
still single someone out suppressed (k-anonymity, and l-diversity for sensitive
attributes), written to Parquet.

The spec is checked against the treatments policy before anything is read: every source
column must have a sensitivity class, every treatment must be allowed for the field's
class at the dataset's security level, and columns the spec does not name are left out.
The work is one DuckDB query, so the source streams through in batches and memory stays
within DuckDB's limit however large the table::

    treated  = SELECT <treatment of each field> FROM source
    counted  = treated, with per record the size of its group of equal quasi-identifiers
               and the number of distinct values of each sensitive attribute in it
    the view = the records whose group has at least k records and l distinct values

Keyed pseudonyms are HMAC-SHA256 under a key of the grant's own, computed in SQL from two
SHA-256 calls (RFC 2104), so the same person has the same pseudonym within a grant and
pseudonyms of two grants cannot be linked.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from sandbox.views.treatments import SensitivityClass, Treatment, TreatmentPolicy

HMAC_BLOCK = 64
MIN_KEY_BYTES = 32
NOT_IN_RECORDS = frozenset({Treatment.DROP, Treatment.AGGREGATE_ONLY})
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


@dataclass(frozen=True)
class RecordViewSpec:
    level: str  # the dataset's security level
    classes: Mapping[str, SensitivityClass]  # every source column's class, from the catalog
    fields: tuple[FieldRule, ...]
    k: int = 5
    l_diversity: int = 1  # distinct values of each kept sensitive attribute per group


@dataclass(frozen=True)
class RecordViewReport:
    rows_in: int
    rows_out: int
    k: int  # the spec's k
    k_achieved: int | None  # the smallest group left (None: nothing left)
    l_achieved: int | None
    quasi_identifiers: tuple[str, ...]
    sensitive: tuple[str, ...]
    columns: tuple[str, ...]

    @property
    def rows_suppressed(self) -> int:
        return self.rows_in - self.rows_out


def check_spec(spec: RecordViewSpec, columns: list[str], policy: TreatmentPolicy) -> None:
    """:class:`ViewSpecError` unless the policy allows every treatment of the spec."""
    unclassified = sorted(set(columns) - set(spec.classes))
    if unclassified:
        raise ViewSpecError(f"columns without a sensitivity class: {unclassified}")
    if spec.k < 1 or spec.l_diversity < 1:
        raise ViewSpecError("k and l are at least 1")
    seen: set[str] = set()
    for rule in spec.fields:
        if rule.column not in columns:
            raise ViewSpecError(f"{rule.column!r} is not a column of the data")
        if rule.column in seen:
            raise ViewSpecError(f"{rule.column!r} is named twice")
        seen.add(rule.column)
        reason = policy.refusal(spec.classes[rule.column], spec.level, rule.treatment)
        if reason is not None:
            raise ViewSpecError(f"{rule.column}: {reason}")
        _expression(rule, "x")  # parameters checked before anything is read


def build_record_view(
    source: Path,
    spec: RecordViewSpec,
    policy: TreatmentPolicy,
    *,
    key: bytes,
    destination: Path,
    memory_limit: str = "512MB",
) -> RecordViewReport:
    """Build the view of ``source`` (Parquet or CSV) into ``destination`` (Parquet)."""
    if len(key) < MIN_KEY_BYTES:
        raise ViewSpecError(f"a pseudonym key has at least {MIN_KEY_BYTES} bytes")
    spill = Path(tempfile.mkdtemp(prefix=".view-", dir=destination.parent))
    connection = duckdb.connect(
        config={"memory_limit": memory_limit, "threads": 2, "temp_directory": str(spill)}
    )
    try:
        connection.execute("SET enable_progress_bar = false")
        read = connection.read_parquet if source.suffix == ".parquet" else connection.read_csv
        read(str(source)).create_view("source")
        columns = [row[0] for row in connection.execute("DESCRIBE source").fetchall()]
        check_spec(spec, columns, policy)
        kept = [rule for rule in spec.fields if rule.treatment not in NOT_IN_RECORDS]
        if not kept:
            raise ViewSpecError("the view would have no column")
        quasi = tuple(
            r.column for r in kept if spec.classes[r.column] is SensitivityClass.QUASI_IDENTIFIER
        )
        sensitive = tuple(
            r.column
            for r in kept
            if spec.classes[r.column] is SensitivityClass.SENSITIVE_ATTRIBUTE
            and r.treatment is not Treatment.SUPPRESS
            and spec.l_diversity > 1  # distinct counts per group are costly: only when asked
        )
        treated = ", ".join(
            f"{_expression(r, _quoted(r.column))} AS {_quoted(r.column)}" for r in kept
        )
        partition = f"PARTITION BY {', '.join(map(_quoted, quasi))}" if quasi else ""
        counts = [f"count(*) OVER ({partition}) AS __n"] + [
            f"count(DISTINCT {_quoted(s)}) OVER ({partition}) AS __d{i}"
            for i, s in enumerate(sensitive)
        ]
        l_needed = int(spec.l_diversity)
        diverse = " AND ".join(f"__d{i} >= {l_needed}" for i in range(len(sensitive))) or "TRUE"
        outputs = ", ".join(_quoted(r.column) for r in kept)
        ipad, opad = _pads(key)  # in the query's text: statements with windows cannot be prepared
        treated = treated.replace("$ipad", f"unhex('{ipad.hex()}')")
        treated = treated.replace("$opad", f"unhex('{opad.hex()}')")
        connection.execute(
            f"CREATE TEMP TABLE counted AS SELECT *, {', '.join(counts)} "  # noqa: S608 - see _quoted
            f"FROM (SELECT {treated} FROM source)"
        )
        where = f"__n >= {int(spec.k)} AND {diverse}"
        connection.execute(
            f"COPY (SELECT {outputs} FROM counted WHERE {where}) TO '{_literal(destination)}' "  # noqa: S608
            "(FORMAT parquet)"
        )
        rows_in = _scalar(connection, "SELECT count(*) FROM counted")
        rows_out, k_achieved = connection.execute(
            f"SELECT count(*), min(__n) FROM counted WHERE {where}"  # noqa: S608
        ).fetchone() or (0, None)
        l_achieved = None
        if sensitive and rows_out:
            smallest = " , ".join(f"min(__d{i})" for i in range(len(sensitive)))
            row = connection.execute(
                f"SELECT least({smallest}) FROM counted WHERE {where}"  # noqa: S608
            ).fetchone()
            l_achieved = int(row[0]) if row else None
    finally:
        connection.close()
        shutil.rmtree(spill, ignore_errors=True)
    return RecordViewReport(
        rows_in,
        int(rows_out),
        spec.k,
        int(k_achieved) if k_achieved is not None else None,
        l_achieved,
        quasi,
        sensitive,
        tuple(r.column for r in kept),
    )


def _expression(rule: FieldRule, column: str) -> str:
    params = dict(rule.params)
    treatment = rule.treatment
    if treatment is Treatment.KEEP or treatment in NOT_IN_RECORDS:
        return column
    if treatment is Treatment.PSEUDONYMIZE:
        # HMAC-SHA256(key, value) = H(key ^ opad || H(key ^ ipad || value)), in hex.
        return f"sha256($opad || unhex(sha256($ipad || encode(CAST({column} AS VARCHAR)))))"
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


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > HMAC_BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(HMAC_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)


def _quoted(name: str) -> str:
    """A column name as a SQL identifier. The queries are built from these, from numbers
    the spec's checks have validated, and from constants; values never enter them."""
    return '"' + name.replace('"', '""') + '"'


def _literal(path: Path) -> str:
    return str(path).replace("'", "''")


def _scalar(connection: duckdb.DuckDBPyConnection, query: str) -> int:
    row = connection.execute(query).fetchone()
    return int(row[0]) if row else 0
