"""Tables from files: CSV and TSV (streamed with pyarrow, any of the encodings
:mod:`sandbox.airlock.files` detects), Parquet and Arrow (streamed in batches), Excel
(every sheet, with python-calamine), JSON (records, columns, pandas' ``split``, ``index``
and ``columns`` orients, lists of lists, JSON lines) and tables written inside text
(delimited, Markdown, or aligned as pandas prints a DataFrame).

A table is a :class:`TableItem`: its column names and its rows as Arrow batches, read
once. Readers of whole documents hold at most ``max_parse_bytes`` of them; CSV and
Parquet hold one batch at a time.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import python_calamine

from sandbox.airlock.files import Source, decode_prefix, detect_encoding

BATCH_ROWS = 65_536
CSV_BLOCK = 1 << 22
DELIMITERS = (",", "\t", ";", "|")
MAX_JSON_DEPTH = 20


class ReadError(Exception):
    """The file is not what it says, or is damaged; the message does not quote it."""


@dataclass
class TableItem:
    location: str  # within the file: "", "sheet 'Sheet1'", "cell 3, output 1, table 1"
    columns: list[str]
    batches: Iterator[pa.Table]  # read once, before the reader is asked for its next item
    rows_hint: int | None = None  # the number of rows, or an estimate
    skipped_rows: int = 0  # rows the reader could not fit in the table (set while read)


@dataclass
class TextItem:
    location: str
    text: str


@dataclass
class ImageItem:
    location: str
    kind: str


@dataclass
class MemberItem:
    """Bytes inside a file to be read again: an archive member, an Excel part, a decoded
    blob, data hidden after an image's end."""

    name: str  # its own name ("" if it has none)
    label: str  # how findings name it
    data: bytes
    archived: bool = False  # inside an archive (counts towards the archive depth)
    encoded: bool = False  # decoded from base64 or hex


@dataclass
class Problem:
    """Something a reader cannot get past, turned into a finding by the caller."""

    check: str
    location: str
    reason: str
    review_only: bool = False


Item = TableItem | TextItem | ImageItem | MemberItem | Problem


@dataclass
class Columns:
    names: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, header: Sequence[object]) -> Columns:
        """Unique, non-empty names for ``header``'s cells."""
        names: list[str] = []
        for position, cell in enumerate(header, start=1):
            name = "" if cell is None else str(cell).strip()
            name = name or f"column {position}"
            base, suffix = name, 1
            while name in names:
                name = f"{base}.{suffix}"
                suffix += 1
            names.append(name)
        return cls(names)


def table_from_rows(location: str, rows: Sequence[Sequence[object]]) -> TableItem | None:
    """A table whose first row is its header; None if there is no row under it."""
    kept = [list(row) for row in rows if any(_cell(c) not in (None, "") for c in row)]
    if len(kept) < 2:
        return None
    width = max(len(row) for row in kept)
    names = Columns.of(kept[0] + [None] * (width - len(kept[0]))).names
    body = kept[1:]
    data = {
        name: pa.array([_cell(row[i]) if i < len(row) else None for row in body], pa.string())
        for i, name in enumerate(names)
    }
    return TableItem(location, names, iter([pa.table(data)]), len(body))


