"""One export through the automated checks: :func:`check_export`.

Every file is identified by its content (:mod:`sandbox.airlock.files`), read into items
(tables, text, images, members: :mod:`sandbox.airlock.tables`,
:mod:`sandbox.airlock.documents`, :mod:`sandbox.airlock.archives`), and every item goes
through the checks that apply to it (:mod:`sandbox.airlock.checks`,
:mod:`sandbox.airlock.cells`). Archive members and decoded blobs are read again as files
of their own, within the depth limits of the policy. The report lists every finding and
what every file was understood as.

When the context gives the grant's earlier releases, the frequency tables read on the way
are kept in their released form and compared with them
(:mod:`sandbox.airlock.differencing`); the files are not read again for it.
"""

from __future__ import annotations

import io
import itertools
import math
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from sandbox.airlock.archives import (
    Unpacked,
    gzip_items,
    tar_items,
    zip_expansion,
    zip_items,
)
from sandbox.airlock.cells import Aggregate, cell_findings, read_aggregate
from sandbox.airlock.checks import Knowledge, TableScan, text_findings
from sandbox.airlock.contracts import (
    CheckName,
    CheckReport,
    FileKind,
    FileSummary,
    Finding,
    Severity,
)
from sandbox.airlock.differencing import (
    MAX_CELLS,
    ReleasedTable,
    TableTooLarge,
    differencing_findings,
    released_table,
)
from sandbox.airlock.documents import (
    html_items,
    jpeg_items,
    notebook_items,
    png_items,
    svg_items,
)
from sandbox.airlock.encodings import find_blobs
from sandbox.airlock.files import (
    Source,
    compatible,
    declared_kind,
    decode_text,
    extension,
    sniff,
    zip_kind,
)
from sandbox.airlock.normalise import ValueHasher, canonical_texts
from sandbox.airlock.policy import AirlockRules
from sandbox.airlock.rowindex import RowIndex
from sandbox.airlock.tables import (
    ImageItem,
    Item,
    MemberItem,
    Problem,
    ReadError,
    TableItem,
    TextItem,
    arrow_items,
    csv_table,
    excel_items,
    json_items,
    json_lines_items,
    parquet_items,
    tables_in_text,
)

BLOB_CAP = 1000  # encoded runs decoded per text
READ_WHOLE = frozenset(
    {
        FileKind.TEXT,
        FileKind.JSON,
        FileKind.JSON_LINES,
        FileKind.NOTEBOOK,
        FileKind.HTML,
        FileKind.SVG,
        FileKind.EXCEL,
        FileKind.ARROW,
        FileKind.PNG,
        FileKind.JPEG,
    }
)
ARCHIVES = frozenset({FileKind.ZIP, FileKind.TAR, FileKind.GZIP})
NOT_UNDERSTOOD = frozenset({FileKind.PDF, FileKind.OFFICE, FileKind.OTHER_ARCHIVE, FileKind.BINARY})
MIN_NAME_CHARS = 2


@dataclass(frozen=True)
class ExportContext:
    """What the checks need to know about the grant, from the caller."""

    rules: AirlockRules
    indexes: tuple[RowIndex, ...] = ()  # build_row_index of the granted views (and raw data)
    names: frozenset[str] = frozenset()  # names of people in the source data
    epsilon_left: float | None = None  # the grant's privacy budget left (None: unknown)
    epsilon_declared: float = 0.0  # what the export's private results spent in the sandbox
    policy_digest: str = ""  # AirlockPolicy.digest, copied into the report
    releases: tuple[ReleasedTable, ...] = ()  # released_tables of the grant's earlier releases


@dataclass
class _Counts:
    tables: int = 0
    rows: int = 0
    texts: int = 0
    images: int = 0
    members: int = 0


