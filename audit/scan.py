"""Walking ranges of entries, in parallel, and joining what the walks found.

Verification is split in two so that it can use every core with flat memory:

* :func:`walk_range` (runs in a worker) checks one byte range of a segment on its own:
  chain fields, ``prev`` links and times inside the range, leaf hashes, and the compact
  range of the range's leaves at every size where a checkpoint must be compared. It
  trusts nothing outside the range: the first entry's seq and prev are *claims*.
* :class:`Assembler` (runs in the verifying process) takes the results in order, checks
  each claim against the range before, adds key records to the key chain, and compares
  every checkpoint's signed root with the root of its prefix.

The per-entry loop has a native fast path (``audit._walkfast``, optional) that hands
every line it is not sure about back to the Python code here, which is the reference.
"""

from __future__ import annotations

import bisect
import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from audit import entry, merkle
from audit.checkpoint import CheckpointError
from audit.errors import InvalidEntry, KeyringError
from audit.signing import KeyChain, KeyRecord
from audit.walk import Failed, Problem, Scheduled

try:  # the native fast path is optional: without it, the same checks run in Python
    from audit import _walkfast  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the build
    _walkfast = None

RESERVED_PREFIX = b'{"action":"ledger.'
KEY_ACTIONS = ("ledger.create", "ledger.key.rotate")
TASK_BYTES = 32 << 20
_NO_STOP = 1 << 62

Hashes = list[tuple[int, bytes]]


def native_available() -> bool:
    return _walkfast is not None


@dataclass
class RangeResult:
    """What walking one range found. Plain data: it crosses process boundaries."""

    first_seq: int | None = None  # the seq its first entry claims (None: unreadable)
    first_prev: str | None = None  # the prev its first entry claims
    first_time: int = 0
    size: int = 0  # one past the last entry walked
    last_leaf: bytes | None = None
    last_time: int = 0
    byte_count: int = 0
    final: Hashes = field(default_factory=list)  # compact range [first_seq, size)
    snapshots: list[tuple[int, Hashes]] = field(default_factory=list)
    keys: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    problem: Problem | None = None
    torn: int = 0  # bytes of an incomplete final line
    first_leaf: bytes | None = None  # leaf hash of the first entry
    second_prev: str | None = None  # the prev the second entry claims (vouches for the first)
    break_leaf: bytes | None = None  # a broken link at the very end: the last line's leaf


def seq_problem(
    claimed: int,
    position: int,
    previous_leaf: bytes | None = None,
    leaf: bytes | None = None,
    successor_prev: str | None = None,
) -> Problem:
    """An entry at ``position`` (leaf hash ``leaf``) claims ``claimed``; ``previous_leaf``
    is the hash of the entry before it and ``successor_prev`` the prev the entry after it
    claims, where known. Two entries in a row claiming the same seq: the later one is the
    extra one if it repeats the earlier byte for byte or the chain goes on from the earlier
    one; otherwise the earlier one was inserted in front of the entry the chain goes on
    from. Any other claim: the entry due here is missing or moved."""
    where = position
    if claimed == position - 1 and leaf != previous_leaf:
        if previous_leaf is None or successor_prev != previous_leaf.hex():
            where = position - 1
    return Problem(
        f"entry says seq {claimed} where seq {position} belongs "
        "(entries deleted, inserted or reordered)",
        where,
    )


def link_problem(seq: int, successor_vouches: bool | None) -> Problem:
    """Entry ``seq``'s prev is not the hash of entry ``seq - 1``. If the entry after it
    records this entry's hash, this entry is intact and ``seq - 1`` was altered;
    otherwise this entry was (its prev and its hash are both off)."""
    if successor_vouches is False:
        return Problem(
            "entry altered: its prev is not the hash of the entry before it, and the entry "
            "after it does not record its hash",
            seq,
        )
    return Problem(
        "entry altered: its hash is not the prev recorded by the entry after it", seq - 1
    )


