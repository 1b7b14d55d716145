"""Catching up with the log: what a writer does when it takes the lock.

The log is the record and the index is derived from it, written after the log is
durable. A writer that finds the files changed — another process appended, or a writer
died — rebuilds its view here: it cuts the index back to what all its files agree on,
re-indexes whatever complete entries the log holds beyond it, and moves an incomplete
final line (a write cut short) into ``repairs/``. Complete lines are never removed: a
line that does not continue the log means damage, and writing stops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit import entry, merkle
from audit.errors import LedgerDamaged
from audit.store import Index, IndexBatch, Segments, quarantine_torn_tail


@dataclass
class Tail:
    """The end of the log as it is on disk now."""

    size: int
    prev: str
    last_time: int
    compact: merkle.CompactRange
    repairs: list[dict[str, Any]] = field(default_factory=list)


def read_entry(segments: Segments, index: Index, seq: int) -> bytes:
    """The encoded entry ``seq`` (without its newline), located through the index."""
    first = segments.first_of(seq)
    start = 0 if seq == first else index.end_offset(seq - 1)
    end = index.end_offset(seq)
    with open(segments.path(first), "rb") as handle:
        handle.seek(start)
        return handle.read(end - start)[:-1]


_EXTEND_LIMIT = 4096  # beyond this many new leaves, rebuilding from stored nodes is cheaper


def recover_tail(
    root: Path, segments: Segments, index: Index, known: merkle.CompactRange | None = None
) -> Tail:
    """Bring the index up to the end of the log and describe that end. ``known``: the
    compact range this writer had, extended with the leaves indexed since if it can be."""
    segments.refresh()
    size = index.normalise()
    if known is not None and 0 <= size - known.end <= _EXTEND_LIMIT:
        compact = known.copy()
        new_leaves = index.leaves.read(known.end, size - known.end) if size > known.end else b""
        for offset in range(0, len(new_leaves), merkle.HASH_SIZE):
            compact.append(new_leaves[offset : offset + merkle.HASH_SIZE])
    else:
        compact = index.compact_range(size)
    prev, last_time = entry.GENESIS_PREV, 0
    if size:
        fields = entry.chain_fields(read_entry(segments, index, size - 1))
        if fields is None or fields.seq != size - 1:
            raise LedgerDamaged(f"index and log disagree at seq {size - 1}; run `sbx audit verify`")
        prev, last_time = index.leaf(size - 1).hex(), fields.time
    tail = Tail(size, prev, last_time, compact)
    first, offset = _position_after(segments, index, size)
    batch = IndexBatch()
    current, end = first, offset
    for segment_first, line in segments.iter_lines(first, offset):
        if segment_first != current:
            batch.flush(index)
            current, end = segment_first, 0
        if not line.endswith(b"\n"):
            tail.repairs.append(
                quarantine_torn_tail(root, segments.path(segment_first), end, tail.size)
            )
            break
        body = line[:-1]
        fields = entry.chain_fields(body)
        if (
            fields is None
            or fields.seq != tail.size
            or fields.prev != tail.prev
            or fields.time < tail.last_time
        ):
            raise LedgerDamaged(
                f"entry at seq {tail.size} does not continue the log; run `sbx audit verify`"
            )
        leaf = merkle.leaf_hash(body)
        end += len(line)
        batch.add(tail.compact, leaf, end)
        tail.prev, tail.last_time, tail.size = leaf.hex(), fields.time, tail.size + 1
    batch.flush(index)
    return tail


def _position_after(segments: Segments, index: Index, size: int) -> tuple[int, int]:
    """Segment and byte offset where entry ``size`` starts."""
    if size == 0:
        return segments.firsts[0], 0
    first = segments.first_of(size - 1)
    end = index.end_offset(size - 1)
    length = os.stat(segments.path(first)).st_size
    if end > length:
        raise LedgerDamaged(f"the index reaches past the log at seq {size - 1}")
    if first != segments.firsts[-1] and end == length:
        return segments.first_of(size), 0
    return first, end