@dataclass
class _Run:
    context: ExportContext
    knowledge: Knowledge
    findings: list[Finding] = field(default_factory=list)
    files: list[FileSummary] = field(default_factory=list)
    collect: bool = False  # keep the frequency tables read, for differencing
    released: list[ReleasedTable] = field(default_factory=list)
    too_large: int = 0  # frequency tables with more than MAX_CELLS cells, not kept

    @property
    def rules(self) -> AirlockRules:
        return self.context.rules

    def add(
        self,
        check: CheckName,
        file: str,
        location: str,
        reason: str,
        severity: Severity = Severity.BLOCK,
    ) -> None:
        self.findings.append(Finding(check, file, location, reason, severity))

    # ------------------------------------------------------------------ files
    def source(self, source: Source, unpacked: Unpacked) -> None:
        head = source.head()
        actual = sniff(head)
        if actual is FileKind.ZIP:
            actual = _refine_zip(source)
        if source.encodings and not source.name and actual is FileKind.BINARY:
            return  # a run that decoded to random bytes: nothing was hidden in it
        kind = self._kind(source, actual)
        counts = _Counts()
        if kind in READ_WHOLE and source.size > self.rules.max_parse_bytes:
            self.add(
                CheckName.FILE_SIZE,
                source.label,
                "",
                f"{source.size:,} bytes: {kind} files over {self.rules.max_parse_bytes:,} bytes "
                "cannot be read to be checked",
            )
        elif kind in ARCHIVES and source.depth >= self.rules.archive_depth:
            self.add(
                CheckName.ARCHIVE,
                source.label,
                "",
                f"an archive nested more than {self.rules.archive_depth} deep: not opened",
            )
        elif kind in NOT_UNDERSTOOD:
            if not any(f.file == source.label for f in self.findings):
                self.add(
                    CheckName.UNREADABLE, source.label, "", f"{kind} content is not understood"
                )
        else:
            try:
                for item in self._items(source, kind, unpacked):
                    self.item(source, item, counts, unpacked)
            except ReadError as exc:
                self.add(CheckName.UNREADABLE, source.label, "", f"cannot be read as {kind}: {exc}")
            except Exception as exc:  # a reader's failure on crafted input is a finding
                self.add(
                    CheckName.UNREADABLE,
                    source.label,
                    "",
                    f"cannot be read as {kind} ({type(exc).__name__})",
                )
        self.files.append(
            FileSummary(
                source.label,
                kind,
                source.size,
                source.sha256(),
                counts.tables,
                counts.rows,
                counts.texts,
                counts.images,
                counts.members,
            )
        )

    def _kind(self, source: Source, actual: FileKind) -> FileKind:
        """The kind to read ``source`` as; file type findings on the way."""
        if not source.name:
            return actual
        ending = extension(source.name)
        declared = declared_kind(source.name)
        if ending not in self.rules.extensions:
            what = f"'.{ending}' files" if ending else "files without an extension"
            self.add(CheckName.FILE_TYPE, source.label, "", f"{what} may not leave")
        elif declared is not None and not compatible(declared, actual):
            self.add(
                CheckName.FILE_TYPE,
                source.label,
                "",
                f"the content is {actual}, not what the name's '.{ending}' says",
            )
        if declared is not None and compatible(declared, actual):
            return declared
        return actual

    def _items(self, source: Source, kind: FileKind, unpacked: Unpacked) -> Iterator[Item]:
        if kind in (FileKind.CSV, FileKind.TSV):
            yield csv_table(source, delimiter="\t" if kind is FileKind.TSV else None)
        elif kind is FileKind.PARQUET:
            yield from parquet_items(source)
        elif kind is FileKind.ARROW:
            yield from arrow_items(source)
        elif kind is FileKind.EXCEL:
            expanded = zip_expansion(source, self.rules)
            if expanded is not None:
                yield expanded
                return
            yield from excel_items(source)
            yield from _excel_parts(source)
        elif kind is FileKind.ZIP:
            yield from zip_items(source, self.rules, unpacked)
        elif kind is FileKind.TAR:
            yield from tar_items(source, self.rules, unpacked)
        elif kind is FileKind.GZIP:
            yield from gzip_items(source, self.rules, unpacked)
        elif kind is FileKind.PNG:
            yield from png_items(source.read())
        elif kind is FileKind.JPEG:
            yield from jpeg_items(source.read())
        elif kind is FileKind.GIF:
            yield ImageItem("", "gif")
        else:
            decoded = decode_text(source.read())
            if decoded is None:
                raise ReadError("not text in any encoding the airlock reads")
            text = decoded[0]
            if kind is FileKind.JSON:
                yield from json_items(text)
            elif kind is FileKind.JSON_LINES:
                yield from json_lines_items(text)
            elif kind is FileKind.NOTEBOOK:
                yield from notebook_items(text)
            elif kind is FileKind.HTML:
                yield from html_items(text)
            elif kind is FileKind.SVG:
                yield from svg_items(text)
            else:
                yield TextItem("", text)

    # ------------------------------------------------------------------ items
    def item(self, source: Source, item: Item, counts: _Counts, unpacked: Unpacked) -> None:
        if isinstance(item, TableItem):
            counts.tables += 1
            counts.rows += self.table(source, item, unpacked)
        elif isinstance(item, TextItem):
            counts.texts += 1
            self.text(source, item, counts, unpacked)
        elif isinstance(item, ImageItem):
            counts.images += 1
            if item.kind not in self.rules.extensions and not (
                item.kind == "jpeg" and "jpg" in self.rules.extensions
            ):
                self.add(
                    CheckName.FILE_TYPE,
                    source.label,
                    item.location,
                    f"{item.kind} images may not leave",
                )
            else:
                self.add(
                    CheckName.IMAGE,
                    source.label,
                    item.location,
                    "an image: no text is read from its pixels, so the reviewer must look at it",
                    Severity.REVIEW,
                )
        elif isinstance(item, MemberItem):
            counts.members += 1
            self.member(source, item, unpacked)
        else:
            self.problem(source, item)

    def problem(self, source: Source, problem: Problem) -> None:
        severity = Severity.REVIEW if problem.review_only else Severity.BLOCK
        self.add(CheckName(problem.check), source.label, problem.location, problem.reason, severity)

    def member(self, source: Source, member: MemberItem, unpacked: Unpacked) -> None:
        mark = "!" if member.archived else "#"
        nested = Source(
            f"{source.label}{mark}{member.label}",
            member.name,
            data=member.data,
            depth=source.depth + (1 if member.archived else 0),
            encodings=source.encodings + (1 if member.encoded else 0),
        )
        self.source(nested, unpacked)

    def table(self, source: Source, item: TableItem, unpacked: Unpacked) -> int:
        scan = TableScan(source.label, item, self.knowledge)
        try:
            for batch in item.batches:
                scan.feed(batch)
        except (pa.ArrowException, ValueError, UnicodeDecodeError) as exc:
            self.add(
                CheckName.UNREADABLE,
                source.label,
                item.location or f"after row {scan.rows}",
                f"the table cannot be read on ({type(exc).__name__}): the rest is not checked",
            )
        self.findings.extend(scan.finish())
        aggregate = scan.aggregate()
        if item.skipped_rows:
            self.add(
                CheckName.UNREADABLE,
                source.label,
                item.location,
                f"{item.skipped_rows} rows do not have the table's number of fields, "
                "so they could not be checked as rows",
            )
        if aggregate is not None:
            read = read_aggregate(aggregate)
            self.findings.extend(cell_findings(source.label, item.location, read, self.rules))
            if self.collect:
                self.keep(source.label, item.location, read)
        for place, data in scan.blobs:
            self.blob(source, place, data, unpacked)
        return scan.rows

    def keep(self, label: str, location: str, aggregate: Aggregate) -> None:
        try:
            table = released_table(label, location, aggregate)
        except TableTooLarge:
            self.too_large += 1
            return
        if table is not None:
            self.released.append(table)

    def text(self, source: Source, item: TextItem, counts: _Counts, unpacked: Unpacked) -> None:
        self.findings.extend(text_findings(source.label, item.location, item.text, self.knowledge))
        for table in tables_in_text(item.text, item.location):
            counts.tables += 1
            counts.rows += self.table(source, table, unpacked)
        blobs = itertools.islice(find_blobs(item.text, self.rules.encoded_min_chars), BLOB_CAP + 1)
        for number, blob in enumerate(blobs, start=1):
            if number > BLOB_CAP:
                self.add(
                    CheckName.ENCODED,
                    source.label,
                    item.location,
                    f"more than {BLOB_CAP} encoded runs: the rest were not decoded",
                )
                break
            counts.members += 1
            place = f"{item.location + ', ' if item.location else ''}line {blob.line}"
            self.blob(source, f"{place}.{blob.encoding}", blob.data, unpacked)

    def blob(self, source: Source, place: str, data: bytes, unpacked: Unpacked) -> None:
        if source.encodings >= self.rules.encoded_depth:
            self.add(
                CheckName.ENCODED,
                source.label,
                place,
                f"content encoded more than {self.rules.encoded_depth} times over: not decoded",
            )
            return
        self.member(source, MemberItem("", place, data, encoded=True), unpacked)