def _cell(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


# ---------------------------------------------------------------------- CSV
def sniff_delimiter(lines: Sequence[str], preferred: str | None = None) -> tuple[str, int]:
    """The delimiter that splits ``lines`` into the same number of fields (at least two)
    on nine lines out of ten, and that number; (``preferred`` or ",", 1) if none does."""
    best = (preferred or ",", 1)
    candidates = (preferred,) if preferred else DELIMITERS
    for delimiter in candidates:
        if delimiter is None:
            continue
        counts = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        if not counts:
            continue
        common = max(set(counts), key=counts.count)
        if common >= 2 and counts.count(common) * 10 >= len(counts) * 9 and common > best[1]:
            best = (delimiter, common)
    return best


def csv_table(source: Source, *, delimiter: str | None = None) -> TableItem:
    """The table of a delimited text file, streamed in batches of text columns."""
    head = source.head(1 << 20)
    encoding = detect_encoding(head[:65536])
    if encoding is None:
        raise ReadError("not text in any encoding the airlock reads")
    try:
        text = decode_prefix(head, encoding)
    except UnicodeDecodeError:
        raise ReadError(f"not valid {encoding} text") from None
    lines = [line for line in text.lstrip("\ufeff").splitlines() if line.strip()][:200]
    if not lines:
        return TableItem("", [], iter(()), 0)
    chosen, _ = sniff_delimiter(lines[:-1] or lines, delimiter)
    header = next(csv.reader([lines[0]], delimiter=chosen))
    names = Columns.of(header).names
    sample_rows = max(1, len(lines) - 1)
    sample_bytes = max(1, len(text[: sum(len(line) + 1 for line in lines)].encode()))
    item = TableItem("", names, iter(()), int(source.size * sample_rows / sample_bytes))

    def skip(_: Any) -> str:
        item.skipped_rows += 1
        return "skip"

    def batches() -> Iterator[pa.Table]:
        with source.open() as handle:
            reader = pacsv.open_csv(
                handle,
                read_options=pacsv.ReadOptions(
                    column_names=names,
                    skip_rows=1,
                    block_size=CSV_BLOCK,
                    encoding=_arrow_encoding(encoding),
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=chosen, newlines_in_values=True, invalid_row_handler=skip
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=False,
                ),
            )
            for batch in reader:
                yield pa.Table.from_batches([batch])

    item.batches = batches()
    return item


def _arrow_encoding(encoding: str) -> str:
    return "utf8" if encoding in ("utf-8", "utf-8-sig") else encoding


# ---------------------------------------------------------------------- Parquet, Arrow
def parquet_items(source: Source) -> Iterator[Item]:
    """Parquet's key-value metadata as text, and its rows in batches. The file stays
    open while the caller reads the batches (until it asks for the next item)."""
    with source.open() as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowException, OSError) as exc:
            raise ReadError(f"not a readable Parquet file ({type(exc).__name__})") from None
        metadata = parquet.schema_arrow.metadata or {}
        if metadata:
            text = "\n".join(
                f"{k.decode('utf-8', 'replace')}: {v.decode('utf-8', 'replace')}"
                for k, v in metadata.items()
            )
            yield TextItem("metadata", text)
        batches = (
            pa.Table.from_batches([batch]) for batch in parquet.iter_batches(batch_size=BATCH_ROWS)
        )
        yield TableItem("", list(parquet.schema_arrow.names), batches, parquet.metadata.num_rows)


def arrow_items(source: Source) -> Iterator[Item]:
    data = source.read()
    try:
        reader = pa.ipc.open_file(pa.BufferReader(data))
        tables = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        schema = reader.schema
    except pa.ArrowException as exc:
        raise ReadError(f"not a readable Arrow file ({type(exc).__name__})") from None
    rows = sum(batch.num_rows for batch in tables)
    yield TableItem("", list(schema.names), (pa.Table.from_batches([b]) for b in tables), rows)


# ---------------------------------------------------------------------- Excel
def excel_items(source: Source) -> Iterator[Item]:
    """Every sheet of a workbook as a table (the first non-empty row as header)."""
    try:
        workbook = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(source.read()))
    except python_calamine.PasswordError:
        yield Problem("archive", "", "the workbook is encrypted: its contents cannot be checked")
        return
    except (python_calamine.CalamineError, ValueError, OSError) as exc:
        raise ReadError(f"not a readable workbook ({type(exc).__name__})") from None
    for name in workbook.sheet_names:
        try:
            rows = workbook.get_sheet_by_name(name).to_python()
        except (python_calamine.CalamineError, ValueError) as exc:
            yield Problem("unreadable", f"sheet {name!r}", f"cannot be read ({type(exc).__name__})")
            continue
        table = table_from_rows(f"sheet {name!r}", rows)
        if table is not None:
            yield table
        elif rows:
            yield TextItem(f"sheet {name!r}", "\n".join(" ".join(map(str, r)) for r in rows))