class _RangeWalk:
    """Per-entry checks of one range; ``prev`` is ``None`` until the first entry."""

    def __init__(self, boundaries: Sequence[int], deep: bool) -> None:
        self.boundaries = boundaries
        self.deep = deep
        self.result = RangeResult()
        self.compact: merkle.CompactRange | None = None
        self.prev: bytes | None = None

    def run(self, buf: bytes) -> RangeResult:
        try:
            self._run(buf)
        except Failed as failure:
            self.result.problem = failure.problem
        if self.compact is not None:
            self.result.final = self.compact.hashes
            self.result.size = self.compact.end
        self.result.last_leaf = self.prev
        return self.result

    def _run(self, buf: bytes) -> None:
        pos, end = 0, len(buf)
        result = self.result
        while pos < end:
            newline = buf.find(b"\n", pos)
            if newline < 0:
                result.torn = end - pos
                return
            # The first two lines go through the reference path: they record the claims
            # (first seq, prev, leaf, second prev) that the assembler checks at the joins.
            native = self.compact is not None and self.compact.end - self.compact.begin >= 2
            if native and self.compact is not None and _walkfast is not None and not self.deep:
                pos = self._run_native(_walkfast, self.compact, buf, pos, end)
                if pos >= end:
                    return
                newline = buf.find(b"\n", pos)
                if newline < 0:
                    result.torn = end - pos
                    return
            self._line(buf[pos:newline], buf, newline + 1)
            result.byte_count += newline + 1 - pos
            pos = newline + 1

    def _run_native(
        self, native: Any, compact: merkle.CompactRange, buf: bytes, pos: int, end: int
    ) -> int:
        """Hand plain lines to the native scanner until it stops at a line for us."""
        result = self.result
        while True:
            index = bisect.bisect_right(self.boundaries, compact.end)
            stop = self.boundaries[index] if index < len(self.boundaries) else _NO_STOP
            start = pos
            pos, size, self.prev, result.last_time, status = native.scan(
                buf,
                pos,
                end,
                compact.end,
                self.prev,
                result.last_time,
                compact._levels,  # noqa: SLF001 - the scanner updates them in place
                compact._hashes,  # noqa: SLF001
                stop,
            )
            compact.end = size
            result.byte_count += pos - start
            if size == stop:
                result.snapshots.append((size, compact.hashes))
            if status == 1 or size != stop:
                return pos

    def _line(self, body: bytes, buf: bytes = b"", next_start: int = 0) -> None:
        result = self.result
        fields = entry.chain_fields(body)
        expected = None if self.compact is None else self.compact.end
        if fields is None:
            raise Failed(
                Problem("not an entry: its chain fields are missing or malformed", expected)
            )
        if self.compact is None:
            self.compact = merkle.CompactRange(fields.seq)
            result.first_seq, result.first_prev, result.first_time = (
                fields.seq,
                fields.prev,
                fields.time,
            )
            result.last_time = fields.time
        seq = self.compact.end
        if fields.seq != seq:
            leaf = hashlib.sha256(b"\x00" + body).digest()
            raise Failed(seq_problem(fields.seq, seq, self.prev, leaf, _next_prev(buf, next_start)))
        if seq == self.compact.begin + 1:
            result.second_prev = fields.prev
        if self.prev is not None and fields.prev != self.prev.hex():
            leaf = hashlib.sha256(b"\x00" + body).digest()
            successor = _next_prev(buf, next_start)
            if successor is None:
                result.break_leaf = leaf  # the assembler asks the next range
            raise Failed(link_problem(seq, None if successor is None else successor == leaf.hex()))
        if seq == 0 and fields.prev != entry.GENESIS_PREV:
            raise Failed(Problem("the first entry must have an all-zero prev", 0))
        if fields.time < result.last_time:
            raise Failed(Problem("time goes backwards", seq))
        if self.deep or body.startswith(RESERVED_PREFIX):
            self._parse(body, seq)
        leaf = hashlib.sha256(b"\x00" + body).digest()
        self.compact.append(leaf)
        if result.first_leaf is None:
            result.first_leaf = leaf
        self.prev, result.last_time = leaf, fields.time
        index = bisect.bisect_left(self.boundaries, self.compact.end)
        if index < len(self.boundaries) and self.boundaries[index] == self.compact.end:
            result.snapshots.append((self.compact.end, self.compact.hashes))

    def _parse(self, body: bytes, seq: int) -> None:
        try:
            value = entry.parse(body)
        except InvalidEntry as exc:
            raise Failed(Problem(f"malformed entry: {exc}", seq)) from None
        if value["action"] in KEY_ACTIONS:
            self.result.keys.append((seq, value["detail"].get("key")))


