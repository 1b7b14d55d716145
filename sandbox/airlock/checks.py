"""The checks that read every value, for tables (one batch at a time, so a large CSV or
Parquet file streams through) and for text:

- ``identifiers``: resident ID numbers, credit codes, bank cards, mobiles and e-mails
  (:mod:`sandbox.identifiers`, check digits included) in any cell, column name or text,
  and names of people from the source data, matched on whole values (a cell, a word);
- ``pseudonyms``: values that have the form of the view builder's keyed pseudonyms, or
  that are pseudonyms of the granted views (also written back as hex);
- ``row_level``: rows found among the records of the granted views or of the raw data
  (:mod:`sandbox.airlock.rowindex`), also when the table is transposed;
- re-encoded cells: base64 or hex values long enough to hold a file are decoded and
  handed back to be checked like any file.

Cells are scanned for identifiers only where a cheap vectorised pattern says one could
be (eleven digits, an ``@``, eighteen code characters); the scanner then confirms them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sandbox.airlock.cells import degrees_in_text
from sandbox.airlock.contracts import CheckName, Finding
from sandbox.airlock.encodings import decode_run, looks_encoded
from sandbox.airlock.normalise import (
    ValueHasher,
    canonical,
    canonical_texts,
    display_and_canonical,
    text_of,
)
from sandbox.airlock.policy import AirlockRules
from sandbox.airlock.rowindex import PSEUDONYM_SHAPE, RowIndex, RowMatcher, pseudonym_from_hex
from sandbox.airlock.tables import TableItem
from sandbox.identifiers import Found, Kind, find_identifiers

KIND_NAMES = {
    Kind.RESIDENT_ID: "resident ID numbers",
    Kind.CREDIT_CODE: "unified social credit codes",
    Kind.BANK_CARD: "bank card numbers",
    Kind.MOBILE: "mobile numbers",
    Kind.EMAIL: "e-mail addresses",
}
PREFILTER = r"(?:[0-9][ -]?){11}|@|[0-9A-Z]{18}"
CANDIDATE = re.compile(r"(?:[0-9][ -]?){10}[0-9]|@|[0-9A-Z]{18}")  # PREFILTER, in Python
REACH = 40
EMAIL_REACH = 260
HEX_DIGEST = r"^[0-9a-f]{64}$"
EITHER_SHAPE = r"^(?:[a-p]{16,64}|[0-9a-f]{64})$"  # PSEUDONYM_SHAPE or HEX_DIGEST
PSEUDONYM_IN_TEXT = re.compile(r"(?<![a-z])[a-p]{16,64}(?![a-z])")
HEX_IN_TEXT = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
TOKEN_SPLIT = re.compile(r"[\s,;:|/\\()\[\]{}<>\"'`=*#，。；：、（）【】《》“”‘’！？!?]+")
HIT_CAP = 1000  # per column: past this many identifiers, more add nothing to the finding
DECODE_CAP = 200  # encoded cells decoded per table
TRANSPOSE_ROWS = 1000
ROW_NUMBER_NAMES = frozenset({"column 1", "unnamed: 0", "index", "#", "no", "no.", "序号", "行号"})


@dataclass
class Knowledge:
    """What the checks know about the grant, prepared once per export."""

    rules: AirlockRules
    indexes: tuple[RowIndex, ...]
    names: frozenset[str]  # canonical
    hasher: ValueHasher
    names_array: pa.Array = field(init=False)

    def __post_init__(self) -> None:
        self.names_array = pa.array(sorted(self.names), pa.string())

    def known_pseudonyms(self, values: Sequence[str]) -> int:
        """How many of ``values`` (canonical) are pseudonyms of the indexed views."""
        if not values or not any(len(i.pseudonyms) for i in self.indexes):
            return 0
        hashes = self.hasher.hashes([pa.array(list(values), pa.string())])[0]
        known = np.zeros(len(values), dtype=bool)
        for index in self.indexes:
            known |= np.isin(hashes, index.pseudonyms)
        return int(known.sum())


def _where(location: str, rest: str) -> str:
    return f"{location}, {rest}" if location else rest


class TableScan:
    """All value checks of one table, fed batch by batch."""

    def __init__(self, file: str, item: TableItem, knowledge: Knowledge) -> None:
        self.file, self.item, self.knowledge = file, item, knowledge
        self.rules = knowledge.rules
        self.columns = list(item.columns)
        self.rows = 0
        self.identifiers: dict[int, Counter[Kind]] = {}
        self.names: Counter[int] = Counter()
        self.shaped: Counter[int] = Counter()
        self.known: Counter[int] = Counter()
        self.looked_up: Counter[int] = Counter()
        self.first: dict[tuple[str, int], int] = {}
        self.blobs: list[tuple[str, bytes]] = []
        self.decoded = 0
        self.collected: list[pa.Table] | None = []
        self.drop_first: bool | None = None
        rate = 1.0
        if item.rows_hint:
            rate = min(1.0, self.rules.row_sample / max(item.rows_hint, 1))
        self.rate = rate
        self.matchers: list[RowMatcher] = []

    def feed(self, table: pa.Table) -> None:
        if self.drop_first is None:
            self.drop_first = _row_numbers(table)
            if self.drop_first:
                self.columns = self.columns[1:]
            self.matchers = [
                RowMatcher(
                    index,
                    self.columns,
                    self.knowledge.hasher.empty,
                    sample_rate=self.rate,
                    subset_columns=self.rules.subset_columns,
                )
                for index in self.knowledge.indexes
            ]
        if self.drop_first:
            table = table.remove_column(0)
        pairs = [display_and_canonical(column) for column in table.columns]
        display, canon = [shown for shown, _ in pairs], [value for _, value in pairs]
        for position, (shown, value) in enumerate(zip(display, canon, strict=True)):
            self._identifiers(position, shown)
            self._names(position, value)
            self._pseudonyms(position, value)
            self._encoded(position, shown)
        if self.matchers:
            hashes = self.knowledge.hasher.hashes(canon)
            for matcher in self.matchers:
                matcher.feed(hashes)
        if self.collected is not None:
            self.collected.append(pa.Table.from_arrays(display, names=self.columns))
            if self.rows + table.num_rows > self.rules.aggregate_rows:
                self.collected = None
        self.rows += table.num_rows

    def _note(self, what: str, position: int, row: int) -> None:
        """Remember the first row (1-based, in the whole table) where ``what`` was seen."""
        self.first.setdefault((what, position), self.rows + row + 1)

    def _identifiers(self, position: int, shown: pa.Array) -> None:
        counts = self.identifiers.setdefault(position, Counter())
        if sum(counts.values()) >= HIT_CAP:
            return
        candidates = pc.fill_null(pc.match_substring_regex(shown, PREFILTER), False)
        rows = np.flatnonzero(np.asarray(candidates, dtype=bool))
        if not len(rows):
            return
        values = shown.take(pa.array(rows)).to_pylist()
        for row, value in zip(rows, values, strict=True):
            kinds = {f.kind for f in identifiers_in(value, self.rules.identifier_kinds)}
            if kinds:
                counts.update(kinds)
                self._note("identifiers", position, int(row))
                if sum(counts.values()) >= HIT_CAP:
                    return

    def _names(self, position: int, value: pa.Array) -> None:
        if not len(self.knowledge.names_array):
            return
        hits = np.asarray(pc.is_in(value, value_set=self.knowledge.names_array), dtype=bool)
        if hits.any():
            self.names[position] += int(hits.sum())
            self._note("names", position, int(np.argmax(hits)))

    def _pseudonyms(self, position: int, value: pa.Array) -> None:
        if not pc.any(pc.match_substring_regex(value, EITHER_SHAPE)).as_py():
            return
        shaped = np.asarray(pc.match_substring_regex(value, PSEUDONYM_SHAPE), dtype=bool)
        if shaped.any():
            self.shaped[position] += int(shaped.sum())
            self._note("pseudonyms", position, int(np.argmax(shaped)))
            if self.looked_up[position] < HIT_CAP:
                picked = value.take(pa.array(np.flatnonzero(shaped)[:HIT_CAP])).to_pylist()
                self.looked_up[position] += len(picked)
                self.known[position] += self.knowledge.known_pseudonyms(picked)
        hexed = np.asarray(pc.match_substring_regex(value, HEX_DIGEST), dtype=bool)
        if hexed.any():
            picked = value.take(pa.array(np.flatnonzero(hexed)[:HIT_CAP])).to_pylist()
            known = self.knowledge.known_pseudonyms([pseudonym_from_hex(v) for v in picked])
            if known:
                self.known[position] += known
                self.looked_up[position] += known
                self.shaped[position] += known
                self._note("pseudonyms", position, int(np.argmax(hexed)))

    def _encoded(self, position: int, shown: pa.Array) -> None:
        if self.decoded >= DECODE_CAP:
            return
        least = self.rules.encoded_min_chars
        lengths = pc.utf8_length(shown)
        if (pc.max(lengths).as_py() or 0) < least:
            return
        long = pc.fill_null(pc.greater_equal(lengths, least), False)
        runs = pc.and_(long, pc.match_substring_regex(shown, r"^[A-Za-z0-9+/_\-=\s]+$"))
        rows = np.flatnonzero(np.asarray(pc.fill_null(runs, False), dtype=bool))
        for row in rows[: DECODE_CAP - self.decoded]:
            text = "".join(str(shown[int(row)].as_py()).split())
            if not looks_encoded(text.rstrip("=")):
                continue
            decoded = decode_run(text)
            if decoded is not None:
                self.decoded += 1
                place = f"column {self.columns[position]!r}, row {self.rows + int(row) + 1}"
                self.blobs.append((_where(self.item.location, f"{place}.{decoded[0]}"), decoded[1]))

    def finish(self) -> list[Finding]:
        header = text_findings(self.file, "", "\n".join(self.columns), self.knowledge)
        findings = [replace(f, location=_where(self.item.location, "header")) for f in header]
        findings += self._value_findings()
        for matcher in self.matchers:
            findings.extend(self._row_findings(matcher, ""))
        findings.extend(self._transposed())
        return findings

    def _value_findings(self) -> list[Finding]:
        findings = []
        for position, counts in sorted(self.identifiers.items()):
            if not counts:
                continue
            found = ", ".join(
                f"{n}{'+' if n >= HIT_CAP else ''} {KIND_NAMES[k]}" for k, n in counts.most_common()
            )
            findings.append(self._finding(CheckName.IDENTIFIERS, "identifiers", position, found))
        for position, count in sorted(self.names.items()):
            found = f"{count} values are names of people in the source data"
            findings.append(self._finding(CheckName.IDENTIFIERS, "names", position, found))
        for position, count in sorted(self.shaped.items()):
            known, looked_up = self.known[position], self.looked_up[position]
            found = f"{count} values have the form of keyed pseudonyms" + (
                f"; {known} of the {looked_up} looked up are pseudonyms of the granted views"
                if known
                else ""
            )
            findings.append(self._finding(CheckName.PSEUDONYMS, "pseudonyms", position, found))
        return findings

    def _finding(self, check: CheckName, what: str, position: int, reason: str) -> Finding:
        row = self.first.get((what, position))
        place = f"column {self.columns[position]!r}" + (f", first in row {row}" if row else "")
        return Finding(check, self.file, _where(self.item.location, place), reason)

    def _row_findings(self, matcher: RowMatcher, how: str) -> list[Finding]:
        whole, partial = matcher.beyond_chance(self.rules.row_match_rows)
        label = matcher.index.label
        place = _where(self.item.location, how or f"first in row {matcher.first_row}")
        if whole:
            reason = f"{matcher.whole} of {matcher.rows} rows are whole records of the {label}"
            chance = matcher.chance_whole
        elif partial:
            columns = ", ".join(repr(matcher.columns[c]) for c in matcher.matched_columns)
            sampled = "" if matcher.sampled == matcher.rows else " compared (a sample)"
            reason = (
                f"{matcher.partial} of {matcher.sampled} rows{sampled} match records of the "
                f"{label} on columns {columns}"
            )
            chance = matcher.chance_partial
        else:
            return []
        if chance:
            reason += f" (about {chance} would by chance)"
        if how:
            reason += ", read with rows and columns swapped"
        return [Finding(CheckName.ROW_LEVEL, self.file, place, reason)]

    def _transposed(self) -> list[Finding]:
        """A small table written with rows as columns is compared once more, swapped."""
        if not self.collected or not self.knowledge.indexes or len(self.columns) < 3:
            return []
        whole = pa.concat_tables(self.collected)
        if whole.num_rows > TRANSPOSE_ROWS or whole.num_rows < 1:
            return []
        rows = [column.to_pylist() for column in whole.columns]  # the names are labels
        swapped = [pa.array([row[i] for row in rows], pa.string()) for i in range(len(rows[0]))]
        canon = [canonical(text_of(column)) for column in swapped]
        hashes = self.knowledge.hasher.hashes(canon)
        findings = []
        for index in self.knowledge.indexes:
            names = [f"column {i + 1}" for i in range(len(swapped))]
            matcher = RowMatcher(
                index, names, self.knowledge.hasher.empty, subset_columns=self.rules.subset_columns
            )
            matcher.feed(hashes)
            findings.extend(self._row_findings(matcher, "the table transposed"))
        return findings

    def aggregate(self) -> pa.Table | None:
        """The whole table as display text, if it is small enough for the cell rules."""
        if not self.collected:
            return None
        return pa.concat_tables(self.collected)


def identifiers_in(text: str, kinds: frozenset[Kind]) -> list[Found]:
    """The identifiers of ``kinds`` in ``text``, leaving out digits that belong to a
    decimal number (the fraction of 35678.13812345678 is not a mobile number).

    The scanner runs on a window around each place where an identifier could start
    (:data:`CANDIDATE`), not on the whole text: its e-mail pattern takes time that grows
    with the square of a long run of letters and digits, such as a base64 blob. Every
    identifier but an e-mail lies within :data:`REACH` characters of its candidate; a
    match that touches the edge of its window is cut short and is dropped (the window of
    the identifier's own candidate holds it whole)."""
    found: dict[tuple[int, Kind], Found] = {}
    last = -REACH
    for match in CANDIDATE.finditer(text):
        position, email = match.start(), match.group() == "@"
        if not email and position - last < REACH:
            continue
        last = position if not email else last
        low = max(0, position - 2 * REACH)
        high = min(len(text), match.end() + (EMAIL_REACH if email else 2 * REACH))
        for item in find_identifiers(text[low:high]):
            if (item.start == 0 and low) or (item.end == high - low and high < len(text)):
                continue
            start = low + item.start
            found[(start, item.kind)] = Found(item.kind, start, low + item.end, item.text)
    return [
        f
        for f in sorted(found.values(), key=lambda f: f.start)
        if f.kind in kinds and not _in_number(text, f)
    ]


def _in_number(text: str, found: Found) -> bool:
    before = text[max(0, found.start - 2) : found.start]
    after = text[found.end : found.end + 2]
    return (len(before) == 2 and before[1] == "." and before[0].isdigit()) or (
        len(after) == 2 and after[0] == "." and after[1].isdigit()
    )


def _row_numbers(table: pa.Table) -> bool:
    """Whether the first column is a row number (0, 1, 2… or 1, 2, 3…) without a name."""
    if table.num_columns < 2 or table.num_rows < 2:
        return False
    if table.column_names[0].strip().lower() not in ROW_NUMBER_NAMES:
        return False
    values = canonical(text_of(table.column(0))).to_pylist()
    if not all(v.isdigit() for v in values):
        return False
    start = int(values[0])
    return start in (0, 1) and all(int(v) == start + i for i, v in enumerate(values))


def text_findings(file: str, location: str, text: str, knowledge: Knowledge) -> list[Finding]:
    """Identifiers, names, pseudonyms and model summaries in free text."""
    if not text.strip():
        return []
    findings: list[Finding] = []
    rules = knowledge.rules
    text = unicodedata.normalize("NFKC", text)
    found = identifiers_in(text, rules.identifier_kinds)
    if found:
        counts = Counter(f.kind for f in found)
        line = text.count("\n", 0, found[0].start) + 1
        summary = ", ".join(f"{n} {KIND_NAMES[k]}" for k, n in counts.most_common())
        findings.append(
            Finding(CheckName.IDENTIFIERS, file, _where(location, f"line {line}"), summary)
        )
    if knowledge.names:
        findings.extend(_names_in_text(file, location, text, knowledge))
    findings.extend(_pseudonyms_in_text(file, location, text, knowledge))
    findings.extend(degrees_in_text(file, location, text, rules))
    return findings


def _names_in_text(file: str, location: str, text: str, knowledge: Knowledge) -> list[Finding]:
    count, first = 0, None
    for number, line in enumerate(text.splitlines(), start=1):
        for token in TOKEN_SPLIT.split(line):
            if token and unicodedata.normalize("NFKC", token).lower() in knowledge.names:
                count += 1
                first = first or number
    if not count:
        return []
    return [
        Finding(
            CheckName.IDENTIFIERS,
            file,
            _where(location, f"line {first}"),
            f"{count} words are names of people in the source data",
        )
    ]


def _pseudonyms_in_text(file: str, location: str, text: str, knowledge: Knowledge) -> list[Finding]:
    shaped = PSEUDONYM_IN_TEXT.findall(text)
    hexed = [pseudonym_from_hex(h.lower()) for h in HEX_IN_TEXT.findall(text)]
    known_hex = knowledge.known_pseudonyms(canonical_texts(hexed[:HIT_CAP]))
    known = knowledge.known_pseudonyms(canonical_texts(shaped[:HIT_CAP])) + known_hex
    count = len(shaped) + known_hex
    if not count:
        return []
    starts = [m.start() for m in (PSEUDONYM_IN_TEXT.search(text),) if m]
    if known_hex:
        starts += [m.start() for m in (HEX_IN_TEXT.search(text),) if m]
    first = min(starts, default=0)
    line = text.count("\n", 0, first) + 1
    reason = f"{count} words have the form of keyed pseudonyms" + (
        f", {known} of them pseudonyms of the granted views" if known else ""
    )
    return [Finding(CheckName.PSEUDONYMS, file, _where(location, f"line {line}"), reason)]