def _refine_zip(source: Source) -> FileKind:
    with source.open() as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                return zip_kind(archive.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return FileKind.ZIP


_SHEET = "xl/worksheets/sheet"
_READ_PARTS = ("xl/worksheets/", "xl/theme/", "xl/styles.xml")


def _excel_parts(source: Source) -> Iterator[Item]:
    """What a workbook holds beside its sheets: strings not in any cell, embedded files,
    images, custom parts."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(source.read()))
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # an .xls (not a zip): its sheets are all there is
    with archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or name.startswith(_READ_PARTS) or name == "[Content_Types].xml":
                continue
            if info.flag_bits & 0x1:
                yield Problem("archive", name, "an encrypted part: it cannot be checked")
                continue
            with archive.open(info) as handle:
                data = handle.read(info.file_size + 1)
            if name.endswith((".xml", ".rels", ".vml")):
                decoded = decode_text(data)
                if decoded is not None:
                    yield from (i for i in html_items(decoded[0], name) if isinstance(i, TextItem))
            else:
                yield MemberItem(name.rsplit("/", 1)[-1], name, data)


def check_export(
    paths: Sequence[Path], context: ExportContext, *, root: Path | None = None
) -> CheckReport:
    """Run every automated check over the files of one export. ``root``: the folder the
    files are named relative to in the report (their names alone if not given). The
    export's frequency tables are compared with ``context.releases`` if there are any."""
    names = frozenset(n for n in canonical_texts(context.names) if len(n) >= MIN_NAME_CHARS)
    run = _walk(paths, context, names, root, collect=bool(context.releases))
    run.findings.extend(dp_budget_findings(context))
    checks: list[CheckName] = [c for c in CheckName if c is not CheckName.DIFFERENCING]
    notes = []
    if not context.indexes:
        notes.append("no row index was given: rows were not compared with any data")
    if not names:
        notes.append("no names from the source data were given")
    if context.releases:
        run.findings.extend(differencing_findings(run.released, context.releases, context.rules))
        checks.append(CheckName.DIFFERENCING)
        if run.too_large:
            notes.append(
                f"{run.too_large} tables of more than {MAX_CELLS:,} cells were not compared "
                "with earlier releases"
            )
    else:
        notes.append("no earlier releases were given: differencing did not run")
    return CheckReport(
        level=context.rules.level,
        findings=tuple(run.findings),
        files=tuple(run.files),
        checks=tuple(checks),
        policy_digest=context.policy_digest,
        notes=tuple(notes),
    )


def collect_released(
    paths: Sequence[Path], rules: AirlockRules, *, root: Path | None
) -> tuple[ReleasedTable, ...]:
    """The frequency tables of an export's files, read as :func:`check_export` reads
    them; the checks' findings are dropped (see
    :func:`sandbox.airlock.differencing.released_tables`)."""
    run = _walk(paths, ExportContext(rules), frozenset(), root, collect=True)
    return tuple(run.released)


def _walk(
    paths: Iterable[Path],
    context: ExportContext,
    names: frozenset[str],
    root: Path | None,
    *,
    collect: bool,
) -> _Run:
    hasher = ValueHasher()
    knowledge = Knowledge(context.rules, context.indexes, names, hasher)
    run = _Run(context, knowledge, collect=collect)
    try:
        _check_files(run, paths, root)
    finally:
        hasher.close()
    return run


def _check_files(run: _Run, paths: Iterable[Path], root: Path | None) -> None:
    rules = run.rules
    labelled = [(_label(path, root), path) for path in paths]
    sizes = {label: path.lstat().st_size for label, path in labelled if path.exists()}
    total = sum(sizes.values())
    if total > rules.max_export_bytes:
        run.add(
            CheckName.FILE_SIZE,
            "(export)",
            "",
            f"{total:,} bytes in all, more than the {rules.max_export_bytes:,} allowed",
        )
    for label, path in labelled:
        if path.is_symlink() or not path.is_file():
            run.add(
                CheckName.UNREADABLE,
                label,
                "",
                "not a regular file: links and folders may not leave",
            )
            continue
        if sizes[label] > rules.max_file_bytes:
            run.add(
                CheckName.FILE_SIZE,
                label,
                "",
                f"{sizes[label]:,} bytes, more than the {rules.max_file_bytes:,} allowed",
            )
            continue
        run.source(Source(label, path.name, path=path), Unpacked(rules.archive_bytes))


def _label(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


def dp_budget_findings(context: ExportContext) -> list[Finding]:
    """The export's differentially private results against the grant's budget."""
    budget = context.rules.disclosure.epsilon_budget
    left, declared = context.epsilon_left, context.epsilon_declared
    reasons = []
    if left is not None and (not math.isfinite(left) or left < 0):
        reasons.append("the grant has spent more than its privacy budget")
    if not math.isfinite(declared) or declared < 0:
        reasons.append("the epsilon declared for the export is not a number of at least 0")
    elif declared > 0:
        if declared > budget:
            reasons.append(
                f"its private results spent epsilon {declared:g}, more than the level's "
                f"whole budget of {budget:g}"
            )
        elif left is None:
            reasons.append(
                f"its private results spent epsilon {declared:g} and the grant's remaining "
                "budget is not known"
            )
        elif declared > left:
            reasons.append(
                f"its private results spent epsilon {declared:g}; the grant has {left:g} left"
            )
    return [Finding(CheckName.DP_BUDGET, "(export)", "", reason) for reason in reasons]
