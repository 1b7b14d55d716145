"""Uploads checked against their catalog entry: the schema, then a quality report (R6).

The file is read by DuckDB in a streaming way, within a memory limit, so a table of any
size is checked without being loaded; identifier checksums are computed over Arrow
batches. An Excel workbook is first converted to Parquet (its first sheet; Excel holds
at most 1,048,576 rows, so this is bounded).

The schema check refuses the upload (nothing is stored) when the file's columns are not
exactly the entry's fields, or when a field's values are mostly not of its declared
type. The quality report then states, for the whole table and each field:

- completeness — the share of values present;
- validity — the share of present values of the declared type, and for fields declared
  to hold resident ID numbers or unified social credit codes, with a valid check
  character (GB 11643, GB 32100);
- uniqueness — distinct values, and rows that repeat another row exactly;
- consistency — dates not after the day of upload;
- timeliness — days since the previous version against the entry's update cycle.

A PII scan of a sample of every field not declared a direct identifier flags identifiers
found there (a phone number in a "remarks" column): a warning for the steward, who should
correct the entry; views treat fields as the entry declares them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from gateway.catalog.entry import CYCLE_DAYS, CatalogEntry, DataFormat, FieldType
from sandbox.identifiers import Kind, scan_values
from sandbox.identifiers.credit_code import is_credit_code
from sandbox.identifiers.resident_id import valid_many as resident_ids_valid
from sandbox.views.fields import quoted
from sandbox.views.treatments import SensitivityClass

PARQUET_MAGIC = b"PAR1"
ZIP_MAGIC = b"PK\x03\x04"  # an .xlsx workbook is a zip archive
MIN_VALID = 0.5  # a field whose present values are mostly not of its type: wrong schema
PII_SAMPLE = 20_000
PII_WARN = 0.01  # a share of sampled values holding identifiers worth a warning
# Each checks a batch of values at once: (values, the day of upload) -> valid or not.
CHECKSUMS: dict[Kind, Callable[[list[str], date], list[bool]]] = {
    Kind.RESIDENT_ID: lambda values, today: resident_ids_valid(values, today=today),
    Kind.CREDIT_CODE: lambda values, _: [is_credit_code(value) for value in values],
}
CAST = {
    FieldType.STRING: "VARCHAR",
    FieldType.INTEGER: "BIGINT",
    FieldType.DECIMAL: "DOUBLE",
    FieldType.DATE: "DATE",
    FieldType.DATETIME: "TIMESTAMP",
    FieldType.BOOLEAN: "BOOLEAN",
}


class UploadRejected(ValueError):
    """The file does not match its catalog entry; nothing was stored. ``problems`` says
    what is wrong, one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class FieldQuality:
    name: str
    present: float  # completeness
    valid: float  # validity of the present values
    distinct: int
    checksum_valid: float | None = None  # identifiers with a valid check character
    future_dates: int = 0
    pii: dict[str, float] = field(default_factory=dict)  # kind -> share of sampled values


@dataclass
class QualityReport:
    rows: int
    duplicate_rows: int
    fields: list[FieldQuality]
    days_since_previous: int | None
    late: bool
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_format(head: bytes) -> DataFormat:
    if head.startswith(PARQUET_MAGIC):
        return DataFormat.PARQUET
    if head.startswith(ZIP_MAGIC):
        return DataFormat.EXCEL
    return DataFormat.CSV