def _next_prev(buf: bytes, start: int) -> str | None:
    """The prev claimed by the complete line starting at ``start``, if there is one."""
    newline = buf.find(b"\n", start)
    if newline < 0:
        return None
    fields = entry.chain_fields(buf[start:newline])
    return None if fields is None else fields.prev


def walk_range(buf: bytes, boundaries: Sequence[int], deep: bool = False) -> RangeResult:
    """Walk the entry lines in ``buf``; snapshot the compact range at ``boundaries``."""
    return _RangeWalk(boundaries, deep).run(buf)


@dataclass(frozen=True)
class Task:
    """A byte range of one segment file."""

    path: str
    start: int
    end: int
    segment_first: int  # the seq the segment's name says it starts with
    last_in_segment: bool


def plan_tasks(paths: Sequence[tuple[str, int]], task_bytes: int = TASK_BYTES) -> list[Task]:
    """Split segment files (``(path, first seq)``) into ranges that end at line boundaries."""
    tasks: list[Task] = []
    for path, first in paths:
        size = os.path.getsize(path)
        cuts = [0]
        with open(path, "rb") as handle:
            while size - cuts[-1] > task_bytes:
                handle.seek(cuts[-1] + task_bytes)
                tail = handle.read(1 << 20)
                newline = tail.find(b"\n")
                if newline < 0:
                    break
                cuts.append(cuts[-1] + task_bytes + newline + 1)
        cuts.append(size)
        for number, (start, stop) in enumerate(zip(cuts, cuts[1:], strict=False)):
            tasks.append(Task(path, start, stop, first, number == len(cuts) - 2))
        if size == 0:
            tasks.append(Task(path, 0, 0, first, True))
    return tasks


_worker_boundaries: Sequence[int] = ()
_worker_deep = False


def _init_worker(boundaries: Sequence[int], deep: bool) -> None:
    global _worker_boundaries, _worker_deep  # noqa: PLW0603 - one walk per worker process
    _worker_boundaries, _worker_deep = boundaries, deep


def _run_task(task: Task) -> RangeResult:
    with open(task.path, "rb") as handle:
        handle.seek(task.start)
        buf = handle.read(task.end - task.start)
    return walk_range(buf, _worker_boundaries, _worker_deep)


def run_tasks(
    tasks: Sequence[Task], boundaries: Sequence[int], deep: bool, workers: int
) -> Iterator[tuple[Task, RangeResult]]:
    """Walk tasks, in parallel when ``workers > 1``, yielding results in task order."""
    if workers <= 1 or len(tasks) <= 1:
        _init_worker(boundaries, deep)
        for task in tasks:
            yield task, _run_task(task)
        return
    # spawn, not fork: the caller may run threads (a ledger's committer) that fork would
    # copy mid-operation.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(boundaries, deep)
    ) as pool:
        yield from zip(tasks, pool.map(_run_task, tasks), strict=True)


