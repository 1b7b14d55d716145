"""Fingerprints of the rows of the granted views (and, if the caller wants, of the raw
data), to find those rows again in an export however they were rewritten.

The index holds 64-bit hashes and record numbers, never a value:

- ``rows``: one key per record, the mixed sum of its values' hashes
  (:mod:`sandbox.airlock.normalise`), so column order and names do not matter and
  ``7``, ``7.0`` and ``007`` are the same value;
- ``subsets``: keys of every combination of 2 or 3 of a table's columns (the sizes are
  a parameter) whose values single out one record of that table, each with the number
  of that record (``subset_records``); a column whose values are all different is
  indexed alone instead. A file that keeps a few columns of a view,
  renamed and re-ordered, still has these combinations, all pointing at the same
  record; an aggregate table does not, since its group keys are shared by many records;
- ``values``: the hashes of distinct values, to tell which columns of a file come from
  the data (the subset comparison uses those columns first);
- ``pseudonyms``: the hashes of values that have the form of a keyed pseudonym.

Memory is bounded by ``max_keys`` per kind: past it, only the keys below a limit are kept
(a consistent sample: a key of the file is looked up only if it is below the same
limit), so a huge view gives a sample that still finds a copy of many of its rows.

Building holds one 8-byte hash per cell of one table at a time (88 MB for 10^6 rows of
11 columns). Keys are DuckDB's hashes and depend on its version: an index records the
version and refuses to load under another. The hashes are not keyed: whoever holds an
index can test guesses of whole records against it, so it is kept like the views.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sandbox.airlock.normalise import (
    HASHER,
    ValueHasher,
    canonical,
    contains,
    lookup,
    row_keys,
    text_of,
)
from sandbox.views.fields import PSEUDONYM_DIGITS

# The form of a keyed pseudonym (sandbox/views/pseudonyms.py): 64 letters a-p. Its first
# 16 letters are enough to join on, so a shorter run counts as well.
PSEUDONYM_SHAPE = rf"^[a-f{PSEUDONYM_DIGITS}]{{16,64}}$"
ALL = (1 << 64) - 1
BATCH_ROWS = 65_536
KINDS = ("rows", "subsets", "values", "pseudonyms")
# An Arrow table or batch, a Parquet or CSV path, or anything pyarrow.table() takes.
TableLike = Any


class RowIndexError(ValueError):
    """An index that cannot be used (built by another hash version, or damaged)."""


@dataclass(frozen=True)
class RowIndex:
    label: str  # what was indexed, for reasons: "granted views", "raw data"
    rows: np.ndarray
    subsets: np.ndarray
    subset_records: np.ndarray  # the record each subset key singles out
    values: np.ndarray
    pseudonyms: np.ndarray
    subset_sizes: tuple[int, ...] = (2, 3)
    limits: dict[str, int] = field(default_factory=dict)  # per kind: largest key kept
    tables: int = 0
    records: int = 0
    hasher: str = HASHER

    def limit(self, kind: str) -> int:
        return self.limits.get(kind, ALL)

    def to_bytes(self) -> bytes:
        meta = {
            "label": self.label,
            "subset_sizes": list(self.subset_sizes),
            "limits": {k: str(v) for k, v in self.limits.items()},
            "tables": self.tables,
            "records": self.records,
            "hasher": self.hasher,
        }
        buffer = io.BytesIO()
        np.savez(
            buffer,
            rows=self.rows,
            subsets=self.subsets,
            subset_records=self.subset_records,
            values=self.values,
            pseudonyms=self.pseudonyms,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RowIndex:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                meta = json.loads(bytes(stored["meta"]).decode())
                arrays = {kind: stored[kind].astype(np.uint64) for kind in KINDS}
                records = stored["subset_records"]
        except (OSError, ValueError, KeyError) as exc:
            raise RowIndexError(f"not a row index: {exc}") from None
        if len(records) != len(arrays["subsets"]):
            raise RowIndexError("not a row index: its subsets and records differ in length")
        if meta.get("hasher") != HASHER:
            raise RowIndexError(
                f"the index was built with {meta.get('hasher')}, this is {HASHER}: rebuild it"
            )
        return cls(
            str(meta["label"]),
            rows=arrays["rows"],
            subsets=arrays["subsets"],
            subset_records=records,
            values=arrays["values"],
            pseudonyms=arrays["pseudonyms"],
            subset_sizes=tuple(int(s) for s in meta["subset_sizes"]),
            limits={k: int(v) for k, v in meta["limits"].items()},
            tables=int(meta["tables"]),
            records=int(meta["records"]),
        )


class _Bounded:
    """Sorted unique keys, at most ``cap`` of them: the smallest are kept. Each key may
    carry a record number (the first one given for it is kept)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.limit = ALL
        self._keys: list[np.ndarray] = []
        self._records: list[np.ndarray] = []
        self._held = 0

    def add(self, keys: np.ndarray, records: np.ndarray | None = None) -> None:
        if records is None:
            records = np.zeros(len(keys), dtype=np.uint32)
        if self.limit != ALL:
            below = keys <= np.uint64(self.limit)
            keys, records = keys[below], records[below]
        self._keys.append(keys)
        self._records.append(records)
        self._held += len(keys)
        if self._held > 2 * self.cap:
            self._shrink()

    def _shrink(self) -> None:
        keys = np.concatenate(self._keys) if self._keys else np.zeros(0, np.uint64)
        records = np.concatenate(self._records) if self._records else np.zeros(0, np.uint32)
        keys, first = np.unique(keys, return_index=True)
        records = records[first]
        if len(keys) > self.cap:
            keys, records = keys[: self.cap], records[: self.cap]
            self.limit = int(keys[-1])
        self._keys, self._records = [keys], [records]
        self._held = len(keys)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._shrink()
        return self._keys[0].astype(np.uint64), self._records[0]