def excel_to_parquet(source: Path, destination: Path) -> None:
    """The first sheet of the workbook, its first row the header, as Parquet of strings
    (types are checked afterwards like a CSV's)."""
    from python_calamine import CalamineWorkbook

    try:
        sheet = CalamineWorkbook.from_path(str(source)).get_sheet_by_index(0)
        rows = iter(sheet.iter_rows())
        header = [str(name).strip() for name in next(rows, [])]
    except Exception as exc:  # noqa: BLE001 - calamine raises its own types for bad files
        raise UploadRejected([f"the workbook cannot be read: {exc}"]) from None
    if not header:
        raise UploadRejected(["the workbook's first sheet is empty"])
    schema = pa.schema([(name, pa.string()) for name in header])
    with pq.ParquetWriter(destination, schema) as writer:
        batch: list[list[Any]] = []
        for row in rows:
            batch.append([_cell(value) for value in row])
            if len(batch) == 50_000:
                writer.write_table(_rows_table(batch, schema))
                batch = []
        if batch:
            writer.write_table(_rows_table(batch, schema))


def _cell(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime) and value.time() == datetime.min.time():
        return value.date().isoformat()
    return str(value)


def _rows_table(rows: list[list[Any]], schema: pa.Schema) -> pa.Table:
    width = len(schema)
    columns = [[(row[i] if i < len(row) else None) for row in rows] for i in range(width)]
    return pa.table(columns, schema=schema)