class Assembler:
    """Joins range results in order and checks everything that spans ranges."""

    def __init__(
        self, keys: KeyChain, schedule: Iterable[Scheduled], left: merkle.CompactRange | None = None
    ) -> None:
        self.keys = keys
        self.prefix = left.copy() if left is not None else merkle.CompactRange()
        self.size = self.prefix.end
        self.prev: bytes | None = None
        self.last_time = 0
        self.byte_count = 0
        self.verified = 0
        self.last_good_size = self.size
        self.pending: tuple[Problem, bytes] | None = None  # a link break awaiting its successor
        self.due: dict[int, list[Scheduled]] = {}
        for item in schedule:
            self.due.setdefault(item.checkpoint.size, []).append(item)
        if self.size in self.due:
            self._check(self.size, self.prefix)

    def boundaries(self) -> list[int]:
        return sorted(size for size in self.due if size > self.size)

    def add(self, result: RangeResult, *, expected_first: int | None = None) -> None:
        """Join ``result``; raise :class:`Failed` at the first problem, in seq order."""
        if self.pending is not None:
            problem, leaf = self.pending
            vouches = result.first_prev == leaf.hex() if result.first_prev is not None else None
            raise Failed(link_problem(problem.seq + 1 if problem.seq is not None else 0, vouches))
        if expected_first is not None and expected_first != self.size:
            raise Failed(
                Problem(
                    f"a segment starts at seq {expected_first}, but the one before "
                    f"ended at {self.size}",
                    min(expected_first, self.size),
                )
            )
        if result.first_seq is not None:
            self._join(result)
            # A key introduced by entry k may sign trees of size k + 1 and more.
            events: list[tuple[int, int, Any]] = [(seq + 1, 0, key) for seq, key in result.keys]
            events += [(size, 1, hashes) for size, hashes in result.snapshots]
            for position, kind, payload in sorted(events, key=lambda e: (e[0], e[1])):
                if kind == 0:
                    self._add_key(position - 1, payload)
                else:
                    snapshot = self.prefix.copy()
                    for level, node in payload:
                        snapshot.append_subtree(level, node)
                    self._check(position, snapshot)
            for level, node in result.final:
                self.prefix.append_subtree(level, node)
            self.size = self.prefix.end
            self.prev, self.last_time = result.last_leaf, result.last_time
            self.byte_count += result.byte_count
        if result.problem is not None:
            problem = result.problem
            if problem.seq is None:
                problem = Problem(problem.reason, self.size, problem.checkpoint)
            if result.break_leaf is not None and problem.seq is not None:
                self.pending = (problem, result.break_leaf)  # the next range decides
                return
            raise Failed(problem)

    def _join(self, result: RangeResult) -> None:
        seq = self.size
        if result.first_seq != seq:
            raise Failed(
                seq_problem(
                    result.first_seq or 0, seq, self.prev, result.first_leaf, result.second_prev
                )
            )
        if self.prev is not None and result.first_prev != self.prev.hex():
            vouches = None
            if result.second_prev is not None and result.first_leaf is not None:
                vouches = result.second_prev == result.first_leaf.hex()
            elif self.last_good_size > seq - 1:
                vouches = False  # a verified checkpoint covers entry seq - 1
            raise Failed(link_problem(seq, vouches))
        if result.first_time < self.last_time:
            raise Failed(Problem("time goes backwards", seq))

    def _add_key(self, seq: int, data: Any) -> None:
        try:
            record = KeyRecord.from_dict(data)
            if record.from_size != seq + 1:
                raise KeyringError(f"key {record.key_id[:16]}… must start at size {seq + 1}")
            self.keys.add(record)
        except KeyringError as exc:
            raise Failed(Problem(f"key entry rejected: {exc}", seq)) from None

    def _check(self, size: int, compact: merkle.CompactRange) -> None:
        root = compact.root()
        for due in self.due.pop(size, []):
            try:
                due.checkpoint.check(self.keys)
            except (CheckpointError, KeyringError) as exc:
                raise Failed(Problem(f"{due.label}: {exc}", None, due.position)) from None
            if root != due.checkpoint.root:
                raise Failed(
                    Problem(
                        f"{due.label} of size {size} does not match the entries "
                        f"(something in seq {self.last_good_size}..{size - 1} was altered)",
                        size - 1,
                        due.position,
                    )
                )
            self.verified += 1
            self.last_good_size = size

    def finish(self, right: merkle.CompactRange | None = None) -> None:
        """After the last range: checkpoints beyond it, through ``right`` or as a rollback."""
        if self.pending is not None:
            problem, _ = self.pending
            seq = (problem.seq or 0) + 1
            # No entry follows the broken link: trust a verified checkpoint over the one before.
            raise Failed(link_problem(seq, False if self.last_good_size > seq - 1 else None))
        if right is not None:
            self.prefix.extend(right)
            if self.prefix.end in self.due:
                self._check(self.prefix.end, self.prefix)
        pending = sorted(size for size in self.due if size > self.size)
        if pending:
            due = self.due[pending[0]][0]
            try:
                due.checkpoint.check(self.keys)
            except (CheckpointError, KeyringError) as exc:  # not a checkpoint of this ledger
                raise Failed(Problem(f"{due.label}: {exc}", None, due.position)) from None
            raise Failed(
                Problem(
                    f"{due.label} is for size {due.checkpoint.size} but the ledger ends at "
                    f"{self.size} entries: entries from seq {self.size} were removed or the ledger "
                    "was rolled back",
                    self.size,
                    due.position,
                )
            )


def progress_adapter(
    progress: Callable[[int, int], None] | None, total: int
) -> Callable[[int], None]:
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    return advance