def build_row_index(
    tables: Iterable[TableLike],
    *,
    label: str = "granted views",
    subset_sizes: Sequence[int] = (2, 3),
    max_subsets: int = 300,
    unique_at_most: int = 1,
    max_keys: int = 20_000_000,
) -> RowIndex:
    """An index of the rows of ``tables`` (Arrow tables or batches, Parquet or CSV paths,
    or anything ``pyarrow.table`` accepts, such as a pandas DataFrame). Index the
    record-level views a grant gives (and the raw data, separately, if wanted); an
    aggregated view's rows are meant to leave."""
    sizes = tuple(sorted(set(subset_sizes)))
    if not sizes or sizes[0] < 1:
        raise ValueError("subset sizes are whole numbers of at least 1")
    kept = {kind: _Bounded(max_keys) for kind in KINDS}
    hasher = ValueHasher()
    count = records = 0
    try:
        for table in tables:
            count += 1
            hashes, pseudonyms = _hash_table(table, hasher)
            _index_table(hashes, records, hasher.empty, sizes, max_subsets, unique_at_most, kept)
            kept["pseudonyms"].add(pseudonyms)
            records += hashes.shape[1]
    finally:
        hasher.close()
    limits = {kind: bounded.limit for kind, bounded in kept.items() if bounded.limit != ALL}
    subsets, subset_records = kept["subsets"].result()
    return RowIndex(
        label,
        rows=kept["rows"].result()[0],
        subsets=subsets,
        subset_records=subset_records,
        values=kept["values"].result()[0],
        pseudonyms=kept["pseudonyms"].result()[0],
        subset_sizes=sizes,
        limits=limits,
        tables=count,
        records=records,
    )


def table_batches(table: TableLike) -> Iterator[pa.Table]:
    if isinstance(table, Path):
        if table.suffix.lower() in (".parquet", ".pq"):
            for batch in pq.ParquetFile(table).iter_batches(batch_size=BATCH_ROWS):
                yield pa.Table.from_batches([batch])
            return
        from pyarrow import csv

        read = csv.read_csv(table)
        yield from (pa.Table.from_batches([b]) for b in read.to_batches(BATCH_ROWS))
        return
    if isinstance(table, pa.RecordBatch):
        yield pa.Table.from_batches([table])
        return
    whole = table if isinstance(table, pa.Table) else pa.table(table)
    for batch in whole.to_batches(BATCH_ROWS):
        yield pa.Table.from_batches([batch])