@contextmanager
def _connection(scratch: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    spill = Path(tempfile.mkdtemp(prefix=".quality-", dir=scratch))
    connection = duckdb.connect(
        config={"memory_limit": "512MB", "threads": 2, "temp_directory": str(spill)}
    )
    try:
        yield connection
    finally:
        connection.close()
        shutil.rmtree(spill, ignore_errors=True)


def check_upload(
    path: Path,
    entry: CatalogEntry,
    *,
    today: date,
    previous: datetime | None,
    now: datetime,
) -> QualityReport:
    """The quality report of ``path`` (CSV or Parquet), or :class:`UploadRejected`. A
    file DuckDB cannot read (a bad row deep in a CSV is found only when it is reached) is
    refused with the reason's first line: never the offending line, which is raw data."""
    try:
        return _check(path, entry, today=today, previous=previous, now=now)
    except duckdb.Error as exc:
        raise UploadRejected(
            [f"the file cannot be read as {path.suffix[1:]}: {_reason(exc)}"]
        ) from None


def _reason(error: duckdb.Error) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return first.split("Original Line")[0].strip()[:300]


def _check(
    path: Path,
    entry: CatalogEntry,
    *,
    today: date,
    previous: datetime | None,
    now: datetime,
) -> QualityReport:
    with _connection(path.parent) as connection:
        connection.execute("SET enable_progress_bar = false")
        try:
            if path.suffix == ".parquet":
                relation = connection.read_parquet(str(path))
            else:
                relation = connection.read_csv(str(path), all_varchar=True, header=True)
            relation.create_view("upload")
            columns = [row[0] for row in connection.execute("DESCRIBE upload").fetchall()]
        except duckdb.Error as exc:
            raise UploadRejected(
                [f"the file cannot be read as {path.suffix[1:]}: {_reason(exc)}"]
            ) from None
        declared = [f.name for f in entry.fields]
        problems = []
        missing = [name for name in declared if name not in columns]
        extra = [name for name in columns if name not in declared]
        if missing:
            problems.append(f"fields missing from the file: {', '.join(missing)}")
        if extra:
            problems.append(f"columns not in the catalog entry: {', '.join(extra)}")
        if problems:
            raise UploadRejected(problems)
        rows = _scalar(connection, "SELECT count(*) FROM upload")
        measures = []
        for f in entry.fields:
            column = quoted(f.name)
            text = f"CAST({column} AS VARCHAR)"
            typed = f"TRY_CAST({text} AS {CAST[f.type]})"
            future = (
                f"count(*) FILTER (WHERE CAST({typed} AS DATE) > DATE '{today.isoformat()}')"
                if f.type in (FieldType.DATE, FieldType.DATETIME)
                else "0"
            )
            measures.append(
                f"count({column}), count({typed}) FILTER (WHERE {column} IS NOT NULL), "
                f"approx_count_distinct({column}), {future}"
            )
        figures = connection.execute(f"SELECT {', '.join(measures)} FROM upload").fetchall()[0]  # noqa: S608 - names quoted
        duplicates = rows - _scalar(
            connection, "SELECT count(*) FROM (SELECT DISTINCT * FROM upload)"
        )
        fields: list[FieldQuality] = []
        for n, f in enumerate(entry.fields):
            present, valid, distinct, future_dates = figures[4 * n : 4 * n + 4]
            quality = FieldQuality(
                f.name,
                present=_share(present, rows),
                valid=_share(valid, present),
                distinct=int(distinct),
                future_dates=int(future_dates),
            )
            if present and quality.valid < MIN_VALID:
                problems.append(f"{f.name}: {quality.valid:.0%} of its values are of type {f.type}")
            if f.identifier in CHECKSUMS:
                check = CHECKSUMS[f.identifier]
                quality.checksum_valid = _checksums(connection, f.name, check, today)
            if f.sensitivity is not SensitivityClass.DIRECT_IDENTIFIER:
                quality.pii = _pii(connection, f.name)
            fields.append(quality)
        if problems:
            raise UploadRejected(problems)
    days = (now - previous).days if previous is not None else None
    allowed = CYCLE_DAYS[entry.update_cycle]
    late = days is not None and allowed is not None and days > allowed
    warnings = _warnings(fields, rows, duplicates, late, days)
    return QualityReport(rows, duplicates, fields, days, late, warnings)


def _pii(connection: duckdb.DuckDBPyConnection, name: str) -> dict[str, float]:
    column = quoted(name)
    present = f"FROM upload WHERE {column} IS NOT NULL LIMIT {PII_SAMPLE}"
    sample = connection.execute(f"SELECT CAST({column} AS VARCHAR) {present}").fetchall()  # noqa: S608
    scan = scan_values(value for (value,) in sample)
    return {
        str(kind): round(scan.share(kind), 4) for kind in scan.kinds if scan.share(kind) >= PII_WARN
    }


def _checksums(
    connection: duckdb.DuckDBPyConnection,
    name: str,
    valid: Callable[[list[str], date], list[bool]],
    today: date,
) -> float:
    column = quoted(name)
    reader = connection.sql(
        f"SELECT CAST({column} AS VARCHAR) FROM upload WHERE {column} IS NOT NULL"  # noqa: S608
    ).to_arrow_reader(100_000)
    seen = good = 0
    for batch in reader or ():
        values = batch.column(0).to_pylist()
        seen += len(values)
        good += sum(valid(values, today))
    return _share(good, seen)


def _warnings(
    fields: list[FieldQuality], rows: int, duplicates: int, late: bool, days: int | None
) -> list[str]:
    warnings = []
    if duplicates:
        warnings.append(f"{duplicates} rows repeat another row exactly")
    if late:
        warnings.append(f"{days} days since the previous version: later than the update cycle")
    for f in fields:
        if f.present < 1:
            warnings.append(f"{f.name}: {1 - f.present:.1%} of values missing")
        if f.valid < 1:
            warnings.append(f"{f.name}: {1 - f.valid:.1%} of values not of the declared type")
        if f.checksum_valid is not None and f.checksum_valid < 1:
            warnings.append(
                f"{f.name}: {1 - f.checksum_valid:.1%} of identifiers fail their checksum"
            )
        if f.future_dates:
            warnings.append(f"{f.name}: {f.future_dates} dates after the day of upload")
        for kind, share in f.pii.items():
            warnings.append(
                f"{f.name}: {share:.1%} of sampled values hold {kind} identifiers, but the "
                "field is not declared a direct identifier"
            )
    if not rows:
        warnings.append("the file has no rows")
    return warnings


def _share(part: Any, whole: Any) -> float:
    return round(float(part) / float(whole), 6) if whole else 1.0


def _scalar(connection: duckdb.DuckDBPyConnection, query: str) -> int:
    rows = connection.execute(query).fetchall()  # to the end: the connection is free again
    return int(rows[0][0]) if rows else 0
