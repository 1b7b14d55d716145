"""The verification walk: one pass over entries that checks everything a ledger promises.

Front-ends (:mod:`audit.verify` for a ledger folder, :mod:`audit.archive` for an archive)
feed it the entries in order; it keeps O(log n) state however long the ledger is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from audit import entry, merkle
from audit.checkpoint import Checkpoint, CheckpointError
from audit.errors import InvalidEntry, KeyringError
from audit.signing import KeyChain, KeyRecord

KEY_ACTIONS = (b'{"action":"ledger.create",', b'{"action":"ledger.key.rotate",')


@dataclass(frozen=True)
class Problem:
    """The first thing found wrong: an entry (``seq``) and/or a checkpoint."""

    reason: str
    seq: int | None = None
    checkpoint: int | None = None  # position in the checkpoint list, from 0

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "reason": self.reason, "seq": self.seq}

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.checkpoint is not None:
            where.append(f"checkpoint #{self.checkpoint}")
        return f"{', '.join(where) or 'ledger'}: {self.reason}"


class Failed(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class Scheduled:
    """A checkpoint to compare with the tree when the walk reaches its size."""

    checkpoint: Checkpoint
    position: int | None  # in the ledger's own list; None for a witnessed one
    label: str


@dataclass
class Walk:
    ledger: str
    keys: KeyChain
    schedule: list[Scheduled]
    first_seq: int = 0
    left: merkle.CompactRange | None = None
    deep: bool = False
    progress: Callable[[int], None] | None = None
    size: int = 0
    prev: str | None = None
    last_time: int = 0
    bytes: int = 0
    verified_checkpoints: int = 0
    last_good_size: int = 0
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.compact = self.left.copy() if self.left is not None else merkle.CompactRange()
        if self.compact.end != self.first_seq:
            raise Failed(Problem("the hashes before the first entry do not end where it starts"))
        self.size = self.first_seq
        self.schedule.sort(key=lambda s: s.checkpoint.size)
        self._next = 0
        self._check_due()

    def feed(self, lines: Iterable[bytes]) -> None:
        sha256 = hashlib.sha256
        chain_fields = entry.chain_fields
        compact_append = self.compact.append
        for line in lines:
            seq = self.size
            if not line.endswith(b"\n"):
                raise Failed(Problem("entry is cut off (no final newline)", seq))
            body = line[:-1]
            fields = chain_fields(body)
            if fields is None:
                raise Failed(Problem("not an entry: its chain fields are missing or malformed", seq))
            if fields.seq != seq:
                raise Failed(Problem(f"entry says seq {fields.seq} where seq {seq} belongs "
                                     "(entries deleted, inserted or reordered)", seq))
            if self.prev is not None and fields.prev != self.prev:
                raise Failed(Problem("entry's hash does not match the prev of the entry after it "
                                     "(entry altered)", seq - 1))
            if self.prev is None and seq == 0 and fields.prev != entry.GENESIS_PREV:
                raise Failed(Problem("the first entry must have an all-zero prev", 0))
            if fields.time < self.last_time:
                raise Failed(Problem("time goes backwards", seq))
            if self.deep or body.startswith(KEY_ACTIONS):
                self._check_deep(body, seq)
            leaf = sha256(b"\x00" + body).digest()
            compact_append(leaf)
            self.prev, self.last_time, self.size = leaf.hex(), fields.time, seq + 1
            self.bytes += len(line)
            if self._next < len(self.schedule) and self.schedule[self._next].checkpoint.size == self.size:
                self._check_due()
            if self.progress is not None and not self.size & 0xFFFF:
                self.progress(self.bytes)

    def _check_deep(self, body: bytes, seq: int) -> None:
        try:
            value = entry.parse(body)
        except InvalidEntry as exc:
            raise Failed(Problem(f"malformed entry: {exc}", seq)) from None
        if value["action"] in ("ledger.create", "ledger.key.rotate"):
            try:
                record = KeyRecord.from_dict(value["detail"].get("key"))
                if record.from_size != seq + 1:
                    raise KeyringError(f"key {record.key_id[:16]}… must start at size {seq + 1}")
                self.keys.add(record)
            except KeyringError as exc:
                raise Failed(Problem(f"key entry rejected: {exc}", seq)) from None

    def _check_due(self) -> None:
        while self._next < len(self.schedule) and self.schedule[self._next].checkpoint.size <= self.size:
            due = self.schedule[self._next]
            self._next += 1
            cp = due.checkpoint
            if cp.size != self.size:
                continue  # before the first entry walked: not recomputable from here
            try:
                cp.check(self.keys)
            except (CheckpointError, KeyringError) as exc:
                raise Failed(Problem(f"{due.label}: {exc}", None, due.position)) from None
            if self.compact.root() != cp.root:
                raise Failed(Problem(
                    f"{due.label} of size {cp.size} does not match the entries "
                    f"(something in seq {self.last_good_size}..{cp.size - 1} was altered)",
                    cp.size - 1, due.position))
            self.verified_checkpoints += 1
            self.last_good_size = cp.size

    def finish(self, right: merkle.CompactRange | None = None) -> None:
        """After the last entry: checkpoints beyond it, via ``right`` or as a rollback."""
        if right is not None and self._next < len(self.schedule):
            self.compact.extend(right)
            self.size = self.compact.end
            self._check_due()
        if self._next < len(self.schedule):
            due = self.schedule[self._next]
            raise Failed(Problem(
                f"{due.label} is for size {due.checkpoint.size} but the ledger ends at "
                f"{self.size} entries: entries from seq {self.size} were removed or the ledger "
                "was rolled back", self.size, due.position))
