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

Keyed pseudonyms are HMAC-SHA256 under a key of the grant's own (``pseudonyms.py``), so
the same person has the same pseudonym within a grant and pseudonyms of two grants cannot
be linked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sandbox.views import pseudonyms
from sandbox.views.fields import (
    NOT_IN_RECORDS,
    FieldRule,
    ViewSpecError,
    check_key,
    expression,
    literal,
    quoted,
    scalar,
    source_connection,
)
from sandbox.views.treatments import SensitivityClass, Treatment, TreatmentPolicy

__all__ = [
    "FieldRule",
    "RecordViewReport",
    "RecordViewSpec",
    "ViewSpecError",
    "build_record_view",
    "check_spec",
]


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
        expression(rule, "x")  # parameters checked before anything is read


def build_record_view(
    source: Path,
    spec: RecordViewSpec,
    policy: TreatmentPolicy,
    *,
    key: bytes,
    destination: Path,
    memory_limit: str = "512MB",
    compiled: bool = True,
) -> RecordViewReport:
    """Build the view of ``source`` (Parquet or CSV) into ``destination`` (Parquet).
    ``compiled``: use the compiled pseudonym kernel when it is built (``False``: the SQL
    reference, for tests that compare the two)."""
    check_key(key)  # a short key is refused before anything is read
    with source_connection(source, destination, memory_limit) as (connection, columns, _):
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
            f"{expression(r, quoted(r.column))} AS {quoted(r.column)}" for r in kept
        )
        partition = f"PARTITION BY {', '.join(map(quoted, quasi))}" if quasi else ""
        counts = [f"count(*) OVER ({partition}) AS __n"] + [
            f"count(DISTINCT {quoted(s)}) OVER ({partition}) AS __d{i}"
            for i, s in enumerate(sensitive)
        ]
        l_needed = int(spec.l_diversity)
        diverse = " AND ".join(f"__d{i} >= {l_needed}" for i in range(len(sensitive))) or "TRUE"
        outputs = ", ".join(quoted(r.column) for r in kept)
        pseudonyms.install(connection, key, compiled=compiled)
        connection.execute(
            f"CREATE TEMP TABLE counted AS SELECT *, {', '.join(counts)} "  # noqa: S608 - see fields
            f"FROM (SELECT {treated} FROM source)"
        )
        where = f"__n >= {int(spec.k)} AND {diverse}"
        connection.execute(
            f"COPY (SELECT {outputs} FROM counted WHERE {where}) TO '{literal(destination)}' "  # noqa: S608
            "(FORMAT parquet)"
        )
        rows_in = scalar(connection, "SELECT count(*) FROM counted")
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