# ---------------------------------------------------------------------- JSON
def json_items(text: str, location: str = "") -> Iterator[Item]:
    """The tables in a JSON document, and all its strings and keys as one text."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ReadError("not valid JSON") from None
    yield from json_value_items(document, location)


def json_lines_items(text: str) -> Iterator[Item]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise ReadError(f"line {number} is not valid JSON") from None
    yield from json_value_items(records, "")


def json_value_items(document: Any, location: str) -> Iterator[Item]:
    found: list[TableItem] = []
    strings: list[str] = []
    _walk(document, location or "$", found, strings, 0)
    yield from found
    if strings:
        yield TextItem(location or "strings", "\n".join(strings))


def _walk(value: Any, where: str, found: list[TableItem], strings: list[str], depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        return
    table = _json_table(value, where)
    if table is not None:
        found.append(table)
    if isinstance(value, dict):
        for key, item in value.items():
            strings.append(str(key))
            if table is None:
                _walk(item, f"{where}.{key}", found, strings, depth + 1)
            else:
                _strings(item, strings, depth + 1)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            if table is None:
                _walk(item, f"{where}[{position}]", found, strings, depth + 1)
            else:
                _strings(item, strings, depth + 1)
    elif isinstance(value, str):
        strings.append(value)


def _strings(value: Any, strings: list[str], depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        return
    if isinstance(value, str):
        strings.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            strings.append(str(key))
            _strings(item, strings, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _strings(item, strings, depth + 1)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _json_table(value: Any, where: str) -> TableItem | None:
    if isinstance(value, list) and value:
        if all(isinstance(row, dict) for row in value):  # records
            keys: dict[str, None] = {}
            for row in value:
                keys.update(dict.fromkeys(map(str, row)))
            rows = [list(keys)] + [[row.get(k) for k in keys] for row in value]
            return table_from_rows(where, rows)
        if len(value) > 1 and all(
            isinstance(row, list) and all(map(_scalar, row)) for row in value
        ):
            header_is_text = all(isinstance(c, str) for c in value[0])
            head = value[0] if header_is_text else [f"column {i + 1}" for i in range(len(value[0]))]
            return table_from_rows(where, [head, *(value[1:] if header_is_text else value)])
        return None
    if not isinstance(value, dict) or not value:
        return None
    if isinstance(value.get("columns"), list) and isinstance(value.get("data"), list):
        return table_from_rows(where, [value["columns"], *value["data"]])  # pandas "split"
    items = list(value.values())
    if all(isinstance(v, list) and all(map(_scalar, v)) for v in items):
        lengths = {len(v) for v in items}
        if len(lengths) == 1 and lengths != {0}:  # columns of equal length
            names = list(map(str, value))
            return table_from_rows(where, [names, *map(list, zip(*items, strict=True))])
    if all(isinstance(v, dict) and all(map(_scalar, v.values())) for v in items):
        inner: dict[str, None] = {}
        for v in items:
            inner.update(dict.fromkeys(map(str, v)))
        if all(re.fullmatch(r"\d+", key) for key in inner):  # pandas "columns": outer = columns
            names = list(map(str, value))
            body = [[value[c].get(r) for c in value] for r in inner]
            return table_from_rows(where, [names, *body])
        names = list(inner)  # pandas "index": outer = rows
        return table_from_rows(where, [names, *[[v.get(k) for k in names] for v in items]])
    return None


# ---------------------------------------------------------------------- tables in text
_SEPARATOR_ROW = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def tables_in_text(text: str, location: str, *, limit: int = 50) -> list[TableItem]:
    """Tables written in text: blocks of three or more lines that split into the same
    number of fields by a delimiter, Markdown pipes, or runs of two or more spaces (a
    printed DataFrame, whose header lacks the index's column)."""
    found: list[TableItem] = []
    block: list[tuple[int, str]] = []
    for number, line in enumerate([*text.splitlines(), ""], start=1):
        if line.strip():
            block.append((number, line))
            continue
        if len(block) >= 3:
            found.extend(_block_tables(block, location))
        block = []
        if len(found) >= limit:
            break
    return found[:limit]


def _block_tables(block: list[tuple[int, str]], location: str) -> list[TableItem]:
    lines = [line for _, line in block if not _SEPARATOR_ROW.match(line)]
    first = block[0][0]
    where = f"{location + ', ' if location else ''}lines {first}-{block[-1][0]}"
    if len(lines) < 3:
        return []
    if all(line.strip().startswith("|") for line in lines):
        rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
        return _regular(where, rows)
    delimiter, fields = sniff_delimiter(lines)
    if fields >= 2:
        return _regular(where, list(csv.reader(lines, delimiter=delimiter)))
    rows = [re.split(r"\s{2,}|\t", line.strip()) for line in lines]
    widths = [len(row) for row in rows[1:]]
    common = max(set(widths), key=widths.count)
    if common >= 2 and widths.count(common) * 10 >= len(widths) * 9:
        if len(rows[0]) == common - 1:  # a printed DataFrame: its index has no header
            rows[0] = ["", *rows[0]]
        return _regular(where, rows)
    return []


def _regular(where: str, rows: list[list[str]]) -> list[TableItem]:
    widths = [len(row) for row in rows]
    common = max(set(widths), key=widths.count)
    kept = [row for row in rows if len(row) == common]
    if common < 2 or len(kept) < 3:
        return []
    table = table_from_rows(where, kept)
    return [table] if table is not None else []