def _hash_table(table: TableLike, hasher: ValueHasher) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every canonical cell (columns × rows) and of the pseudonym-shaped ones."""
    parts: list[np.ndarray] = []
    pseudonyms: list[np.ndarray] = []
    for batch in table_batches(table):
        canon = [canonical(text_of(column)) for column in batch.columns]
        hashes = hasher.hashes(canon)
        parts.append(hashes)
        for column, row in zip(canon, hashes, strict=True):
            shaped = pc.match_substring_regex(column, PSEUDONYM_SHAPE)
            if pc.any(shaped).as_py():
                pseudonyms.append(row[np.asarray(shaped, dtype=bool)])
    whole = np.hstack(parts) if parts else np.zeros((0, 0), dtype=np.uint64)
    found = np.concatenate(pseudonyms) if pseudonyms else np.zeros(0, dtype=np.uint64)
    return whole, found


def _index_table(
    hashes: np.ndarray,
    first_record: int,
    empty: int,
    sizes: tuple[int, ...],
    max_subsets: int,
    unique_at_most: int,
    kept: dict[str, _Bounded],
) -> None:
    if not hashes.size:
        return
    filled = hashes != np.uint64(empty)
    kept["rows"].add(row_keys(hashes)[filled.any(axis=0)])
    distinct = []
    for column, mask in zip(hashes, filled, strict=True):
        values = np.unique(column[mask])
        kept["values"].add(values)
        distinct.append(len(values))
    numbers = np.arange(first_record, first_record + hashes.shape[1], dtype=np.uint64)
    numbers = numbers.astype(np.uint32) if numbers.size and numbers[-1] < 1 << 32 else numbers
    # A column whose every value is different (a pseudonym, a record number) singles out
    # its record alone: it is indexed by itself and in pairs with each other column (the
    # pair ties that column's value to the record), and left out of larger combinations,
    # which would only make more keys that say the same.
    alone = [c for c, count in enumerate(distinct) if count == hashes.shape[1]]
    others = [-1 if c in alone else count for c, count in enumerate(distinct)]
    chosen = [c for c in _columns_for_subsets(others, sizes, max_subsets) if c not in alone]
    combos: list[tuple[int, ...]] = [(c,) for c in alone]
    combos += [(a, c) for a in alone for c in range(hashes.shape[0]) if c not in alone or c > a]
    combos += [combo for size in sizes for combo in itertools.combinations(chosen, size)]
    for combo in combos:
        picked = list(combo)
        useful = filled[picked].any(axis=0)
        keys = row_keys(hashes[picked])[useful]
        unique, first, counts = np.unique(keys, return_index=True, return_counts=True)
        single = counts <= unique_at_most
        kept["subsets"].add(unique[single], numbers[useful][first[single]])


def _columns_for_subsets(distinct: Sequence[int], sizes: Sequence[int], cap: int) -> list[int]:
    """The columns whose combinations are indexed: all of them, or as many of those with
    the most distinct values as keep the number of combinations within ``cap``."""
    order = sorted(range(len(distinct)), key=lambda c: -distinct[c])
    width = len(order)
    while width > max(sizes) and sum(math.comb(width, s) for s in sizes) > cap:
        width -= 1
    return sorted(order[:width])


def _shifted(hashes: np.ndarray) -> np.ndarray:
    """Each column moved down by a different number of rows (wrapping round): the same
    values, in rows that no record has."""
    count, width = hashes.shape[1], hashes.shape[0]
    step = max(1, count // (width + 1))
    return np.vstack([np.roll(row, column * step) for column, row in enumerate(hashes)])


def pseudonym_from_hex(value: str) -> str:
    """A hex digest written in a pseudonym's letters (digits 0-9 as g-p)."""
    return value.translate(str.maketrans("0123456789", PSEUDONYM_DIGITS))


@dataclass
class RowMatcher:
    """Counts, batch by batch, a table's rows found in one index.

    - *whole* rows: the key of all columns, or of all the columns that share values with
      the index (a column added by the applicant does not hide a record), for every row;
    - *covered* rows, among those sampled (``sample_rate`` of them, chosen by the row's
      hash): every column that shares values with the index (at least two) is part of a
      combination that singles out one and the same record. A row of an aggregate table
      is not covered: its count may happen to equal a value of some record beside one of
      its keys, but its other keys do not single that record out too.

    Other people can agree with a record by chance when the columns say little (a
    district, a sex, an age). So the same counts are taken once more with each column
    shifted by a different number of rows, which keeps every column's values and breaks
    every row apart: what still matches then is what matches by chance
    (``chance_whole``, ``chance_partial``), and :meth:`beyond_chance` is what is left."""

    index: RowIndex
    columns: Sequence[str]
    empty: int
    sample_rate: float = 1.0
    subset_columns: int = 12
    rows: int = 0
    sampled: int = 0
    whole: int = 0  # rows matched whole
    partial: int = 0  # sampled rows covered by combinations that single out a record
    chance_whole: int = 0
    chance_partial: int = 0
    first_row: int | None = None
    matched_columns: tuple[int, ...] = ()  # the columns of the first covered rows

    def feed(self, hashes: np.ndarray) -> None:
        """The hashes of the next rows (columns × rows)."""
        count = hashes.shape[1]
        if not count:
            return
        filled = hashes != np.uint64(self.empty)
        from_data = self._from_data(hashes, filled)
        hit = self._whole(hashes, filled, from_data)
        self.whole += int(hit.sum())
        self._first(hit)
        shifted = _shifted(hashes)
        self.chance_whole += int(
            self._whole(shifted, shifted != np.uint64(self.empty), from_data).sum()
        )
        sample = row_keys(hashes) <= np.uint64(min(ALL, int(self.sample_rate * ALL)))
        self.sampled += int(sample.sum())
        columns = sorted(from_data[: self.subset_columns])
        if len(columns) >= 2 and sample.any():
            covered = self._covered(hashes[:, sample], filled[:, sample], columns)
            if covered.any():
                self.partial += int(covered.sum())
                self._first_at(int(np.flatnonzero(sample)[covered][0]))
                self.matched_columns = self.matched_columns or tuple(columns)
            chance = _shifted(hashes[:, sample])
            self.chance_partial += int(
                self._covered(chance, chance != np.uint64(self.empty), columns).sum()
            )
        self.rows += count

    def beyond_chance(self, threshold: int) -> tuple[int, int]:
        """The whole and the covered rows that chance does not explain: the excess over
        the chance counts, if it is at least ``threshold`` and three standard deviations
        of them; 0 otherwise."""

        def excess(observed: int, chance: int) -> int:
            more = observed - chance
            return more if more >= max(threshold, 3 * math.sqrt(chance)) else 0

        return excess(self.whole, self.chance_whole), excess(self.partial, self.chance_partial)

    def _whole(self, hashes: np.ndarray, filled: np.ndarray, from_data: list[int]) -> np.ndarray:
        hit = self._known(self.index.rows, row_keys(hashes), "rows") & filled.any(axis=0)
        if 0 < len(from_data) < hashes.shape[0]:
            inner = row_keys(hashes[from_data])
            hit |= self._known(self.index.rows, inner, "rows") & filled[from_data].any(axis=0)
        return hit

    def _covered(self, hashes: np.ndarray, filled: np.ndarray, columns: list[int]) -> np.ndarray:
        """Which rows agree with one record of the index on every one of ``columns``:
        each column is in a combination that singles out that same record."""
        count = hashes.shape[1]
        covered = np.zeros(count, dtype=bool)
        combos = [
            combo
            for size in (1, *self.index.subset_sizes)
            for combo in itertools.combinations(range(len(columns)), size)
        ]
        if not combos or not len(self.index.subsets):
            return covered
        keys = np.concatenate([row_keys(hashes[[columns[c] for c in combo]]) for combo in combos])
        useful = np.concatenate(
            [filled[[columns[c] for c in combo]].any(axis=0) for combo in combos]
        )
        found, where = lookup(self.index.subsets, keys)
        found &= useful
        limit = self.index.limit("subsets")
        if limit != ALL:
            found &= keys <= np.uint64(limit)
        if not found.any():
            return covered
        masks = np.array([sum(1 << c for c in combo) for combo in combos], dtype=np.uint64)
        hits = np.flatnonzero(found)
        row = hits % count
        record = self.index.subset_records[where[hits]].astype(np.uint64)
        bit = masks[hits // count]
        order = np.lexsort((record, row))
        row, record, bit = row[order], record[order], bit[order]
        starts = np.flatnonzero(np.r_[True, (row[1:] != row[:-1]) | (record[1:] != record[:-1])])
        merged = np.bitwise_or.reduceat(bit, starts)
        covered[row[starts][merged == np.uint64((1 << len(columns)) - 1)]] = True
        return covered

    def _first(self, hit: np.ndarray) -> None:
        if hit.any():
            self._first_at(int(np.argmax(hit)))

    def _first_at(self, position: int) -> None:
        row = self.rows + position + 1
        if self.first_row is None or row < self.first_row:
            self.first_row = row

    def _known(self, sorted_keys: np.ndarray, keys: np.ndarray, kind: str) -> np.ndarray:
        found = contains(sorted_keys, keys)
        limit = self.index.limit(kind)
        if limit != ALL:
            found &= keys <= np.uint64(limit)
        return found

    def _from_data(self, hashes: np.ndarray, filled: np.ndarray) -> list[int]:
        """The columns that share values with the index, most shared first."""
        shares = []
        limit = np.uint64(self.index.limit("values"))
        for column, (row, mask) in enumerate(zip(hashes, filled, strict=True)):
            testable = mask & (row <= limit)
            total = int(testable.sum())
            if not total:
                continue
            share = float(contains(self.index.values, row[testable]).sum()) / total
            if share >= 0.2:
                shares.append((-share, column))
        return [column for _, column in sorted(shares)]
